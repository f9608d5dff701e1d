"""Load an inventory file the way the pyinfra CLI does, without connecting to any host."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from pyinfra.api import Inventory, State
from pyinfra.context import ctx_state

from galley.text import clean

_offline: ContextVar[bool] = ContextVar("galley_offline_loading", default=False)


@contextmanager
def unchecked() -> Iterator[None]:
    """Load inventories without contacting hosts: host-key pins are used but not verified."""
    token = _offline.set(True)
    try:
        yield
    finally:
        _offline.reset(token)


def contacting_hosts() -> bool:
    """Whether inventory sources may contact hosts now (False inside `unchecked`)."""
    return not _offline.get()


class InventoryLoadError(Exception):
    """The inventory file could not be loaded; str() names it and the cause, on one line."""


def load_inventory(inventory_path: str) -> Inventory:
    """Load an inventory file as the pyinfra CLI does (with group_data), without connecting.

    Host-key checks are off while loading (`unchecked`): nothing connects here. Any failure
    of the inventory's own code (or its group data) is an `InventoryLoadError`.
    """
    # Imported here: importing pyinfra_cli monkey-patches the stdlib for gevent, too late to
    # matter here (nothing connects) and gevent warns about it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyinfra_cli.inventory import make_inventory

    if not Path(inventory_path).is_file():
        raise InventoryLoadError(f"cannot load {inventory_path}: no such file")
    try:
        with ctx_state.use(State()), unchecked():
            return make_inventory(inventory_path, cwd=os.getcwd())
    except SystemExit as exc:  # an inventory's own one-line refusal (e.g. no lab is up)
        raise InventoryLoadError(f"cannot load {inventory_path}: {exc.code}") from None
    except Exception as exc:
        cause = getattr(exc, "exception", exc)  # pyinfra wraps errors of user code
        raise InventoryLoadError(
            f"cannot load {inventory_path}: {type(cause).__name__}: {clean(str(cause))}"
        ) from None
