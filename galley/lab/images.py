"""The lab's container images, built here and served by its OCI registry (lab code only).

No public registry is reachable, so the lab runs a registry on its bridge (Debian's
``docker-registry``, the CNCF distribution registry) and its droplets' containerd takes it as
a mirror of every registry (``registry_mirror`` in group data: ``/etc/containerd/certs.d/
_default/hosts.toml``), as a production pull-through mirror would be configured. Each image is
pushed under the path its upstream registry uses, so the cluster names images as in production
(the sandbox image ``registry.k8s.io/pause:3.10`` is ``/v2/pause`` on the mirror). The images
are one layer of files, built reproducibly and pushed with go-containerregistry's ``crane``
(built from its Go module): the pause program (the lab's own, galley.lab.go), CoreDNS (built
from its Go module) and busybox (Debian's busybox-static), for test pods.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from galley.lab.artifacts import COREDNS_VERSION, debian_binary, go_builder
from galley.lab.gobuild import GoProgram, coredns, crane, own
from galley.lab.system import LabError

REGISTRY_PORT = 5000
CRANE = crane("0.22.1")
BUSYBOX_VERSION = "1.35.0"
# The applets test pods call by name.
BUSYBOX_LINKS = ("sh", "sleep", "wget", "nc", "httpd", "cat", "echo", "hostname", "nslookup", "ip")
# The registry's record of what it holds, so a second `lab up` pushes nothing.
PUSHED = "galley-pushed.json"

Files = Callable[[Path], dict[str, tuple[bytes, int]]]  # source dir -> {path: (data, mode)}


@dataclass(frozen=True)
class Image:
    """One image: ``repository:tag`` as its upstream registry names it, its files and its
    entrypoint."""

    upstream: str  # the registry it mirrors, e.g. registry.k8s.io
    repository: str
    tag: str
    files: Files
    entrypoint: tuple[str, ...]

    @property
    def reference(self) -> str:
        """The name pods and the kubelet use (resolved through the mirror)."""
        return f"{self.upstream}/{self.repository}:{self.tag}"


def _go_file(program: GoProgram, binary: str, path: str) -> Files:
    def files(source_dir: Path) -> dict[str, tuple[bytes, int]]:
        built = go_builder(source_dir).build(program) / binary
        return {path: (built.read_bytes(), 0o755)}

    return files


def _busybox(source_dir: Path) -> dict[str, tuple[bytes, int]]:
    data = debian_binary("busybox-static", BUSYBOX_VERSION, "bin/busybox", source_dir)
    return {"bin/busybox": (data, 0o755)}


IMAGES: tuple[Image, ...] = (
    Image(
        "registry.k8s.io", "pause", "3.10", _go_file(own("pause"), "pause", "pause"), ("/pause",)
    ),
    Image(
        "registry.k8s.io",
        "coredns/coredns",
        f"v{COREDNS_VERSION}",
        _go_file(coredns(COREDNS_VERSION), "coredns", "coredns"),
        ("/coredns",),
    ),
    Image("docker.io", "library/busybox", BUSYBOX_VERSION, _busybox, ("/bin/sh",)),
)


def layer(files: dict[str, tuple[bytes, int]], links: dict[str, str]) -> bytes:
    """One uncompressed layer tarball with fixed metadata (the same bytes for the same files)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        directories = sorted({str(Path(p).parent) for p in [*files, *links]} - {"."})
        for name in directories:
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(entry)
        for name in sorted(files):
            data, mode = files[name]
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(data), mode
            tar.addfile(entry, io.BytesIO(data))
        for name in sorted(links):
            entry = tarfile.TarInfo(name)
            entry.type, entry.linkname = tarfile.SYMTYPE, links[name]
            tar.addfile(entry)
    return buffer.getvalue()


def _links(image: Image) -> dict[str, str]:
    if image.repository == "library/busybox":
        return {f"bin/{applet}": "busybox" for applet in BUSYBOX_LINKS}
    return {}


def push_all(registry: str, storage: Path, source_dir: Path, progress=print) -> None:
    """Build every image and push it to ``registry`` (host:port, its data in ``storage``)
    unless it holds it already."""
    record = storage / PUSHED
    pushed = json.loads(record.read_text()) if record.is_file() else {}
    tool = go_builder(source_dir).build(CRANE) / "crane"
    work = source_dir / "images"
    work.mkdir(parents=True, exist_ok=True)
    for image in IMAGES:
        tarball = layer(image.files(source_dir), _links(image))
        digest = hashlib.sha256(tarball + json.dumps(image.entrypoint).encode()).hexdigest()
        target = f"{registry}/{image.repository}:{image.tag}"
        if pushed.get(image.reference) == digest and _present(tool, target):
            continue
        path = work / f"{image.repository.replace('/', '_')}-{image.tag}.tar"
        path.write_bytes(tarball)
        staging = f"{registry}/galley-lab/staging:{digest[:16]}"
        _crane(tool, "append", "--oci-empty-base", "-f", str(path), "-t", staging)
        _crane(
            tool,
            "mutate",
            staging,
            "--set-platform",
            "linux/amd64",
            *(f"--entrypoint={word}" for word in image.entrypoint),
            "-t",
            target,
        )
        pushed[image.reference] = digest
        record.write_text(json.dumps(pushed, indent=2, sort_keys=True) + "\n")
        progress(f"pushed {image.reference} to the lab registry ({target})")


def _present(tool: Path, target: str) -> bool:
    done = subprocess.run(
        [str(tool), "digest", "--insecure", target], capture_output=True, text=True, check=False
    )
    return done.returncode == 0


def _crane(tool: Path, *args: str) -> None:
    done = subprocess.run(
        [str(tool), *args, "--insecure"], capture_output=True, text=True, check=False, timeout=300
    )
    if done.returncode != 0:
        raise LabError(f"crane {args[0]} failed: {(done.stderr or done.stdout).strip()[-300:]}")
