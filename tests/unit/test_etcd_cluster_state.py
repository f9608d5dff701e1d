"""How the etcd config claims ``new`` or ``existing`` (galley.components.etcd) and the fact
it decides from (galley.facts.etcd.EtcdDataDir, run by sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from galley.components.etcd import cluster_settings
from galley.facts.etcd import EtcdDataDir

INVENTORY = "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380"
JOINED = "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,d=https://10.0.0.4:2380"


@pytest.mark.parametrize(
    ("joined", "empty", "exists", "expected"),
    [
        (None, True, False, ("new", INVENTORY)),  # the first bootstrap
        (None, False, False, ("existing", INVENTORY)),  # a bootstrapped member, later runs
        (None, False, True, ("existing", INVENTORY)),
        (None, True, True, ("existing", INVENTORY)),  # must join first; etcd refuses this
        (JOINED, False, True, ("existing", JOINED)),  # joined: what member add returned
        (JOINED, True, True, ("existing", JOINED)),  # joined, first start under way
    ],
)
def test_new_only_to_bootstrap_a_cluster_that_does_not_exist(joined, empty, exists, expected):
    assert cluster_settings(INVENTORY, joined, empty, exists) == expected


def gather(tmp_path: Path) -> dict:
    command = EtcdDataDir().command(str(tmp_path / "data"), str(tmp_path / "initial-cluster"))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return EtcdDataDir().process(done.stdout.splitlines())


def test_the_data_dir_fact_reads_member_data_and_the_join_record(tmp_path):
    assert gather(tmp_path) == {"empty": True, "joined": None}
    (tmp_path / "data" / "member").mkdir(parents=True)
    (tmp_path / "initial-cluster").write_text(JOINED + "\n")
    assert gather(tmp_path) == {"empty": False, "joined": JOINED}
    assert EtcdDataDir.default() == {"empty": False, "joined": None}
