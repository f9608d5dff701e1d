"""``python -m galley.lab.vault_standin --listen HOST:PORT --root-token TOKEN`` (lab/test only)."""

from galley.lab.vault_standin.server import main

if __name__ == "__main__":
    raise SystemExit(main())
