"""WorkerPool: probe jobs end to end, cancel, a crashed worker, and the in-process error mapping."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from backend.errors import InputError
from backend.service import workers
from backend.service.workers import Runner, WorkerPool

from conftest import MEDIA, require_shared


def _wait(pool: WorkerPool, job_id: str, timeout: float = 20.0) -> list[tuple]:
    """Events of ``job_id`` until its final one."""
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in pool.poll_events(timeout=0.2):
            assert event[1] == job_id, event
            events.append(event)
            if event[0] in ("done", "failed", "cancelled"):
                return events
    raise AssertionError(f"no final event for {job_id} in {timeout} s: {events}")


def _job(tmp_path: Path, n: int, data: bytes = b"") -> tuple[str, list[Path], Path]:
    job_id = f"{n:032x}"
    folder = tmp_path / "jobs" / job_id
    (folder / "inputs").mkdir(parents=True)
    paths = []
    if data:
        paths.append(folder / "inputs" / "a.bin")
        paths[0].write_bytes(data)
    return job_id, paths, folder / "result"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    with WorkerPool(1, tmp_path_factory.mktemp("pool")) as p:
        yield p


def test_probe_end_to_end(pool, tmp_path):
    data = os.urandom(100_000)
    job_id, paths, result = _job(tmp_path, 1, data)
    assert pool.submit(job_id, "probe", {"seconds": 0.6}, paths, result)
    assert pool.running() == {job_id: pool.worker_pids()[0]}
    other = _job(tmp_path, 2)
    assert pool.submit(other[0], "probe", {}, other[1], other[2]) is False  # busy: the server queues it
    events = _wait(pool, job_id)
    kinds = [e[0] for e in events]
    assert kinds[-1] == "done" and kinds.count("progress") >= 3 and set(kinds[:-1]) == {"progress"}
    fractions = [e[3] for e in events if e[0] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    files = events[-1][2]
    assert [f["name"] for f in files] == ["probe.json"]
    report = (result / "probe.json").read_bytes()
    assert files[0]["sha256"] == hashlib.sha256(report).hexdigest() and files[0]["size"] == len(report)
    assert json.loads(report)["inputs"] == [{"name": "a.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
    assert pool.idle_workers() == 1 and pool.running() == {}


def test_probe_bad_params(pool, tmp_path):
    job_id, paths, result = _job(tmp_path, 3)
    assert pool.submit(job_id, "probe", {"seconds": "soon"}, paths, result)
    event = _wait(pool, job_id)[-1]
    assert event[:3] == ("failed", job_id, "bad_params") and "params.seconds" in event[3]
    with pytest.raises(ValueError, match="unknown job kind"):
        pool.submit(job_id, "mine_bitcoin", {}, paths, result)


def test_cancel_long_probe(pool, tmp_path):
    job_id, paths, result = _job(tmp_path, 4, b"x")
    old_pid = pool.worker_pids()[0]
    assert pool.submit(job_id, "probe", {"seconds": 30}, paths, result)
    events = []
    while not any(e[0] == "progress" and e[2] == "wait" for e in events):  # it is really running
        events += pool.poll_events(timeout=0.2)
    start = time.monotonic()
    assert pool.cancel(job_id)
    events += pool.poll_events()
    assert time.monotonic() - start < 2.0
    assert events[-1] == ("cancelled", job_id) and not result.exists()
    assert pool.cancel(job_id) is False and pool.worker_pids()[0] != old_pid
    job_id, paths, result = _job(tmp_path, 5)
    assert pool.submit(job_id, "probe", {}, paths, result)
    assert _wait(pool, job_id)[-1][0] == "done"


def test_killed_worker_fails_job_and_is_replaced(pool, tmp_path):
    job_id, paths, result = _job(tmp_path, 6)
    assert pool.submit(job_id, "probe", {"seconds": 30}, paths, result)
    assert pool.poll_events(timeout=10)  # started
    os.kill(pool.running()[job_id], signal.SIGKILL)
    event = _wait(pool, job_id)[-1]
    assert event[:3] == ("failed", job_id, "worker_crashed") and "signal 9" in event[3]
    job_id, paths, result = _job(tmp_path, 7)
    assert pool.submit(job_id, "probe", {}, paths, result)
    assert _wait(pool, job_id)[-1][0] == "done"


def test_close_reports_interrupted_jobs(tmp_path):
    pool = WorkerPool(1, tmp_path)
    job_id, paths, result = _job(tmp_path, 8)
    assert pool.submit(job_id, "probe", {"seconds": 30}, paths, result)
    start = time.monotonic()
    events = pool.close()
    assert time.monotonic() - start < 3.0
    assert events[-1][:3] == ("failed", job_id, "interrupted")
    assert not pool._slots[0].process.is_alive()


def test_runner_maps_errors_without_tracebacks(tmp_path, monkeypatch):
    """In-process: InputError keeps its code with the client's file name; anything else is "internal"."""
    (tmp_path / "logs").mkdir()
    events = []
    runner = Runner(tmp_path, events.append)
    job_id, paths, result = _job(tmp_path, 9, b"data")

    def bad_input(runner, job_id, params, inputs, result_dir):
        raise InputError(inputs[0], "no face found", "use a photo with a face", code="no_face")

    def broken(runner, job_id, params, inputs, result_dir):
        raise RuntimeError(f"secret detail in {result_dir}")

    monkeypatch.setitem(workers.JOBS, "probe", bad_input)
    runner.run(job_id, "probe", {}, [str(p) for p in paths], str(result))
    assert events[-1] == ("failed", job_id, "no_face", "a.bin: no face found; use a photo with a face")
    monkeypatch.setitem(workers.JOBS, "probe", broken)
    runner.run(job_id, "probe", {}, [str(p) for p in paths], str(result))
    code, message = events[-1][2:]
    assert code == "internal" and "RuntimeError" in message and "secret" not in message and "Traceback" not in message
    assert "secret detail" in (tmp_path / "logs" / f"{job_id}.log").read_text()


@pytest.mark.slow
def test_reconstruct_in_worker(tmp_path):
    require_shared()
    job_id, _, result = _job(tmp_path, 10)
    with WorkerPool(1, tmp_path) as pool:
        assert pool.submit(job_id, "reconstruct", {}, [MEDIA / "images" / "d8.jpg"], result)
        events = _wait(pool, job_id, timeout=120)
    assert events[-1][0] == "done", events[-1]
    assert "head.json" in [f["name"] for f in events[-1][2]]
    assert [e[2] for e in events if e[0] == "progress"][:2] == ["loading", "started"]
