"""galley.vault: settings from data/env, and the preflight checks of `connect` (Vault stand-in)."""

from __future__ import annotations

import socket

import hvac
import pytest

from galley import pki
from galley.lab.vault_standin import serve
from galley.vault import VaultError, VaultSettings, connect, lazy_client

ROOT_TOKEN = "root-token-for-tests"
DATA = {"vault_addr": "https://vault.example:8200", "cluster_name": "lab"}


def test_settings_from_data_win_over_env():
    settings = VaultSettings.from_data(
        {**DATA, "vault_token": "data-token"},
        {"VAULT_ADDR": "https://other:8200", "VAULT_TOKEN": "env-token", "VAULT_CACERT": "/ca"},
    )
    assert settings.addr == "https://vault.example:8200"
    assert settings.token == "data-token"
    assert settings.ca_cert == "/ca"
    assert settings.mount_prefix == "lab"


def test_settings_fall_back_to_env_and_approle():
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


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"cluster_name": "lab", "vault_token": "t"},
            "Vault address is not set: set vault_addr in group data or VAULT_ADDR in the "
            "environment",
        ),
        (
            {**DATA, "vault_addr": "vault:8200", "vault_token": "t"},
            "vault_addr must be a URL like https://vault:8200, got 'vault:8200'",
        ),
        (
            {"vault_addr": "http://v:1", "vault_token": "t"},
            "cluster_name is not set: set it in group data (it names the Vault PKI mounts)",
        ),
        (
            DATA,
            "no Vault credentials: set vault_token (or VAULT_TOKEN), or vault_role_id and "
            "vault_secret_id (or VAULT_ROLE_ID and VAULT_SECRET_ID)",
        ),
        (
            {**DATA, "vault_role_id": "r"},
            "vault_role_id is set but vault_secret_id is missing: set vault_secret_id in group "
            "data or VAULT_SECRET_ID in the environment",
        ),
    ],
)
def test_settings_errors_say_what_is_missing(data, message):
    with pytest.raises(VaultError) as raised:
        VaultSettings.from_data(data, {})
    assert str(raised.value) == message


def test_secrets_stay_out_of_repr_and_str():
    token = VaultSettings.from_data({**DATA, "vault_token": "s3cr3t-token"}, {})
    approle = VaultSettings.from_data({**DATA, "vault_role_id": "r", "vault_secret_id": "s3id"}, {})
    for text in (repr(token), str(token), repr(approle), str(approle)):
        assert "s3cr3t-token" not in text and "s3id" not in text
    assert "vault.example" in repr(token)


# connect() against the stand-in


@pytest.fixture
def vault():
    server = serve("127.0.0.1", 0, ROOT_TOKEN)
    yield server
    server.shutdown()


def _settings(url: str, **credentials: str) -> VaultSettings:
    return VaultSettings.from_data(
        {"vault_addr": url, "cluster_name": "lab", **credentials}, env={}
    )


def test_unreachable_vault():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(VaultError) as raised:
        connect(_settings(url, vault_token=ROOT_TOKEN))
    assert str(raised.value) == f"Vault at {url} is unreachable: Connection refused"


def test_sealed_vault(vault):
    vault.seal()
    with pytest.raises(VaultError) as raised:
        connect(_settings(vault.url, vault_token=ROOT_TOKEN))
    assert str(raised.value) == f"Vault at {vault.url} is sealed: unseal it and re-run"


def test_invalid_token_is_reported_without_the_token(vault):
    with pytest.raises(VaultError) as raised:
        connect(_settings(vault.url, vault_token="not-a-real-token"))
    assert str(raised.value) == (
        f"Vault at {vault.url} rejected the token (invalid or expired): set a valid one in "
        "vault_token or VAULT_TOKEN"
    )


def _root(vault) -> hvac.Client:
    return hvac.Client(url=vault.url, token=ROOT_TOKEN)


def test_approle_login_and_its_failure(vault):
    root = _root(vault)
    pki.bootstrap(root, "lab")
    root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("deploy", token_policies=["lab-galley-deploy"])
    role_id = root.auth.approle.read_role_id("deploy")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("deploy")["data"]["secret_id"]

    client = connect(
        _settings(vault.url, vault_role_id=role_id, vault_secret_id=secret_id),
        pki.deploy_paths("lab"),
    )
    assert client.is_authenticated()
    with pytest.raises(VaultError) as raised:
        connect(_settings(vault.url, vault_role_id=role_id, vault_secret_id="wrong-secret"))
    message = str(raised.value)
    assert message.startswith(f"AppRole login to Vault at {vault.url} failed")
    assert "invalid role or secret ID" in message and "wrong-secret" not in message


def test_missing_capabilities_are_named(vault):
    root = _root(vault)
    pki.bootstrap(root, "lab")
    root.sys.create_or_update_acl_policy("ca-only", 'path "lab/pki/etcd/ca/pem" {\n'
                                          '  capabilities = ["read"]\n}\n')  # fmt: skip
    weak = root.auth.token.create(policies=["ca-only"])["auth"]["client_token"]
    deploy = root.auth.token.create(policies=["lab-galley-deploy"])["auth"]["client_token"]
    needed = {"lab/pki/etcd/ca/pem": "read", "lab/pki/etcd/sign/etcd-member": "update"}

    with pytest.raises(VaultError) as raised:
        connect(_settings(vault.url, vault_token=weak), needed)
    assert str(raised.value).startswith(
        "token lacks 'update' on lab/pki/etcd/sign/etcd-member (grant them"
    )
    assert connect(_settings(vault.url, vault_token=deploy), needed).is_authenticated()


def test_lazy_client_connects_on_first_use_and_is_shared(vault):
    settings = _settings(vault.url, vault_token=ROOT_TOKEN)
    factory = lazy_client(settings, pki.deploy_paths("lab"))
    vault.seal()  # nothing happened yet: creating the factory did not touch Vault
    with pytest.raises(VaultError, match="is sealed"):
        factory()
    vault.unseal()
    client = factory()
    assert (
        lazy_client(_settings(vault.url, vault_token=ROOT_TOKEN), pki.deploy_paths("lab"))()
        is client
    )
