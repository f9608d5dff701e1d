"""Converge the current host to the declared components, phase by phase (the deploy files'
one entry point).

pyinfra orders operations by a topological sort of each host's own sequence, so phases of
different groups would interleave across hosts; a join operation after each phase
(`galley.host.phases.phase_done`) makes every host finish it before the next starts anywhere.
Everything is validated, and Vault checked, before any operation runs (`galley.preflight`).
The first operations download and verify every release the host's phases install, on every
host at once (`galley.components.engine.fetch_artifacts`), and install every Debian package
they need (`install_packages`), so a wrong checksum, a dead mirror or a dead apt proxy stops
the run before any host has changed.
Every host the run deploys also runs what every host runs (`galley.components.EVERY_HOST`):
its host firewall before the first phase, on every host before any phase starts (a new etcd
peer or node finds its ports open on the others), and its certificate renewal with its last
phase's units.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError

from galley import pyinfra_speedups, tracebacks
from galley.components import EVERY_HOST, EVERY_HOST_FIRST, EVERY_HOST_LAST, phase
from galley.components.engine import deploy_components, fetch_artifacts, install_packages
from galley.host.observed import Wanted, observe
from galley.host.phases import phase_done
from galley.preflight import preflight


def converge(*phase_names: str) -> None:
    """Deploy the phases ``phase_names`` (e.g. ``"etcd"``, ``"control plane"``) on this host.

    A bug in galley's code stops the run in one line per host, its traceback in a log file
    (`galley.tracebacks`)."""
    pyinfra_speedups.install()
    tracebacks.install()
    try:
        _converge(phase_names)
    except PyinfraError:
        raise
    except Exception as exc:
        raise tracebacks.bug(host.name, exc) from exc


def _converge(phase_names: tuple[str, ...]) -> None:
    phases = [phase(name) for name in phase_names]
    here = [i for i, p in enumerate(phases) if any(c.runs_on(host) for c in p.components)]
    last = here[-1] if here else None
    components = [c for p in phases for c in p.components]
    every_host = list(EVERY_HOST) if here else []
    vault = preflight([*components, *EVERY_HOST])
    wanted = Wanted()
    for component in [*components, *every_host]:
        if component.runs_on(host):
            wanted.update(component.wanted(host))
    observe(wanted)
    # Every host downloads all its phases' releases first, together (one operation), and
    # installs all their packages.
    deploy("downloads")(fetch_artifacts)(components)
    deploy("packages")(install_packages)([*components, *every_host])
    # Called from its own line, before the phases' loop: pyinfra orders operations by the
    # lines they come from, so these run on every host before any phase starts.
    if here:
        deploy(", ".join(c.name for c in EVERY_HOST_FIRST))(deploy_components)(
            EVERY_HOST_FIRST, vault
        )
    for index, current in enumerate(host.loop(phases)):
        if current.prepare is not None:
            current.prepare()
        deployed = [*current.components, *(EVERY_HOST_LAST if index == last else ())]
        deploy(current.name)(deploy_components)(deployed, vault)
        if current.finish is not None:
            current.finish()
        if index < len(phases) - 1:
            phase_done(name=f"{current.name} done on all hosts", phase=current.name)
