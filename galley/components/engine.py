"""Deploy components on a host from their declarations (`galley.components.model`).

For the components of a phase that run on the current host, in this order: Debian packages,
system users and directories, every artifact (downloaded and verified before activation; a
converge has downloaded them all before its first phase, `fetch_artifacts`), every
certificate (one round trip reads them all), the revocation lists its programs check (as Vault
serves them), each component's own ``configure`` (its config
files), its unit file, then systemd: enable the units (one ``systemctl enable --no-reload``),
one reload, start each unit, wait after a first start, and a durable restart when the files
it runs from (`Component.watched`) are newer than its start, or a reload when only files it
reloads (`Component.reloaded_by`) are.

Each step asks what the host had when the run began (`galley.host.observed`, read in one round
trip from `Component.wanted`): whatever is already as declared gets no operation at all, and
what differs gets an operation that does not read the host again (a file is one upload and
one command, `galley.host.uploads`; a unit start is ``systemctl start``).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

import hvac
from pyinfra import host, state
from pyinfra.api import operation
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.util import get_template
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.systemd import SystemdEnabled
from pyinfra.operations import files, python, server, systemd

from galley.components.model import (
    SYSTEMD_DIR,
    TEMPLATES,
    Artifact,
    Cert,
    Component,
    Config,
    Configured,
    Crl,
    Directory,
)
from galley.downloads import sha256_of
from galley.host import observed
from galley.host.release import (
    DEFAULT_STALL_SECONDS,
    Download,
    Release,
    fetch_releases,
    install_download,
)
from galley.host.restarts import reload_when_pending, restart_when_pending
from galley.host.tls import HostCert, host_certificates
from galley.host.uploads import keep_file
from galley.vault.client import once_per_client
from galley.vault.pki import mount_path, read_crl
from galley.vault.renewal import host_role


def render(config: Config, name: str | None = None, **variables) -> OperationMeta:
    """Write the declared ``config`` from its template with ``variables`` (and the ``host``,
    ``state`` and ``inventory`` of the run): no operation when the host's file already holds
    it, with the declared mode and owner (`galley.host.observed`)."""
    text = render_text(config, host=host, state=state, inventory=state.inventory, **variables)
    return write(config, text, name)


def write(config: Config, text: str, name: str | None = None) -> OperationMeta:
    """Put ``text`` at ``config.path`` with its mode and owner (`galley.host.uploads.keep_file`:
    no operation when the host's file already holds it)."""
    path = config.path
    return keep_file(name or path, path, text, config.owner, config.group, config.mode)


def directories(wanted: Mapping[str, Directory]) -> None:
    """Make each directory (its path: its declaration) with its mode and owner: those the host
    has otherwise all in one operation (no operation when all are as declared)."""
    differing = []
    for path, declared in wanted.items():
        if observed.directory_is(path, declared.owner, declared.group, declared.mode):
            continue
        if not observed.was_read(path):  # nothing to compare with: the operation checks
            files.directory(
                name=f"directory {path}",
                path=path,
                user=declared.owner,
                group=declared.group,
                mode=declared.mode,
            )
            continue
        differing.append((path, declared))
    if differing:
        paths = ", ".join(path for path, _ in differing)
        _directories(name=f"director{'ies' if len(differing) > 1 else 'y'} {paths}", made=differing)


@operation()
def _directories(made: Sequence[tuple[str, Directory]]) -> Iterator[str]:
    # install -d also sets the mode and owner of a directory that exists.
    yield " && ".join(
        f"install -d -m {d.mode} -o {shlex.quote(d.owner)} -g {shlex.quote(d.group)} "
        + shlex.quote(path)
        for path, d in made
    )


def render_text(config: Config, **variables) -> str:
    """The declared ``config`` rendered here with ``variables``, as `render` writes it (for
    content that must not go through `write`, e.g. secrets)."""
    return get_template(str(TEMPLATES / str(config.template))).render(variables)


def download_of(artifact: Artifact, data) -> Download:
    """What ``artifact`` downloads at its group-data version: its URL and the catalogue's
    sha256 for the host's architecture."""
    version = data.get(artifact.version_field)
    arch = data.arch
    digest = sha256_of(data, artifact.key, version, arch)
    if digest is None:
        raise ValueError(f"no sha256 for {artifact.key} {version} on {arch}")
    return Download(
        artifact.release,
        version,
        artifact.url_for(version, arch, artifact.bases_of(data)),
        digest,
        tuple(artifact.binaries_for(arch)),
        strip_components=artifact.strip_components,
        archive=artifact.archive,
        stall_seconds=data.get("download_stall_seconds") or DEFAULT_STALL_SECONDS,
    )


def install_artifact(artifact: Artifact, data) -> Release:
    """Install ``artifact`` at its group-data version, verified against the catalogue's sha256
    before it is activated (only activated when `fetch_artifacts` downloaded it already)."""
    return install_download(
        download_of(artifact, data),
        bin_dir=artifact.bin_dir,
        link_names=artifact.link_names_for(data.arch),
    )


def fetch_artifacts(components: Sequence[Component]) -> None:
    """Download and verify, in one operation, every artifact of ``components`` this host runs
    and does not have yet (`galley.host.release.fetch_releases`): before any phase, so a bad
    checksum or an unreachable mirror stops the run before anything changed."""
    fetch_releases(
        [download_of(a, host.data) for c in components if c.runs_on(host) for a in c.artifacts]
    )


def install_certificates(
    target: Host, certs: Sequence[Cert], vault: Callable[[], hvac.Client]
) -> dict[str, list[OperationMeta]]:
    """Keep each certificate (key made on the host) signed by Vault; returns the operations
    by the path they write."""
    data = target.data
    return host_certificates(
        name="Certificates",
        certs=[
            HostCert(
                key_path=cert.key_path,
                cert_path=cert.cert_path,
                ca_path=cert.ca_path,
                identity=cert.identity(target),
                mount=mount_path(data.cluster_name, cert.mount),
                role=host_role(target.name, cert.stem),
                owner=cert.owner,
                group=cert.group,
                ttl=data.get(cert.lifetime_key),
            )
            for cert in certs
        ],
        vault=vault,
    )


def install_crls(crls: Sequence[Crl], vault: Callable[[], hvac.Client]) -> dict[str, OperationMeta]:
    """Write each revocation list as Vault serves it now (read once per run and mount); no
    unit restarts for it (its program reads it at every handshake). Returns the operations by
    path."""
    if not crls:
        return {}
    client, cluster = vault(), host.data.cluster_name
    written = {}
    for crl in crls:
        mount = mount_path(cluster, crl.mount)
        pem = once_per_client(client, ("crl", mount), lambda mount=mount: read_crl(client, mount))
        written[crl.path] = write(Config(crl.path), pem, f"revocation list {crl.path}")
    return written


def run_units(
    components: Sequence[Component],
    written: Mapping[str, Sequence[OperationMeta]],
    before_start: Collection[str] = (),
) -> None:
    """Start each unit, in order (enabled and systemd reloaded already: `enable_units`,
    `reload_systemd`); wait after a first start; restart (durably, see
    `restart_when_pending`) when its files changed.

    ``written`` maps each path to the operations of this run that write it: a unit's restart
    depends on exactly the operations writing the files it watches (so ``--dry`` lists
    exactly the restarts the run will do). ``before_start`` names the units whose
    `Unit.before_start` hook is due: it runs just before the unit is started, one host at a
    time."""
    for component in host.loop(components):
        unit = component.unit
        if unit.before_start is not None and unit.name in before_start:
            python.call(
                name=f"Before starting {unit.name}",
                function=unit.before_start,
                unit=unit.name,
                _serial=True,
            )
        started = start_unit(unit.name)
        due = only_if(lambda changed, started=started: changed(started), [started])
        if unit.wait is not None and due is not None:
            python.call(
                name=f"Wait for {unit.name} to be healthy",
                function=unit.wait,
                unit=unit.name,
                **due,
            )
        options: dict = {"serial": unit.serial}
        if unit.restart is not None:
            options["function"] = unit.restart
        watched = component.watched(host)
        restart_when_pending(unit.name, watched, _changes(watched, written), started, **options)
        if reloaded := component.reloaded_by(host):
            reload_when_pending(unit.name, reloaded, _changes(reloaded, written), started)


def _changes(
    paths: Collection[str], written: Mapping[str, Sequence[OperationMeta]]
) -> list[OperationMeta]:
    """This run's operations that may change what is in ``paths`` (not a mode or owner)."""
    return [op for path in paths for op in written.get(path, ()) if observed.changes_content(op)]


def only_if(
    test: Callable[[Callable[[OperationMeta], bool]], bool], operations: Collection[OperationMeta]
) -> dict | None:
    """The arguments that run an operation only when ``test(changed)`` holds, ``changed(op)``
    telling whether one of ``operations`` (of this run) changes anything; None when it does
    not hold (add no operation). Decided now when that is known: every operation evaluated
    up front (``--dry``, or a run without ``-y``), so the plan lists exactly what the run will
    do, or all of ``operations`` settled; else at execution time (``_if``)."""
    if state.should_check_for_changes():
        return {} if test(lambda operation: operation.will_change) else None
    if all(observed.is_settled(operation) for operation in operations):
        return {} if test(lambda operation: False) else None
    return {"_if": lambda: test(lambda operation: operation.did_change())}


def reload_systemd(name: str, changes: Collection[OperationMeta]) -> None:
    """``systemctl daemon-reload`` once any of ``changes`` (unit files written, units enabled)
    changed (no operation when all are settled)."""
    due = only_if(lambda changed: any(changed(change) for change in changes), changes)
    if due is not None:
        systemd.daemon_reload(name=name, **due)


def enable_units(units: Sequence[str]) -> OperationMeta:
    """Enable those of ``units`` not enabled yet, all in one ``systemctl enable --no-reload``;
    pass the result to `reload_systemd` (a plain ``systemctl enable`` reloads systemd by
    itself, once per unit: each reload re-reads every unit and runs every generator)."""
    missing = [unit for unit in units if not observed.unit_enabled(unit)]
    if not missing:
        return observed.settled("units enabled")
    read = all(observed.unit_was_read(unit) for unit in missing)
    return _enabled(name=f"{', '.join(missing)} enabled", units=missing, checked=read)


def _unit_name(unit: str) -> str:
    return unit if "." in unit else f"{unit}.service"


@operation()
def _enabled(units: Sequence[str], checked: bool = False) -> Iterator[str]:
    missing = list(units)
    if not checked:  # not read disabled while preparing: ask systemd now
        enabled = host.get_fact(SystemdEnabled, services=[_unit_name(unit) for unit in units])
        missing = [unit for unit in units if not enabled.get(_unit_name(unit))]
    if not missing:
        host.noop(f"{', '.join(units)} enabled already")
        return
    yield "systemctl enable --no-reload " + " ".join(shlex.quote(unit) for unit in missing)


def start_unit(unit: str) -> OperationMeta:
    """Start ``unit`` (settled when it is active already; `enable_units` enables it). A unit
    read inactive while preparing is started without pyinfra's `SystemdStatus` (a
    ``systemctl show --all`` of every unit on the host, at every start)."""
    if observed.unit_active(unit):
        return observed.settled(f"{unit} started")
    if observed.unit_was_read(unit):
        return _started(name=f"{unit} started", unit=unit)
    return systemd.service(name=f"{unit} started", service=unit, running=True)


@operation()
def _started(unit: str) -> Iterator[str]:
    yield f"systemctl start {shlex.quote(_unit_name(unit))}"


def install_packages(components: Sequence[Component]) -> None:
    """The Debian packages every component of ``components`` this host runs needs, in one
    operation before any phase (a package several phases need is installed once, and a dead
    apt proxy stops the run before anything changed), each packaged unit galley runs under
    its own masked before: it never starts."""
    mine = [c for c in components if c.runs_on(host)]
    for unit in host.loop([unit for c in mine for unit in c.masked_units]):
        if not observed.unit_masked(unit):
            # A unit that is not running needs no reload now: a package's own scripts reload
            # systemd before they start its unit, and the phases reload it after their units.
            how = "--now" if observed.unit_active(unit) else "--no-reload"
            server.shell(
                name=f"{unit}.service masked (galley runs the program under its own unit)",
                commands=[f"systemctl mask {how} {shlex.quote(unit)}.service"],
            )
    packages = list(dict.fromkeys(package for c in mine for package in c.packages))
    if packages:
        installed = host.get_fact(DebPackages)
        missing = [package for package in packages if package not in installed]
        if missing:
            _packages(name=f"packages {', '.join(missing)}", packages=missing)


def _prepare(components: Sequence[Component]) -> None:
    """Users and directories of ``components``."""
    users = {c.user: c.user_home for c in components if c.user}
    for user, home in host.loop(users.items()):
        server.user(
            name=f"{user} system user",
            user=user,
            system=True,
            home=home,
            shell="/usr/sbin/nologin",
            create_home=False,
        )
    directories({d.path_on(host): d for c in components for d in c.directories})


@operation()
def _packages(packages: Sequence[str]) -> Iterator[str]:
    # Read missing while preparing: the package lists, then the packages, in one command.
    # The lists only: translations are for people reading descriptions, and the
    # source-package cache (another copy of every list) for building packages. Only what a
    # package depends on: a server gets no recommended extras.
    quoted = " ".join(shlex.quote(package) for package in packages)
    yield (
        "apt-get update -o Acquire::Languages=none -o Dir::Cache::srcpkgcache= && "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        f"-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold {quoted}"
    )


def _retire(components: Sequence[Component]) -> None:
    """Take away what ``components`` left on a host of their group that no longer runs them
    (their ``when`` turned false, e.g. api-proxy once ``api_endpoint`` is set): the unit and
    timers are stopped and disabled, their unit files, scripts and config files removed."""
    for component in host.loop(components):
        if component.unit is None:
            continue
        unit = component.unit
        services = [*(timer.timer_unit for timer in component.timers), unit.name]
        paths = [unit.path, *(config.path for config in component.configs)]
        for timer in component.timers:
            paths += [timer.script.path, *timer.unit_files()]
        for service in host.loop(services):
            systemd.service(
                name=f"{service} stopped and disabled (not needed here)",
                service=service,
                running=False,
                enabled=False,
            )
        removed = [files.file(name=f"{path} removed", path=path, present=False) for path in paths]
        reload_systemd(f"systemd daemon-reload ({unit.name} removed)", removed[:1])


def deploy_components(components: Sequence[Component], vault: Callable[[], hvac.Client]) -> None:
    """Install, configure and (re)start ``components`` on this host (those it runs): their
    units and timers are enabled and systemd reloaded together, the timers started after the
    units. Call it inside a pyinfra deploy (`galley.converge` names one per phase)."""
    retired = [c for c in components if c.group in host.groups and not c.runs_on(host)]
    if retired:
        _retire(retired)
    mine = [c for c in components if c.runs_on(host)]
    if not mine:
        return
    _prepare(mine)
    written: dict[str, list[OperationMeta]] = {}

    def wrote(path: str, operation: OperationMeta) -> None:
        written.setdefault(path, []).append(operation)

    artifacts = [artifact for c in mine for artifact in c.artifacts]
    for artifact in host.loop(artifacts):
        release = install_artifact(artifact, host.data)
        for path in artifact.active_paths():
            wrote(path, release.activation)
    certs = list({cert.cert_path: cert for c in mine for cert in c.certs_of(host)}.values())
    for path, operations in install_certificates(host, certs, vault).items():
        written.setdefault(path, []).extend(operations)
    crls = list({crl.path: crl for c in mine for crl in c.crls}.values())
    for path, crl_written in install_crls(crls, vault).items():
        wrote(path, crl_written)
    context = {"vault": vault}
    unit_files: dict[str, OperationMeta] = {}
    before_start: list[str] = []
    for component in host.loop(mine):
        configured = component.configure(host, context) if component.configure else Configured()
        if configured.before_start and component.unit is not None:
            before_start.append(component.unit.name)
        for path, written_by in configured.files.items():
            wrote(path, written_by)
        if component.unit is not None:
            unit = component.unit
            variables = {
                "cluster_name": host.data.cluster_name,
                "certs": component.certs_by_stem(host),
                **configured.variables,
            }
            unit_files[unit.name] = render(Config(unit.path, unit.template), **variables)
            wrote(unit.path, unit_files[unit.name])
    timer_files: dict[str, OperationMeta] = {}
    for timer in host.loop([timer for c in mine for timer in c.timers]):
        variables = {"cluster_name": host.data.cluster_name, **timer.variables(host)}
        render(timer.script, **variables)
        for path, template in timer.unit_files().items():
            unit_files[path] = render(Config(path, template), **variables)
        timer_files[timer.timer_unit] = unit_files[f"{SYSTEMD_DIR}/{timer.timer_unit}"]
    enabled = enable_units([*(c.unit.name for c in mine if c.unit), *timer_files])
    reload_systemd("systemd daemon-reload", [*unit_files.values(), enabled])
    run_units([c for c in mine if c.unit], written, before_start)
    start_timers(timer_files)


def start_timers(timer_files: Mapping[str, OperationMeta]) -> None:
    """Start each timer (after the units: a job runs only beside its unit);
    restart one whose timer file changed, so its schedule starts over from the new one."""
    for timer, written in host.loop(timer_files.items()):
        started = start_unit(timer)
        due = only_if(
            lambda changed, written=written, started=started: (
                changed(written) and not changed(started)
            ),
            [written, started],
        )
        if due is not None:
            systemd.service(
                name=f"{timer} restarted (its schedule changed)",
                service=timer,
                restarted=True,
                **due,
            )
