"""The etcd members an inventory declares: the hosts of its ``etcd`` group, each one's member
name, URLs and identity (member name = host name, private IP)."""

from __future__ import annotations

from collections.abc import Sequence

from pyinfra import inventory
from pyinfra.api.host import Host

from galley.etcd.plan import Wanted
from galley.vault.pki import Identity


def member_name(member: Host) -> str:
    """The etcd member name of an inventory host (its host name unless ``etcd_name`` is set)."""
    return member.data.get("etcd_name") or member.name


def members() -> list[Host]:
    """The hosts of the ``etcd`` group, in inventory order."""
    return list(inventory.get_group("etcd", []))


def wanted(member: Host) -> Wanted:
    """An inventory host as the membership planner sees it: name, peer and client URL."""
    data = member.data
    return Wanted(
        member_name(member),
        f"https://{data.private_ip}:{data.etcd_peer_port}",
        f"https://{data.private_ip}:{data.etcd_client_port}",
    )


def member_identity(host_name: str, private_ip: str) -> Identity:
    """An etcd member's identity: CN host name, SANs host name, localhost and its IPs."""
    return Identity(host_name, (host_name, "localhost"), (private_ip, "127.0.0.1"))


def initial_cluster(hosts: Sequence[Host]) -> str:
    """etcd's ``initial-cluster`` value: ``name=https://ip:peer_port`` for every member."""
    return ",".join(f"{w.name}={w.peer_url}" for w in map(wanted, hosts))


def client_endpoints(hosts: Sequence[Host]) -> list[str]:
    """The client URLs of all members (each member's own port)."""
    return [wanted(h).client_url for h in hosts]
