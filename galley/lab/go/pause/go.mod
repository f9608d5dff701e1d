module galley.lab/pause

go 1.24
