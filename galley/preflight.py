"""Checks that run once per pyinfra run, before any operation: the inventory, then Vault."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence

import hvac
from pyinfra import host, inventory, state

from galley.components.model import Component
from galley.host.ssh import disable_nagle
from galley.inventory.validate import ValidationError, check
from galley.lock import ClusterLock, LockError, lease_seconds
from galley.ops.vault_bootstrap import deploy_grants
from galley.problems import PreflightError
from galley.vault.client import VaultError, VaultSettings, lazy_client

_checked: dict[tuple[int, tuple[str, ...]], Callable[[], hvac.Client]] = {}
# pyinfra prepares hosts concurrently (gevent): the first host checks, the others wait for it.
_checking = threading.Lock()


def preflight(components: Sequence[Component]) -> Callable[[], hvac.Client]:
    """Validate the inventory for ``components`` and check Vault, once per run.

    Called by `galley.converge` at the top of each deploy file (which pyinfra runs once per
    host, after connecting and before executing anything). Also turns off Nagle on every SSH
    connection (`galley.host.ssh`). Vault must allow exactly what deploying ``components``
    needs. A run that changes hosts (not ``--dry``) takes the cluster's lock (`galley.lock`)
    for as long as it runs. Returns the run's shared Vault client factory.
    """
    key = (id(state), tuple(c.name for c in components))
    with _checking:
        if key not in _checked:
            _checked[key] = _check(components)
    return _checked[key]


def _check(components: Sequence[Component]) -> Callable[[], hvac.Client]:
    disable_nagle(inventory.get_active_hosts())
    try:
        check(inventory, components)
    except ValidationError as exc:
        raise PreflightError(f"the inventory is not valid, nothing was changed:\n{exc}") from exc
    try:
        settings = VaultSettings.from_data(host.data)
        hosts = inventory.get_active_hosts()
        grants = deploy_grants(host.data.cluster_name, hosts, components)
        vault = lazy_client(settings, grants.capabilities())
        client = vault()
        if "--dry" not in sys.argv:  # a run that changes hosts holds the cluster's lock
            command = " ".join(["pyinfra", *sys.argv[1:]])
            lease = lease_seconds(host.data)
            ClusterLock.acquire(client, host.data.cluster_name, command, lease).keep()
    except (VaultError, LockError) as exc:
        raise PreflightError(f"{exc} (nothing was changed)") from exc
    return vault
