"""Command lines and files the lab builds for each droplet and service; the lab's lock."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from galley.lab import droplets, services
from galley.lab.state import Droplet


def test_nspawn_boots_the_droplet_on_the_bridge_without_registering():
    cmd = droplets.nspawn_command("lab-etcd-1", Path("/lab/droplets/lab-etcd-1/root"), "br-galley")
    assert cmd[0] == "systemd-nspawn"
    assert {"--register=no", "--keep-unit", "--boot", "--console=pipe"} <= set(cmd)
    assert "--directory=/lab/droplets/lab-etcd-1/root" in cmd
    assert "--machine=lab-etcd-1" in cmd
    assert "--network-bridge=br-galley" in cmd


def test_ssh_pins_host_keys_and_never_prompts():
    cmd = droplets.ssh_command("198.18.0.10", "/k", "/kh", "hostname")
    assert cmd[-2:] == ["root@198.18.0.10", "hostname"]
    assert "StrictHostKeyChecking=yes" in cmd
    assert "UserKnownHostsFile=/kh" in cmd
    assert "BatchMode=yes" in cmd


def test_network_unit_sets_a_static_address_its_own_mac_and_no_default_route():
    unit = droplets.network_unit("198.18.0.11", 24)
    assert "Address=198.18.0.11/24" in unit
    assert "MACAddress=02:00:c6:12:00:0b" in unit
    assert "Gateway" not in unit


def test_apt_proxy_config_binds_to_the_bridge_and_maps_debian(tmp_path):
    cmd = services.apt_proxy_command(tmp_path / "lab", tmp_path / "cache", "198.18.0.1")
    assert cmd == ["apt-cacher-ng", "-c", str(tmp_path / "lab" / "apt-cacher-ng")]
    conf = (tmp_path / "lab" / "apt-cacher-ng" / "acng.conf").read_text()
    assert "BindAddress: 198.18.0.1" in conf
    assert "Port: 3142" in conf
    assert "Remap-debrep: file:deb_mirror*.gz /debian ; http://deb.debian.org/debian/" in conf


def test_prepared_droplet_root_has_its_identity(tmp_path, monkeypatch):
    def fake_overlay(lower, upper, work, merged):
        for directory in ("etc/ssh", "etc/apt/apt.conf.d"):
            (merged / directory).mkdir(parents=True)

    monkeypatch.setattr(droplets, "mount_overlay", fake_overlay)
    droplet = Droplet("lab-cp-1", "198.18.0.13", ["control_plane"])
    root = droplets.prepare_root(
        droplet,
        tmp_path / "rootfs",
        tmp_path,
        prefix=24,
        public_key="ssh-ed25519 AAAA lab\n",
        apt_proxy="http://198.18.0.1:3142",
        hosts={"lab-cp-1": "198.18.0.13"},
    )
    assert (root / "etc/hostname").read_text() == "lab-cp-1\n"
    assert "198.18.0.13 lab-cp-1" in (root / "etc/hosts").read_text()
    assert len((root / "etc/machine-id").read_text().strip()) == 32
    assert (root / "root/.ssh/authorized_keys").stat().st_mode & 0o777 == 0o600
    assert "198.18.0.1:3142" in (root / "etc/apt/apt.conf.d/01galley-lab-proxy").read_text()
    # What a kubelet needs that nspawn does not give a machine, set up at every boot.
    unit = root / "etc/systemd/system/galley-lab-droplet.service"
    assert "mount -o remount,rw,bind" in unit.read_text()
    enabled = root / "etc/systemd/system/sysinit.target.wants/galley-lab-droplet.service"
    assert enabled.resolve() == unit.resolve()
    lines = droplets.host_key_lines(root, droplet.address)
    assert {line.split()[1] for line in lines} >= {"ssh-ed25519", "ssh-rsa"}
    assert all(line.startswith("198.18.0.13 ") for line in lines)


def test_a_second_changing_lab_command_is_refused_while_one_runs(tmp_path):
    lab_dir = tmp_path / "lab"
    env = {**os.environ, "GALLEY_LAB_DIR": str(lab_dir)}

    def galley_lab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "galley"), "lab", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # As a running `galley lab up` holds it.
    with (tmp_path / "lab.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = galley_lab("down")
        status = galley_lab("status")  # reading needs no lock
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (
        "galley: error: another `galley lab` command is changing the lab (it holds "
        f"{tmp_path / 'lab.lock'}); nothing was done: run this one when it has ended\n"
    )
    assert (status.returncode, status.stdout) == (0, "no lab is up\n")
    done = galley_lab("down")
    assert (done.returncode, done.stdout, done.stderr) == (0, "no lab is up\n", "")


def test_a_droplets_veth_is_never_another_droplets():
    # Booting lab-worker-10 clears its leftovers: never lab-worker-1's live veth.
    assert droplets.veth_name("lab-worker-1") == "vb-lab-worker-1"
    assert droplets.veth_name("lab-worker-10") is None  # nspawn hashes names this long
