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


def load_inventory(inventory_path: str) -> Inventory:
    """Load an inventory file as the pyinfra CLI does (with group_data), without connecting.

    Host-key checks are off while loading (`unchecked`): nothing connects here.
    """
    # Imported here: importing pyinfra_cli monkey-patches the stdlib for gevent, too late to
    # matter here (nothing connects) and gevent warns about it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyinfra_cli.inventory import make_inventory

    if not Path(inventory_path).is_file():
        raise FileNotFoundError(f"no such inventory file: {inventory_path}")
    with ctx_state.use(State()), unchecked():
        return make_inventory(inventory_path, cwd=os.getcwd())
