"""The lab's state file: what `galley lab up` created, so `down` removes exactly that."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

LAB_DIR = Path(os.environ.get("GALLEY_LAB_DIR", "/var/lib/galley/lab"))
CACHE_DIR = Path(os.environ.get("GALLEY_CACHE_DIR", "/var/cache/galley"))


def state_path(lab_dir: Path = LAB_DIR) -> Path:
    """Where the state of the lab in ``lab_dir`` is kept."""
    return lab_dir / "state.json"


@dataclass
class Droplet:
    """A booted droplet: its plan plus what was created for it."""

    name: str
    address: str
    roles: list[str]
    root: str = ""
    pid: int | None = None
    mounted: bool = False
    killed: bool = False  # `galley lab kill`: down on purpose, its disk kept
    # A simulated DigitalOcean droplet id: new for every boot of a fresh disk (`up`, `add`,
    # `replace`), so host keys are pinned per id as for DigitalOcean. 0: an older lab's.
    droplet_id: int = 0


@dataclass
class LabState:
    """Everything a running lab consists of. Saved after every step of `up`."""

    cluster: str = "lab"
    bridge: str = ""
    gateway: str = ""
    ssh_key: str = ""
    # The lab's own SSH (wait for boot, `galley lab ssh`) pins every key here, by address.
    known_hosts: str = ""
    # The inventory's pins per droplet id (galley.inventory.hostkeys), and the next id.
    host_keys: str = ""
    next_droplet_id: int = 1001
    apt_proxy: str = ""
    mirror_url: str = ""
    vault_addr: str = ""
    vault_host_addr: str = ""  # the same Vault as the droplets reach it (on the bridge)
    # The lab's OpenBao: the CA certificate its TLS listener is verified with, and the file
    # (0600) holding its root token; the token itself is never recorded here.
    vault_ca_cert: str = ""
    vault_token_file: str = ""
    # name -> PID of the lab's own services (apt proxy, mirror, registry, vault).
    services: dict[str, int] = field(default_factory=dict)
    # The host's sysctls `up` set for the droplets' kubelets, as they were: `down` restores them.
    sysctls: dict[str, str] = field(default_factory=dict)
    droplets: list[Droplet] = field(default_factory=list)

    def save(self, lab_dir: Path = LAB_DIR) -> None:
        """Write the state atomically, readable by root only."""
        lab_dir.mkdir(parents=True, exist_ok=True)
        path = state_path(lab_dir)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls, lab_dir: Path = LAB_DIR) -> LabState | None:
        """The saved state, or None when no lab was brought up."""
        path = state_path(lab_dir)
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        droplets = [Droplet(**item) for item in raw.pop("droplets", [])]
        # Fields an older galley recorded (e.g. a plain vault_token) are dropped: such a lab can
        # still be taken down.
        known = {item.name for item in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known}, droplets=droplets)

    def vault_data(self) -> dict[str, str]:
        """The lab's Vault as group data: its address (the operator's and the droplets'), CA
        certificate and root token file."""
        return {
            "vault_addr": self.vault_addr,
            "vault_host_addr": self.vault_host_addr,
            "vault_ca_cert": self.vault_ca_cert,
            "vault_token_file": self.vault_token_file,
        }

    def droplet(self, name: str) -> Droplet:
        """The droplet called ``name``; KeyError naming the known ones otherwise."""
        for droplet in self.droplets:
            if droplet.name == name:
                return droplet
        known = ", ".join(d.name for d in self.droplets) or "none"
        raise KeyError(f"no droplet {name!r} in the lab (droplets: {known})")


def remove_state(lab_dir: Path = LAB_DIR) -> None:
    """Forget the lab (after everything it created is gone)."""
    state_path(lab_dir).unlink(missing_ok=True)
