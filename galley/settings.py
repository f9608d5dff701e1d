"""Typed group-data settings: a component declares each key it reads once, with its default and
the kind of value it takes (`Setting`); the deploy reads the value (`Setting.of`) and
validation checks it (`Setting.problem`) from that one declaration.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_SPAN = re.compile(r"(\d+)(s|sec|m|min|h|d)?")
_SPAN_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
# A directory galley makes: absolute, plain characters, not / itself.
_ABSOLUTE = re.compile(r"(/[A-Za-z0-9._-]+)+")
# A registry's address: http(s)://host[:port] (no path, no trailing slash).
_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
# registry/name[:tag][@digest], as container image references are written.
_IMAGE = re.compile(
    r"[a-z0-9][a-z0-9._/-]*(:[0-9]+)?(/[a-z0-9._-]+)*(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?"
)


def span_seconds(value: object) -> int | None:
    """Seconds in a one-unit systemd time span (``15min``, ``1h``, ``30s``), None otherwise."""
    found = _SPAN.fullmatch(str(value))
    return int(found.group(1)) * _SPAN_SECONDS[found.group(2)] if found else None


def _matches(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and bool(pattern.fullmatch(value))


def is_network(value: object) -> bool:
    """Whether ``value`` is a network (or address) in text, such as ``"10.0.0.0/8"``."""
    try:
        ipaddress.ip_network(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Kind:
    """What a setting's value must be: ``accepts`` it, else "<value> is not <described>"."""

    described: str
    accepts: Callable[[Any], bool]


SPAN = Kind("a systemd time span such as '1h' or '15min'", lambda v: bool(span_seconds(v)))
COUNT = Kind("a count of at least 1", lambda v: _integer(v) and v >= 1)
COUNT_OR_ZERO = Kind("a count (0 or more)", lambda v: _integer(v) and v >= 0)
PORT = Kind("a TCP port", lambda v: _integer(v) and 0 < v < 65536)
FLAG = Kind("True or False", lambda v: isinstance(v, bool))
ABSOLUTE_PATH = Kind("an absolute path such as /var/lib/x", lambda v: _matches(_ABSOLUTE, v))
REGISTRY_URL = Kind("a registry URL such as https://mirror:5000", lambda v: _matches(_URL, v))
CIDRS = Kind(
    "a list of networks such as ['203.0.113.0/24']",
    lambda v: isinstance(v, list | tuple) and all(is_network(one) for one in v),
)
IMAGE = Kind("a container image reference", lambda v: _matches(_IMAGE, v))


@dataclass(frozen=True)
class Setting:
    """A group-data key a component reads: ``default`` where the inventory sets none (a
    declared default of None means "unset": the program's own behaviour), and its `Kind`."""

    key: str
    default: Any
    kind: Kind

    def of(self, data: Any) -> Any:
        """Its value in host or group ``data``, the default where unset (None)."""
        value = data.get(self.key)
        return self.default if value is None else value

    def problem(self, data: Any) -> str | None:
        """Why the value set in ``data`` is refused, None when it is fine (or unset)."""
        value = data.get(self.key)
        if value is None or self.kind.accepts(value):
            return None
        return f"{value!r} is not {self.kind.described}"
