"""etcd's authorisation while a deploy runs: once the etcd phase's members run, one member
gives etcd exactly the users and roles the components declare and turns authorisation on
(`galley.etcd.access`). Decided from the `EtcdAccess` fact, so a dry run lists the calls and a
second run finds nothing to do; the calls are made against etcd's state as read when they
run."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyinfra import host
from pyinfra.api.exceptions import OperationError
from pyinfra.api.inventory import Inventory
from pyinfra.operations import python

from galley.etcd.access import AuthState, EtcdUser, changes, summary
from galley.etcd.etcdctl import etcdctl_command
from galley.etcd.group import members
from galley.facts.etcd import EtcdAccess
from galley.host.etcd import access_of, cluster_view, local_endpoint


def keep_access(users_of: Callable[[Inventory], Sequence[EtcdUser]]) -> None:
    """On the member that reads the cluster (the first etcd host of a new one): the calls that
    make etcd's users, roles and authorisation what the inventory's certificates declare
    (``users_of``), if any."""
    hosts = members()
    if not hosts:
        return
    view = cluster_view(host.state)
    acting = view.reader if view else hosts[0]
    if host != acting:
        return
    users = users_of(host.inventory)
    found = view.access() if view else access_of(acting)
    if found["error"] is not None:
        name = "etcd access: users, roles and authorisation, as etcd holds them when it runs"
    else:
        calls = changes(AuthState.of(found), users)
        if not calls:
            return
        name = f"etcd access: {summary(calls)}"
    python.call(name=name, function=_apply, users=users)


def _apply(users: Sequence[EtcdUser]) -> None:
    """Read etcd's users and roles again and make the calls they still need."""
    endpoint = local_endpoint(host)
    fact = EtcdAccess()
    ok, output = host.run_shell_command(fact.command(endpoint=endpoint))
    found = fact.process(output.stdout_lines) if ok else fact.default()
    if found["error"] is not None:
        raise OperationError(f"cannot read etcd's users and roles: {found['error']}")
    calls = changes(AuthState.of(found), users)
    if not calls:
        return
    # One round trip, stopping at the first call etcd refuses (authorisation stays off).
    ok, output = host.run_shell_command(
        " && ".join(etcdctl_command([endpoint], *call) for call in calls)
    )
    if not ok:
        error = (output.stderr_lines or ["no output"])[-1].removeprefix("Error: ")
        raise OperationError(f"etcd access: etcdctl failed: {error}")
