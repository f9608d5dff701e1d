"""The lab's stand-in for flannel's CNI plugin: the delegate it builds and the CNI protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from galley.lab.standins.flannel_cni import CniError, delegate_config, handle

LEASE = {
    "FLANNEL_NETWORK": "172.16.0.0/16",
    "FLANNEL_SUBNET": "172.16.232.1/24",
    "FLANNEL_MTU": "1450",
    "FLANNEL_IPMASQ": "true",
}
CONF = {
    "cniVersion": "1.0.0",
    "name": "cbr0",
    "type": "flannel",
    "delegate": {"hairpinMode": True, "isDefaultGateway": True},
}


def test_delegate_is_a_gateway_bridge_over_the_lease_network():
    assert delegate_config(CONF, LEASE) == {
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "type": "bridge",
        "hairpinMode": True,
        "isDefaultGateway": True,
        "isGateway": True,
        "ipMasq": False,  # flanneld masquerades (FLANNEL_IPMASQ=true)
        "mtu": 1450,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "172.16.232.0/24"}]],
            "routes": [{"dst": "172.16.0.0/16"}],
        },
    }


def test_delegate_keeps_what_the_config_sets():
    conf = {**CONF, "delegate": {"type": "ptp", "mtu": 1400, "ipMasq": True}}
    delegate = delegate_config(conf, {**LEASE, "FLANNEL_IPMASQ": "false"})
    assert (delegate["type"], delegate["mtu"], delegate["ipMasq"]) == ("ptp", 1400, True)
    assert "isGateway" not in delegate


@pytest.fixture
def node(tmp_path: Path) -> dict[str, str]:
    """A subnet file, a data dir, and a delegate 'bridge' that records its input."""
    subnet = tmp_path / "subnet.env"
    subnet.write_text("".join(f"{k}={v}\n" for k, v in LEASE.items()))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bridge = bin_dir / "bridge"
    bridge.write_text(
        f'#!/bin/sh\ncat > {tmp_path}/"$CNI_COMMAND".json\n'
        'echo \'{"cniVersion": "1.0.0", "ips": [{"address": "172.16.232.2/24"}]}\'\n'
    )
    bridge.chmod(0o755)
    conf = {**CONF, "subnetFile": str(subnet), "dataDir": str(tmp_path / "data")}
    return {
        "tmp": str(tmp_path),
        "conf": json.dumps(conf),
        "CNI_CONTAINERID": "pod-1",
        "CNI_NETNS": "/var/run/netns/pod-1",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bin_dir),
    }


def _env(node: dict[str, str], command: str) -> dict[str, str]:
    return {**{k: v for k, v in node.items() if k.startswith("CNI_")}, "CNI_COMMAND": command}


def test_add_runs_the_delegate_and_del_undoes_it(node):
    result = json.loads(handle(_env(node, "ADD"), node["conf"]))
    assert result["ips"] == [{"address": "172.16.232.2/24"}]
    sent = json.loads(Path(node["tmp"], "ADD.json").read_text())
    assert sent["ipam"]["ranges"] == [[{"subnet": "172.16.232.0/24"}]]
    saved = Path(node["tmp"], "data", "pod-1")
    assert json.loads(saved.read_text()) == sent

    assert handle(_env(node, "DEL"), node["conf"]) == ""
    assert json.loads(Path(node["tmp"], "DEL.json").read_text()) == sent
    assert not saved.exists()
    assert handle(_env(node, "DEL"), node["conf"]) == ""  # again: nothing to undo


def test_missing_lease_asks_to_try_again_later(node):
    conf = {**json.loads(node["conf"]), "subnetFile": "/nonexistent/subnet.env"}
    with pytest.raises(CniError) as error:
        handle(_env(node, "ADD"), json.dumps(conf))
    assert error.value.code == 11
    assert error.value.msg.startswith(
        "failed to load flannel 'subnet.env' file: open /nonexistent/subnet.env: "
        "no such file or directory"
    )


def test_missing_delegate_plugin_and_environment_are_errors(node):
    with pytest.raises(CniError, match=r'failed to find plugin "bridge" in path \[/nowhere\]'):
        handle({**_env(node, "ADD"), "CNI_PATH": "/nowhere"}, node["conf"])
    with pytest.raises(CniError, match=r"required env variables \[CNI_NETNS\] missing"):
        handle({**_env(node, "ADD"), "CNI_NETNS": ""}, node["conf"])


def test_version_lists_the_supported_spec_versions():
    answer = json.loads(handle({"CNI_COMMAND": "VERSION"}, '{"cniVersion": "1.0.0"}'))
    assert answer["cniVersion"] == "1.0.0" and "1.1.0" in answer["supportedVersions"]
