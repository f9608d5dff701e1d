"""etcd's authorisation while a deploy runs: once the etcd phase's members run, one member
gives etcd exactly the users and roles the components declare, turns authorisation on
(`galley.etcd.access`) and stamps the auth revision. Decided from the `EtcdAccess` fact, so a
dry run lists the calls and a second run finds the stamp current and reads nothing more; the
calls are made against etcd's state as read when they run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyinfra import host
from pyinfra.api.exceptions import OperationError
from pyinfra.api.inventory import Inventory
from pyinfra.operations import python

from galley.etcd.access import STAMP_KEY, AuthState, EtcdUser, changes, stamp_value, summary
from galley.etcd.etcdctl import etcdctl_command
from galley.etcd.group import members
from galley.facts.etcd import EtcdAccess
from galley.host.etcd import access_of, cluster_view, local_endpoint


def keep_access(users_of: Callable[[Inventory], Sequence[EtcdUser]]) -> None:
    """On the member that reads the cluster (the first etcd host of a new one): the calls that
    make etcd's users, roles and authorisation what the inventory's certificates declare
    (``users_of``), if any, and the stamp that spares the next run reading them."""
    hosts = members()
    if not hosts:
        return
    view = cluster_view(host.state)
    acting = view.reader if view else hosts[0]
    if host != acting:
        return
    users = users_of(host.inventory)
    found = view.access() if view else access_of(acting)
    stamped = found["error"] is None and found["stamp"] == stamp_value(found["revision"], users)
    if stamped:
        return
    if found["error"] is None and found["users"] is None:  # stamped for another declaration
        found = access_of(acting, trust_stamp=False)
    if found["error"] is not None:
        name = "etcd access: users, roles and authorisation, as etcd holds them when it runs"
    else:
        calls = changes(AuthState.of(found), users)
        name = f"etcd access: {summary(calls) or 'as declared; stamp the auth revision'}"
    python.call(name=name, function=_apply, users=users)


def _apply(users: Sequence[EtcdUser]) -> None:
    """Read etcd's users and roles again, make the calls they still need, then stamp the
    auth revision at which etcd holds exactly ``users``."""
    endpoint = local_endpoint(host)
    found = _read(endpoint)
    calls = changes(AuthState.of(found), users)
    if calls:
        # One round trip, stopping at the first call etcd refuses (authorisation stays off).
        _run(" && ".join(etcdctl_command([endpoint], *call) for call in calls))
        found = _read(endpoint)
        if changes(AuthState.of(found), users):
            raise OperationError("etcd access: etcd's users changed while galley set them")
    _run(etcdctl_command([endpoint], "put", STAMP_KEY, stamp_value(found["revision"], users)))


def _read(endpoint: str) -> Mapping[str, Any]:
    fact = EtcdAccess()
    ok, output = host.run_shell_command(fact.command(endpoint=endpoint))
    found = fact.process(output.stdout_lines) if ok else fact.default()
    if found["error"] is not None:
        raise OperationError(f"cannot read etcd's users and roles: {found['error']}")
    return found


def _run(command: str) -> None:
    ok, output = host.run_shell_command(command)
    if not ok:
        error = (output.stderr_lines or ["no output"])[-1].removeprefix("Error: ")
        raise OperationError(f"etcd access: etcdctl failed: {error}")
