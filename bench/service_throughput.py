"""Upload (and download) throughput of the service client on loopback, in MB/s.

    python -m bench.service_throughput [--mb 200] [--server ADDR]   # prints JSON

Writes a random file of --mb MB to a temp folder (deleted afterwards; no data is kept), submits it as
a probe job (the server stores it and checks its sha256), waits, and times the upload; the probe's
result is fetched too. Without --server it starts its own server (temp data dir, free port).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.serverproc import ServerProcess
from shared.client import HeadRigClient



@contextlib.contextmanager
def local_server(data_dir: Path, workers: int = 1):
    """A `headrig serve` subprocess on a free loopback port; yields its address."""
    server = ServerProcess(data_dir, workers=workers).start()
    try:
        yield server.address
    finally:
        server.kill(signal.SIGTERM)


def run(address: str, mb: int, workdir: Path) -> dict:
    path = workdir / "random.bin"
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    size = path.stat().st_size
    with HeadRigClient(address, client_name="throughput", timeout_s=30) as c:
        c.hello()
        rtt = min(c.ping() for _ in range(20))
        t0 = time.monotonic()
        job = c.submit("probe", {}, [path])     # hashes locally, then uploads every chunk
        t1 = time.monotonic()
        final = c.wait(job, timeout_s=600)
        t2 = time.monotonic()
    from shared.client import file_entry

    h0 = time.monotonic()
    file_entry(path)
    hash_s = time.monotonic() - h0
    upload_s = (t1 - t0) - hash_s
    return {"file_mb": size / 1e6, "final": final.type, "ping_rtt_ms": round(rtt * 1000, 3),
            "submit_s": round(t1 - t0, 3), "local_sha256_s": round(hash_s, 3), "upload_s": round(upload_s, 3),
            "upload_MB_per_s": round(size / 1e6 / upload_s, 1), "submit_MB_per_s_incl_hash": round(size / 1e6 / (t1 - t0), 1),
            "server_job_s": round(t2 - t1, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--server", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="headrig-tput-") as tmp:
        if args.server:
            result = run(args.server, args.mb, Path(tmp))
        else:
            with local_server(Path(tmp) / "data") as address:
                result = run(address, args.mb, Path(tmp))
    print(json.dumps(result, indent=1))
    return 0 if result["final"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
