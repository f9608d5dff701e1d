"""What a component declaration is made of: artifacts, certificates, config files, a unit.

A `Component` is declared once, in its own room (``galley/components/<name>.py``), and
everything else reads it: the deploy engine installs its artifacts, certificates, configs and
unit; validation checks the group data its artifacts need; the fleet report lists its units,
versions and certificates; the Vault bootstrap writes the roles its certificates are signed
with; the lab's mirror builds its artifacts under the same URLs. The paths a restart watches
are derived here (`Component.watched`), never typed twice.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.host import Host

from galley.downloads import checksums_field
from galley.etcd.access import EtcdUser
from galley.facts.managed import fact_name
from galley.host.observed import Wanted
from galley.host.release import active_paths, marker_path, release_links
from galley.host.restarts import reload_stamp
from galley.settings import Setting, span_seconds
from galley.vault.kv import KvSecret
from galley.vault.pki import Identity, RoleSpec

# Where each download base comes from: ``{github}/...`` -> group data ``github_base_url``.
BASE_URL_KEYS: Mapping[str, str] = {"github": "github_base_url", "dl_k8s": "dl_k8s_base_url"}
# The same bases upstream, without scheme: the lab's mirror keeps files under these.
UPSTREAM_HOSTS: Mapping[str, str] = {"github": "github.com", "dl_k8s": "dl.k8s.io"}
SYSTEMD_DIR = "/etc/systemd/system"
# Where `Config.template` and `Unit.template` paths start.
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class Artifact:
    """A release download: where it comes from, what it holds, where its sha256 is published.

    ``url`` and ``checksum_url`` are patterns with ``{github}``/``{dl_k8s}`` (the download
    bases), ``{version}`` and ``{arch}``; ``checksum_url`` names upstream's published checksum
    file (one digest, or a ``sha256sum`` list naming the file). ``key`` names the group data
    (``<version_key>`` and the catalogue's ``<key>`` entry); ``release`` is the directory
    under /opt/galley and the name `galley.facts.InstalledReleases` reads.
    """

    key: str
    release: str
    url: str
    checksum_url: str
    binaries: tuple[str, ...]
    version_key: str = ""  # default: <key>_version
    archive: bool = True
    strip_components: int = 1
    bin_dir: str = "/usr/local/bin"
    link_names: Mapping[str, str] = field(default_factory=dict)

    @property
    def version_field(self) -> str:
        """The group-data key holding the version to install."""
        return self.version_key or f"{self.key}_version"

    @property
    def checksums_field(self) -> str:
        """The group-data key that may replace the catalogue's checksums."""
        return checksums_field(self.key)

    def url_for(self, version: str, arch: str, bases: Mapping[str, str]) -> str:
        """The download URL of ``version`` for ``arch`` below ``bases``."""
        return self.url.format(version=version, arch=arch, **_bases(bases))

    def checksum_url_for(self, version: str, arch: str, bases: Mapping[str, str]) -> str:
        """Where upstream publishes the sha256 of `url_for`."""
        return self.checksum_url.format(version=version, arch=arch, **_bases(bases))

    def binaries_for(self, arch: str) -> list[str]:
        """The binaries' file names for ``arch`` (a name may hold ``{arch}``)."""
        return [binary.format(arch=arch) for binary in self.binaries]

    def bases_of(self, data: Any) -> dict[str, str]:
        """The download bases from host or group data (``github_base_url`` ...)."""
        return {name: str(data.get(key) or "") for name, key in BASE_URL_KEYS.items()}

    def link_names_for(self, arch: str) -> dict[str, str]:
        """``link_names`` with each binary's name for ``arch``."""
        return {name.format(arch=arch): link for name, link in self.link_names.items()}

    def active_paths(self) -> list[str]:
        """The links a process running this artifact depends on (see `active_paths`)."""
        return [
            path
            for binary in self.binaries
            for path in active_paths(
                self.release, self.link_names.get(binary, binary), bin_dir=self.bin_dir
            )
        ]


def _bases(bases: Mapping[str, str]) -> dict[str, str]:
    return {name: str(bases.get(name, "")).rstrip("/") for name in BASE_URL_KEYS}


def github_artifact(
    key: str, project: str, filename: str, checksums: str, binaries: tuple[str, ...], **options
) -> Artifact:
    """An asset of a GitHub release of ``project``: ``filename`` (a pattern), its sha256 in
    the release's ``checksums`` file (``{file}`` stands for the asset's name). ``release``
    defaults to ``key`` with "-" for "_"; ``options`` are `Artifact`'s other fields."""
    base = f"{{github}}/{project}/releases/download/v{{version}}/"
    options.setdefault("release", key.replace("_", "-"))
    return Artifact(
        key=key,
        url=base + filename,
        checksum_url=base + checksums.format(file=filename),
        binaries=binaries,
        **options,
    )


# The lifetime of every client identity on the hosts (`Cert.lifetime_key`).
CLIENT_CERT_TTL = "client_cert_ttl"
# Every group-data key a certificate's lifetime comes from.
CERT_TTL_KEYS = ("etcd_cert_ttl", "kubernetes_cert_ttl", CLIENT_CERT_TTL)


@dataclass(frozen=True)
class Cert:
    """A key and Vault-signed certificate on a host: ``<directory>/<stem>.key`` and ``.crt``.

    ``identity`` gives the names for a host; ``when`` limits the certificate to hosts it is
    true for (e.g. one flannel mode). ``ca_path`` is where the signing mount's CA goes.
    ``reloaded``: the unit picks a renewed certificate up by itself (or never reads it), so a
    new certificate or key needs no restart; a new CA still does. ``ttl_key`` names the group
    data of its lifetime; by default a client identity (a role that serves nothing) lives
    ``client_cert_ttl`` (48 h: kube-apiserver reads no CRL, so only a short life bounds a copied
    one), any other ``kubernetes_cert_ttl``. ``etcd_user``: an etcd client identity's user,
    what etcd lets it touch (`galley.etcd.access`); None for any other certificate.
    """

    stem: str
    directory: str
    mount: str
    role: RoleSpec
    identity: Callable[[Host], Identity]
    ca_path: str
    owner: str = "root"
    group: str = "root"
    ttl_key: str | None = None
    when: Callable[[Host], bool] = lambda host: True
    reloaded: bool = False
    etcd_user: EtcdUser | None = None

    @property
    def lifetime_key(self) -> str:
        """The group-data key of its lifetime (``ttl_key``, else by its role's kind)."""
        if self.ttl_key is not None:
            return self.ttl_key
        return CLIENT_CERT_TTL if not self.role.server else "kubernetes_cert_ttl"

    @property
    def key_path(self) -> str:
        """Where the private key lives (made on the host, never leaves it)."""
        return f"{self.directory}/{self.stem}.key"

    @property
    def cert_path(self) -> str:
        """Where the signed certificate lives."""
        return f"{self.directory}/{self.stem}.crt"

    def paths(self) -> list[str]:
        """Every file of this certificate a service reads."""
        return [self.cert_path, self.key_path, self.ca_path]

    def restart_paths(self) -> list[str]:
        """The files of this certificate whose change restarts the unit reading it."""
        return [self.ca_path] if self.reloaded else self.paths()


@dataclass(frozen=True)
class Crl:
    """The certificate revocation list of Vault's ``mount``, which the component's program
    reads at every TLS handshake it accepts (so a new list needs no restart): at ``path``
    (0644), checked against the mount's CA at ``ca_path``. The deploy writes it; the host's
    renewal timer fetches it again at every run, so a revocation takes effect within one
    renewal interval."""

    path: str
    mount: str
    ca_path: str


@dataclass(frozen=True)
class Config:
    """A file a component reads, rendered from ``templates/<template>`` (None: written by the
    component's own code, e.g. a secret from Vault). A change to a ``reload`` file is applied
    with ``systemctl reload`` (the unit keeps running), to any other with a restart, except to
    a file that is not ``watched``: one the unit reads only on some starts (etcd's
    bootstrap.env, read only with an empty data dir), whose change alone restarts nothing."""

    path: str
    template: str | None = None
    mode: str = "644"
    owner: str = "root"
    group: str = "root"
    when: Callable[[Host], bool] = lambda host: True
    reload: bool = False
    watched: bool = True


RBAC_API = "rbac.authorization.k8s.io/v1"
# Where each kind of cluster-wide RBAC object lives in the API.
RBAC_COLLECTIONS: Mapping[str, str] = {
    "ClusterRole": f"/apis/{RBAC_API}/clusterroles",
    "ClusterRoleBinding": f"/apis/{RBAC_API}/clusterrolebindings",
}


def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    """A ClusterRole of ``rules``."""
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }


def cluster_role_binding(name: str, role: str, kind: str, subject: str) -> dict[str, Any]:
    """A ClusterRoleBinding of ClusterRole ``role`` to the User or Group ``subject``."""
    group = "rbac.authorization.k8s.io"
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": group, "kind": kind, "name": subject}],
    }


@dataclass(frozen=True)
class Directory:
    """A directory a component needs before its files are written: ``path``, or where its
    ``setting`` (when declared) says."""

    path: str
    mode: str = "755"
    owner: str = "root"
    group: str = "root"
    setting: Setting | None = None

    def path_on(self, host: Host) -> str:
        """Where the directory is on ``host``."""
        return str(self.setting.of(host.data)) if self.setting else self.path


# The inventory groups a cluster's hosts are in (each component runs on one, or on all).
MONITORING = "monitoring"
CLUSTER_GROUPS = ("etcd", "control_plane", "workers", MONITORING)
# The groups a cluster may leave empty: their components then run nowhere.
OPTIONAL_GROUPS = (MONITORING,)
# Who may connect to a `Port`, besides inventory groups: the CIDR lists in group data
# (`galley.components.host_firewall` declares those settings).
OPERATORS = "operators"
LOAD_BALANCERS = "load_balancers"


@dataclass(frozen=True)
class Port:
    """A port a component listens on, and who may connect to it: ``sources`` are inventory
    groups (their hosts' private addresses) or `OPERATORS` / `LOAD_BALANCERS` (CIDRs from
    group data). ``number`` is the port, or how a host's data gives it; ``when`` limits it to
    hosts it is true for. The host firewall opens exactly these
    (`galley.components.host_firewall`)."""

    number: int | Callable[[Host], int]
    sources: tuple[str, ...]
    protocol: str = "tcp"
    when: Callable[[Host], bool] = lambda host: True

    def on(self, host: Host) -> int:
        """The port's number on ``host``."""
        return int(self.number(host) if callable(self.number) else self.number)


@dataclass(frozen=True)
class Metrics:
    """Prometheus metrics a component serves on its hosts' private address: the scrape ``job``
    they belong to, the ``port`` (or how a host's data gives it) and how they are reached:
    ``mount`` None for plain HTTP, else the PKI mount ("etcd", "k8s") whose CA signed the
    serving certificate and of which Prometheus presents a client identity. The monitoring
    hosts scrape it (`galley.components.monitoring`) and the host firewall lets them in."""

    job: str
    port: int | Callable[[Host], int]
    mount: str | None = None
    when: Callable[[Host], bool] = lambda host: True

    def on(self, host: Host) -> int:
        """The port's number on ``host``."""
        return self.opened().on(host)

    def opened(self) -> Port:
        """The port the monitoring hosts scrape."""
        return Port(self.port, (MONITORING,), when=self.when)


# (state, host, unit) -> None: restart or wait with the component's own health gate.
UnitHook = Callable[..., None]


@dataclass(frozen=True)
class Unit:
    """A systemd unit rendered from ``templates/<template>``.

    ``restart`` restarts it (default: plain ``systemctl restart``), ``serial`` one host at a
    time; ``wait`` runs after its first start, e.g. until it is healthy; ``before_start`` runs
    just before it is started, on the hosts where the component's ``configure`` says it is due
    (`Configured.before_start`), one host at a time (e.g. etcd's join of a new member).
    """

    name: str
    template: str
    restart: UnitHook | None = None
    serial: bool = False
    wait: UnitHook | None = None
    before_start: UnitHook | None = None

    @property
    def path(self) -> str:
        """Where galley writes the unit file."""
        return posixpath.join(SYSTEMD_DIR, f"{self.name}.service")


def first_run_seconds(interval: object) -> int:
    """When a galley timer first runs after it starts (a deploy, a boot): one ``interval``
    (a systemd time span), at most a minute."""
    return min(span_seconds(interval) or 60, 60)


@dataclass(frozen=True)
class Timer:
    """A job a systemd timer runs on the component's hosts: ``script`` (a `Config`), the
    oneshot ``<name>.service`` and ``<name>.timer`` from ``templates/<service>`` and
    ``templates/<timer>``, all rendered with ``variables(host)``. A changed timer file
    restarts the timer (its schedule starts over); the script and service take effect at the
    next run."""

    name: str
    script: Config
    service: str
    timer: str
    variables: Callable[[Host], Mapping[str, Any]] = lambda host: {}

    @property
    def timer_unit(self) -> str:
        """The timer's unit name."""
        return f"{self.name}.timer"

    def unit_files(self) -> dict[str, str]:
        """The service's and the timer's unit file paths, each with its template."""
        base = posixpath.join(SYSTEMD_DIR, self.name)
        return {f"{base}.service": self.service, f"{base}.timer": self.timer}


@dataclass(frozen=True)
class Configured:
    """What a component's ``configure`` added: the operation writing each of its config files
    (by path: a restart watches exactly the files its unit reads), the variables its unit
    template needs, and whether its unit's ``before_start`` hook is due on this host (decided
    from facts, so ``--dry`` lists it exactly when it will run)."""

    files: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    before_start: bool = False


@dataclass(frozen=True)
class Component:
    """One thing galley installs and runs on the hosts of ``group`` (None: on every host, with
    the last phase a run deploys there).

    ``configure(host, context)`` writes its config files (`Config` entries) and returns
    `Configured`; ``context`` has the run's ``vault`` factory.
    ``settings`` are the group-data keys it reads, each with its default and kind (validated
    from there); ``checks`` name the rules across keys its group data must pass
    (`galley.inventory.validate.RULES`).
    ``watch`` lists files other components write that its unit reads too.
    ``timers`` are jobs systemd runs on a schedule beside its unit (started after it).
    ``crls`` are the revocation lists its program checks (`Crl`).
    ``packages`` are Debian packages it needs; ``when`` limits it to the hosts of its group
    it is true for. ``secrets`` are the KV values its deploy reads (`KvSecret`); ``rbac`` the
    cluster RBAC objects its identities need, which `galley admin credentials` keeps (only the
    operator's identity may write RBAC). ``ports`` are what it listens on beyond loopback and
    who may connect (the host firewall's rules); ``metrics`` what Prometheus scrapes on it
    (their ports open to the monitoring hosts).
    """

    name: str
    group: str | None  # None: every host galley deploys
    phase: str
    artifacts: tuple[Artifact, ...] = ()
    certs: tuple[Cert, ...] = ()
    crls: tuple[Crl, ...] = ()
    secrets: tuple[KvSecret, ...] = ()
    rbac: tuple[Mapping[str, Any], ...] = ()
    ports: tuple[Port, ...] = ()
    metrics: tuple[Metrics, ...] = ()
    configs: tuple[Config, ...] = ()
    unit: Unit | None = None
    timers: tuple[Timer, ...] = ()
    directories: tuple[Directory, ...] = ()
    user: str | None = None  # a system user it runs as, with ``user_home``
    user_home: str | None = None
    watch: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    settings: tuple[Setting, ...] = ()
    configure: Callable[[Host, Mapping[str, Any]], Configured] | None = None
    packages: tuple[str, ...] = ()
    # Units of its ``packages`` kept masked: galley runs the program under its own unit.
    masked_units: tuple[str, ...] = ()
    when: Callable[[Host], bool] = lambda host: True
    # Facts (argument-free) its ``configure`` reads: read with the host's managed state, in
    # the same round trip (`galley.host.observed.fact`).
    reads: tuple[type[FactBase], ...] = ()

    def runs_on(self, host: Host) -> bool:
        """Whether this component runs on ``host``."""
        return (self.group is None or self.group in host.groups) and self.when(host)

    def setting(self, key: str) -> Setting:
        """The declared setting ``key`` (KeyError if it is not declared)."""
        for setting in self.settings:
            if setting.key == key:
                return setting
        raise KeyError(f"{self.name} declares no setting {key}")

    def certs_of(self, host: Host) -> list[Cert]:
        """The certificates this component needs on ``host``."""
        return [cert for cert in self.certs if cert.when(host)]

    def certs_by_stem(self, host: Host) -> dict[str, Cert]:
        """`certs_of` by stem: templates name a certificate's paths by its stem
        (``{{ certs.member.cert_path }}``), never spelling them again."""
        return {cert.stem: cert for cert in self.certs_of(host)}

    def configs_of(self, host: Host) -> list[Config]:
        """The config files this component reads on ``host``."""
        return [config for config in self.configs if config.when(host)]

    def config(self, path: str) -> Config:
        """The declared config at ``path`` (KeyError if it is not declared)."""
        for config in self.configs:
            if config.path == path:
                return config
        raise KeyError(f"{self.name} declares no config {path}")

    def wanted(self, host: Host) -> Wanted:
        """Everything the engine's decisions for this component on ``host`` rest on, read
        once per run (`galley.host.observed`): directories, files, release links, keys and
        certificates, the files its restarts watch, and its units."""
        wanted = Wanted(
            paths={d.path_on(host) for d in self.directories},
            facts={fact_name(fact) for fact in self.reads},
        )
        wanted.files(config.path for config in self.configs_of(host))
        for timer in self.timers:
            wanted.files([timer.script.path, *timer.unit_files()])
            wanted.units.add(timer.timer_unit)
        for artifact in self.artifacts:
            version, arch = str(host.data.get(artifact.version_field)), host.data.arch
            wanted.files([marker_path(artifact.release, version)])
            wanted.paths.update(
                release_links(
                    artifact.release,
                    version,
                    artifact.binaries_for(arch),
                    bin_dir=artifact.bin_dir,
                    link_names=artifact.link_names_for(arch),
                )
            )
        for cert in self.certs_of(host):
            wanted.keys.add(cert.key_path)
            wanted.certs.add(cert.cert_path)
            wanted.files([cert.ca_path])
        wanted.files(crl.path for crl in self.crls)
        wanted.units.update(self.masked_units)
        if self.unit is not None:
            wanted.files([self.unit.path])
            wanted.units.add(self.unit.name)
            wanted.paths.update(self.watched(host))
            if reloaded := self.reloaded_by(host):
                wanted.paths.update([*reloaded, reload_stamp(self.unit.name)])
        return wanted

    def watched(self, host: Host) -> list[str]:
        """The files this component's unit runs from on ``host``: one newer than the unit's
        start means it must restart. Derived from the declaration."""
        if self.unit is None:
            return []
        paths = [self.unit.path]
        if self.artifacts:
            paths += self.artifacts[0].active_paths()
        paths += [
            config.path for config in self.configs_of(host) if config.watched and not config.reload
        ]
        paths += [path for cert in self.certs_of(host) for path in cert.restart_paths()]
        paths += list(self.watch)
        return list(dict.fromkeys(paths))

    def reloaded_by(self, host: Host) -> list[str]:
        """The files whose change this component's unit takes with a reload (`Config.reload`)."""
        if self.unit is None:
            return []
        return [config.path for config in self.configs_of(host) if config.watched and config.reload]


@dataclass(frozen=True)
class Phase:
    """A step of a whole-cluster run: every host finishes it before the next starts.

    ``prepare`` runs first on every host (e.g. flannel's network config in etcd), ``finish``
    last, once its components run (e.g. etcd's users and authorisation).
    """

    name: str
    components: tuple[Component, ...]
    prepare: Callable[[], None] | None = None
    finish: Callable[[], None] | None = None
