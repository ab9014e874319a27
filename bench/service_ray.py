"""The gateway on a Ray cluster: probe-job throughput with 1 vs 2 worker nodes, and jobs lost or
duplicated while a worker node is killed every ``--kill-every`` seconds.

    python -m bench.service_ray [--jobs 16 --seconds 1.0] [--chaos-s 100 --kill-every 30]   # prints JSON

A ``ray.cluster_utils.Cluster`` on 127.0.0.1 (a head without GPUs, worker nodes with one fake GPU
each), an in-process gateway (``--engine ray``) and real ZeroMQ clients. Probe jobs hash a small
upload and wait ``--seconds``: they stand in for GPU work of fixed length, so the ratio measures the
engine's scheduling and data path, not this 2-core machine's arithmetic. Also reports every
listening socket of this process tree that is not on loopback (expected: none).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read at import: keep Ray on loopback
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from backend.service.ray_engine import RayConfig  # noqa: E402
from backend.service.server import Server, ServerConfig  # noqa: E402
from bench.loopback import listeners, non_loopback_listeners  # noqa: E402
from shared.client import HeadRigClient  # noqa: E402

NODE = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": 100 << 20}
SYSTEM = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_failure_threshold": 3}


class Gateway:
    """An in-process ``headrig serve --engine ray``; counts the engine's terminal events per job."""

    def __init__(self, address: str, data_dir: Path):
        self.server = Server(ServerConfig(bind="tcp://127.0.0.1:*", data_dir=data_dir, engine="ray",
                                          ray=RayConfig(address=address), max_jobs_per_client=1000,
                                          max_uploads_per_client=1000))
        self.ends: Counter = Counter()
        self.reruns = 0                 # jobs re-run after their node was lost
        on_event = self.server._on_worker_event

        def counting(event):
            if event[0] in ("done", "failed", "cancelled"):
                self.ends[event[1], event[0]] += 1
            elif event[0] == "progress" and event[2] == "retry":
                self.reruns += 1
            on_event(event)

        self.server._on_worker_event = counting
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert self.server.ready.wait(60), "gateway did not start"

    def wait_workers(self, n: int, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pool = self.server._pool
            if pool is not None and pool.idle_workers() >= n:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{n} idle workers not ready in {timeout} s")

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(60)


def throughput(gw: Gateway, jobs: int, seconds: float, work: Path) -> dict:
    blob = work / "in.bin"
    blob.write_bytes(os.urandom(1 << 20))
    with HeadRigClient(gw.server.endpoint, client_name="bench", timeout_s=30) as client:
        start = time.monotonic()
        ids = [client.submit("probe", {"seconds": seconds}, [blob]) for _ in range(jobs)]
        finals = [client.wait(j, timeout_s=600).type for j in ids]
        wall = time.monotonic() - start
    return {"jobs": jobs, "done": finals.count("done"), "wall_s": round(wall, 2), "jobs_per_s": round(jobs / wall, 3)}


def chaos(cluster: Cluster, workers: list, gw: Gateway, run_s: float, kill_every: float, seconds: float, work: Path) -> dict:
    """Keep two jobs per worker in flight for ``run_s`` seconds; every ``kill_every`` seconds remove the
    worker node running the most jobs and start a fresh one in its place."""
    blob = work / "chaos.bin"
    blob.write_bytes(os.urandom(1 << 16))
    submitted, kills, finals = [], 0, {}
    start = next_kill = time.monotonic()
    next_kill += kill_every
    with HeadRigClient(gw.server.endpoint, client_name="chaos", timeout_s=30) as client:
        while time.monotonic() - start < run_s:
            active = [j for j in submitted if j not in finals]
            while len(active) < 4:
                job = client.submit("probe", {"seconds": seconds}, [blob])
                submitted.append(job)
                active.append(job)
            for job in active:
                state = client.status(job)["state"]
                if state in ("done", "failed", "cancelled"):
                    finals[job] = state
            if time.monotonic() >= next_kill:
                running = Counter(gw.server._pool.running().values())
                victim = max(workers, key=lambda w: running.get(w.node_id, 0))
                cluster.remove_node(victim)
                workers[workers.index(victim)] = cluster.add_node(**NODE, num_gpus=1)
                kills += 1
                next_kill += kill_every
            time.sleep(0.2)
        for job in submitted:
            if job not in finals:
                finals[job] = client.wait(job, timeout_s=300).type
    states = Counter(finals.values())
    per_job = Counter()
    for (job, _), n in gw.ends.items():
        per_job[job] += n
    duplicated = sum(1 for n in per_job.values() if n > 1)  # a job that ended (or completed) twice
    return {"run_s": run_s, "kill_every_s": kill_every, "nodes_killed": kills, "jobs": len(submitted),
            "done": states["done"], "failed": states["failed"], "lost": len(submitted) - states["done"],
            "duplicated": duplicated, "re_runs_after_node_loss": gw.reruns}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=1.0, help="length of each probe job")
    ap.add_argument("--chaos-s", type=float, default=100.0, help="0 skips the node-killing run")
    ap.add_argument("--kill-every", type=float, default=30.0)
    args = ap.parse_args(argv)
    out = {}
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_gpus": 0, "include_dashboard": False,
                                                             "_system_config": SYSTEM})
    try:
        with tempfile.TemporaryDirectory(prefix="headrig-ray-bench-") as tmp:
            work = Path(tmp)
            workers = [cluster.add_node(**NODE, num_gpus=1)]
            gw = Gateway(cluster.address, work / "data1")
            try:
                gw.wait_workers(1)
                out["one_node"] = throughput(gw, args.jobs, args.seconds, work)
                workers.append(cluster.add_node(**NODE, num_gpus=1))
                gw.wait_workers(2)  # the pool grows when a GPU box joins
                out["two_nodes"] = throughput(gw, args.jobs, args.seconds, work)
                out["listeners"] = len(listeners())
                out["non_loopback_listeners"] = [f"{name} {addr}" for _, name, addr in non_loopback_listeners()]
            finally:
                gw.stop()
            out["ratio_2_vs_1"] = round(out["two_nodes"]["jobs_per_s"] / out["one_node"]["jobs_per_s"], 3)
            if args.chaos_s > 0:
                gw = Gateway(cluster.address, work / "data2")
                try:
                    gw.wait_workers(2)
                    out["chaos"] = chaos(cluster, workers, gw, args.chaos_s, args.kill_every, 3.0, work)
                finally:
                    gw.stop()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    print(json.dumps(out, indent=1))
    ok = out["two_nodes"]["done"] == out["one_node"]["done"] == args.jobs and not out["non_loopback_listeners"]
    return 0 if ok and out.get("chaos", {}).get("lost", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
