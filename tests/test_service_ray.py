"""``headrig serve --engine ray`` on a real Ray cluster: ``ray.cluster_utils.Cluster`` on 127.0.0.1 with a
head (no GPU) and two worker nodes declaring one fake GPU each, one cluster for the whole module.

Real ZeroMQ, real CURVE, real Ray actors; probe jobs stand in for GPU work (they hash their inputs,
wait, and record the node they ran on). Every listening socket of this process and its children
(Ray's GCS, raylets, workers) must be on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# Read by Ray when it is imported: without it Ray takes the machine's first non-loopback address as the
# node address and some listeners bind to it. With it (and node_ip_address below) all stay on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402  (the "cluster" extra; `make install` installs it)

from backend.cli import main  # noqa: E402
from backend.service.ray_engine import RayConfig  # noqa: E402
from backend.service.server import Server, ServerConfig  # noqa: E402
from bench.loopback import listeners, non_loopback_listeners  # noqa: E402
from shared.client import ClientError, HeadRigClient  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
NODE = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": 100 << 20}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # Fast failure detection, so that a removed node is declared dead in about a second.
    system = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_failure_threshold": 3}
    c = Cluster(initialize_head=True, head_node_args={**NODE, "num_gpus": 0, "include_dashboard": False,
                                                       "_system_config": system})
    workers = [c.add_node(**NODE, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    try:
        yield c, workers
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.fixture
def gateway(cluster, tmp_path):
    """Start in-process gateways on the cluster; all are stopped (and must stop) at the end."""
    started = []

    def start(data_dir: Path | None = None, **kw) -> Server:
        cfg = ServerConfig(bind="tcp://127.0.0.1:*", data_dir=data_dir or tmp_path / f"data{len(started)}", engine="ray",
                           ray=RayConfig(address=cluster[0].address), **kw)
        srv = Server(cfg)
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        assert srv.ready.wait(60)
        started.append((srv, thread))
        _wait(lambda: srv._pool is not None and srv._pool.idle_workers() == 2, 60, "two warm workers")
        return srv

    yield start
    for srv, thread in started:
        srv.stop()
        thread.join(30)
        assert not thread.is_alive(), "gateway did not stop"


def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _probe(client: HeadRigClient, tmp_path: Path, seconds: float = 0.0, name: str = "in.bin") -> str:
    path = tmp_path / name
    path.write_bytes(os.urandom(100_000))
    return client.submit("probe", {"seconds": seconds}, [path])


def _result(client: HeadRigClient, job: str, out: Path) -> dict:
    return json.loads((client.fetch(job, out) / "probe.json").read_text())


def _starts(data_dir: Path) -> list[str]:
    """Job ids in the order the gateway started them (from its journal)."""
    lines = [json.loads(x) for x in (data_dir / "journal.jsonl").read_text().splitlines()]
    return [x["job_id"] for x in lines if x["event"] == "state" and x["state"] == "running"]


def test_jobs_spread_over_both_nodes_on_loopback(cluster, gateway, tmp_path):
    c, workers = cluster
    srv = gateway()
    with HeadRigClient(srv.endpoint, client_name="ann", timeout_s=10) as client:
        assert client.hello()["engine"] == "ray"
        jobs = [_probe(client, tmp_path, seconds=1.0, name=f"in{i}.bin") for i in range(4)]
        assert _wait(lambda: len(srv._pool.running()) == 2 and srv._pool.running(), 30, "two jobs running at once")
        assert len(set(srv._pool.running().values())) == 2  # one per node
        assert len(listeners()) >= 6 and non_loopback_listeners() == []  # Ray and the gateway, all on 127.0.0.1
        assert [client.wait(j, timeout_s=60).type for j in jobs] == ["done"] * 4
        nodes = {_result(client, j, tmp_path / j)["node"] for j in jobs}
    assert nodes == {w.node_id for w in workers}
    log = (srv.config.data_dir / "logs" / f"{jobs[0]}.log").read_text()  # the node's job log reached the gateway
    assert "start probe" in log and "done: 1 file(s)" in log


def test_node_removed_mid_job_finishes_once_on_the_other(cluster, gateway, tmp_path):
    c, workers = cluster
    srv = gateway()
    with HeadRigClient(srv.endpoint, client_name="ann", timeout_s=10) as client:
        job = _probe(client, tmp_path, seconds=4.0)
        events = []
        first = _wait(lambda: srv._pool.running().get(job), 30, "the job to start")
        _wait(lambda: srv.store.get(job).progress["stage"] == "wait", 30, "the job to be running its wait")
        lost = next(w for w in workers if w.node_id == first)
        c.remove_node(lost)
        final = client.wait(job, on_progress=events.append, timeout_s=90)
        assert final.type == "done", final
        report = _result(client, job, tmp_path / "out")
    assert report["node"] != first and report["node"] in {w.node_id for w in workers}
    assert [e.stage for e in events].count("retry") == 1
    journal = [json.loads(x) for x in (srv.config.data_dir / "journal.jsonl").read_text().splitlines()]
    ends = [x for x in journal if x["job_id"] == job and x["state"] in ("done", "failed", "cancelled")]
    assert [x["state"] for x in ends] == ["done"]  # finished exactly once
    assert _starts(srv.config.data_dir).count(job) == 1  # the re-run stayed inside the engine: no second job
    # Put the node back for the tests that follow.
    workers[workers.index(lost)] = c.add_node(**NODE, num_gpus=1)
    c.wait_for_nodes()


def test_a_job_lost_twice_fails_with_the_reason(cluster, gateway, tmp_path):
    c, workers = cluster
    srv = gateway()
    with HeadRigClient(srv.endpoint, client_name="ann", timeout_s=10) as client:
        job = _probe(client, tmp_path, seconds=30)
        seen = []  # the job's events, as a second connection of the same artist sees them

        def watch():
            with HeadRigClient(srv.endpoint, client_name="ann", timeout_s=10) as watcher:
                for event in watcher.events(job, timeout_s=120):
                    seen.append(event)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for attempt in range(2):
            # Running (a progress event of this attempt arrived after its retry notice), then its node goes.
            _wait(lambda: seen and [e.stage for e in seen].count("retry") == attempt and seen[-1].stage == "wait", 60,
                  f"attempt {attempt + 1} to run")
            lost = next(w for w in workers if w.node_id == srv._pool.running()[job])
            c.remove_node(lost)
            workers.remove(lost)
        final = client.wait(job, timeout_s=60)
        watcher.join(30)
    assert seen[-1].type == "failed" and [e.stage for e in seen].count("retry") == 1
    assert final.type == "failed" and final.code == "node_lost" and "re-run once" in final.message, final
    workers += [c.add_node(**NODE, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()


def test_cancel_a_running_job_then_the_worker_is_replaced(gateway, tmp_path):
    srv = gateway()
    with HeadRigClient(srv.endpoint, client_name="ann", timeout_s=10) as client:
        job = _probe(client, tmp_path, seconds=60)
        _wait(lambda: srv.store.get(job).progress["stage"] == "wait", 30, "the job to run")
        start = time.monotonic()
        client.cancel(job)
        assert client.wait(job, timeout_s=10).type == "cancelled"
        assert time.monotonic() - start < 5
        assert srv._pool.running() == {}
        again = _probe(client, tmp_path, seconds=0)
        assert client.wait(again, timeout_s=60).type == "done"
        _wait(lambda: srv._pool.idle_workers() == 2, 60, "the replacement worker")


def test_fair_share_round_robin_by_artist(gateway, tmp_path):
    srv = gateway()
    with HeadRigClient(srv.endpoint, client_name="ann", timeout_s=10) as ann, \
            HeadRigClient(srv.endpoint, client_name="bob", timeout_s=10) as bob:
        ann_jobs = [_probe(ann, tmp_path, seconds=1.0, name=f"a{i}.bin") for i in range(6)]
        _wait(lambda: len(srv._pool.running()) == 2, 30, "ann's first jobs to hold both workers")
        bob_jobs = [_probe(bob, tmp_path, seconds=0.2, name=f"b{i}.bin") for i in range(2)]
        assert all(ann.wait(j, timeout_s=90).type == "done" for j in ann_jobs)
        assert all(bob.wait(j, timeout_s=90).type == "done" for j in bob_jobs)
    order = _starts(srv.config.data_dir)
    # FIFO would start bob after all six of ann's; round robin starts both before ann's fifth.
    assert max(order.index(j) for j in bob_jobs) < order.index(ann_jobs[4]), order


def test_artists_keys_own_their_jobs_admin_sees_all(gateway, tmp_path):
    keys = tmp_path / "keys"
    assert main(["keys", "generate", str(keys)]) == 0
    for name in ("ann", "bob"):
        assert main(["keys", "add-client", name, "--keys", str(keys)]) == 0
    assert main(["keys", "add-client", "lead", "--admin", "--keys", str(keys)]) == 0
    assert not any(p.name.startswith("server.key_secret") for p in (keys / "clients").rglob("*"))
    srv = gateway(keys_dir=keys)
    with HeadRigClient(srv.endpoint, keys_dir=keys / "clients" / "ann", client_name="bob", timeout_s=5) as ann, \
            HeadRigClient(srv.endpoint, keys_dir=keys / "clients" / "bob", client_name="ann", timeout_s=5) as bob, \
            HeadRigClient(srv.endpoint, keys_dir=keys / "clients" / "lead", timeout_s=5) as lead:
        job = _probe(ann, tmp_path)
        assert ann.wait(job, timeout_s=60).type == "done"
        # The declared names are swapped on purpose: ownership is the key, not the name.
        assert bob.list_jobs() == []
        for call in (lambda: bob.status(job), lambda: bob.cancel(job), lambda: bob.fetch(job, tmp_path / "stolen")):
            with pytest.raises(ClientError) as err:
                call()
            assert err.value.code == "not_found"
        assert not (tmp_path / "stolen").exists()
        assert [i["job"] for i in ann.list_jobs()] == [job]
        assert [i["job"] for i in lead.list_jobs()] == [job]
        assert _result(lead, job, tmp_path / "by-admin")["job_id"] == job
        # Revoked while connected: refused within seconds, on this connection and any new one.
        assert main(["keys", "revoke-client", "bob", "--keys", str(keys)]) == 0
        assert not (keys / "clients" / "bob").exists()
        time.sleep(1.5)
        with pytest.raises(ClientError) as err:
            bob.list_jobs()
        assert "revoked" in err.value.message
        assert [i["job"] for i in ann.list_jobs()] == [job]


def test_gateway_killed_and_restarted_recovers(cluster, tmp_path):
    """A real ``headrig serve --engine ray`` process: kill -9 loses nothing finished; SIGTERM stops it cleanly."""
    data = tmp_path / "data"

    def serve() -> tuple[subprocess.Popen, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "GLOG_minloglevel": "2"}
        proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--engine", "ray", "--ray-address",
                                 cluster[0].address, "--bind", "tcp://127.0.0.1:*", "--data-dir", str(data)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        line = proc.stdout.readline().decode()
        assert "listening on" in line and "ray engine" in line, line
        return proc, line.split("listening on ", 1)[1].split()[0]

    first, address = serve()
    try:
        with HeadRigClient(address, client_name="ann", timeout_s=10) as client:
            finished = _probe(client, tmp_path)
            assert client.wait(finished, timeout_s=60).type == "done"
            running = _probe(client, tmp_path, seconds=60, name="long.bin")
            _wait(lambda: client.status(running)["progress"]["stage"] == "wait", 60, "the long job to run")
    finally:
        first.kill()  # SIGKILL of the gateway: Ray ends the actors its driver owned
        first.wait(10)
    second, address = serve()
    try:
        with HeadRigClient(address, client_name="ann", timeout_s=10) as client:
            assert client.status(running)["error"]["code"] == "interrupted"
            assert _result(client, finished, tmp_path / "kept")["job_id"] == finished
            again = _probe(client, tmp_path, name="again.bin")
            assert client.wait(again, timeout_s=60).type == "done"
        os.kill(second.pid, signal.SIGTERM)  # Ray's start-up must not have taken this signal over
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 0 and b"stopped" in out
    finally:
        if second.poll() is None:
            second.kill()
