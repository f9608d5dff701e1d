"""Install versioned release tarballs or raw binaries on hosts and switch between them.

Layout (for release ``etcd``, the default prefix and bin dir)::

    /opt/galley/etcd/3.5.30/              its binaries, complete once .galley-complete exists
    /opt/galley/etcd/current -> 3.5.30    the active version (relative link)
    /usr/local/bin/etcd -> /opt/galley/etcd/current/etcd

A download is verified (its sha256) before anything is unpacked; a failed download or
checksum mismatch leaves the active version and ``current`` untouched. Older versions stay on
disk, so a rollback is ``switch_release`` back to one of them. All links are replaced
atomically (``ln -sfn`` to a temporary name, then ``mv -T``).

Restarting on change: both deploys return a :class:`Release`. Its ``changed`` method is true,
once executed, when the active version or a binary link changed (one operation sets them
all). Pass the method itself, uncalled, as ``_if`` so pyinfra evaluates it at execution time
(``_if=release.changed()`` would be evaluated while preparing and fail;
``daemon_reload=...``-style arguments take values, not methods)::

    etcd = install_release("etcd", "3.5.30", url, sha256, ["etcd", "etcdctl", "etcdutl"])
    systemd.service(service="etcd", restarted=True, _if=etcd.changed)
    # combined with other operations: _if=lambda: etcd.changed() or conf.did_change()

This signal is not durable: if a run dies after the switch but before the restart, the next
run sees no change. Callers that must restart should also compare what is running with
``current``.

The first parameter is ``release``, not ``name``: pyinfra takes ``name`` as a global argument
of every deploy and operation call.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.api.operation import OperationMeta

from galley.facts.release import COMPLETE_MARKER, DEFAULT_PREFIX, InstalledReleases, LinkTargets
from galley.host import observed

DEFAULT_BIN_DIR = "/usr/local/bin"
DEFAULT_STALL_SECONDS = 30

_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Release:
    """The operation that activates a release version; see the module docstring."""

    activation: OperationMeta

    def changed(self) -> bool:
        """After execution: whether ``current`` or a binary link was changed."""
        return self.activation.did_change()


def _check_component(kind: str, value: str) -> None:
    if not _COMPONENT.fullmatch(value) or value == "current":
        raise ValueError(f"invalid release {kind} {value!r}: must be a plain file name")


def _release_dir(prefix: str, release: str) -> str:
    return posixpath.join(prefix.rstrip("/") or "/", release)


def active_paths(
    release: str, binary: str, prefix: str = DEFAULT_PREFIX, bin_dir: str = DEFAULT_BIN_DIR
) -> list[str]:
    """What a service running ``binary`` of ``release`` depends on: its link in ``bin_dir``
    and the release's ``current`` link (switching back to an installed version changes only
    ``current``: a restart check must watch both)."""
    return [posixpath.join(bin_dir, binary), f"{_release_dir(prefix, release)}/current"]


def _fetch_script(
    base: str,
    version: str,
    url: str,
    sha256: str,
    binaries: Sequence[str],
    strip_components: int,
    archive: bool = True,
    stall_seconds: int = DEFAULT_STALL_SECONDS,
) -> str:
    """Shell script that downloads, verifies and unpacks ``binaries`` of ``url`` into
    ``<base>/<version>/`` (an archive's other files are not unpacked).

    With ``archive`` False the download is the single binary ``binaries[0]`` itself. A
    download slower than 1 KiB/s for ``stall_seconds`` is abandoned, and retries stop after
    three times that, so a stalled mirror fails the run instead of hanging it.
    """
    q = shlex.quote
    if archive:
        # Only the binaries, each at the depth --strip-components removes; tar stops reading
        # (and decompressing) once it has found them all.
        members = " ".join(q("*/" * int(strip_components) + binary) for binary in binaries)
        unpack = (
            f'tar -xf "$part" -C "$tmp" --no-same-owner --strip-components={int(strip_components)}'
            f" --wildcards --occurrence=1 {members} || "
            '{ echo "unpacking $url failed (it must hold '
            + " ".join(binaries)
            + ')" >&2; exit 1; }'
        )
    else:
        unpack = f'install -m 0755 "$part" "$tmp/"{q(binaries[0])}'
    filename = posixpath.basename(urlsplit(url).path) or "download"
    checks = " ".join(q(binary) for binary in binaries)
    return "\n".join(
        [
            "set -eu",
            f"base={q(base)}; version={q(version)}; url={q(url)}; want={q(sha256)}",
            f'dest="$base/$version"; marker="$dest/{COMPLETE_MARKER}"',
            'if [ -f "$marker" ]; then',
            '  have=$(head -n 1 "$marker")',
            '  [ "$have" = "$want" ] && exit 0',
            '  echo "$dest is already installed from another artifact (sha256 $have, expected'
            ' $want): remove it to reinstall" >&2',
            "  exit 1",
            "fi",
            'mkdir -p "$base/.download"',
            f'part="$base/.download/"{q(filename + ".part")}; tmp=""',
            """trap 'rm -f "$part"; if [ -n "$tmp" ]; then rm -rf "$tmp"; fi' EXIT""",
            "curl -fsSL --retry 5 --retry-delay 2 --retry-connrefused --connect-timeout 10 \\",
            f"  --speed-limit 1024 --speed-time {int(stall_seconds)} "
            f"--retry-max-time {3 * int(stall_seconds)} \\",
            '  -o "$part" "$url" || { echo "download of $url failed (no progress or no answer)"'
            " >&2; exit 1; }",
            # OpenSSL's SHA-256 uses the CPU's SHA extensions where coreutils' does not
            # (a 29 MB tarball: 0.03 s instead of 0.2 s); the renewal needs openssl anyway.
            'got=$(openssl dgst -sha256 -r "$part") || '
            '{ echo "computing the sha256 of $url failed" >&2; exit 1; }',
            "got=${got%% *}",
            'if [ "$got" != "$want" ]; then',
            '  echo "sha256 mismatch for $url: expected $want got $got" >&2',
            "  exit 1",
            "fi",
            'tmp=$(mktemp -d "$base/.$version.XXXXXX")',
            unpack,
            f"for b in {checks}; do",
            '  [ -f "$tmp/$b" ] && [ -x "$tmp/$b" ] || '
            '{ echo "$url has no executable $b" >&2; exit 1; }',
            "done",
            'printf "%s\\n" "$want" > "$tmp/"' + COMPLETE_MARKER,
            'chmod 0755 "$tmp"',
            'rm -rf "$dest"',
            'mv -T "$tmp" "$dest"',
            'tmp=""',
        ]
    )


@dataclass(frozen=True)
class Download:
    """One version of a release to download and verify: a tarball holding ``binaries``, or
    with ``archive`` False the single raw executable ``binaries[0]``. Checked when made
    (``binaries`` kept as a tuple, ``sha256`` in lower case)."""

    release: str
    version: str
    url: str
    sha256: str
    binaries: Sequence[str]
    prefix: str = DEFAULT_PREFIX
    strip_components: int = 1
    archive: bool = True
    stall_seconds: int = DEFAULT_STALL_SECONDS

    def __post_init__(self) -> None:
        _validate(self.release, self.version, self.binaries, {})
        if not self.archive and len(self.binaries) != 1:
            raise ValueError(
                f"a raw binary download installs exactly one binary, not {list(self.binaries)!r}"
            )
        object.__setattr__(self, "binaries", tuple(self.binaries))
        object.__setattr__(self, "sha256", self.sha256.lower())
        if not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"invalid sha256 for {self.url}: {self.sha256!r}")

    @property
    def label(self) -> str:
        """``<release> <version>``."""
        return f"{self.release} {self.version}"

    @property
    def marker(self) -> str:
        """The file that marks this version completely installed (see `marker_path`)."""
        return marker_path(self.release, self.version, self.prefix)

    def script(self) -> str:
        """The shell script that installs it (`_fetch_script`)."""
        return _fetch_script(
            _release_dir(self.prefix, self.release),
            self.version,
            self.url,
            self.sha256,
            self.binaries,
            self.strip_components,
            self.archive,
            self.stall_seconds,
        )


@operation()
def _fetch(downloads: Sequence[Download], missing: bool = False) -> Iterator[str]:
    """One script per download, in order (the first that fails stops the operation)."""
    due = list(downloads)
    if not missing:  # not read missing while preparing: ask the host now
        due = [download for download in downloads if not _installed_now(download)]
    if not due:
        host.noop(f"{', '.join(download.label for download in downloads)} installed already")
        return
    for download in due:
        yield download.script()


def _installed_now(download: Download) -> bool:
    """At execution: whether the host has ``download`` completely installed."""
    fact = host.get_fact(InstalledReleases, release=download.release, prefix=download.prefix)
    return fact["sha256"].get(download.version) == download.sha256


def _installed(download: Download) -> bool:
    """Whether ``download`` was read installed while preparing, or an earlier operation of
    this run installs it (`fetch_releases`)."""
    marker, text = download.marker, f"{download.sha256}\n"
    return observed.file_is(marker, text) or observed.planned_write(marker, (text,)) is not None


def fetch_releases(downloads: Sequence[Download]) -> OperationMeta | None:
    """Download, verify and unpack each of ``downloads`` read missing while preparing
    (`galley.host.observed`), all in one operation; `install_release` then only activates
    them. Nothing becomes active here: called before anything else, a wrong checksum or a dead
    mirror stops the run before any host changed. Called from one line for every host, it is
    one join: every host downloads at once. None when nothing is due."""
    due = [d for d in downloads if observed.was_read(d.marker) and not _installed(d)]
    if not due:
        return None
    operation_meta = _fetch(
        name="Download " + " + ".join(download.label for download in due),
        downloads=due,
        missing=True,
    )
    for download in due:
        observed.plan_write(download.marker, (f"{download.sha256}\n",), operation_meta)
    return operation_meta


def marker_path(release: str, version: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The file whose presence (holding the sha256) marks ``version`` completely installed."""
    return f"{_release_dir(prefix, release)}/{version}/{COMPLETE_MARKER}"


def release_links(
    release: str,
    version: str,
    binaries: Sequence[str],
    prefix: str = DEFAULT_PREFIX,
    bin_dir: str = DEFAULT_BIN_DIR,
    link_names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Each link that makes ``version`` active, with its target: ``current``, and each
    binary's link in ``bin_dir``."""
    base = _release_dir(prefix, release)
    links = {f"{base}/current": version}
    for binary in binaries:
        link = (link_names or {}).get(binary, binary)
        links[posixpath.join(bin_dir, link)] = f"{base}/current/{binary}"
    return links


def _link_script(path: str, target: str) -> str:
    """Point the symlink ``path`` at ``target`` atomically (through a temporary link)."""
    q = shlex.quote
    new = f"{path}.galley-new"
    return (
        f"mkdir -p {q(posixpath.dirname(path))} && "
        f"ln -sfn {q(target)} {q(new)} && mv -T {q(new)} {q(path)}"
    )


@operation()
def _activate(
    release: str,
    version: str,
    binaries: Sequence[str],
    prefix: str,
    bin_dir: str,
    link_names: Mapping[str, str],
    stale: Sequence[str] | None = None,
) -> Iterator[str]:
    """Point ``current`` at ``version`` (which must be complete) and each binary's link in
    ``bin_dir`` at ``current``; only links that differ (``stale``, when read while
    preparing) are touched."""
    wanted = release_links(release, version, binaries, prefix, bin_dir, link_names)
    if stale is None:
        targets = host.get_fact(LinkTargets, paths=list(wanted))
        stale = [path for path, target in wanted.items() if targets.get(path) != target]
    if not stale:
        host.noop(f"{release} {version} is active")
        return
    marker = marker_path(release, version, prefix)
    message = f"cannot activate {release} {version}: {marker} does not exist"
    lines = [f"[ -e {shlex.quote(marker)} ] || {{ echo {shlex.quote(message)} >&2; exit 1; }}"]
    lines += [_link_script(path, wanted[path]) for path in stale]
    yield "\n".join(lines)


def _activation(
    release: str,
    version: str,
    binaries: Sequence[str],
    prefix: str,
    bin_dir: str,
    link_names: Mapping[str, str] | None,
) -> Release:
    stale = observed.stale_links(
        release_links(release, version, binaries, prefix, bin_dir, link_names)
    )
    if stale == []:
        return Release(observed.settled(f"Activate {release} {version}"))
    return Release(
        _activate(
            name=f"Activate {release} {version}",
            release=release,
            version=version,
            binaries=list(binaries),
            prefix=prefix,
            bin_dir=bin_dir,
            link_names=dict(link_names or {}),
            stale=stale,
        )
    )


def _validate(
    release: str, version: str, binaries: Sequence[str], link_names: Mapping[str, str]
) -> None:
    _check_component("name", release)
    _check_component("version", version)
    if isinstance(binaries, str):
        raise TypeError("binaries must be a list of file names, not a string")
    for binary in binaries:
        _check_component("binary", binary)
    _check_link_names(binaries, link_names)


def _check_link_names(binaries: Sequence[str], link_names: Mapping[str, str]) -> None:
    for binary, link in link_names.items():
        if binary not in binaries:
            raise ValueError(f"link name given for {binary!r}, which is not one of {binaries!r}")
        _check_component("link name", link)


def install_release(
    release: str,
    version: str,
    url: str,
    sha256: str,
    binaries: Sequence[str],
    prefix: str = DEFAULT_PREFIX,
    bin_dir: str = DEFAULT_BIN_DIR,
    strip_components: int = 1,
    archive: bool = True,
    link_names: Mapping[str, str] | None = None,
    stall_seconds: int = DEFAULT_STALL_SECONDS,
) -> Release:
    """Install ``version`` of a release (if not yet complete) and make it active.

    ``url`` is a tarball holding ``binaries``, or with ``archive=False`` a raw executable
    (e.g. ``kubelet`` from dl.k8s.io) installed as the only entry of ``binaries``. Each
    binary is linked under its own name in ``bin_dir`` unless ``link_names`` maps it to
    another (``{"flannel-amd64": "flannel"}``).
    """
    download = Download(
        release, version, url, sha256, binaries, prefix, strip_components, archive, stall_seconds
    )
    return install_download(download, bin_dir, link_names)


@deploy("Install release")
def install_download(
    download: Download,
    bin_dir: str = DEFAULT_BIN_DIR,
    link_names: Mapping[str, str] | None = None,
) -> Release:
    """`install_release` for a `Download` made already (e.g. from the catalogue)."""
    _check_link_names(download.binaries, link_names or {})
    if not _installed(download):
        _fetch(
            name=f"Download {download.label}",
            downloads=[download],
            missing=observed.was_read(download.marker),
        )
    return _activation(
        download.release, download.version, download.binaries, download.prefix, bin_dir, link_names
    )


@deploy("Switch release")
def switch_release(
    release: str,
    version: str,
    binaries: Sequence[str],
    prefix: str = DEFAULT_PREFIX,
    bin_dir: str = DEFAULT_BIN_DIR,
    link_names: Mapping[str, str] | None = None,
) -> Release:
    """Make an installed ``version`` active again (rollback); fails if it is not installed."""
    _validate(release, version, binaries, link_names or {})
    return _activation(release, version, binaries, prefix, bin_dir, link_names)
