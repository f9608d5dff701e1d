"""galley.facts.fleet: fact commands run by sh against a temporary release prefix, with a
systemctl stand-in whose "unit" is a real process on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from galley.facts.fleet import ComponentVersions, FlannelLease, running_version


def run(fact, path_dir: Path | None = None, **arguments):
    """Run the fact's command with sh and process its output as pyinfra does."""
    env = dict(os.environ)
    if path_dir:
        env["PATH"] = f"{path_dir}:{env['PATH']}"
    done = subprocess.run(
        ["sh", "-c", fact.command(**arguments)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return fact.process(lines) if lines else fact.default()


def install(prefix: Path, release: str, *versions: str, current: str | None = None) -> None:
    for version in versions:
        (prefix / release / version).mkdir(parents=True)
        (prefix / release / version / ".galley-complete").write_text("ab" * 32 + "\n")
    if current:
        (prefix / release / "current").symlink_to(current)


def start_program(program: Path) -> subprocess.Popen:
    """Write and start a Python program at ``program`` that runs until killed and whose
    ``--version`` says etcd 3.5.31."""
    program.write_text(
        "import sys, time\n"
        "if '--version' in sys.argv:\n    print('etcd Version: 3.5.31')\n"
        "else:\n    time.sleep(60)\n"
    )
    return subprocess.Popen([sys.executable, str(program)])


@pytest.fixture
def service(tmp_path):
    """A running process standing in for a unit's main process (a Python program, as the lab's
    stand-ins are: asked through its script), and a systemctl stand-in reporting its PID for
    unit "etcd" and 0 for any other unit."""
    program = tmp_path / "etcd-3.5.31"
    process = start_program(program)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    # As `systemctl show -p MainPID --value -- UNIT...`: one value per unit, blank lines between.
    script.write_text(
        "#!/bin/sh\nunits=\nfor a; do\n"
        f'  if [ -n "$units" ]; then [ "$a" = etcd ] && echo {process.pid} || echo 0; echo; fi\n'
        '  [ "$a" = -- ] && units=1\ndone\n'
    )
    script.chmod(0o755)
    yield bin_dir
    process.kill()
    process.wait()


def test_versions_report_installed_current_and_what_the_process_runs(tmp_path, service):
    prefix = tmp_path / "opt"
    install(prefix, "etcd", "3.5.29", "3.5.30", current="3.5.30")
    install(prefix, "flanneld", "0.25.1")
    versions = run(
        ComponentVersions(), service, components=["etcd", "flanneld"], prefix=str(prefix)
    )
    assert versions == {
        # What the process was started from reports 3.5.31, whatever is current on disk.
        "etcd": {
            "installed": ["3.5.29", "3.5.30"],
            "current": "3.5.30",
            "running": "3.5.31",
        },
        "flanneld": {"installed": ["0.25.1"], "current": None, "running": None},
    }


def test_a_program_galley_installed_is_known_by_its_versioned_path_without_running_it(
    tmp_path,
):
    """A unit's program runs from <prefix>/etcd/3.5.29/: that is its version, although its
    --version would say 3.5.31 (it is not run at all)."""
    prefix = tmp_path / "opt"
    install(prefix, "etcd", "3.5.29", current="3.5.29")
    program = prefix / "etcd" / "3.5.29" / "etcd"
    process = start_program(program)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho {process.pid}\n")
    (bin_dir / "systemctl").chmod(0o755)
    try:
        versions = run(ComponentVersions(), bin_dir, components=["etcd"], prefix=str(prefix))
    finally:
        process.kill()
        process.wait()
    assert versions["etcd"]["running"] == "3.5.29"


def test_a_component_that_is_not_there_has_no_versions(tmp_path, service):
    versions = run(ComponentVersions(), service, components="kubelet", prefix=str(tmp_path))
    assert versions == {"kubelet": {"installed": [], "current": None, "running": None}}


def test_component_names_must_be_safe_for_the_shell():
    with pytest.raises(ValueError, match="invalid component name"):
        ComponentVersions().command(components=["etcd; rm -rf /"])


@pytest.mark.parametrize(
    ("output", "version"),
    [
        (["etcd Version: 3.5.30", "Git SHA: Not provided", "Go Version: go1.22"], "3.5.30"),
        (["Kubernetes v1.30.2"], "1.30.2"),
        (["v0.25.1"], "0.25.1"),
        (["Kubernetes v1.31.0-rc.1"], "1.31.0-rc.1"),
        (["containerd github.com/containerd/containerd/v2 2.1.9+unknown "], "2.1.9"),
        (["no version here"], None),
    ],
)
def test_running_version_is_the_first_version_a_binary_prints(output, version):
    assert running_version(output) == version


def test_flannel_lease_is_read_from_subnet_env(tmp_path):
    env = tmp_path / "subnet.env"
    env.write_text(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    assert run(FlannelLease(), path=str(env)) == {
        "network": "10.244.0.0/16",
        "subnet": "10.244.3.1/24",
        "mtu": 1450,
        "ipmasq": True,
    }


def test_no_flannel_lease_is_none(tmp_path):
    assert run(FlannelLease(), path=str(tmp_path / "absent.env")) is None
