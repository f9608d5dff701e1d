"""galley.vault: settings from data, files and env, and the checks of `connect` (real OpenBao)."""

from __future__ import annotations

import time
from pathlib import Path

import hvac
import pytest

from galley.lab.openbao import OpenBao
from galley.ops import vault_bootstrap
from galley.vault.client import VaultError, VaultSettings, connect, lazy_client
from tests.group_data import small_cluster

DATA = {"vault_addr": "https://vault.example:8200", "cluster_name": "lab"}


def _token_file(directory: Path, token: str) -> str:
    path = directory / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


def test_settings_from_data_win_over_env(tmp_path):
    settings = VaultSettings.from_data(
        {**DATA, "vault_token_file": _token_file(tmp_path, "file-token")},
        {"VAULT_ADDR": "https://other:8200", "VAULT_TOKEN": "env-token", "VAULT_CACERT": "/ca"},
    )
    assert settings.addr == "https://vault.example:8200"
    assert settings.token == "file-token"
    assert settings.credential_source == f"vault_token_file {tmp_path / 'token'}"
    assert settings.ca_cert == "/ca"
    assert settings.mount_prefix == "lab"


def test_settings_fall_back_to_env_and_approle(tmp_path):
    settings = VaultSettings.from_data(
        {"cluster_name": "lab"},
        {"VAULT_ADDR": "http://127.0.0.1:8200/", "VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"},
    )
    assert (settings.addr, settings.token, settings.role_id, settings.secret_id) == (
        "http://127.0.0.1:8200",
        None,
        "r",
        "s",
    )
    secret_file = tmp_path / "secret-id"
    secret_file.write_text("file-secret\n")
    from_file = VaultSettings.from_data(
        {**DATA, "vault_role_id": "r", "vault_secret_id_file": str(secret_file)}, {}
    )
    assert (from_file.role_id, from_file.secret_id) == ("r", "file-secret")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"cluster_name": "lab"},
            "Vault address is not set: set vault_addr in group data or VAULT_ADDR in the "
            "environment",
        ),
        (
            {**DATA, "vault_addr": "vault:8200"},
            "vault_addr must be a URL like https://vault:8200, got 'vault:8200'",
        ),
        (
            {"vault_addr": "https://v:1"},
            "cluster_name is not set: set it in group data (it names the Vault PKI mounts)",
        ),
        (
            DATA,
            "no Vault credentials: set vault_token_file (or VAULT_TOKEN), or vault_role_id (or "
            "VAULT_ROLE_ID) and vault_secret_id_file (or VAULT_SECRET_ID)",
        ),
        (
            {**DATA, "vault_role_id": "r"},
            "vault_role_id is set but the AppRole secret ID is missing: set vault_secret_id_file "
            "in group data or VAULT_SECRET_ID in the environment",
        ),
        (
            {**DATA, "vault_token": "s3cr3t"},
            "vault_token must not be in group or host data (`pyinfra debug-inventory` shows "
            "data): set vault_token_file to a file holding it, or VAULT_TOKEN in the environment",
        ),
        (
            {**DATA, "vault_role_id": "r", "vault_secret_id": "s3cr3t"},
            "vault_secret_id must not be in group or host data (`pyinfra debug-inventory` shows "
            "data): set vault_secret_id_file to a file holding it, or VAULT_SECRET_ID in the "
            "environment",
        ),
        (
            {**DATA, "vault_addr": "http://vault.internal:8200"},
            "vault_addr http://vault.internal:8200 is plain HTTP to another machine: the token "
            "would cross the network unencrypted; use https://, or set "
            "vault_allow_insecure_http = True",
        ),
        (
            {**DATA, "vault_token_file": "/nonexistent/token"},
            "vault_token_file /nonexistent/token cannot be read: No such file or directory",
        ),
    ],
)
def test_settings_errors_say_what_is_wrong(data, message):
    with pytest.raises(VaultError) as raised:
        VaultSettings.from_data(data, {})
    assert str(raised.value) == message
    assert "s3cr3t" not in message


def test_an_empty_token_file_is_refused(tmp_path):
    path = _token_file(tmp_path, "")
    with pytest.raises(VaultError, match=f"^vault_token_file {path} is empty$"):
        VaultSettings.from_data({**DATA, "vault_token_file": path}, {})


@pytest.mark.parametrize(
    "addr",
    ["http://127.0.0.1:8200", "http://127.3.4.5:8200", "http://[::1]:8200", "http://localhost"],
)
def test_plain_http_is_allowed_to_loopback(addr):
    assert VaultSettings.from_data({**DATA, "vault_addr": addr}, {"VAULT_TOKEN": "t"}).addr == addr


def test_plain_http_elsewhere_needs_an_explicit_opt_in():
    data = {**DATA, "vault_addr": "http://10.0.0.5:8200", "vault_allow_insecure_http": True}
    assert VaultSettings.from_data(data, {"VAULT_TOKEN": "t"}).addr == "http://10.0.0.5:8200"
    with pytest.raises(VaultError, match="is plain HTTP to another machine"):
        VaultSettings.from_data({**data, "vault_allow_insecure_http": "yes"}, {"VAULT_TOKEN": "t"})


def test_secrets_stay_out_of_repr_and_str(tmp_path):
    token = VaultSettings.from_data(
        {**DATA, "vault_token_file": _token_file(tmp_path, "s3cr3t-token")}, {}
    )
    approle = VaultSettings.from_data({**DATA, "vault_role_id": "r"}, {"VAULT_SECRET_ID": "s3id"})
    for text in (repr(token), str(token), repr(approle), str(approle)):
        assert "s3cr3t-token" not in text and "s3id" not in text
    assert "vault.example" in repr(token)


# connect() against a real OpenBao


def _settings(server: OpenBao, token: str) -> VaultSettings:
    """Settings for ``server`` with ``token`` from the environment, as an operator gives it."""
    return VaultSettings.from_data(
        {"vault_addr": server.addr, "vault_ca_cert": str(server.ca_cert), "cluster_name": "lab"},
        env={"VAULT_TOKEN": token},
    )


def test_token_from_a_file_logs_in(openbao, tmp_path):
    settings = VaultSettings.from_data(
        {
            "vault_addr": openbao.addr,
            "vault_ca_cert": str(openbao.ca_cert),
            "vault_token_file": str(openbao.token_file),
            "cluster_name": "lab",
        },
        env={"VAULT_TOKEN": "not-this-one"},
    )
    assert connect(settings).is_authenticated()


def test_unreachable_vault(unused_port):
    url = f"https://127.0.0.1:{unused_port}"
    with pytest.raises(VaultError) as raised:
        connect(VaultSettings.from_data({**DATA, "vault_addr": url}, {"VAULT_TOKEN": "t"}))
    assert str(raised.value) == f"Vault at {url} is unreachable: Connection refused"


def test_vault_with_an_unknown_ca_is_refused(openbao):
    settings = VaultSettings.from_data(
        {**DATA, "vault_addr": openbao.addr}, {"VAULT_TOKEN": openbao.root_token}
    )
    with pytest.raises(VaultError) as raised:
        connect(settings)
    assert str(raised.value).startswith(
        f"Vault at {openbao.addr} is unreachable: TLS error: certificate verify failed"
    )


def test_sealed_vault(openbao, vault):
    openbao.seal()
    with pytest.raises(VaultError) as raised:
        connect(_settings(openbao, openbao.root_token))
    assert str(raised.value) == f"Vault at {openbao.addr} is sealed: unseal it and re-run"


def test_invalid_token_is_reported_without_the_token(openbao):
    with pytest.raises(VaultError) as raised:
        connect(_settings(openbao, "s.not-a-real-token"))
    assert str(raised.value) == (
        f"Vault at {openbao.addr} rejected the token from VAULT_TOKEN (invalid or expired): "
        "give a valid one there"
    )


def _deploy_paths() -> dict[str, str]:
    """What deploying the whole small cluster asks of Vault."""
    return vault_bootstrap.deploy_grants("lab", small_cluster()).capabilities()


def test_expired_token_is_reported(openbao, vault):
    token = vault.auth.token.create(ttl="1s", explicit_max_ttl="1s")["auth"]["client_token"]
    time.sleep(2)
    with pytest.raises(VaultError, match=r"rejected the token from VAULT_TOKEN \(invalid or"):
        connect(_settings(openbao, token))


def test_approle_login_and_its_failure(openbao, vault):
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())
    vault.sys.enable_auth_method("approle")
    vault.auth.approle.create_or_update_approle("deploy", token_policies=["lab-deploy"])
    role_id = vault.auth.approle.read_role_id("deploy")["data"]["role_id"]
    secret_id = vault.auth.approle.generate_secret_id("deploy")["data"]["secret_id"]
    data = {
        "vault_addr": openbao.addr,
        "vault_ca_cert": str(openbao.ca_cert),
        "cluster_name": "lab",
        "vault_role_id": role_id,
    }

    settings = VaultSettings.from_data(data, {"VAULT_SECRET_ID": secret_id})
    assert connect(settings, _deploy_paths()).is_authenticated()
    with pytest.raises(VaultError) as raised:
        connect(VaultSettings.from_data(data, {"VAULT_SECRET_ID": "wrong-secret"}))
    message = str(raised.value)
    assert message.startswith(
        f"AppRole login to Vault at {openbao.addr} failed (check vault_role_id or VAULT_ROLE_ID, "
        "and the secret ID in VAULT_SECRET_ID): "
    )
    assert "invalid role or secret ID" in message and "wrong-secret" not in message


def test_missing_capabilities_are_named(openbao, vault):
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())
    vault.sys.create_or_update_acl_policy(
        "ca-only", 'path "lab/pki/etcd/ca/pem" {\n  capabilities = ["read"]\n}\n'
    )
    weak = vault.auth.token.create(policies=["ca-only"])["auth"]["client_token"]
    deploy = vault.auth.token.create(policies=["lab-deploy"])["auth"]["client_token"]
    member = "lab/pki/etcd/sign/renew-lab-etcd-1-member"
    needed = {"lab/pki/etcd/ca/pem": "read", member: "update"}

    with pytest.raises(VaultError) as raised:
        connect(_settings(openbao, weak), needed)
    assert str(raised.value).startswith(
        f"token lacks 'update' on {member} (use a token with the policy of this job that "
        "`galley vault bootstrap --inventory` writes"
    )
    assert "hosts added since the last bootstrap have no roles yet" in str(raised.value)
    assert connect(_settings(openbao, deploy), needed).is_authenticated()
    with pytest.raises(
        VaultError,
        match=r"^token lacks '\w+' on [^ ]+, '\w+' on [^ ]+, '\w+' on [^ ]+ and \d+ more \(use",
    ):
        connect(_settings(openbao, weak), _deploy_paths())


def test_lazy_client_connects_on_first_use_and_is_shared(openbao, vault):
    # A token of its own: lazy clients are shared per process, by settings.
    token = vault.auth.token.create(policies=["root"])["auth"]["client_token"]
    factory = lazy_client(_settings(openbao, token), _deploy_paths())
    openbao.seal()  # nothing happened yet: creating the factory did not touch Vault
    with pytest.raises(VaultError, match="is sealed"):
        factory()
    openbao.unseal()
    client = factory()
    assert lazy_client(_settings(openbao, token), _deploy_paths())() is client
    assert isinstance(client, hvac.Client)
