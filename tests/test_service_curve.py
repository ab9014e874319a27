"""CURVE end to end through the real CLI and client library: keys made by `headrig keys generate`,
an authorised client works, a stranger and a plaintext client are refused, the server keeps serving."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.cli import main
from shared.client import ClientError, HeadRigClient
from tests.conftest import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def curve_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    assert main(["keys", "generate", str(root / "keys")]) == 0
    assert main(["keys", "generate", str(root / "stranger")]) == 0
    address = f"tcp://127.0.0.1:{_free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--bind", address, "--data-dir", str(root / "data"),
                             "--keys", str(root / "keys")], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "GLOG_minloglevel": "2"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with HeadRigClient(address, keys_dir=root / "keys", timeout_s=0.5, retries=1) as c:
                    c.ping()
                break
            except ClientError:
                assert proc.poll() is None and time.monotonic() < deadline, "CURVE server did not start"
                time.sleep(0.2)
        yield address, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_authorised_client_runs_a_job(curve_server, tmp_path):
    address, root = curve_server
    data = tmp_path / "input.bin"
    data.write_bytes(b"headrig" * 1000)
    with HeadRigClient(address, keys_dir=root / "keys", timeout_s=5) as client:
        assert client.hello()["kinds"]
        job = client.submit("probe", {}, [data])
        assert client.wait(job, timeout_s=60).type == "done"


@pytest.mark.parametrize("who", ["stranger", "plaintext"])
def test_strangers_are_refused_and_the_server_keeps_serving(curve_server, who):
    address, root = curve_server
    keys = root / "stranger" if who == "stranger" else None
    with HeadRigClient(address, keys_dir=keys, timeout_s=0.5, retries=2) as client:
        with pytest.raises(ClientError) as err:
            client.ping()
    assert err.value.code == "server_unreachable"
    with HeadRigClient(address, keys_dir=root / "keys", timeout_s=5) as client:
        assert client.ping() < 5


def test_listening_beyond_loopback_needs_keys(tmp_path, capsys):
    assert main(["serve", "--bind", "tcp://0.0.0.0:5599", "--data-dir", str(tmp_path)]) == 2
    assert "headrig keys generate" in capsys.readouterr().err
