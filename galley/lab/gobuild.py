"""Build the lab's real programs from their upstream Go modules with the ordinary `go` client.

Each `GoProgram` is a small module of the lab's own, written into the build cache: it requires
the upstream module at the version the lab's catalogue names and lists upstream's main
packages as its tools (`tool` directives), so `go build` compiles upstream's own mains; no
upstream source is kept in this repository and no built binary is committed. For Kubernetes,
each staging module (``k8s.io/api``, ``k8s.io/apiserver``, ...) that ``k8s.io/kubernetes``
replaces with a local directory is replaced by its published tag, the list read from that
version's own go.mod. Module and build caches live in the lab's cache (``<cache>/go``), so a
second lab start, test run or CI run on the same machine builds nothing. ``GOTOOLCHAIN=local``,
``CGO_ENABLED=0``, ``-trimpath``, and the version stamped as upstream's release does, so
``--version`` prints what the release prints. Lab code only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from galley.lab.system import LabError

Progress = Callable[[str], None]
# The lab's own Go programs (the pause program, the tests' etcd writer), each a module of its
# own, its dependencies pinned by its go.sum.
SOURCES = Path(__file__).parent / "go"
# go.mod of a program: what its toolchain reads (go 1.24 brought `tool` directives).
GO_VERSION = "1.24"
_STAGING = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.MULTILINE)


@dataclass(frozen=True)
class Upstream:
    """What the module proxy says of a module version: its go.mod and when it was tagged."""

    go_mod: str
    time: str  # RFC 3339, e.g. 2025-09-10T02:03:04Z
    commit: str  # the tag's commit when the proxy knows it, else ""


@dataclass(frozen=True)
class GoProgram:
    """A program the lab builds: ``module`` at ``version`` (None: the lab's own module in
    `SOURCES`/``key``), its main ``packages`` (the binary is each package's last element),
    and ``ldflags(upstream)`` stamping the version."""

    key: str  # its directory in the cache, e.g. kubernetes-1.33.5
    module: str
    version: str | None
    packages: tuple[str, ...]
    ldflags: Callable[[Upstream], list[str]] = field(default=lambda upstream: [], compare=False)
    # Replace the module's local staging modules with their published tags (Kubernetes).
    staging: bool = False
    # Built with cgo and linked static, as upstream's release is (flannel's UDP backend).
    cgo: bool = False

    def binaries(self) -> list[str]:
        """The file names the build writes."""
        return [package.rsplit("/", 1)[-1] for package in self.packages]


def kubernetes(version: str) -> GoProgram:
    """Kubernetes' server binaries at ``version``, stamped as `hack/lib/version.sh` stamps a
    release."""
    major, minor = version.split(".")[:2]
    base = "k8s.io/component-base/version"

    def ldflags(upstream: Upstream) -> list[str]:
        return [
            f"-X {base}.gitVersion=v{version}",
            f"-X {base}.gitMajor={major}",
            f"-X {base}.gitMinor={minor}",
            f"-X {base}.gitCommit={upstream.commit}",
            f"-X {base}.gitTreeState=clean",
            f"-X {base}.buildDate={upstream.time}",
        ]

    commands = (
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    )
    return GoProgram(
        key=f"kubernetes-{version}",
        module="k8s.io/kubernetes",
        version=f"v{version}",
        packages=tuple(f"k8s.io/kubernetes/cmd/{command}" for command in commands),
        ldflags=ldflags,
        staging=True,
    )


def flannel(version: str) -> GoProgram:
    """flanneld at ``version`` (its main is the module's root package)."""
    return GoProgram(
        key=f"flannel-{version}",
        module="github.com/flannel-io/flannel",
        version=f"v{version}",
        packages=("github.com/flannel-io/flannel",),
        ldflags=lambda upstream: [
            f"-X github.com/flannel-io/flannel/pkg/version.Version=v{version}",
            "-extldflags -static",
        ],
        cgo=True,
    )


def coredns(version: str) -> GoProgram:
    """CoreDNS at ``version`` with its default plugins (its own version is in its source)."""
    return GoProgram(
        key=f"coredns-{version}",
        module="github.com/coredns/coredns",
        version=f"v{version}",
        packages=("github.com/coredns/coredns",),
        ldflags=lambda upstream: [
            f"-X github.com/coredns/coredns/coremain.GitCommit={upstream.commit}"
        ],
    )


def alertmanager(version: str) -> GoProgram:
    """Alertmanager and amtool at ``version``, stamped as upstream's release (Debian's build
    reads its default template from /usr/share, which upstream's embeds)."""
    base = "github.com/prometheus/common/version"
    return GoProgram(
        key=f"alertmanager-{version}",
        module="github.com/prometheus/alertmanager",
        version=f"v{version}",
        packages=tuple(
            f"github.com/prometheus/alertmanager/cmd/{command}"
            for command in ("alertmanager", "amtool")
        ),
        ldflags=lambda upstream: [
            f"-X {base}.Version={version}",
            f"-X {base}.Revision={upstream.commit}",
            f"-X {base}.Branch=HEAD",
            f"-X {base}.BuildDate={upstream.time}",
        ],
    )


def crane(version: str) -> GoProgram:
    """go-containerregistry's crane: builds and pushes the lab's images."""
    return GoProgram(
        key=f"crane-{version}",
        module="github.com/google/go-containerregistry",
        version=f"v{version}",
        packages=("github.com/google/go-containerregistry/cmd/crane",),
    )


def own(name: str) -> GoProgram:
    """One of the lab's own programs (`SOURCES`/``name``: a module whose go.sum pins what it
    needs)."""
    return GoProgram(
        key=name, module=f"galley.lab/{name}", version=None, packages=(f"galley.lab/{name}",)
    )


@dataclass
class GoBuilder:
    """Builds `GoProgram`s with module and build caches below ``root``, saying what it does."""

    root: Path
    progress: Progress = print
    # What this process built or found built already, by program key.
    done: dict[str, Path] = field(default_factory=dict)

    def env(self, cgo: bool = False) -> dict[str, str]:
        """The environment of a go command: caches in the lab's cache, cgo only if asked."""
        return {
            **os.environ,
            "GOMODCACHE": str(self.root / "mod"),
            "GOCACHE": str(self.root / "build"),
            "GOPATH": str(self.root / "path"),
            "GOTOOLCHAIN": "local",
            "CGO_ENABLED": "1" if cgo else "0",
            "GOFLAGS": "-mod=mod",
        }

    def go(
        self, *args: str, cwd: Path | None = None, cgo: bool = False, timeout: float = 3600
    ) -> str:
        """Run ``go args`` and return its stdout; LabError with its last lines if it fails."""
        binary = shutil.which("go") or "/usr/local/go/bin/go"
        if not Path(binary).exists():
            raise LabError(
                "go is not installed: the lab builds Kubernetes, flannel and CoreDNS from their "
                "Go modules (Go 1.26, https://proxy.golang.org)"
            )
        done = subprocess.run(
            [binary, *args],
            cwd=cwd,
            env=self.env(cgo),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
            raise LabError(f"go {' '.join(args[:2])} failed (exit {done.returncode}): {tail}")
        return done.stdout

    def upstream(self, module: str, version: str) -> Upstream:
        """Download ``module@version`` into the module cache; its go.mod and tag time."""
        found = json.loads(self.go("mod", "download", "-json", f"{module}@{version}"))
        info = json.loads(Path(found["Info"]).read_text())
        return Upstream(
            go_mod=Path(found["GoMod"]).read_text(),
            time=info.get("Time", ""),
            commit=(info.get("Origin") or {}).get("Hash", ""),
        )

    def go_mod(self, program: GoProgram, upstream: Upstream | None) -> str:
        """The program's go.mod: its own, or one requiring the upstream module with its mains
        as tools (and for Kubernetes the staging modules replaced by their tags)."""
        if program.version is None:
            return (SOURCES / program.key / "go.mod").read_text()
        assert upstream is not None
        lines = [f"module galley.lab/{program.key}", "", f"go {GO_VERSION}", ""]
        lines.append(f"require {program.module} {program.version}")
        if program.staging:
            tag = "v0." + program.version.split(".", 1)[1]
            lines += ["", "replace ("]
            lines += [f"\t{name} => {name} {tag}" for name in _STAGING.findall(upstream.go_mod)]
            lines.append(")")
        lines += ["", *(f"tool {package}" for package in program.packages), ""]
        return "\n".join(lines)

    def build(self, program: GoProgram) -> Path:
        """The directory holding ``program``'s binaries, built unless built already from the
        same inputs (asked once per process)."""
        if program.key in self.done:
            return self.done[program.key]
        # One build of a program at a time on this machine (the unit and lab suites both ask).
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{program.key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.done[program.key] = self._build(program)
        return self.done[program.key]

    def _build(self, program: GoProgram) -> Path:
        out = self.root / "bin" / program.key
        upstream = self.upstream(program.module, program.version) if program.version else None
        go_mod = self.go_mod(program, upstream)
        ldflags = ["-s", "-w", *(program.ldflags(upstream) if upstream else [])]
        stamp = self._stamp(program, go_mod, ldflags)
        stamp_file = out / ".galley-build"
        if (
            stamp_file.is_file()
            and stamp_file.read_text() == stamp
            and all((out / binary).is_file() for binary in program.binaries())
        ):
            return out
        work = self.root / "src" / program.key
        shutil.rmtree(work, ignore_errors=True)
        if program.version is None:
            shutil.copytree(SOURCES / program.key, work)
        else:
            work.mkdir(parents=True)
            (work / "go.mod").write_text(go_mod)
        self.progress(f"building {program.key} from its Go modules (once per machine)")
        started = time.monotonic()
        if program.version is not None:
            self.go("mod", "tidy", cwd=work)
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.go(
            "build",
            "-trimpath",
            "-ldflags",
            " ".join(ldflags),
            "-o",
            f"{partial}/",
            *program.packages,
            cwd=work,
            cgo=program.cgo,
        )
        (partial / ".galley-build").write_text(stamp)
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
        self.progress(f"built {program.key} in {time.monotonic() - started:.0f}s")
        return out

    def _stamp(self, program: GoProgram, go_mod: str, ldflags: Sequence[str]) -> str:
        """What a build depends on: the go.mod, the flags, the toolchain and own sources."""
        digest = hashlib.sha256()
        parts = (go_mod, " ".join(ldflags), str(program.cgo), self.go("version"), *program.packages)
        for part in parts:
            digest.update(part.encode() + b"\0")
        if program.version is None:
            for path in sorted((SOURCES / program.key).rglob("*")):
                if path.is_file():
                    digest.update(path.name.encode() + path.read_bytes())
        return digest.hexdigest()
