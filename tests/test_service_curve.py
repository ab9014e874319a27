"""CURVE end to end through the real CLI and client library: keys made by `headrig keys generate`,
an authorised client works, a stranger and a plaintext client are refused, the server keeps serving."""

from __future__ import annotations

import signal

import pytest

from backend.cli import main
from shared.client import ClientError, HeadRigClient
from bench.serverproc import ServerProcess


@pytest.fixture(scope="module")
def curve_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    assert main(["keys", "generate", str(root / "keys")]) == 0
    assert main(["keys", "add-client", "ann", "--keys", str(root / "keys")]) == 0
    assert main(["keys", "generate", str(root / "other")]) == 0
    assert main(["keys", "add-client", "stranger", "--keys", str(root / "other")]) == 0
    server = ServerProcess(root / "data", keys_dir=root / "keys", client_keys=root / "keys" / "clients" / "ann").start()
    try:
        yield server.address, root
    finally:
        server.kill(signal.SIGTERM)


def test_authorised_client_runs_a_job(curve_server, tmp_path):
    address, root = curve_server
    data = tmp_path / "input.bin"
    data.write_bytes(b"headrig" * 1000)
    with HeadRigClient(address, keys_dir=root / "keys" / "clients" / "ann", timeout_s=5) as client:
        assert client.hello()["kinds"]
        job = client.submit("probe", {}, [data])
        assert client.wait(job, timeout_s=60).type == "done"


@pytest.mark.parametrize("who", ["stranger", "plaintext"])
def test_strangers_are_refused_and_the_server_keeps_serving(curve_server, who):
    address, root = curve_server
    keys = root / "other" / "clients" / "stranger" if who == "stranger" else None
    with HeadRigClient(address, keys_dir=keys, timeout_s=0.5, retries=2) as client:
        with pytest.raises(ClientError) as err:
            client.ping()
    assert err.value.code == "server_unreachable"
    with HeadRigClient(address, keys_dir=root / "keys" / "clients" / "ann", timeout_s=5) as client:
        assert client.ping() < 5


def test_listening_beyond_loopback_needs_keys(tmp_path, capsys):
    assert main(["serve", "--bind", "tcp://0.0.0.0:5599", "--data-dir", str(tmp_path)]) == 2
    assert "headrig keys generate" in capsys.readouterr().err
