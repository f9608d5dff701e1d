"""One problem an operator should look at, as validation and the fleet report list them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """A problem with ``field`` of ``host``; host None means all of ``scope`` (the inventory
    as a whole, or the fleet)."""

    host: str | None
    field: str
    message: str
    scope: str = "inventory"

    def __str__(self) -> str:
        return f"{self.host or self.scope}: {self.field}: {self.message}"
