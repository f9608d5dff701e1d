"""etcd's bootstrap settings (galley.components.etcd): the decision table, what the deploy
writes on each host, the environment files etcd reads, and a real etcd 3.5.30 started from
them (bootstrap ``new``, settled to ``existing``, restarted on its data)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from pyinfra.api import Inventory

from galley.components import etcd
from galley.components.engine import render_text
from galley.components.etcd import (
    BOOTSTRAP_PATH,
    ENV_PATH,
    ETCD,
    bootstrap_variables,
    member_variables,
)
from galley.components.model import Config
from galley.etcd.layout import SETTLE_COMMAND
from galley.etcd.plan import Member
from galley.facts.etcd import EtcdDataDir
from galley.host import etcd as runtime
from galley.host.etcd import bootstrap_settings
from galley.problems import PreflightError
from tests.etcd_local import free_ports
from tests.standins.pki import CA

INVENTORY = "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380"
JOINED = "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,d=https://10.0.0.4:2380"
IDENTITY = "5f0c7e2a9b1d4c3e8a6f2b1c0d9e8f7a"


def fact(empty: bool, state: str | None = None, cluster: str | None = None) -> dict:
    return {"empty": empty, "state": state, "cluster": cluster}


@pytest.mark.parametrize(
    ("own", "exists", "expected"),
    [
        (fact(True), False, ("new", INVENTORY)),  # the first bootstrap
        (fact(True, "new", INVENTORY), False, ("new", INVENTORY)),  # rerun before any start
        (fact(False, "new", INVENTORY), True, ("existing", INVENTORY)),  # killed before settling
        (fact(False, "existing", INVENTORY), True, ("existing", INVENTORY)),  # no change
        (fact(False, "existing", JOINED), True, ("existing", JOINED)),  # joined: its list kept
        (fact(False), True, ("existing", INVENTORY)),  # data, no file: the inventory's list
        (fact(True), True, None),  # an empty data dir beside a cluster: join first
        (fact(True, "existing", JOINED), True, None),  # a join under way: finish it
    ],
)
def test_never_a_state_the_member_is_not_in(own, exists, expected):
    assert bootstrap_settings(INVENTORY, own, exists) == expected


def gather(tmp_path: Path) -> dict:
    command = EtcdDataDir().command(str(tmp_path / "data"), str(tmp_path / "bootstrap.env"))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return EtcdDataDir().process(done.stdout.splitlines())


def test_the_data_dir_fact_reads_member_data_and_the_bootstrap_file(tmp_path):
    assert gather(tmp_path) == fact(True)
    (tmp_path / "data" / "member").mkdir(parents=True)
    (tmp_path / "bootstrap.env").write_text(
        f"# comment\nETCD_INITIAL_CLUSTER={JOINED}\nETCD_INITIAL_CLUSTER_STATE=existing\n"
        "ETCD_INITIAL_CLUSTER_TOKEN=lab-etcd\n"
    )
    assert gather(tmp_path) == fact(False, "existing", JOINED)
    assert EtcdDataDir.default() == fact(False)


# --- what the deploy writes on each host ------------------------------------------------------


def inventory(*names: str) -> Inventory:
    hosts = [(name, {"private_ip": f"10.0.0.{i}"}) for i, name in enumerate(names, 1)]
    data = {"cluster_name": "lab", "etcd_client_port": 2379, "etcd_peer_port": 2380}
    data["etcd_metrics_port"] = 2381
    return Inventory((hosts, data), etcd=(list(names), {}))


class Run:
    """A pyinfra run, as far as the once-per-run note is concerned."""


@pytest.fixture
def deploy(monkeypatch):
    """`etcd._configure` on a 3-host inventory with data dir facts set by the test; returns
    what it wrote (path -> template variables), whether the join hook is due and the hosts
    whose facts were read (the member list, read by one host per run, as ``"members@a"``).
    The live members are ``a``, ``b``, ``c`` unless the test sets ``live``."""
    hosts = list(inventory("a", "b", "c"))
    facts: dict[str, dict] = {}
    read: list[str] = []
    run = Run()
    for host in hosts:
        host.state, host.print_prefix_padding = run, ""  # as pyinfra's State sets them

    def data_dir(host):
        read.append(host.name)
        return facts[host.name]

    def live_members(host):
        read.append(f"members@{host.name}")
        return deploy.live

    def identity_in_etcd(host):
        read.append(f"identity@{host.name}")
        return {"identity": deploy.identity, "error": None}

    monkeypatch.setattr(etcd, "members", lambda: hosts)
    monkeypatch.setattr(runtime, "members", lambda: hosts)
    monkeypatch.setattr(runtime, "data_dir", data_dir)
    monkeypatch.setattr(runtime, "_live_members", live_members)
    monkeypatch.setattr(runtime, "_identity_in_etcd", identity_in_etcd)
    monkeypatch.setattr(runtime, "cluster_identity_of", lambda host, context: IDENTITY)
    monkeypatch.setattr(runtime, "_member_id_in_journal", lambda host: "8e9e05c52164694d")
    monkeypatch.setattr(etcd, "render", lambda config, **variables: (config.path, variables))

    def deploy(name: str, **given: dict) -> tuple[dict, bool, list[str]]:
        facts.clear()
        facts.update(given)
        read.clear()
        configured = etcd._configure(next(h for h in hosts if h.name == name), {})
        written = dict(configured.files.values())
        return written, configured.before_start, list(dict.fromkeys(read))  # pyinfra caches

    deploy.live = [etcd_member(name) for name in "abc"]
    deploy.identity = IDENTITY
    return deploy


def test_a_fresh_cluster_bootstraps_new_without_a_join(deploy):
    written, join, _ = deploy("a", a=fact(True), b=fact(True), c=fact(True))
    assert set(written) == {ENV_PATH, BOOTSTRAP_PATH} and not join
    assert written[BOOTSTRAP_PATH]["initial_cluster_state"] == "new"
    assert written[BOOTSTRAP_PATH]["initial_cluster"] == INVENTORY


def test_a_member_with_data_keeps_its_recorded_list_and_reads_no_other_fact(deploy):
    written, join, read = deploy("a", a=fact(False, "existing", JOINED))
    assert written[BOOTSTRAP_PATH]["initial_cluster"] == JOINED
    assert written[BOOTSTRAP_PATH]["initial_cluster_state"] == "existing"
    assert not join and read == ["a", "members@a", "identity@a"]


def etcd_member(name: str, number: int = 0) -> Member:
    number = number or "abc".index(name) + 1
    url = f"https://10.0.0.{number}"
    return Member(f"id-{name}", name, (f"{url}:2380",), (f"{url}:2379",))


def test_a_live_member_the_inventory_does_not_list_is_named_once_per_run_never_removed(
    deploy, caplog
):
    deploy.live = [*deploy.live, etcd_member("lab-etcd-5", 5)]
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        _, join, read = deploy("a", a=fact(False, "existing", INVENTORY))
        assert not join and read == ["a", "members@a", "identity@a"]
        (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert (
            warning.getMessage()
            .split("] ", 1)[1]
            .startswith(
                "note: 1 etcd member(s) not in the inventory's etcd group, left in the cluster "
                "(they still count for quorum): lab-etcd-5 [id-lab-etcd-5 https://10.0.0.5:2380]: "
                "`galley etcd remove INVENTORY lab-etcd-5`"
            )
        )
        # the other hosts of the same run neither read the list again nor repeat the note
        assert deploy("b", b=fact(False, "existing", INVENTORY))[2] == ["b"]
        assert len(caplog.records) == 1


@pytest.mark.parametrize("live", [None, []], ids=["etcd does not answer", "all listed"])
def test_no_note_when_every_member_is_listed_or_etcd_does_not_answer(deploy, caplog, live):
    deploy.live = live if live is not None else deploy.live
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        deploy("a", a=fact(False, "existing", INVENTORY))
    assert caplog.records == []


def test_a_data_dir_of_a_member_the_cluster_removed_is_refused_while_preparing(deploy):
    deploy.live = [etcd_member("a"), etcd_member("b")]  # c was removed while it was down
    with pytest.raises(PreflightError) as refused:
        deploy("c", a=fact(False, "existing", INVENTORY), c=fact(False, "existing", INVENTORY))
    assert str(refused.value) == (
        "c: its etcd data dir /var/lib/etcd holds member 8e9e05c52164694d, which is no longer "
        "in the etcd cluster (removed, e.g. by `galley etcd remove --unreachable`); nothing was "
        "changed: wipe it on the host (`systemctl disable --now etcd && rm -rf "
        "/var/lib/etcd/member`) so the next deploy adds it as a new member, or replace the "
        "droplet"
    )


def test_an_etcd_of_another_cluster_is_refused_while_preparing(deploy):
    deploy.identity = "0123456789abcdef0123456789abcdef"
    with pytest.raises(PreflightError, match=r"a: etcd holds the identity of another cluster"):
        deploy("a", a=fact(False, "existing", INVENTORY))


def test_a_new_host_does_not_ask_its_own_etcd(deploy):
    assert "members@c" not in deploy("c", a=fact(False), b=fact(False), c=fact(True))[2]


def test_an_empty_host_beside_a_cluster_is_joined_by_the_hook_which_writes_the_file(deploy):
    written, join, _ = deploy("c", a=fact(False), b=fact(False), c=fact(True))
    assert join and set(written) == {ENV_PATH}


def test_bootstrap_env_restarts_nothing_and_etcd_env_restarts_etcd():
    watched = ETCD.watched(None)
    assert ENV_PATH in watched and BOOTSTRAP_PATH not in watched
    assert BOOTSTRAP_PATH not in ETCD.reloaded_by(None)
    assert ETCD.unit.before_start.func is runtime.join


# --- the files etcd reads -----------------------------------------------------------------


def rendered(host, state: str = "new", cluster: str = INVENTORY) -> dict[str, str]:
    """The unit, etcd.env and bootstrap.env of ``host`` as the deploy writes them."""
    variables = member_variables(host)
    return {
        "unit": render_text(Config(ETCD.unit.path, ETCD.unit.template), **variables),
        "env": render_text(ETCD.config(ENV_PATH), **variables),
        "bootstrap": render_text(
            ETCD.config(BOOTSTRAP_PATH), **bootstrap_variables(host, state, cluster)
        ),
    }


def environment(*texts: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments skipped)."""
    pairs = [line.split("=", 1) for t in texts for line in t.splitlines()]
    return {key: value for key, value in (p for p in pairs if len(p) == 2) if key[0] != "#"}


def test_the_unit_takes_every_setting_from_the_two_environment_files():
    files = rendered(inventory("a", "b", "c").get_host("a"))
    assert f"EnvironmentFile={ENV_PATH}\nEnvironmentFile={BOOTSTRAP_PATH}\n" in files["unit"]
    assert re.search(r"^ExecStart=/usr/local/bin/etcd$", files["unit"], re.MULTILINE)
    assert set(environment(files["bootstrap"])) == {
        "ETCD_INITIAL_CLUSTER",
        "ETCD_INITIAL_CLUSTER_STATE",
        "ETCD_INITIAL_CLUSTER_TOKEN",
    }
    assert not set(environment(files["env"])) & set(environment(files["bootstrap"]))


def test_every_variable_is_an_etcd_3_5_flag(etcd_release):
    help_text = subprocess.run(
        [etcd_release / "etcd", "--help"], capture_output=True, text=True, check=False
    )
    flags = set(re.findall(r"^\s+--([a-z0-9-]+)", help_text.stdout + help_text.stderr, re.M))
    files = rendered(inventory("a").get_host("a"))
    names = environment(files["env"], files["bootstrap"])
    as_flags = {name.removeprefix("ETCD_").lower().replace("_", "-") for name in names}
    assert len(names) == 25 and as_flags <= flags, as_flags - flags


def test_a_real_etcd_bootstraps_from_the_files_settles_and_restarts_on_its_data(
    etcd_release, tmp_path
):
    client, peer, metrics = free_ports(3)
    host = Inventory(
        ([("m1", {"private_ip": "127.0.0.1"})], {"cluster_name": "t"}), etcd=(["m1"], {})
    ).get_host("m1")
    host.data.etcd_client_port, host.data.etcd_peer_port = client, peer
    host.data.etcd_metrics_port = metrics
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = CA(pki, "ca")
    ca.issue("member")
    ca.crl(pki / "crl.pem")
    # The declared certificates, moved into the test's directory.
    certs = {
        stem: replace(cert, directory=str(pki), ca_path=str(pki / "ca.crt"))
        for stem, cert in ETCD.certs_by_stem(host).items()
    }
    variables = member_variables(host) | {
        "data_dir": str(tmp_path / "data"),
        "certs": certs,
        "crl_path": str(pki / "crl.pem"),
    }
    env = render_text(ETCD.config(ENV_PATH), **variables)
    bootstrap = tmp_path / "bootstrap.env"
    bootstrap.write_text(rendered(host, "new", f"m1=https://127.0.0.1:{peer}")["bootstrap"])
    etcdctl = [
        str(etcd_release / "etcdctl"),
        f"--endpoints=https://127.0.0.1:{client}",
        f"--cacert={pki / 'ca.crt'}",
        f"--cert={pki / 'member.crt'}",
        f"--key={pki / 'member.key'}",
    ]

    def start() -> subprocess.Popen:
        settings = environment(env, bootstrap.read_text())
        log = (tmp_path / "etcd.log").open("a")
        return subprocess.Popen([etcd_release / "etcd"], env=settings, stdout=log, stderr=log)

    def healthy() -> bool:
        for _ in range(100):
            done = subprocess.run([*etcdctl, "endpoint", "health"], capture_output=True)
            if done.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    process = start()
    try:
        assert healthy(), (tmp_path / "etcd.log").read_text()[-2000:]
        subprocess.run([*etcdctl, "put", "k", "v"], check=True, capture_output=True)
        settle = SETTLE_COMMAND.replace(BOOTSTRAP_PATH, str(bootstrap))
        subprocess.run(["sh", "-c", settle], check=True)
        subprocess.run(["sh", "-c", settle], check=True)  # idempotent
        assert "ETCD_INITIAL_CLUSTER_STATE=existing\n" in bootstrap.read_text()
        process.terminate()
        process.wait(timeout=10)
        process = start()
        assert healthy()
        got = subprocess.run([*etcdctl, "get", "k", "-w", "json"], capture_output=True)
        assert json.loads(got.stdout)["count"] == 1
        # The revocation list is read at every connection: a client revoked in a new list is
        # refused at once, with no restart; the others go on.
        stolen = [f"--cert={pki / 'stolen.crt'}", f"--key={pki / 'stolen.key'}"]
        ca.issue("stolen")
        get = [*etcdctl, *stolen, "--dial-timeout=2s", "get", "k"]
        assert subprocess.run(get, capture_output=True).returncode == 0
        ca.crl(pki / "crl.pem", pki / "stolen.crt")
        assert subprocess.run(get, capture_output=True).returncode != 0
        assert healthy()
    finally:
        process.terminate()
        process.wait(timeout=10)
