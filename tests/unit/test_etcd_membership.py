"""galley.etcd.members against real etcd 3.5.30 clusters on 127.0.0.1 (plain http): grow
3 -> 5 through learners, replace a dead member, refusals, removal, and a run killed after
``member add`` finished by the next run, while writers put through every member."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from galley.etcd.client import EtcdClient
from galley.etcd.members import Membership, MembershipError
from galley.etcd.plan import Member
from tests.etcd_local import LocalHosts, local_run


@dataclass
class Recorder:
    """A runner that records every command line and its stdout."""

    calls: list[tuple[str, str]] = field(default_factory=list)  # the successful ones

    def __call__(self, command: str) -> tuple[bool, str, str]:
        ok, out, err = local_run(command)
        if ok:
            self.calls.append((command, out))
        return ok, out, err

    def changes(self) -> list[str]:
        """The membership changes etcd accepted, as ``"add m4"``, ``"promote <id>"``..."""
        found = []
        for command, _ in self.calls:
            words = command.split()
            for verb in ("add", "promote", "remove"):
                if f"member {verb}" in command:
                    found.append(f"{verb} {words[words.index(verb) + 1]}")
        return found


class Writers:
    """One thread per endpoint putting a key every 50 ms through etcd's JSON gateway."""

    def __init__(self, endpoints: list[str]) -> None:
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.writes = 0
        self.threads = [threading.Thread(target=self._loop, args=(e,)) for e in endpoints]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def check(self) -> None:
        """Every write went through (and there were writes)."""
        assert self.writes > 20 and self.failures == []

    def _loop(self, endpoint: str) -> None:
        count = 0
        while not self.stop.wait(0.05):
            count += 1
            body = {
                "key": base64.b64encode(f"writer/{endpoint}".encode()).decode(),
                "value": base64.b64encode(str(count).encode()).decode(),
            }
            request = urllib.request.Request(
                f"{endpoint}/v3/kv/put", data=json.dumps(body).encode(), method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    json.load(response)["header"]["revision"]
                self.writes += 1
            except Exception as exc:  # every failure counts, whatever it is
                self.failures.append(f"{time.strftime('%H:%M:%S')} {endpoint}: {exc}")


CLUSTERS = ("grow", "replace", "refusals", "killed", "settle")


@pytest.fixture(scope="module")
def clusters(etcd_release: Path, tmp_path_factory) -> Iterator[dict[str, LocalHosts]]:
    """A new 3-member cluster for each test of this module, all started at once (etcd accepts
    membership changes only once every voter has been connected for 5 s)."""
    started = {}
    for name in CLUSTERS:
        root = tmp_path_factory.mktemp(f"etcd-{name}")
        started[name] = LocalHosts(etcd_release, root / "members")
        started[name].root.mkdir()
        started[name].bootstrap("m1", "m2", "m3")
    yield started
    for hosts in started.values():
        hosts.close()


def cluster(clusters: dict[str, LocalHosts], name: str) -> LocalHosts:
    """The test's own cluster, once healthy."""
    hosts = clusters[name]
    assert hosts.healthy("m1", "m2", "m3")
    return hosts


def membership(hosts: LocalHosts, run=None, log=None, client=None) -> Membership:
    return Membership(
        client or hosts.client(run),
        hosts,
        journal_path=hosts.root.parent / "journal.json",
        snapshot_dir=str(hosts.root.parent / "snapshots"),
        log=print if log is None else log.append,
        timeout=30,
    )


def journal(hosts: LocalHosts) -> dict:
    return json.loads((hosts.root.parent / "journal.json").read_text())


def snapshots(hosts: LocalHosts) -> list[Path]:
    directory = hosts.root.parent / "snapshots"
    return sorted(directory.iterdir()) if directory.exists() else []


def live_members(hosts: LocalHosts) -> tuple[Member, ...]:
    return hosts.client().members([m.wanted.client_url for m in hosts.members.values()])


def test_grows_3_to_5_one_learner_at_a_time_and_back_to_3_in_two_removals(clusters):
    hosts = cluster(clusters, "grow")
    recorder, log = Recorder(), []
    writers = Writers([w.client_url for w in hosts.wanted("m1", "m2", "m3")])
    with writers:
        note = membership(hosts, recorder, log).reconcile(
            hosts.wanted("m1", "m2", "m3", "m4", "m5")
        )
    writers.check()
    members = live_members(hosts)
    assert sorted(m.name for m in members) == ["m1", "m2", "m3", "m4", "m5"]
    assert not any(m.is_learner for m in members)
    assert note.startswith("etcd membership matches the inventory (5 voters")
    ids = {m.name: m.id for m in members}
    # one change at a time: m4 is added, then promoted, before m5 is added
    assert recorder.changes() == [
        "add m4",
        f"promote {ids['m4']}",
        "add m5",
        f"promote {ids['m5']}",
    ]
    # each new member started with state existing and exactly what member add returned
    returned = [
        out.split('ETCD_INITIAL_CLUSTER="')[1].split('"')[0]
        for command, out in recorder.calls
        if "member add" in command
    ]
    assert hosts.starts[3:] == [("m4", "existing", returned[0]), ("m5", "existing", returned[1])]
    assert len(returned[0].split(",")) == 4 and len(returned[1].split(",")) == 5
    assert len(snapshots(hosts)) == 4  # before each add and each promote
    assert {oct(s.stat().st_mode & 0o777) for s in snapshots(hosts)} == {"0o600"}
    assert "etcd membership: add m4 (http://" in log[0]
    assert journal(hosts)["status"] == "finished"

    four = hosts.wanted("m1", "m2", "m3", "m4")
    with pytest.raises(MembershipError, match="would leave 4 voters, an even count"):
        membership(hosts).remove("m5", four)
    assert len(live_members(hosts)) == 5 and len(snapshots(hosts)) == 4
    membership(hosts).remove("m5", four, allow_even=True)
    assert not hosts.running("m5") and not hosts.members["m5"].data_dir.exists()
    membership(hosts).remove("m4", four[:3])
    assert sorted(m.name for m in live_members(hosts)) == ["m1", "m2", "m3"]
    assert not hosts.running("m4") and not hosts.members["m4"].data_dir.exists()
    assert len(snapshots(hosts)) == 4  # six taken, the newest four kept


def test_replaces_a_dead_member_whose_droplet_was_replaced(clusters):
    hosts = cluster(clusters, "replace")
    old = {m.name: m.id for m in live_members(hosts)}
    hosts.kill("m3")
    shutil.rmtree(hosts.members["m3"].data_dir)  # the new droplet: same name, empty data dir
    assert hosts.healthy("m1", "m2")  # a leader again if m3 led
    recorder, log = Recorder(), []
    writers = Writers([w.client_url for w in hosts.wanted("m1", "m2")])
    with writers:
        membership(hosts, recorder, log).reconcile(hosts.wanted("m1", "m2", "m3"))
    writers.check()
    members = live_members(hosts)
    new = {m.name: m.id for m in members}
    assert sorted(new) == ["m1", "m2", "m3"] and not any(m.is_learner for m in members)
    assert new["m3"] != old["m3"]
    assert recorder.changes() == [f"remove {old['m3']}", "add m3", f"promote {new['m3']}"]
    assert any("droplet was replaced" in line for line in log)


def test_refuses_while_a_learner_is_pending_or_a_member_is_down_and_below_3(clusters):
    hosts = cluster(clusters, "refusals")
    wanted = hosts.wanted("m1", "m2", "m3", "m4")
    recorder = Recorder()
    hosts.add_learner_by_hand(wanted[0].client_url, "m9")  # someone else's pending learner
    with pytest.raises(MembershipError, match=r"^member \(not started\) .* is pending but not"):
        membership(hosts, recorder).reconcile(wanted)
    (stray,) = [m for m in live_members(hosts) if m.is_learner]
    hosts.client().remove([wanted[0].client_url], stray.id)

    hosts.stop("m3")
    with pytest.raises(MembershipError, match=r"^not adding m4: member m3 \[.*\] is unhealthy"):
        membership(hosts, recorder).reconcile(wanted)
    hosts.restart("m3")

    with pytest.raises(MembershipError, match="would leave 2 voters; galley keeps at least 3"):
        membership(hosts, recorder).remove("m3", hosts.wanted("m1", "m2"))
    assert sorted(m.name for m in live_members(hosts)) == ["m1", "m2", "m3"]
    assert hosts.running("m3")
    assert recorder.changes() == [] and snapshots(hosts) == []


class Killed(BaseException):
    """The run dies (like a SIGKILL of galley) before the learner is started."""


class Dying(LocalHosts):
    """Hosts on which galley dies when it is about to start a new member."""

    def start_member(self, name: str, initial_cluster: str) -> None:
        raise Killed


def test_a_run_killed_after_member_add_is_finished_by_the_next_without_a_second_add(clusters):
    hosts = cluster(clusters, "killed")
    dying = Dying(hosts.release, hosts.root, hosts.members, hosts.starts)
    recorder = Recorder()
    with pytest.raises(Killed):
        membership(dying, recorder).reconcile(hosts.wanted("m1", "m2", "m3", "m4"))
    (pending,) = [m for m in live_members(hosts) if not m.started]
    assert pending.is_learner
    record = journal(hosts)
    assert record["status"] == "interrupted" and record["nodes"]["m4"]["state"] == "added"
    # while it is pending, no other host is added
    with pytest.raises(MembershipError, match="pending but not in the inventory"):
        membership(hosts, recorder).reconcile(hosts.wanted("m1", "m2", "m3", "m5"))

    membership(hosts, recorder).reconcile(hosts.wanted("m1", "m2", "m3", "m4"))
    members = live_members(hosts)
    assert sorted(m.name for m in members if not m.is_learner) == ["m1", "m2", "m3", "m4"]
    assert recorder.changes() == ["add m4", f"promote {pending.id}"]
    assert hosts.starts[-1] == ("m4", "existing", record["nodes"]["m4"]["initial_cluster"])

    # killed before the journal kept member add's answer: etcd's own list is rebuilt
    returned = hosts.add_learner_by_hand(members[0].client_urls[0], "m5")
    membership(hosts, recorder).reconcile(hosts.wanted("m1", "m2", "m3", "m4", "m5"))
    assert sorted(hosts.starts[-1][2].split(",")) == sorted(returned.split(","))
    assert len([m for m in live_members(hosts) if not m.is_learner]) == 5


@dataclass(frozen=True)
class SlowToSettle(EtcdClient):
    """etcd on a slow machine: a member just promoted answers its first health check late."""

    late: set[str] = field(default_factory=set)

    def promote(self, endpoints, member_id):
        super().promote(endpoints, member_id)
        self.late.add(member_id)

    def health(self, members):
        health = super().health(members)
        late = self.late & set(health)
        self.late.clear()
        return {**health, **{member_id: "context deadline exceeded" for member_id in late}}


def test_waits_for_the_cluster_to_settle_after_its_own_change_before_the_next(clusters):
    hosts = cluster(clusters, "settle")
    plain = hosts.client()
    client = SlowToSettle(plain.run, tls=plain.tls, etcdctl=plain.etcdctl, etcdutl=plain.etcdutl)
    log: list[str] = []
    membership(hosts, log=log, client=client).reconcile(hosts.wanted("m1", "m2", "m3", "m4", "m5"))
    assert sorted(m.name for m in live_members(hosts) if not m.is_learner) == [
        "m1",
        "m2",
        "m3",
        "m4",
        "m5",
    ]
    settles = [line for line in log if "waiting for the cluster to settle" in line]
    assert len(settles) == 1 and "m4" in settles[0] and "unhealthy" in settles[0], log
