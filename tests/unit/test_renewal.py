"""A host renews its own certificates (the cert-renewal component, galley.components.renewal;
the Vault side in galley.vault.renewal and galley.vault.setup): the rendered shell script
really runs here, against the session's real OpenBao over TLS, with every host path moved
into a temporary directory; a host's credential is refused (403) everything that is not its
own."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import hvac
import pytest
import requests
from cryptography import x509

from galley.components import CERT_RENEWAL, renewal_plan
from galley.components.engine import render_text
from galley.components.kube_apiserver import KUBE_APISERVER
from galley.components.model import Config
from galley.components.renewal import ScriptSettings, plan
from galley.facts.renewal import RenewalStatus, parse_state
from galley.host.tls import GENPKEY_OPTIONS, csr_command
from galley.ops import vault_bootstrap
from galley.ops.revocation import vault_serial
from galley.vault import pki, setup
from galley.vault.renewal import HostRenewal, RenewalCert
from tests.group_data import HOSTS, small_cluster


def _inventory(*hosts: str, **data):
    """`small_cluster`, its hosts' renewals logging in from this machine."""
    return small_cluster(*hosts, vault_renewal_source_cidrs=["127.0.0.0/8"], **data)


TIMER = CERT_RENEWAL.timers[0]


def render_script(renewal: HostRenewal, settings: ScriptSettings) -> str:
    """The script as the deploy renders it, for ``renewal`` with ``settings``."""
    return render_text(TIMER.script, **settings.variables(renewal))


def render_units(**data) -> dict[str, str]:
    """The service, timer and script of a host whose group data adds ``data``."""
    host = _inventory("lab-cp-1", vault_addr="https://vault.example:8200", **data).get_host(
        "lab-cp-1"
    )
    variables = TIMER.variables(host)
    files = {**TIMER.unit_files(), TIMER.script.path: TIMER.script.template}
    return {
        path: render_text(Config(path, template), **variables) for path, template in files.items()
    }


def _plans(*hosts: str) -> dict[str, HostRenewal]:
    return {host.name: renewal_plan(host) for host in _inventory(*hosts)}


@pytest.fixture
def bootstrapped(vault) -> dict[str, HostRenewal]:
    """OpenBao bootstrapped for cluster ``lab`` with every host of `HOSTS`; their plans."""
    vault_bootstrap.bootstrap(vault, "lab", _inventory())
    return _plans(*HOSTS)


def _run(command: str) -> str:
    return subprocess.run(command, shell=True, check=True, capture_output=True, text=True).stdout


@dataclass
class OnHost:
    """A host's renewal, its paths moved below a temporary root, certificates in place."""

    renewal: HostRenewal
    root: Path
    script: Path

    def cert(self, stem: str) -> RenewalCert:
        return next(cert for cert in self.renewal.certs if cert.stem == stem)

    def pem(self, stem: str) -> str:
        return Path(self.cert(stem).cert_path).read_text()

    def run(self) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(self.script)], capture_output=True, text=True)

    def state(self) -> str:
        return (self.root / "state").read_text()

    def metrics(self) -> dict[str, str]:
        """The node exporter's textfile the run wrote: series -> value."""
        lines = (self.root / "renewal.prom").read_text().splitlines()
        return dict(line.rsplit(" ", 1) for line in lines if not line.startswith("#"))

    def restarts(self) -> str:
        log = self.root / "systemctl.log"
        return log.read_text() if log.exists() else ""


def _on_host(
    vault: hvac.Client, openbao, renewal: HostRenewal, root: Path, ttl: str, **settings
) -> OnHost:
    """Put ``renewal``'s keys and certificates (issued for ``ttl`` by the deploy's roles) below
    ``root`` and render its script there."""
    owner, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name

    def moved(path: str) -> str:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        return str(target)

    certs = []
    for cert in renewal.certs:
        cert = replace(
            cert,
            key_path=moved(cert.key_path),
            cert_path=moved(cert.cert_path),
            ca_path=moved(cert.ca_path),
            owner=owner,
            group=group,
        )
        _run(f"umask 077 && openssl genpkey {GENPKEY_OPTIONS} -out {cert.key_path}")
        csr = _run(csr_command(cert.key_path, cert.identity))
        signed = pki.sign(vault, cert.mount, cert.role, csr, ttl, cert.sign_parameters())
        Path(cert.cert_path).write_text(signed.certificate)
        Path(cert.ca_path).write_text(pki.read_ca(vault, cert.mount))
        certs.append(cert)
    stub = root / "systemctl"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {root}/systemctl.log\n')
    stub.chmod(0o755)
    crls = tuple(
        replace(crl, path=moved(crl.path), ca_path=moved(crl.ca_path)) for crl in renewal.crls
    )
    moved_renewal = replace(renewal, certs=tuple(certs), crls=crls)
    script = root / "galley-renew-certs"
    options = {"attempts": 2, "backoff": 0} | settings
    script.write_text(
        render_script(
            moved_renewal,
            ScriptSettings(
                vault_addr=openbao.addr,
                vault_ca=str(openbao.ca_cert),
                state_path=str(root / "state"),
                metrics_path=str(root / "renewal.prom"),
                systemctl=str(stub),
                restart_lock=str(root / "restart.lock"),
                **options,
            ),
        )
    )
    return OnHost(moved_renewal, root, script)


def test_a_host_renews_its_due_certificates_with_fresh_keys(vault, openbao, bootstrapped, tmp_path):
    host = _on_host(vault, openbao, bootstrapped["lab-worker-1"], tmp_path, ttl="1h")
    before = {c.stem: pki.load_certificate(host.pem(c.stem)) for c in host.renewal.certs}
    keys = {c.stem: Path(c.key_path).read_bytes() for c in host.renewal.certs}

    done = host.run()

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines()[:-1] == [
        line
        for cert in host.renewal.certs
        for line in done.stdout.splitlines()
        if line.startswith(f"renewed {cert.cert_path} (valid until ")
    ]
    assert done.stdout.splitlines()[-1] == "restarted flanneld kube-proxy kubelet"
    assert host.restarts() == "try-restart flanneld kube-proxy kubelet\n"
    for cert in host.renewal.certs:
        after = pki.load_certificate(host.pem(cert.stem))
        assert after.serial_number != before[cert.stem].serial_number
        assert after.public_key() != before[cert.stem].public_key()
        assert Path(cert.key_path).read_bytes() != keys[cert.stem]
        key = pki.serialization.load_pem_private_key(Path(cert.key_path).read_bytes(), None)
        assert after.public_key() == key.public_key()
        assert stat.S_IMODE(os.stat(cert.key_path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(cert.cert_path).st_mode) == 0o644
        assert pki.identity_of_cert(host.pem(cert.stem)) == pki.identity_of_cert(
            before[cert.stem].public_bytes(pki.serialization.Encoding.PEM).decode()
        )
        lifetime = after.not_valid_after_utc - after.not_valid_before_utc
        assert lifetime.days == (cert.ttl_seconds // 86400 or 30)  # client identities: 2
        # Its validity, as the node exporter serves it to Prometheus.
        metrics = host.metrics()
        label = f'{{certificate="{cert.cert_path}"}}'
        expiry = metrics[f"galley_certificate_not_after_timestamp_seconds{label}"]
        assert int(expiry) == int(after.not_valid_after_utc.timestamp())
        assert (
            pki.resign_reason(
                host.pem(cert.stem),
                cert.identity,
                Path(cert.ca_path).read_text(),
                after.not_valid_before_utc,
            )
            is None
        )
    state = parse_state(host.state())
    assert (state.status, state.failing_since, state.error) == ("ok", None, None)
    assert sorted(state.next_renewal) == sorted(c.cert_path for c in host.renewal.certs)

    assert not list(tmp_path.rglob("*.galley-*"))  # nothing staged is left behind
    again = host.run()  # nothing is due any more: Vault is not even asked
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert host.restarts().count("try-restart") == 1


def test_the_renewed_certificates_go_in_place_and_restart_under_the_restart_lock(
    vault, openbao, bootstrapped, tmp_path
):
    """While a deploy restarts a unit on the host (it holds the restart lock), a renewal signs
    but installs nothing; it installs and restarts once the lock is free."""
    host = _on_host(vault, openbao, bootstrapped["lab-worker-1"], tmp_path, ttl="1h")
    before = {c.stem: host.pem(c.stem) for c in host.renewal.certs}
    lock = tmp_path / "restart.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "4"])
    try:
        time.sleep(0.5)
        renewal = subprocess.Popen(
            ["bash", str(host.script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(2.5)  # signed by now (a local OpenBao), waiting for the lock
        assert renewal.poll() is None
        assert {c.stem: host.pem(c.stem) for c in host.renewal.certs} == before
        assert host.restarts() == ""
    finally:
        holder.wait()
    out, err = renewal.communicate(timeout=60)
    assert renewal.returncode == 0, err
    assert out.splitlines()[-1] == "restarted flanneld kube-proxy kubelet"
    assert host.restarts() == "try-restart flanneld kube-proxy kubelet\n"
    assert all(host.pem(c.stem) != before[c.stem] for c in host.renewal.certs)
    assert not list(tmp_path.rglob("*.galley-renew"))


def test_a_renewal_that_cannot_take_the_restart_lock_installs_nothing(
    vault, openbao, bootstrapped, tmp_path
):
    host = _on_host(vault, openbao, bootstrapped["lab-worker-1"], tmp_path, ttl="1h")
    before = {c.stem: host.pem(c.stem) for c in host.renewal.certs}
    host.script.write_text(host.script.read_text().replace("flock -w 120", "flock -w 1"))
    holder = subprocess.Popen(["flock", str(tmp_path / "restart.lock"), "sleep", "10"])
    try:
        time.sleep(0.5)
        done = host.run()
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1
    assert "stayed taken" in done.stderr and "nothing installed" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert {c.stem: host.pem(c.stem) for c in host.renewal.certs} == before
    assert host.restarts() == ""
    assert not list(tmp_path.rglob("*.galley-renew"))
    assert parse_state(host.state()).status == "failing"


def test_every_run_refreshes_the_revocation_lists_a_revocation_within_one_run(
    vault, openbao, bootstrapped, tmp_path
):
    host = _on_host(vault, openbao, bootstrapped["lab-etcd-1"], tmp_path, ttl="720h")
    (crl,) = host.renewal.crls
    assert crl.api_path == "lab/pki/etcd/crl/pem"
    first = host.run()
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"refreshed {crl.path}\n"
    assert Path(crl.path).read_text() == pki.read_crl(vault, "lab/pki/etcd")
    assert oct(Path(crl.path).stat().st_mode & 0o777) == "0o644"
    unchanged = host.run()
    assert (unchanged.returncode, unchanged.stdout) == (0, "")

    member = pki.load_certificate(host.pem("member"))
    vault.secrets.pki.revoke_certificate(vault_serial(member.serial_number), "lab/pki/etcd")
    revoked = host.run()
    assert revoked.stdout == f"refreshed {crl.path}\n"
    listed = x509.load_pem_x509_crl(Path(crl.path).read_bytes())
    assert listed.get_revoked_certificate_by_serial_number(member.serial_number) is not None


def test_a_sealed_vault_fails_with_one_line_and_leaves_the_certificates(
    vault, openbao, bootstrapped, tmp_path
):
    host = _on_host(vault, openbao, bootstrapped["lab-etcd-1"], tmp_path, ttl="1h", backoff=1)
    before = {c.stem: host.pem(c.stem) for c in host.renewal.certs}
    openbao.seal()

    failed = host.run()

    assert failed.returncode == 1
    assert failed.stdout == ""
    (line,) = failed.stderr.splitlines()
    state = parse_state(host.state())
    assert state.status == "failing"
    assert line == (
        f"galley-renew: renewal failing since {state.failing_since}: login to "
        f"{openbao.addr}/v1/auth/lab/host-cert/login as lab-etcd-1 failed after 2 attempt(s): "
        "HTTP 503 Vault is sealed (certificates not renewed are left in place)"
    )
    assert state.error in line
    assert {c.stem: host.pem(c.stem) for c in host.renewal.certs} == before
    assert host.restarts() == ""

    metrics = host.metrics()
    assert metrics["galley_cert_renewal_failing"] == "1"
    assert "galley_cert_renewal_last_success_timestamp_seconds" not in metrics  # never yet

    again = host.run()
    assert parse_state(host.state()).failing_since == state.failing_since  # since the first

    openbao.unseal()
    recovered = host.run()
    assert recovered.returncode == 0, recovered.stderr
    state = parse_state(host.state())
    assert (state.status, state.failing_since) == ("ok", None)
    metrics = host.metrics()
    assert metrics["galley_cert_renewal_failing"] == "0"
    last_run = metrics["galley_cert_renewal_last_run_timestamp_seconds"]
    assert metrics["galley_cert_renewal_last_success_timestamp_seconds"] == last_run
    assert again.returncode == 1


def test_certificates_not_yet_due_need_no_vault(vault, openbao, bootstrapped, tmp_path):
    host = _on_host(vault, openbao, bootstrapped["lab-worker-2"], tmp_path, ttl="720h")
    openbao.seal()
    done = host.run()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert parse_state(host.state()).status == "ok"


def _login(openbao, host: OnHost, name: str) -> requests.Response:
    identity = host.cert("host-identity")
    return requests.post(
        f"{openbao.addr}/v1/auth/lab/host-cert/login",
        json={"name": name},
        cert=(identity.cert_path, identity.key_path),
        verify=str(openbao.ca_cert),
        timeout=10,
    )


def _csr(host: OnHost, stem: str) -> str:
    cert = host.cert(stem)
    return _run(csr_command(cert.key_path, cert.identity))


def test_a_hosts_credential_is_refused_everything_but_its_own_names(
    vault, openbao, bootstrapped, tmp_path
):
    host = _on_host(vault, openbao, bootstrapped["lab-worker-1"], tmp_path, ttl="720h")
    answer = _login(openbao, host, "lab-worker-1")
    assert answer.status_code == 200, answer.text
    token = answer.json()["auth"]["client_token"]
    assert answer.json()["auth"]["policies"] == ["lab-renew-lab-worker-1"]
    assert answer.json()["auth"]["lease_duration"] == 300

    def sign(path: str, **parameters) -> requests.Response:
        body = {"csr": _csr(host, "kubelet")} | parameters
        body.setdefault("exclude_cn_from_sans", True)
        body.setdefault("format", "pem")
        return requests.post(
            f"{openbao.addr}/v1/{path}",
            json=body,
            headers={"X-Vault-Token": token},
            verify=str(openbao.ca_cert),
            timeout=10,
        )

    own = host.cert("kubelet")
    assert sign(own.sign_path, common_name="system:node:lab-worker-1").status_code == 200
    other = bootstrapped["lab-worker-2"]
    member = next(c for c in bootstrapped["lab-etcd-1"].certs if c.stem == "member")
    serving = host.cert("kubelet-serving")
    refused = {
        "another host's node identity, own role": (
            own.sign_path,
            {"common_name": "system:node:lab-worker-2"},
        ),
        "another host's node identity, its role": (
            next(c for c in other.certs if c.stem == "kubelet").sign_path,
            {"common_name": "system:node:lab-worker-2"},
        ),
        "an etcd member's name, its renewal role": (
            member.sign_path,
            member.sign_parameters(),
        ),
        "an etcd member's name, the deploy's role": (
            "lab/pki/etcd/sign/etcd-member",
            {"common_name": "lab-etcd-1"},
        ),
        "an etcd member's name, own serving role": (
            serving.sign_path,
            serving.sign_parameters() | {"common_name": "lab-etcd-1", "alt_names": "lab-etcd-1"},
        ),
        "another host's IP, own serving role": (
            serving.sign_path,
            serving.sign_parameters() | {"ip_sans": HOSTS["lab-worker-2"]},
        ),
        "an extra IP, own serving role": (
            serving.sign_path,
            serving.sign_parameters() | {"ip_sans": f"{HOSTS['lab-worker-1']},10.32.0.1"},
        ),
        "system:masters, the admin role": ("lab/pki/k8s/sign/admin", {"common_name": "admin"}),
        "the apiservers' kubelet client, their role": (
            "lab/pki/k8s/sign/kube-apiserver-kubelet-client",
            {"common_name": "kube-apiserver-kubelet-client"},
        ),
        "a longer lifetime": (own.sign_path, own.sign_parameters() | {"ttl": "87600h"}),
        "a URI SAN": (own.sign_path, own.sign_parameters() | {"uri_sans": "spiffe://lab/x"}),
    }
    statuses = {why: sign(path, **params).status_code for why, (path, params) in refused.items()}
    assert statuses == {why: 403 for why in refused}

    assert _login(openbao, host, "lab-worker-2").status_code >= 400  # not its login
    assert (
        pki.identity_of_cert(
            sign(own.sign_path, **own.sign_parameters()).json()["data"]["certificate"]
        )
        == own.identity
    )


def test_the_renewal_roles_themselves_refuse_foreign_names_and_addresses(vault, bootstrapped):
    serving = next(c for c in bootstrapped["lab-worker-1"].certs if c.stem == "kubelet-serving")
    csr = _run(  # a key of our own: only the request's names count
        f"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null "
        f"-subj /CN=lab-worker-2 -addext subjectAltName=IP:{HOSTS['lab-worker-2']}"
    )
    for parameters, message in (
        ({"ip_sans": HOSTS["lab-worker-2"]}, r"the IP address \"198\.18\.0\.22\" is not allowed"),
        ({"common_name": "lab-worker-2"}, "common name lab-worker-2 not allowed"),
    ):
        with pytest.raises(hvac.exceptions.InvalidRequest, match=message):
            vault.secrets.pki.sign_certificate(
                serving.role,
                csr,
                parameters.get("common_name", serving.identity.cn),
                extra_params=serving.sign_parameters() | parameters,
                mount_point=serving.mount,
            )
    issued = vault.secrets.pki.sign_certificate(
        serving.role,
        csr,
        serving.identity.cn,
        extra_params=serving.sign_parameters(),
        mount_point=serving.mount,
    )["data"]["certificate"]
    assert pki.identity_of_cert(issued) == serving.identity  # the CSR's names are dropped


def test_bootstrap_with_hosts_is_a_no_op_when_re_run_and_prunes_removed_hosts(vault):
    first = vault_bootstrap.bootstrap(vault, "lab", _inventory())
    assert "created cert login lab-worker-2 in auth/lab/host-cert" in first
    assert "wrote policy lab-renew-lab-worker-2" in first
    assert vault_bootstrap.bootstrap(vault, "lab", _inventory()) == []

    fewer = _inventory(*(name for name in HOSTS if name != "lab-worker-2"))
    pruned = vault_bootstrap.bootstrap(vault, "lab", fewer)
    gone = _plans("lab-worker-2")["lab-worker-2"]
    assert sorted(pruned) == sorted(
        [f"deleted role {cert.role} in {cert.mount}" for cert in gone.certs]
        + ["deleted cert login lab-worker-2 in auth/lab/host-cert"]
        + ["deleted policy lab-renew-lab-worker-2"]
        # The workers' job may no longer sign its certificates.
        + ["updated policy lab-workers", "updated policy lab-deploy"]
    )
    assert vault_bootstrap.bootstrap(vault, "lab", fewer) == []


def test_no_host_certificate_names_system_masters():
    renewal = _plans("lab-cp-1")["lab-cp-1"]
    # The apiservers' kubelet client holds no group (RBAC grants it the kubelet API).
    kubelet_client = next(c for c in renewal.certs if c.stem == "apiserver-kubelet-client")
    assert kubelet_client.identity == pki.Identity("kube-apiserver-kubelet-client")
    assert not any("system:masters" in c.identity.organization for c in renewal.certs)
    assert renewal.identity.stem == "host-identity"
    assert renewal.identity.identity == pki.Identity("lab-cp-1")
    policy = setup.render_policy(renewal.policy, setup.Policy(signs=renewal.policy_paths()))
    assert 'path "lab/pki/k8s/sign/renew-lab-cp-1-kube-scheduler" {' in policy
    assert '    "common_name" = ["system:kube-scheduler"]\n' in policy
    assert "sign/admin" not in policy

    masters = pki.Identity("kube-apiserver-kubelet-client", organization=("system:masters",))
    cert = replace(KUBE_APISERVER.certs[0], identity=lambda host: masters)
    apiserver = replace(KUBE_APISERVER, certs=(cert,))
    with pytest.raises(ValueError, match="names system:masters, which only the operator's"):
        plan(_inventory("lab-cp-1").get_host("lab-cp-1"), [apiserver])


def test_the_timer_takes_its_schedule_from_group_data():
    units = render_units(cert_renewal_interval="6h", cert_renewal_random_delay="1h")
    timer = units["/etc/systemd/system/galley-cert-renewal.timer"]
    assert "OnUnitActiveSec=6h\n" in timer and "RandomizedDelaySec=1h\n" in timer
    service = units["/etc/systemd/system/galley-cert-renewal.service"]
    assert "Type=oneshot\n" in service
    assert "ExecStart=/usr/local/sbin/galley-renew-certs\n" in service
    # Sandboxed: writable are only the directories of the certificates it renews (a control
    # plane host's etcd client is in the Kubernetes directory), its state, its metrics for the
    # node exporter and /run/galley.
    assert "ProtectSystem=strict\n" in service and "RuntimeDirectory=galley\n" in service
    writable = (
        "/etc/galley/renewal /etc/kubernetes/pki /var/lib/galley/renewal /var/lib/galley/metrics"
    )
    assert f"ReadWritePaths={writable}\n" in service
    # The metrics name the longest two runs can be apart.
    script = units["/usr/local/sbin/galley-renew-certs"]
    assert f"PERIOD_SECONDS={7 * 3600}\n" in script
    defaults = render_units()["/etc/systemd/system/galley-cert-renewal.timer"]
    assert "OnUnitActiveSec=1h\n" in defaults and "RandomizedDelaySec=15min\n" in defaults


def test_state_file_parsing():
    assert parse_state("") is None
    state = parse_state(
        "status=failing\nchecked=2030-06-01T12:00:00Z\nfailing_since=2030-06-01T11:00:00Z\n"
        "error=login failed: HTTP 503 Vault is sealed\nnext:/etc/x.crt=2030-06-20T00:00:00Z\n"
    )
    assert state.failing_since == "2030-06-01T11:00:00Z"
    assert state.error == "login failed: HTTP 503 Vault is sealed"
    assert state.next_renewal == {"/etc/x.crt": "2030-06-20T00:00:00Z"}


def test_the_report_fact_reads_the_state_the_script_wrote(vault, openbao, bootstrapped, tmp_path):
    host = _on_host(vault, openbao, bootstrapped["lab-worker-2"], tmp_path, ttl="720h")
    host.run()
    fact = RenewalStatus()
    output = _run(fact.command(str(tmp_path / "state"))).splitlines()
    assert fact.process(output) == asdict(parse_state(host.state()))
    assert fact.process(_run(fact.command(str(tmp_path / "nothing"))).splitlines()) is None
