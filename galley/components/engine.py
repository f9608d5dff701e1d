"""Deploy components on a host from their declarations (`galley.components.model`).

For the components of a phase that run on the current host, in this order: Debian packages,
system users and directories, every artifact (downloaded and verified before activation),
every certificate (one round trip reads them all), each component's own ``configure`` (its
config files), its unit file, then systemd: reload, start and enable each unit, wait after a
first start, and a durable restart when the files it runs from (`Component.watched`) are newer
than its start, or a reload when only files it reloads (`Component.reloaded_by`) are.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import hvac
from pyinfra import host, state
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.util import get_template
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files, python, server, systemd

from galley.components.model import (
    SYSTEMD_DIR,
    TEMPLATES,
    Artifact,
    Cert,
    Component,
    Config,
    Configured,
)
from galley.downloads import sha256_of
from galley.host.release import DEFAULT_STALL_SECONDS, Release, install_release
from galley.host.rendered import read_rendered, unchanged
from galley.host.restarts import reload_when_pending, restart_when_pending
from galley.host.tls import HostCert, host_certificates
from galley.pki import mount_path


def render(config: Config, **variables) -> OperationMeta:
    """Write the declared ``config`` from its template with ``variables``: no operation when
    the host's file, read by `read_rendered`, already holds it (content, mode, owner)."""
    src = str(TEMPLATES / str(config.template))
    # As files.template renders it (host, state and inventory available to the template).
    context = {"host": host, "state": state, "inventory": state.inventory, **variables}
    found = unchanged(config, get_template(src).render(context))
    if found is not None:
        return found
    return files.template(
        name=config.path,
        src=src,
        dest=config.path,
        user=config.owner,
        group=config.group,
        mode=config.mode,
        **variables,
    )


def render_text(config: Config, **variables) -> str:
    """The declared ``config`` rendered here, as `render` would write it (for content that
    must not go through `files.template`, e.g. secrets)."""
    return get_template(str(TEMPLATES / str(config.template))).render(variables)


def install_artifact(artifact: Artifact, data) -> Release:
    """Install ``artifact`` at its group-data version, verified against the catalogue's sha256
    before it is activated."""
    version = data.get(artifact.version_field)
    arch = data.arch
    digest = sha256_of(data, artifact.key, version, arch)
    if digest is None:
        raise ValueError(f"no sha256 for {artifact.key} {version} on {arch}")
    return install_release(
        artifact.release,
        version,
        artifact.url_for(version, arch, artifact.bases_of(data)),
        digest,
        artifact.binaries_for(arch),
        bin_dir=artifact.bin_dir,
        strip_components=artifact.strip_components,
        archive=artifact.archive,
        link_names={name.format(arch=arch): link for name, link in artifact.link_names.items()},
        stall_seconds=data.get("download_stall_seconds") or DEFAULT_STALL_SECONDS,
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
                role=cert.role.name,
                owner=cert.owner,
                group=cert.group,
                ttl=data.get(cert.ttl_key),
            )
            for cert in certs
        ],
        vault=vault,
    )


def run_units(
    components: Sequence[Component],
    unit_files: Mapping[str, OperationMeta],
    written: Mapping[str, Sequence[OperationMeta]],
    before_start: Collection[str] = (),
) -> None:
    """Reload systemd if a unit file changed; start and enable each unit, in order; wait after
    a first start; restart (durably, see `restart_when_pending`) when its files changed.

    ``written`` maps each path to the operations of this run that write it: a unit's restart
    depends on exactly the operations writing the files it watches (so ``--dry`` lists
    exactly the restarts the run will do). ``before_start`` names the units whose
    `Unit.before_start` hook is due: it runs just before the unit is started, one host at a
    time."""
    systemd.daemon_reload(
        name="systemd daemon-reload",
        _if=lambda: any(unit.did_change() for unit in unit_files.values()),
    )
    for component in host.loop(components):
        unit = component.unit
        if unit.before_start is not None and unit.name in before_start:
            python.call(
                name=f"Before starting {unit.name}",
                function=unit.before_start,
                unit=unit.name,
                _serial=True,
            )
        started = systemd.service(
            name=f"{unit.name} started and enabled", service=unit.name, running=True, enabled=True
        )
        if unit.wait is not None:
            python.call(
                name=f"Wait for {unit.name} to be healthy",
                function=unit.wait,
                unit=unit.name,
                _if=started.did_change,
            )
        options: dict = {"serial": unit.serial}
        if unit.restart is not None:
            options["function"] = unit.restart
        watched = component.watched(host)
        changes = [op for path in watched for op in written.get(path, ())]
        restart_when_pending(unit.name, watched, changes, started, **options)
        if reloaded := component.reloaded_by(host):
            changes = [op for path in reloaded for op in written.get(path, ())]
            reload_when_pending(unit.name, reloaded, changes, started)


def _prepare(components: Sequence[Component]) -> None:
    packages = [package for c in components for package in c.packages]
    if packages:
        installed = host.get_fact(DebPackages)
        if any(package not in installed for package in packages):
            apt.update(name="apt update (packages to install)")
        apt.packages(name=f"packages {', '.join(packages)}", packages=packages)
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
    directories = {d.path_on(host): d for c in components for d in c.directories}
    for path, directory in host.loop(directories.items()):
        files.directory(
            name=f"directory {path}",
            path=path,
            user=directory.owner,
            group=directory.group,
            mode=directory.mode,
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
        systemd.daemon_reload(
            name=f"systemd daemon-reload ({unit.name} removed)",
            _if=lambda removed=removed: removed[0].did_change(),
        )


def deploy_components(components: Sequence[Component], vault: Callable[[], hvac.Client]) -> None:
    """Install, configure and (re)start ``components`` on this host (those of its groups).

    Call it inside a pyinfra deploy (`galley.converge` names one per phase)."""
    retired = [c for c in components if c.group in host.groups and not c.runs_on(host)]
    if retired:
        _retire(retired)
    mine = [c for c in components if c.runs_on(host)]
    if not mine:
        return
    _prepare(mine)
    read_rendered(path for component in mine for path in component.rendered_paths(host))
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
    context = {"vault": vault}
    unit_files: dict[str, OperationMeta] = {}
    before_start: list[str] = []
    for component in host.loop(mine):
        configured = component.configure(host, context) if component.configure else Configured()
        if configured.before_start and component.unit is not None:
            before_start.append(component.unit.name)
        for path, operation in configured.files.items():
            wrote(path, operation)
        if component.unit is not None:
            unit = component.unit
            variables = {"cluster_name": host.data.cluster_name, **configured.variables}
            unit_files[unit.name] = render(Config(unit.path, unit.template), **variables)
            wrote(unit.path, unit_files[unit.name])
    timer_files: dict[str, OperationMeta] = {}
    for timer in host.loop([timer for c in mine for timer in c.timers]):
        variables = {"cluster_name": host.data.cluster_name, **timer.variables(host)}
        render(timer.script, **variables)
        for path, template in timer.unit_files().items():
            unit_files[path] = render(Config(path, template), **variables)
        timer_files[timer.timer_unit] = unit_files[f"{SYSTEMD_DIR}/{timer.timer_unit}"]
    run_units([c for c in mine if c.unit], unit_files, written, before_start)
    start_timers(timer_files)


def start_timers(timer_files: Mapping[str, OperationMeta]) -> None:
    """Start and enable each timer (after the units: a job runs only beside its unit);
    restart one whose timer file changed, so its schedule starts over from the new one."""
    for timer, written in host.loop(timer_files.items()):
        started = systemd.service(
            name=f"{timer} started and enabled", service=timer, running=True, enabled=True
        )
        systemd.service(
            name=f"{timer} restarted (its schedule changed)",
            service=timer,
            restarted=True,
            _if=lambda written=written, started=started: (
                written.did_change() and not started.did_change()
            ),
        )
