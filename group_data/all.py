"""Settings shared by every host of every cluster. Inventories and group files override them."""

arch = "amd64"
# Release downloads: upstream by default; the lab points this at its mirror.
github_base_url = "https://github.com"
