"""One problem an operator should look at, as validation and the fleet report list them; and
the refusal that stops a deploy before any host changed."""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra.api.exceptions import PyinfraError


class PreflightError(PyinfraError):
    """The run cannot start: nothing has been changed on any host. Raised while pyinfra
    prepares (deploy code), pyinfra prints it as one line and stops."""


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
