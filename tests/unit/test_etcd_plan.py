"""galley.etcd.plan: the next membership step, or a refusal, from plain data."""

from __future__ import annotations

import re

import pytest

from galley.etcd.plan import (
    AddLearner,
    Done,
    Live,
    Member,
    Promote,
    Refuse,
    RemoveMember,
    StartMember,
    Wanted,
    plan_reconcile,
    plan_remove,
    quorum,
    unlisted_note,
)


def wanted(*names: str) -> list[Wanted]:
    return [Wanted(n, f"https://{n}:2380", f"https://{n}:2379") for n in names]


def member(name: str, learner: bool = False, started: bool = True, url: str = "") -> Member:
    return Member(
        id=f"id-{name}",
        name=name if started else "",
        peer_urls=(url or f"https://{name}:2380",),
        client_urls=(f"https://{name}:2379",) if started else (),
        is_learner=learner,
    )


def live(*members: Member, down: tuple[str, ...] = (), empty=(), **extra) -> Live:
    health = {
        m.id: ("connection refused" if m.name in down or not m.started else None) for m in members
    }
    options = {"leaders": frozenset({members[0].id})} | extra
    return Live(members, health, empty_data=frozenset(empty), **options)


THREE = (member("a"), member("b"), member("c"))


def test_in_sync_is_done_and_names_members_the_inventory_does_not_list():
    assert plan_reconcile(wanted("a", "b", "c"), live(*THREE)) == Done(
        "etcd membership matches the inventory (3 voters: a, b, c)"
    )
    note = plan_reconcile(wanted("a", "b"), live(*THREE)).describe()
    assert "not in the inventory: c (galley etcd remove takes them out)" in note


def test_the_first_missing_host_is_added_as_a_learner():
    step = plan_reconcile(wanted("a", "b", "c", "d", "e"), live(*THREE, empty={"d", "e"}))
    assert step == AddLearner(wanted("d")[0])


def test_a_pending_join_is_finished_before_anything_else():
    unstarted = member("d", learner=True, started=False)
    plan = plan_reconcile(wanted("a", "b", "c", "d", "e"), live(*THREE, unstarted, empty="de"))
    assert plan == StartMember(wanted("d")[0], unstarted)
    started = member("d", learner=True)
    assert plan_reconcile(wanted("a", "b", "c", "d"), live(*THREE, started)) == Promote(
        wanted("d")[0], started
    )


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"down": ("b",)}, r"^not adding d: member b \[id-b https://b:2380\] is unhealthy"),
        ({"alarms": ("memberID:1 alarm:NOSPACE",)}, "etcd alarm raised: memberID:1 alarm:NOSPACE"),
        ({"leaders": frozenset({"id-a", "id-b"})}, "do not agree on one leader"),
        ({"leaders": frozenset()}, r"leaders reported: none\)$"),
    ],
)
def test_no_add_unless_every_member_is_healthy_with_one_leader_and_no_alarm(state, reason):
    step = plan_reconcile(wanted("a", "b", "c", "d"), live(*THREE, empty="d", **state))
    assert isinstance(step, Refuse)
    assert re.search(reason, step.reason), step.reason


def test_no_add_while_a_learner_not_in_the_inventory_is_pending():
    stray = member("x", learner=True, started=False)
    step = plan_reconcile(wanted("a", "b", "c", "d"), live(*THREE, stray, empty="d"))
    assert isinstance(step, Refuse) and "pending but not in the inventory" in step.reason
    two = (member("d", True, False), member("e", True, False, url="https://e:2380"))
    step = plan_reconcile(wanted("a", "b", "c", "d", "e"), live(*THREE, *two))
    assert isinstance(step, Refuse) and step.reason.startswith("more than one member is pending")


def test_a_replaced_droplet_has_its_old_member_removed_first():
    step = plan_reconcile(wanted("a", "b", "c"), live(*THREE, down=("c",), empty="c"))
    assert isinstance(step, RemoveMember) and step.member == THREE[2]
    assert "droplet was replaced" in step.reason
    after = live(*THREE[:2], empty="c")
    assert plan_reconcile(wanted("a", "b", "c"), after) == AddLearner(wanted("c")[0])


def test_a_down_member_with_its_data_is_left_to_come_back():
    note = plan_reconcile(wanted("a", "b", "c"), live(*THREE, down=("c",))).describe()
    assert note.endswith("unhealthy: c")


def test_no_replacement_while_another_member_is_down():
    step = plan_reconcile(wanted("a", "b", "c"), live(*THREE, down=("b", "c"), empty="c"))
    assert isinstance(step, Refuse) and step.reason.startswith("not replacing c: member b")


def test_a_healthy_member_moved_to_a_new_address_is_refused():
    moved = (member("a"), member("b"), member("c", url="https://old-c:2380"))
    step = plan_reconcile(wanted("a", "b", "c"), live(*moved, empty="c"))
    assert isinstance(step, Refuse) and "add the new droplet under a new name" in step.reason


def test_a_host_that_is_not_a_member_joins_only_with_an_empty_data_dir():
    step = plan_reconcile(wanted("a", "b", "c", "d"), live(*THREE))
    assert isinstance(step, Refuse) and "its data dir is not empty" in step.reason


def test_removal_keeps_3_voters_and_an_odd_count_unless_opted_in():
    five = (*THREE, member("d"), member("e"))
    step = plan_remove("c", wanted("a", "b"), live(*THREE), allow_even=False)
    assert step == Refuse(
        "removing c would leave 2 voters; galley keeps at least 3 (replace the member instead)"
    )
    step = plan_remove("e", wanted("a", "b", "c", "d"), live(*five), allow_even=False)
    assert isinstance(step, Refuse) and "pass --allow-even" in step.reason
    step = plan_remove("e", wanted("a", "b", "c", "d"), live(*five), allow_even=True)
    assert step == RemoveMember(five[4], "leaving the cluster")
    step = plan_remove("d", wanted("a", "b", "c"), live(*five[:4]), allow_even=False)
    assert step == RemoveMember(five[3], "leaving the cluster")


def test_removal_refusals_and_the_leader_handing_off_first():
    four = (*THREE, member("d"))
    step = plan_remove("d", wanted("a", "b", "c", "d"), live(*four), allow_even=False)
    assert isinstance(step, Refuse) and "still in the inventory" in step.reason
    step = plan_remove("a", wanted("b", "c", "d"), live(*four), allow_even=False)
    assert isinstance(step, RemoveMember) and step.move_leader_to == "id-b"
    step = plan_remove("d", wanted("a", "b", "c"), live(*four, down=("b",)), allow_even=False)
    assert isinstance(step, Refuse) and step.reason.startswith("not removing d: member b")
    learner = member("d", learner=True)
    assert plan_remove("d", wanted("a", "b", "c"), live(*THREE, learner), False) == RemoveMember(
        learner, "leaving the cluster"
    )
    assert plan_remove("z", wanted("a", "b", "c"), live(*THREE), False) == Done(
        "z is not a member of the etcd cluster"
    )


def test_a_live_member_missing_from_the_inventory_is_never_removed_by_a_deploy_but_named():
    stray = member("x")
    step = plan_reconcile(wanted("a", "b", "c"), live(*THREE, stray))
    assert isinstance(step, Done) and "not in the inventory: x (galley etcd remove" in step.note
    # a host to add beside a healthy stray: added, the stray left alone
    step = plan_reconcile(wanted("a", "b", "c", "d"), live(*THREE, stray, empty="d"))
    assert step == AddLearner(wanted("d")[0])
    # a dead stray blocks changes, and the refusal says how to take it out
    step = plan_reconcile(wanted("a", "b", "c", "d"), live(*THREE, stray, down="x", empty="d"))
    assert isinstance(step, Refuse) and step.reason == (
        "not adding d: member x [id-x https://x:2380] is unhealthy (connection refused) and not "
        "in the inventory's etcd group: take it out first with `galley etcd remove INVENTORY x`"
    )
    four = (*THREE, member("d"))
    step = plan_remove("d", wanted("a", "b"), live(*four, stray, down="x"), allow_even=True)
    assert isinstance(step, Refuse) and "`galley etcd remove INVENTORY x`" in step.reason


def test_the_deploy_note_names_each_unlisted_member_and_how_to_take_it_out():
    assert unlisted_note(wanted("a", "b", "c"), THREE) is None
    unstarted = member("y", learner=True, started=False)
    note = unlisted_note(wanted("a", "b"), (*THREE, unstarted))
    assert note == (
        "note: 2 etcd member(s) not in the inventory's etcd group, left in the cluster (they "
        "still count for quorum): c [id-c https://c:2380]: `galley etcd remove INVENTORY c`; "
        "(not started) [id-y https://y:2380]: `etcdctl member remove id-y`"
    )
    # a listed host's member that has not started yet is matched by its peer URL
    assert unlisted_note(wanted("a", "b", "y"), (*THREE[:2], unstarted)) is None


def test_quorum():
    assert [quorum(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
