"""requirements.lock (`bash scripts/lock`): every dependency pyproject names is locked, with
sha256 hashes, at a version pyproject allows; the virtualenv `scripts/bootstrap` made is
exactly the lock."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")


def locked() -> dict[str, tuple[str, int]]:
    """Each locked package: its version and how many sha256 hashes it carries."""
    found: dict[str, tuple[str, int]] = {}
    name = ""
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if entry := _ENTRY.match(line):
            name = canonicalize_name(entry.group(1))
            found[name] = (entry.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def named_by_pyproject() -> list[Requirement]:
    """The dependencies, the extras' and the build backend's requirements."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    texts = [
        *project["dependencies"],
        *(text for extra in project["optional-dependencies"].values() for text in extra),
        *pyproject["build-system"]["requires"],
    ]
    return [Requirement(text) for text in texts]


def test_every_dependency_pyproject_names_is_locked_with_hashes_at_an_allowed_version():
    lock = locked()
    assert lock, "requirements.lock lists no packages"
    for requirement in named_by_pyproject():
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement.name} is not in requirements.lock: bash scripts/lock"
        version, _ = lock[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock has {name}=={version}, pyproject wants {requirement}"
        )
    unhashed = [name for name, (_, hashes) in lock.items() if not hashes]
    assert not unhashed, f"locked without a sha256: {', '.join(unhashed)}"


def test_the_virtualenv_holds_exactly_the_lock():
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("not running in scripts/bootstrap's .venv (e.g. scripts/test-deps)")
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    installed.pop("galley")
    installed.pop("pip")
    assert installed == {name: version for name, (version, _) in locked().items()}
