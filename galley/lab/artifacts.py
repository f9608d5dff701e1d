"""Build the lab's release artifacts into a mirror cache laid out like upstream (host + path).

Deploys download ``<base>/<upstream path>``: the base is ``https://`` in production and the lab
mirror (galley.lab.mirror) in the lab, so both use the same relative path. Next to each
artifact lies ``<file>.sha256`` in sha256sum format. The lab has no access to upstream release
downloads, so artifacts are built here: Kubernetes' server binaries and flanneld from their
upstream Go modules (galley.lab.gobuild), etcd, containerd, runc, the CNI plugins and kubectl
repacked from Debian's packages with the upstream layout (a tarball, or the raw binary where
upstream publishes one), and flannel's CNI plugin, which the Go module proxy does not serve,
as galley's stand-in (galley.lab.standins). Lab code only.

    python -m galley.lab.artifacts [--cache-dir DIR] [--source-dir DIR]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from galley.components import artifacts as registry_artifacts
from galley.components.kubernetes import kubernetes_binary
from galley.components.model import UPSTREAM_HOSTS
from galley.components.model import Artifact as ReleaseArtifact
from galley.downloads import parse_sha256
from galley.lab.gobuild import GoBuilder, GoProgram, alertmanager, flannel, kubernetes

DEFAULT_CACHE_DIR = Path("/var/cache/galley/mirror")
DEFAULT_SOURCE_DIR = Path("/var/cache/galley/sources")

DEBIAN_SUITE = "sid"
DEBIAN_ARCH = "amd64"
DEBIAN_SOURCE = (
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian {suite} main\n"
)
STANDINS_DIR = Path(__file__).parent / "standins"
# Fixed metadata so that rebuilding from the same inputs yields the same sha256.
REPACK_MTIME = 0


class ArtifactError(RuntimeError):
    """An artifact could not be built or its checksum read."""


@dataclass(frozen=True)
class Artifact:
    """One release artifact: where upstream publishes it and how the lab builds a stand-in."""

    name: str
    version: str
    upstream_path: str  # host + path, without scheme
    # builder(artifact, dest, source_dir) writes the artifact to dest; source_dir caches inputs.
    # A builder may have origin(artifact, source_dir): what the artifact is made from now
    # (recorded beside it; a different one means rebuild). Without, a built file stays.
    builder: Callable[[Artifact, Path, Path], None]
    # True: the artifact is the executable itself (install it as a file, do not unpack it).
    raw: bool = False
    # Where upstream publishes its sha256 (host + path): the mirror serves it there too.
    checksum_path: str = ""

    @property
    def filename(self) -> str:
        """The artifact's file name, e.g. ``etcd-v3.5.30-linux-amd64.tar.gz``."""
        return self.upstream_path.rsplit("/", 1)[-1]


def _run(command: Sequence[str | os.PathLike[str]], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
        raise ArtifactError(f"{what} failed (exit {done.returncode}): {' | '.join(detail)}")
    return done.stdout


class _DebianArchive:
    """``apt-get`` against Debian's archive with a private sources list, lists and cache."""

    def __init__(self, source_dir: Path, suite: str = DEBIAN_SUITE) -> None:
        self.source_dir, self.suite = source_dir, suite
        apt_dir = source_dir / ("apt" if suite == DEBIAN_SUITE else f"apt-{suite}")
        sources = apt_dir / "sources.list"
        for sub in ("lists/partial", "cache/archives/partial"):
            (apt_dir / sub).mkdir(parents=True, exist_ok=True)
        sources.write_text(DEBIAN_SOURCE.format(suite=suite))
        self.options = [
            f"-oDir::Etc::sourcelist={sources}",
            "-oDir::Etc::sourceparts=-",
            f"-oDir::State::Lists={apt_dir / 'lists'}",
            f"-oDir::Cache={apt_dir / 'cache'}",
            f"-oAPT::Architecture={DEBIAN_ARCH}",
            f"-oAPT::Architectures={DEBIAN_ARCH}",
        ]
        _run(["apt-get", *self.options, "-q", "update"], f"apt-get update for {suite}")

    def download(self, package: str, upstream_version: str) -> None:
        """Download the package's Debian revision of ``upstream_version`` into source_dir."""
        shown = _run(
            ["apt-cache", *self.options, "show", package],
            f"apt-cache show {package} from {self.suite}",
        )
        versions = [
            line.split(":", 1)[1].strip()
            for line in shown.splitlines()
            if line.startswith("Version:")
        ]
        matching = [v for v in versions if _upstream_version(v) == upstream_version]
        if not matching:
            raise ArtifactError(
                f"apt-get download {package} from {self.suite} failed: no {upstream_version} "
                f"(available: {', '.join(versions) or 'none'})"
            )
        _run(
            ["apt-get", *self.options, "-q", "download", f"{package}={matching[0]}"],
            f"apt-get download {package} from {self.suite}",
            cwd=self.source_dir,
        )


def _upstream_version(debian_version: str) -> str:
    """``1:3.5.30-2`` (``1%3a3.5.30-2`` in file names) -> ``3.5.30``.

    Debian's repack suffix is dropped: ``2.1.9+ds1-5`` -> ``2.1.9``.
    """
    version = debian_version.replace("%3a", ":").split(":", 1)[-1].rsplit("-", 1)[0]
    return re.sub(r"\+ds[0-9]*$", "", version)


def _deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", deb, "Version"], f"dpkg-deb -f {deb.name}").strip()


def _find_debs(source_dir: Path, packages: Iterable[str], version: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in packages:
        debs = sorted(source_dir.glob(f"{package}_*_{DEBIAN_ARCH}.deb"))
        debs = [d for d in debs if _upstream_version(d.name.split("_")[1]) == version]
        if len(debs) > 1:
            names = ", ".join(d.name for d in debs)
            raise ArtifactError(f"several .debs for {package} {version} in {source_dir}: {names}")
        if debs:
            found[package] = debs[0]
    return found


def _deterministic_tarball(dest: Path, top_dir: str, members: dict[str, tuple[bytes, int]]) -> None:
    """Write a tar.gz with fixed metadata (sorted, mtime, owner) below ``top_dir``.

    ``top_dir`` "" puts the members at the top level without a directory entry.
    """

    def info(name: str, mode: int, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        entry = tarfile.TarInfo(name)
        entry.type, entry.mode, entry.size, entry.mtime = kind, mode, size, REPACK_MTIME
        entry.uid = entry.gid = 0
        entry.uname = entry.gname = "root"
        return entry

    with (
        dest.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        if top_dir:
            tar.addfile(info(top_dir, 0o755, kind=tarfile.DIRTYPE))
        for name in sorted(members):
            data, mode = members[name]
            path = f"{top_dir}/{name}" if top_dir else name
            tar.addfile(info(path, mode, len(data)), io.BytesIO(data))


def _archive_name(artifact: Artifact) -> str:
    """The upstream file name without its archive suffix (``.tar.gz`` or ``.tgz``)."""
    return artifact.filename.removesuffix(".tar.gz").removesuffix(".tgz")


def _readme(artifact: Artifact, origin: str) -> str:
    return (
        f"# {artifact.name} v{artifact.version}: galley lab build\n\n"
        f"This is not an upstream release. It is {origin}\nwith the layout of the upstream "
        f"release\nhttps://{artifact.upstream_path}\n"
        "so lab droplets install it from the lab mirror exactly like production does.\n"
    )


@dataclass(frozen=True)
class DebianRepack:
    """Builder: binaries from Debian packages, in an upstream-style tarball or as a raw file.

    ``binaries`` are read from ``source`` inside the packages (usr/bin by default), each under
    its name in ``renamed`` where Debian names it otherwise (``node_exporter`` is Debian's
    ``prometheus-node-exporter``). A tarball
    holds them (0755) and a README.md saying it is a lab repack below ``top_dir``: None for
    ``<file name without suffix>/``, "" for the top level, or a directory such as "bin" or
    ".". With ``raw``, the artifact is the one binary itself. Missing .debs are downloaded from
    Debian ``suite`` into source_dir.
    """

    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    source: str = "usr/bin"
    top_dir: str | None = None
    raw: bool = False
    suite: str = DEBIAN_SUITE
    renamed: Mapping[str, str] = field(default_factory=dict)

    def debs(self, version: str, source_dir: Path) -> dict[str, Path]:
        """The packages' .debs of ``version`` in ``source_dir``, downloaded when missing."""
        source_dir.mkdir(parents=True, exist_ok=True)
        debs = _find_debs(source_dir, self.packages, version)
        missing = [p for p in self.packages if p not in debs]
        if missing:
            archive = _DebianArchive(source_dir, self.suite)
            for package in missing:
                archive.download(package, version)
            debs = _find_debs(source_dir, self.packages, version)
        return debs

    def __call__(self, artifact: Artifact, dest: Path, source_dir: Path) -> None:
        """Build ``artifact`` into ``dest`` from the packages' .debs in ``source_dir``."""
        debs = self.debs(artifact.version, source_dir)
        members = self._binaries(debs)
        if self.raw:
            (binary,) = self.binaries
            dest.write_bytes(members[binary][0])
            return
        packages = ", ".join(
            f"{package} {_deb_version(deb)}" for package, deb in sorted(debs.items())
        )
        origin = f"Debian's build of {artifact.name}\n(Debian {self.suite} packages: {packages})"
        members["README.md"] = (_readme(artifact, origin).encode(), 0o644)
        top = _archive_name(artifact) if self.top_dir is None else self.top_dir
        _deterministic_tarball(dest, top, members)

    def _binaries(self, debs: dict[str, Path]) -> dict[str, tuple[bytes, int]]:
        with tempfile.TemporaryDirectory() as unpacked:
            for deb in debs.values():
                _run(["dpkg-deb", "-x", deb, unpacked], f"dpkg-deb -x {deb.name}")
            members = {}
            for binary in self.binaries:
                path = Path(unpacked, self.source, self.renamed.get(binary, binary))
                if not path.is_file():
                    names = ", ".join(deb.name for deb in debs.values())
                    raise ArtifactError(f"no {path.relative_to(unpacked)} in {names}")
                members[binary] = (path.read_bytes(), 0o755)
            return members


def debian_binary(
    package: str, version: str, path: str, source_dir: Path, suite: str = "bookworm"
) -> bytes:
    """The file ``path`` of Debian's ``package`` at upstream ``version`` (e.g. bin/busybox)."""
    directory, name = path.rsplit("/", 1)
    repack = DebianRepack((package,), (name,), source=directory, suite=suite)
    return repack._binaries(repack.debs(version, source_dir))[name][0]


def standin_zipapp(entry_module: str, version: str) -> bytes:
    """galley.lab.standins as one ``#!/usr/bin/python3`` zip application running ``entry_module``.

    ``standins/build.py`` records the release it stands in for (``VERSION``, ``v<version>``).
    Fixed timestamps and order make the bytes depend on the stand-ins' source and it only.
    """
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/python3\n")
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:

        def add(name: str, data: bytes) -> None:
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type, entry.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            archive.writestr(entry, data)

        add("__main__.py", f"from standins.{entry_module} import main\n\nmain()\n".encode())
        for module in sorted(STANDINS_DIR.glob("*.py")):
            add(f"standins/{module.name}", module.read_bytes())
        add("standins/build.py", f"VERSION = {'v' + version!r}\n".encode())
    return buffer.getvalue()


@dataclass(frozen=True)
class PythonStandin:
    """Builder: a galley stand-in (galley.lab.standins) under the upstream path, in a flat
    tarball as ``member`` (0755) with a README.md."""

    entry_module: str
    member: str

    def __call__(self, artifact: Artifact, dest: Path, source_dir: Path) -> None:
        """Build ``artifact`` into ``dest``; ``source_dir`` is not needed."""
        program = standin_zipapp(self.entry_module, artifact.version)
        origin = f"galley's Python stand-in for {artifact.name} (lab/test only)"
        members = {
            self.member: (program, 0o755),
            "README.md": (_readme(artifact, origin).encode(), 0o644),
        }
        _deterministic_tarball(dest, "", members)

    def origin(self, artifact: Artifact, source_dir: Path) -> str:
        """The stand-in's code: a change in this checkout rebuilds it."""
        return hashlib.sha256(standin_zipapp(self.entry_module, artifact.version)).hexdigest()


@functools.cache
def go_builder(source_dir: Path) -> GoBuilder:
    """The Go builds of the lab, their module and build caches below ``source_dir`` (one
    builder per process, so each program is asked once)."""
    return GoBuilder(source_dir / "go")


@dataclass(frozen=True)
class GoBinary:
    """Builder: ``binary`` of a program built from its upstream Go modules
    (galley.lab.gobuild), as the raw file, or with ``member`` as its name in a tarball laid out
    like upstream's (a README.md beside it); ``also`` adds more binaries of the same build
    under their own names, and ``top_dir`` puts the members below ``<file name without
    suffix>/`` as upstream's release does."""

    program: GoProgram
    binary: str
    member: str | None = None
    also: tuple[str, ...] = ()
    top_dir: bool = False

    def built(self, source_dir: Path) -> Path:
        """The built binary (built now unless it is already, from the same inputs)."""
        return go_builder(source_dir).build(self.program) / self.binary

    def __call__(self, artifact: Artifact, dest: Path, source_dir: Path) -> None:
        """Build ``artifact`` into ``dest``, the program first when needed."""
        built = self.built(source_dir)
        if self.member is None:
            shutil.copyfile(built, dest)
            return
        origin = f"built by the lab from {self.program.module} {self.program.version}"
        members = {
            self.member: (built.read_bytes(), 0o755),
            **{name: ((built.parent / name).read_bytes(), 0o755) for name in self.also},
            "README.md": (_readme(artifact, origin).encode(), 0o644),
        }
        _deterministic_tarball(dest, _archive_name(artifact) if self.top_dir else "", members)

    def origin(self, artifact: Artifact, source_dir: Path) -> str:
        """The program's build (its inputs' stamp) and the binaries taken from it."""
        built = self.built(source_dir)
        stamp = (built.parent / ".galley-build").read_text().strip()
        taken = " ".join((self.binary, *self.also))
        layout = f"{self.member} top" if self.top_dir else (self.member or "raw")
        return f"{self.program.key}/{taken} {stamp} {layout}"


ETCD_VERSION = "3.5.30"
# The lab's Kubernetes and the control plane's and nodes' upgrade target: both built from the
# Go module proxy, which serves every module they need. (1.33.6 cannot be built there: the
# proxy refuses eight of its staging modules at v0.33.6, e.g. k8s.io/kube-proxy, with 403.)
KUBERNETES_VERSION = "1.33.4"
KUBERNETES_UPGRADE_VERSION = "1.33.5"
# A mispackaged release that never becomes healthy: under each binary's name it publishes
# another real binary of the 1.33.4 build (`MISPACKAGED`), which rejects the flags the unit
# gives it (kube-scheduler has no --advertise-address, --cluster-name or --node-ip; kube-proxy
# no --tls-cert-file) or its config, and exits.
KUBERNETES_BROKEN_VERSION = "1.33.7-galley.broken"
MISPACKAGED = {
    "kube-apiserver": "kube-scheduler",
    "kube-controller-manager": "kube-scheduler",
    "kube-scheduler": "kube-proxy",
    "kubelet": "kube-scheduler",
    "kube-proxy": "kube-scheduler",
}
KUBECTL_VERSION = "1.36.4"
FLANNEL_VERSION = "0.26.7"
COREDNS_VERSION = "1.12.0"  # what Kubernetes 1.33 ships
FLANNEL_CNI_PLUGIN_VERSION = "1.7.1-flannel2"
CONTAINERD_VERSION = "2.1.9"
RUNC_VERSION = "1.1.5"  # sid's runc 1.3.6 needs glibc 2.38; bookworm's runs on the droplets
CNI_PLUGINS_VERSION = "1.9.1"
# Monitoring: Debian's builds of Prometheus and the node exporter (sid's need glibc 2.34;
# bookworm has 2.36), Alertmanager built from its Go modules.
NODE_EXPORTER_VERSION = "1.11.1"
PROMETHEUS_VERSION = "3.5.3"
ALERTMANAGER_VERSION = "0.28.1"
CNI_PLUGIN_BINARIES = (
    "bandwidth",
    "bridge",
    "dhcp",
    "dummy",
    "firewall",
    "host-device",
    "host-local",
    "ipvlan",
    "loopback",
    "macvlan",
    "portmap",
    "ptp",
    "sbr",
    "static",
    "tap",
    "tuning",
    "vlan",
    "vrf",
)


def lab_artifact(
    artifact: ReleaseArtifact, version: str, builder: Callable[[Artifact, Path, Path], None]
) -> Artifact:
    """A mirror row for a registry artifact: the upstream paths come from its declaration."""
    return Artifact(
        name=artifact.release,
        version=version,
        upstream_path=artifact.url_for(version, DEBIAN_ARCH, UPSTREAM_HOSTS),
        builder=builder,
        raw=not artifact.archive,
        checksum_path=artifact.checksum_url_for(version, DEBIAN_ARCH, UPSTREAM_HOSTS),
    )


def _artifact(key: str) -> ReleaseArtifact:
    (found,) = [a for a in registry_artifacts() if a.key == key]
    return found


def _kubernetes_rows() -> list[Artifact]:
    """The Kubernetes server binaries, built from their Go modules, at the lab's version and
    the upgrade target, and the mispackaged release (what a rollout must roll back)."""
    rows = []
    for component in (
        "kube_apiserver",
        "kube_controller_manager",
        "kube_scheduler",
        "kubelet",
        "kube_proxy",
    ):
        binary = component.replace("_", "-")
        for version in (KUBERNETES_VERSION, KUBERNETES_UPGRADE_VERSION):
            built = GoBinary(kubernetes(version), binary)
            rows.append(lab_artifact(_artifact(component), version, built))
        mispackaged = GoBinary(kubernetes(KUBERNETES_VERSION), MISPACKAGED[binary])
        rows.append(lab_artifact(_artifact(component), KUBERNETES_BROKEN_VERSION, mispackaged))
    return rows


ARTIFACTS: tuple[Artifact, ...] = (
    lab_artifact(
        _artifact("etcd"),
        ETCD_VERSION,
        DebianRepack(
            packages=("etcd-server", "etcd-client"), binaries=("etcd", "etcdctl", "etcdutl")
        ),
    ),
    *_kubernetes_rows(),
    # The operator's client, real (Debian's build): tests read kubeconfigs with it.
    lab_artifact(
        kubernetes_binary("kubectl"),
        KUBECTL_VERSION,
        DebianRepack(packages=("kubectl",), binaries=("kubectl",), raw=True),
    ),
    lab_artifact(
        _artifact("flannel"),
        FLANNEL_VERSION,
        GoBinary(flannel(FLANNEL_VERSION), "flannel", member="flanneld"),
    ),
    lab_artifact(
        _artifact("flannel_cni_plugin"),
        FLANNEL_CNI_PLUGIN_VERSION,
        PythonStandin("flannel_cni", member="flannel-amd64"),
    ),
    lab_artifact(
        _artifact("containerd"),
        CONTAINERD_VERSION,
        DebianRepack(
            packages=("containerd",),
            binaries=("containerd", "containerd-shim-runc-v2", "ctr"),
            top_dir="bin",
        ),
    ),
    lab_artifact(
        _artifact("runc"),
        RUNC_VERSION,
        DebianRepack(
            packages=("runc",), binaries=("runc",), source="usr/sbin", raw=True, suite="bookworm"
        ),
    ),
    lab_artifact(
        _artifact("cni_plugins"),
        CNI_PLUGINS_VERSION,
        DebianRepack(
            packages=("containernetworking-plugins",),
            binaries=CNI_PLUGIN_BINARIES,
            source="usr/lib/cni",
            top_dir=".",
        ),
    ),
    lab_artifact(
        _artifact("node_exporter"),
        NODE_EXPORTER_VERSION,
        DebianRepack(
            packages=("prometheus-node-exporter",),
            binaries=("node_exporter",),
            renamed={"node_exporter": "prometheus-node-exporter"},
        ),
    ),
    lab_artifact(
        _artifact("prometheus"),
        PROMETHEUS_VERSION,
        DebianRepack(packages=("prometheus", "promtool"), binaries=("prometheus", "promtool")),
    ),
    lab_artifact(
        _artifact("alertmanager"),
        ALERTMANAGER_VERSION,
        GoBinary(
            alertmanager(ALERTMANAGER_VERSION),
            "alertmanager",
            member="alertmanager",
            also=("amtool",),
            top_dir=True,
        ),
    ),
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_checksum(path: Path) -> str | None:
    """The sha256 recorded next to ``path``, or None if there is none."""
    try:
        return _checksum_file(path).read_text().split()[0]
    except (FileNotFoundError, IndexError):
        return None


def build(artifact: Artifact, cache_dir: Path, source_dir: Path) -> str:
    """Build one artifact (unless present with a matching .sha256) and return its sha256."""
    path = cache_dir / artifact.upstream_path
    recorded = _read_checksum(path)
    origin = getattr(artifact.builder, "origin", None)
    wanted = origin(artifact, source_dir) if origin else ""
    origin_file = path.with_name(path.name + ".origin")
    was = origin_file.read_text() if origin_file.is_file() else ""
    if recorded is not None and path.is_file() and was == wanted and _sha256(path) == recorded:
        return recorded
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        artifact.builder(artifact, partial, source_dir)
        digest = _sha256(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    checksum_part = _checksum_file(partial)
    checksum_part.write_text(f"{digest}  {path.name}\n")
    os.replace(checksum_part, _checksum_file(path))
    if wanted:
        origin_file.write_text(wanted)
    return digest


def build_all(
    cache_dir: Path = DEFAULT_CACHE_DIR,
    source_dir: Path = DEFAULT_SOURCE_DIR,
    artifacts: Iterable[Artifact] = ARTIFACTS,
) -> dict[str, str]:
    """Build every artifact into ``cache_dir`` and publish its sha256 where upstream does;
    returns {upstream path: sha256}."""
    built = {}
    for artifact in artifacts:
        built[artifact.upstream_path] = build(artifact, Path(cache_dir), Path(source_dir))
        _publish_checksum(Path(cache_dir), artifact, built[artifact.upstream_path])
    return built


def _publish_checksum(cache_dir: Path, artifact: Artifact, digest: str) -> None:
    """Write ``digest`` into the artifact's published checksum file, as upstream lays it out:
    dl.k8s.io's ``<binary>.sha256`` holds the bare digest; GitHub releases' files hold
    ``sha256sum`` lines, one per asset for lists such as ``SHA256SUMS``."""
    path = cache_dir / artifact.checksum_path
    if artifact.checksum_path.startswith(UPSTREAM_HOSTS["dl_k8s"] + "/"):
        text = f"{digest}\n"
    else:
        lines: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2:
                    lines[parts[1]] = parts[0]
        lines[artifact.filename] = digest
        text = "".join(f"{lines[name]}  {name}\n" for name in sorted(lines))
    if path.is_file() and path.read_text() == text:
        return
    partial = path.with_name(path.name + ".part")
    partial.write_text(text)
    os.replace(partial, path)


def checksums(
    cache_dir: Path = DEFAULT_CACHE_DIR, artifacts: Iterable[Artifact] = ARTIFACTS
) -> dict[str, str]:
    """Read the published sha256 of every artifact (as `galley checksums fetch` reads
    upstream's); {upstream path: sha256}."""
    result = {}
    for artifact in artifacts:
        path = Path(cache_dir) / artifact.upstream_path
        published = Path(cache_dir) / artifact.checksum_path
        recorded = (
            parse_sha256(published.read_text(), artifact.filename) if published.is_file() else None
        )
        if recorded is None or not path.is_file():
            raise ArtifactError(f"{artifact.name} is not built in {cache_dir}: run build_all")
        result[artifact.upstream_path] = recorded
    return result


def main(argv: list[str] | None = None) -> None:
    """Build all artifacts and print their sha256 and path."""
    parser = argparse.ArgumentParser(prog="python -m galley.lab.artifacts", description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--source-dir", type=Path, default=DEFAULT_SOURCE_DIR)
    args = parser.parse_args(argv)
    try:
        built = build_all(args.cache_dir, args.source_dir)
    except ArtifactError as exc:
        parser.exit(1, f"error: {exc}\n")
    for path, digest in built.items():
        print(f"{digest}  {path}")


if __name__ == "__main__":
    main()
