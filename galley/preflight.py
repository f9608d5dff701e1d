"""Checks that run once per pyinfra run, before any operation: the inventory, then Vault."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import hvac
from pyinfra import host, inventory, state
from pyinfra.api.exceptions import PyinfraError

from galley.components.model import Component
from galley.host.ssh import disable_nagle
from galley.inventory.validate import ValidationError, check
from galley.vault import VaultError, VaultSettings, lazy_client
from galley.vault_setup import deploy_paths

_checked: dict[tuple[int, tuple[str, ...]], Callable[[], hvac.Client]] = {}


class PreflightError(PyinfraError):
    """The run cannot start: nothing has been changed on any host."""


def preflight(components: Sequence[Component]) -> Callable[[], hvac.Client]:
    """Validate the inventory for ``components`` and check Vault, once per run.

    Called by `galley.converge` at the top of each deploy file (which pyinfra runs once per
    host, after connecting and before executing anything). Also turns off Nagle on every SSH
    connection (`galley.host.ssh`). Vault must allow exactly what deploying ``components``
    needs. Returns the run's shared Vault client factory.
    """
    key = (id(state), tuple(c.name for c in components))
    if key not in _checked:
        disable_nagle(inventory.get_active_hosts())
        try:
            check(inventory, components)
        except ValidationError as exc:
            raise PreflightError(
                f"the inventory is not valid, nothing was changed:\n{exc}"
            ) from exc
        try:
            settings = VaultSettings.from_data(host.data)
            vault = lazy_client(settings, deploy_paths(host.data.cluster_name, components))
            vault()
        except VaultError as exc:
            raise PreflightError(f"{exc} (nothing was changed)") from exc
        _checked[key] = vault
    return _checked[key]
