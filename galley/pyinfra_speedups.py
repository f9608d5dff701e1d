"""Two of pyinfra's per-operation costs, made cheap for the pyinfra sources checked here.

At fleet scale a no-op deploy spends about a third of the controller's CPU in pyinfra's
`get_operation_order_from_stack` (``inspect.stack()`` reads a source line for every frame of
every operation call) and several percent re-reading `AllArguments`' type hints for every
operation. `install` replaces both with versions that return the same values: a frame walk that
reads only file names and line numbers, and the type hints read once. It does so only when
pyinfra's functions are byte for byte the ones fingerprinted in `CHECKED`; any other pyinfra
keeps its own, and tests/unit/test_pyinfra_speedups.py fails so that the shim is checked again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable
from types import CodeType
from typing import Any

import pyinfra
from pyinfra.api import arguments, facts, util

# The module, not the `operation` decorator that `pyinfra.api` exports under the same name.
OPERATION_MODULE = importlib.import_module("pyinfra.api.operation")

# sha256 of inspect.getsource of each replaced function, as pyinfra 3.10.0 ships it.
CHECKED = {
    "get_operation_order_from_stack": (
        "f4807f61585570e091fd453c7552d9e2b49329555f07f395a8e8f1d2a398a0b2"
    ),
    "all_global_arguments": "f7afbc472d78c5d2f0bb282994175647651e888543da001968d903cc4a26a5a1",
}
_installed = False


def fingerprint(function: Callable[..., Any]) -> str:
    """The sha256 of a function's source."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


@functools.cache
def matches_checked() -> bool:
    """Whether pyinfra's functions are the ones this shim was checked against (decided once:
    `converge` calls `install` for every host, and pyinfra does not change meanwhile)."""
    return (
        fingerprint(util.get_operation_order_from_stack)
        == CHECKED["get_operation_order_from_stack"]
        and fingerprint(arguments.all_global_arguments) == CHECKED["all_global_arguments"]
    )


@functools.cache
def _positions(code: CodeType) -> tuple[int | None, ...]:
    """Each instruction's first source line (what `inspect.getframeinfo` reports)."""
    return tuple(start for start, _, _, _ in code.co_positions())


def _line(frame: Any) -> int:
    """The line `inspect.getframeinfo(frame).lineno` gives, without reading the source."""
    positions = _positions(frame.f_code)
    index = frame.f_lasti // 2
    start = positions[index] if index < len(positions) else None
    return frame.f_lineno if start is None else start


def operation_order(state: Any) -> list[int]:
    """`pyinfra.api.util.get_operation_order_from_stack`, reading no source files."""
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    start = 0  # from the first frame of the deploy file (none when it is not on the stack)
    if state.current_deploy_filename:
        start = next(
            (
                index
                for index, frame in enumerate(frames)
                if frame.f_code.co_filename == state.current_deploy_filename
            ),
            len(frames),
        )
    order = [state.current_op_file_number] if pyinfra.is_cli else []
    order += [
        _line(frame)
        for frame in frames[start:]
        if not frame.f_code.co_filename.startswith(util.PYINFRA_INSTALL_DIR)
    ]
    return order


@functools.cache
def _global_arguments() -> tuple[tuple[str, type], ...]:
    return tuple(_original_global_arguments())


def global_arguments() -> list[tuple[str, type]]:
    """`pyinfra.api.arguments.all_global_arguments`, its type hints read once."""
    return list(_global_arguments())


_original_global_arguments = arguments.all_global_arguments


def install() -> bool:
    """Put both in place when pyinfra is the checked one; whether they are in place."""
    global _installed
    if not _installed and matches_checked():
        OPERATION_MODULE.get_operation_order_from_stack = operation_order
        arguments.all_global_arguments = global_arguments
        facts.all_global_arguments = global_arguments
        _installed = True
    return _installed
