"""A real `headrig serve` subprocess on a free loopback port, for benchmarks and tests that need a live server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from shared.client import ClientError, HeadRigClient

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m backend serve`` in its own process group (so kill() takes its workers too)."""

    def __init__(self, data_dir: Path, port: int | None = None, keys_dir: Path | None = None, workers: int = 1,
                 client_keys: Path | None = None, extra_args: tuple[str, ...] = ()):
        """``keys_dir``: the server's key folder; ``client_keys``: the artist folder used to check it answers."""
        self.data_dir, self.port, self.keys_dir, self.workers = data_dir, port or free_port(), keys_dir, workers
        self.client_keys, self.extra_args = client_keys, tuple(extra_args)
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, wait_s: float = 60) -> "ServerProcess":
        cmd = [sys.executable, "-m", "backend", "serve", "--bind", self.address, "--data-dir", str(self.data_dir),
               "--workers", str(self.workers)]
        if self.keys_dir:
            cmd += ["--keys", str(self.keys_dir)]
        cmd += list(self.extra_args)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "GLOG_minloglevel": "2"}, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "headrig serve exited"
            try:
                with HeadRigClient(self.address, keys_dir=self.client_keys, timeout_s=0.5, retries=1) as c:
                    c.ping()
                return self
            except ClientError:
                time.sleep(0.2)
        raise AssertionError(f"server on {self.address} did not answer within {wait_s} s")

    def kill(self, sig=signal.SIGKILL) -> None:
        """Signal the whole group (server and workers); a server that ignores SIGTERM for 20 s is killed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
