"""Vault through the real CLIs on the lab's OpenBao: a token of one job deploys that job and
nothing else, secrets never reach any output, and a sealed Vault stops a deploy before any
host changes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from galley.components.kube_apiserver import ENCRYPTION, SERVICE_ACCOUNT
from galley.lab.lifecycle import VAULT_DIR
from galley.lab.state import LAB_DIR
from galley.lock import ClusterLock
from galley.vault import kv

from .conftest import BIN, REPO, lab_inventory_variant, lab_vault, run_cli, run_deploy, ssh
from .test_etcd import fingerprint

ENCRYPTION_CONFIG = "/etc/kubernetes/encryption-config.yaml"


def _inventory_with_policy(lab, tmp_path: Path, policy: str) -> str:
    """The lab's inventory with a token that holds only ``policy``."""
    token = lab_vault(lab).auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"]
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    body = (
        "for _group in (etcd, control_plane, workers, monitoring):\n"
        "    for _name, _data in _group:\n"
        f"        _data['vault_token_file'] = {str(token_file)!r}\n"
    )
    return lab_inventory_variant(tmp_path, body)


def test_a_workers_token_deploys_the_workers_and_nothing_else(cluster, tmp_path):
    inventory = _inventory_with_policy(cluster, tmp_path, "lab-workers")
    code, _, output = run_deploy("workers", inventory=inventory, check=False)
    assert code == 0, output
    before = fingerprint(cluster)
    code, _, output = run_deploy("etcd", inventory=inventory, check=False)
    assert code != 0
    assert "token lacks " in output and " on lab/pki/etcd/roles/renew-lab-etcd-1-" in output
    assert "nothing was changed" in output and "Traceback" not in output
    assert fingerprint(cluster) == before


def _secret_fragments(lab) -> list[str]:
    """Material that must never be printed: the encryption key, a line of the service-account
    private key."""
    client = lab_vault(lab)
    key = kv.read(client, "lab", SERVICE_ACCOUNT)["private_key"]
    key_lines = key.strip().splitlines()
    encryption = kv.read(client, "lab", ENCRYPTION)["secretbox_key"]
    return [encryption, key_lines[len(key_lines) // 2]]


def test_secrets_never_reach_the_output_of_diff_dry_or_verbose_runs(cluster):
    fragments = _secret_fragments(cluster)
    ssh("lab-cp-1", f"echo '# drift' >> {ENCRYPTION_CONFIG}")
    dry = run_cli("pyinfra", "inventories/lab.py", "deploys/control_plane.py", "--dry", "--diff")
    assert f"secrets encryption config {ENCRYPTION_CONFIG}" in dry.stdout + dry.stderr
    real = run_cli(
        "pyinfra", "-y", "inventories/lab.py", "deploys/control_plane.py", "--diff", "-vv"
    )
    for output in (dry.stdout + dry.stderr, real.stdout + real.stderr):
        for fragment in fragments:
            assert fragment not in output
        assert "PRIVATE KEY-----" not in output
    assert "# drift" not in ssh("lab-cp-1", f"cat {ENCRYPTION_CONFIG}")
    assert ssh("lab-cp-1", f"stat -c %a {ENCRYPTION_CONFIG}").strip() == "600"


def test_debug_inventory_never_shows_the_token(cluster):
    token = Path(cluster.vault_token_file).read_text().strip()
    shown = run_cli("pyinfra", "inventories/lab.py", "debug-inventory")
    assert "vault_token_file" in shown.stdout + shown.stderr
    assert token not in shown.stdout + shown.stderr


@pytest.fixture
def sealed(cluster):
    """The lab's OpenBao sealed for the test, unsealed afterwards with the lab's key."""
    vault = lab_vault(cluster)
    vault.sys.seal()
    yield
    key = (LAB_DIR / VAULT_DIR / "unseal-key").read_text().strip()
    vault.sys.submit_unseal_key(key)


def test_a_sealed_vault_stops_a_deploy_before_any_host_changes(cluster, sealed):
    before = fingerprint(cluster)
    code, _, output = run_deploy("etcd", check=False)
    assert code != 0
    assert "Vault at https://127.0.0.1:8200 is sealed: unseal it and re-run" in output
    assert "Traceback" not in output
    assert fingerprint(cluster) == before


def test_after_unsealing_the_next_run_converges(cluster):
    code, _, output = run_deploy("etcd")
    assert code == 0, output


def test_two_deploys_at_the_same_moment_one_runs_the_other_is_refused(cluster):
    command = [str(BIN / "pyinfra"), "-y", "inventories/lab.py", "deploys/etcd.py"]
    runs = [
        subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes[0] == 0 and codes[1] != 0, outputs
    refused = outputs[[run.returncode for run in runs].index(codes[1])]
    assert "cluster lab is locked by " in refused or "taken by another run" in refused
    assert "(nothing was changed)" in refused
    code, _, output = run_deploy("etcd")  # the lock was released when the winner ended
    assert code == 0, output


def test_a_dead_holders_lock_is_named_and_broken_only_on_request(cluster):
    vault = lab_vault(cluster)
    stale = ClusterLock.acquire(
        vault, "lab", "pyinfra -y inventories/lab.py deploys/cluster.py",
        clock=lambda: time.time() - 600,
    )  # fmt: skip
    code, _, output = run_deploy("etcd", check=False)
    assert code != 0
    assert "whose lease ran out: if that run is gone, `galley lock break" in output
    assert stale.record["holder"] in output
    broken = run_cli("galley", "lock", "break", "inventories/lab.py")
    assert broken.stdout.startswith("broke the lock of cluster lab: ")
    code, _, output = run_deploy("etcd")
    assert code == 0, output
