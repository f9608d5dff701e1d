"""galley.lab.gobuild: the lab's Go modules, written from upstream's own go.mod, and a build
that is done once (the lab's pause program, with the machine's Go and no network)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from galley.lab import gobuild
from galley.lab.gobuild import GoBuilder, Upstream

# The shape of k8s.io/kubernetes' go.mod: its staging modules replaced with local directories.
KUBERNETES_GO_MOD = """module k8s.io/kubernetes

go 1.24.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/kubelet v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/kubelet => ./staging/src/k8s.io/kubelet
\tgithub.com/example/elsewhere => github.com/example/fork v1.2.3
)
"""


def test_kubernetes_is_built_from_upstreams_mains_with_the_staging_tags(tmp_path):
    upstream = Upstream(KUBERNETES_GO_MOD, "2025-09-10T02:03:04Z", "abc123")
    program = gobuild.kubernetes("1.33.4")
    text = GoBuilder(tmp_path).go_mod(program, upstream)
    assert "require k8s.io/kubernetes v1.33.4\n" in text
    assert "\tk8s.io/api => k8s.io/api v0.33.4\n" in text
    assert "\tk8s.io/kubelet => k8s.io/kubelet v0.33.4\n" in text
    assert "elsewhere" not in text  # only the staging modules become tags
    assert "tool k8s.io/kubernetes/cmd/kube-apiserver\n" in text
    assert program.binaries() == [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    ]
    flags = program.ldflags(upstream)
    assert "-X k8s.io/component-base/version.gitVersion=v1.33.4" in flags
    assert "-X k8s.io/component-base/version.buildDate=2025-09-10T02:03:04Z" in flags


def test_flannel_is_built_with_cgo_and_static_as_upstream_releases_it():
    program = gobuild.flannel("0.26.7")
    assert program.cgo
    flags = program.ldflags(Upstream("", "", ""))
    assert "-X github.com/flannel-io/flannel/pkg/version.Version=v0.26.7" in flags
    assert "-extldflags -static" in flags


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain on this machine")
def test_the_pause_program_is_built_once_and_then_reused(tmp_path):
    lines = []
    builder = GoBuilder(tmp_path, progress=lines.append)
    out = builder.build(gobuild.own("pause"))
    assert lines[0] == "building pause from its Go modules (once per machine)"
    assert lines[1].startswith("built pause in ")
    assert (out / "pause").stat().st_mode & 0o111
    first = (out / "pause").stat().st_mtime_ns
    assert builder.build(gobuild.own("pause")) == out
    assert (out / "pause").stat().st_mtime_ns == first and len(lines) == 2  # nothing rebuilt
    # It runs as a pod's sandbox does: until SIGTERM, then exits 0.
    process = subprocess.Popen([str(out / "pause")])
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.5)
    process.terminate()
    assert process.wait(timeout=5) == 0
