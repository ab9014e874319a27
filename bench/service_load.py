"""Load on `headrig serve`: N clients in threads x M probe jobs each; counts lost and duplicated jobs.

    python -m bench.service_load [--clients 20] [--jobs 5] [--server ADDR]   # prints JSON

Without --server it starts its own server (temp data dir, free port, 1 worker) and stops it after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.service_throughput import local_server
from shared.client import HeadRigClient


def run(address: str, clients: int, jobs: int, workdir: Path) -> dict:
    payload = workdir / "payload.bin"
    payload.write_bytes(os.urandom(64 << 10))
    submitted, finals, errors, latencies = [], {}, [], []
    lock = threading.Lock()

    def client(i: int) -> None:
        try:
            with HeadRigClient(address, client_name=f"load-{i}", timeout_s=10, retries=3) as c:
                mine = []
                for _ in range(jobs):
                    t = time.monotonic()
                    job = c.submit("probe", {}, [payload])
                    mine.append((job, t))
                    with lock:
                        submitted.append(job)
                for job, t in mine:
                    final = c.wait(job, timeout_s=600)
                    with lock:
                        finals.setdefault(job, []).append(final.type)
                        latencies.append(time.monotonic() - t)
        except Exception as exc:  # noqa: BLE001 - counted
            with lock:
                errors.append(f"client {i}: {exc!r}"[:300])

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    wall = time.monotonic() - start
    expected = clients * jobs
    latencies.sort()
    return {
        "clients": clients, "jobs_per_client": jobs, "expected": expected, "submitted": len(submitted),
        "distinct_job_ids": len(set(submitted)), "duplicated": len(submitted) - len(set(submitted)),
        "done": sum(v == ["done"] for v in finals.values()),
        "lost": expected - sum(1 for v in finals.values() if v and v[0] in ("done", "failed", "cancelled")),
        "not_done": sorted({t for v in finals.values() for t in v} - {"done"}),
        "errors": errors[:10], "wall_s": round(wall, 2), "jobs_per_s": round(expected / wall, 2),
        "latency_s_p50": round(latencies[len(latencies) // 2], 3) if latencies else None,
        "latency_s_max": round(latencies[-1], 3) if latencies else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=5)
    ap.add_argument("--server", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="headrig-load-") as tmp:
        if args.server:
            result = run(args.server, args.clients, args.jobs, Path(tmp))
        else:
            with local_server(Path(tmp) / "data") as address:
                result = run(address, args.clients, args.jobs, Path(tmp))
    print(json.dumps(result, indent=1))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
