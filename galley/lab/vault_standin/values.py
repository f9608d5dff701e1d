"""Stand-in Vault: constants, its error type, and field decoding/time formatting helpers."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

VERSION = "1.17.6"
SYSTEM_TTL = 768 * 3600  # Vault's default and maximum lease TTL (768h)
JSON = "application/json"


class VaultError(Exception):
    """An error answered as ``{"errors": [...]}`` with the given HTTP status."""

    def __init__(self, status: int, errors: list[str]) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = errors


def _bad(message: str) -> VaultError:
    return VaultError(400, [message])


def _unsupported(what: str) -> VaultError:
    status = 404 if what == "path" else 405
    return VaultError(status, [f"1 error occurred:\n\t* unsupported {what}\n\n"])


_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)"
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400,
}  # fmt: skip


def _convert_error(value: Any, name: str) -> VaultError:
    return _bad(f'error converting input {value} for field "{name}"')


def _as_duration(value: Any, name: str) -> int:
    """Seconds from an int, a digit string or a Go duration ("87600h", "1h30m", "7d")."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise _convert_error(value, name)
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if not re.fullmatch(f"(?:{_DURATION_PART})+", text):
        raise _bad(f'error converting input {text} for field "{name}": invalid duration "{text}"')
    return int(sum(float(n) * _DURATION_UNITS[u] for n, u in re.findall(_DURATION_PART, text)))


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "t", "1", "false", "f", "0"):
        return value.lower() in ("true", "t", "1")
    raise _convert_error(value, name)


def _as_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _convert_error(value, name) from None


def _as_list(value: Any, name: str) -> list[str]:
    """A Vault comma-string-slice: "a,b" or ["a", "b"]."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    raise _convert_error(value, name)


def _get(data: dict[str, Any], name: str, convert: Callable[[Any, str], Any], default: Any) -> Any:
    value = data.get(name)
    return default if value is None else convert(value, name)


def _go_duration(seconds: int) -> str:
    """Format like Go's time.Duration.String(): 2592000 -> "720h0m0s"."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _rfc3339(moment: datetime) -> str:
    """Format like Go's time.RFC3339Nano in UTC."""
    moment = moment.astimezone(UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def _now() -> datetime:
    return datetime.now(UTC)


def _random_id(length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))
