"""The shim around two pyinfra internals returns what pyinfra's own functions return, and is
used only with the pyinfra sources it was checked against."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pyinfra
import pytest
from pyinfra.api import arguments, facts, util

from galley import pyinfra_speedups


def test_this_pyinfra_is_the_one_the_shim_was_checked_against():
    # Fails when pyinfra changes either function: read the new source, check that
    # operation_order and global_arguments still return the same, then update CHECKED.
    assert pyinfra_speedups.matches_checked(), (
        pyinfra.__version__,
        pyinfra_speedups.fingerprint(util.get_operation_order_from_stack),
        pyinfra_speedups.fingerprint(arguments.all_global_arguments),
    )


def _both(state) -> list[list[int]]:
    return [
        f(state) for f in (util.get_operation_order_from_stack, pyinfra_speedups.operation_order)
    ]


def _nested(state, depth: int) -> list[list[int]]:
    if depth:
        return _nested(
            state,
            depth - 1,
        )
    return _both(
        state,
    )


@pytest.mark.parametrize("is_cli", [True, False])
@pytest.mark.parametrize("deploy_file", [__file__, None, "/elsewhere/deploy.py"])
def test_the_operation_order_is_pyinfras(monkeypatch, is_cli, deploy_file):
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=7)
    original, fast = _nested(state, 3)
    assert fast == original
    # From this file's first frame: a line per frame of it; none when it is not on the stack.
    assert len(original) == int(is_cli) + (7 if deploy_file == __file__ else 0) or (
        deploy_file is None and len(original) > 7
    )


def test_the_global_arguments_are_pyinfras():
    assert pyinfra_speedups.global_arguments() == pyinfra_speedups._original_global_arguments()
    pyinfra_speedups.global_arguments().clear()  # a caller's list is its own
    assert pyinfra_speedups.global_arguments() == pyinfra_speedups._original_global_arguments()


def test_install_puts_both_where_pyinfra_calls_them(monkeypatch):
    operation_module = sys.modules["pyinfra.api.operation"]
    for module, name in (
        (operation_module, "get_operation_order_from_stack"),
        (arguments, "all_global_arguments"),
        (facts, "all_global_arguments"),
    ):
        monkeypatch.setattr(module, name, getattr(module, name))
    monkeypatch.setattr(pyinfra_speedups, "_installed", False)
    assert pyinfra_speedups.install()
    # pyinfra looks both up as module globals when it calls them.
    assert operation_module.get_operation_order_from_stack is pyinfra_speedups.operation_order
    assert arguments.all_global_arguments is pyinfra_speedups.global_arguments
    assert facts.all_global_arguments is pyinfra_speedups.global_arguments
