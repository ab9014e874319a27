"""The gateway's rules that do not need Ray: fair share, hashing off the socket loop, retention and the
disk cap, ``--force`` only on folders HeadRig wrote, artist keys, the plaintext start-up warning."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backend.cli import main
from backend.service import security, workers
from backend.service.fairqueue import FairQueue
from backend.service.jobstore import JobStore
from backend.service.retention import RetentionConfig, prune
from backend.service.runner import Runner
from shared.client import ClientError, HeadRigClient
from shared.folders import FETCH_MARKER, replace_refusal

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def gateway(server):
    """An in-process gateway on 127.0.0.1 (conftest's ``server``), named for these tests."""
    return server


def _file(path: Path, size: int = 1000) -> Path:
    path.write_bytes(os.urandom(size))
    return path


# ---- fair share --------------------------------------------------------------------------------------


def test_fair_queue_is_round_robin_by_owner():
    q = FairQueue()
    for i in range(4):
        q.push(f"a{i}", "ann")
    q.push("b0", "bob")
    q.push("b1", "bob")
    q.push("a0", "ann")  # already queued: no second place in line
    assert q.pop() == "a0"
    q.push("c0", "cy")   # a newcomer waits for one turn of each owner before it
    assert [q.pop() for _ in range(3)] == ["b0", "a1", "c0"]
    assert q.remove("a3") and not q.remove("a3") and "a2" in q
    assert [q.pop() for _ in range(len(q))] == ["b1", "a2"]
    assert q.pop() is None and len(q) == 0


# ---- hashing off the socket loop -------------------------------------------------------------------


def test_hashing_an_upload_does_not_stall_other_clients(gateway, tmp_path, monkeypatch):
    hashing = threading.Event()

    def slow_seal(path):  # stands in for hashing and syncing a 2 GiB upload
        hashing.set()
        time.sleep(2.0)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    srv = gateway()
    monkeypatch.setattr(srv.store, "seal_part", slow_seal)
    big = _file(tmp_path / "big.bin", 3 << 20)
    result = {}
    with HeadRigClient(srv.endpoint, client_name="ann", timeout_s=10) as ann:
        thread = threading.Thread(target=lambda: result.setdefault("job", ann.submit("probe", {}, [big])))
        thread.start()
        assert hashing.wait(20)
        with HeadRigClient(srv.endpoint, client_name="bob", timeout_s=5) as bob:
            pings = [bob.ping() for _ in range(5)]  # answered while the server hashes ann's upload
            assert max(pings) < 0.5, pings
            assert bob.list_jobs() == []
        assert hashing.is_set() and srv._hashing  # the hash was still running during those pings
        thread.join(30)
        assert ann.wait(result["job"], timeout_s=30).type == "done"


# ---- retention and the disk cap --------------------------------------------------------------------


def _finished_job(store: JobStore, state: str = "done") -> str:
    rec = store.create("probe", {}, "ann", [])
    store.update(rec.job_id, state="running")
    if state == "done":
        store.update(rec.job_id, state="done", result_files=[])
    elif state == "failed":
        store.update(rec.job_id, state="failed", error={"code": "x", "message": "y"})
    return rec.job_id


def test_retention_deletes_only_finished_jobs_past_their_time(tmp_path):
    store = JobStore(tmp_path / "data")
    done, failed, running = _finished_job(store), _finished_job(store, "failed"), _finished_job(store, "running")
    queued = store.create("probe", {}, "bob", []).job_id
    config = RetentionConfig(keep_days=7)
    assert prune(store, config) == []  # nothing is old yet: a full disk never deletes early
    later = datetime.now(timezone.utc) + timedelta(days=7, hours=1)
    assert sorted(prune(store, config, now=later)) == sorted([done, failed])
    assert {r.job_id for r in store.list()} == {running, queued}
    assert not (store.jobs_dir / done).exists() and (store.jobs_dir / running).is_dir()
    assert [json.loads(x)["event"] for x in (tmp_path / "data" / "journal.jsonl").read_text().splitlines()].count("removed") == 2
    assert {r.job_id for r in JobStore(tmp_path / "data").list()} == {running, queued}  # survives a restart
    with pytest.raises(ValueError, match="keep-days"):
        RetentionConfig(keep_days=0)


def test_disk_cap_refuses_new_jobs_with_a_reason(gateway, tmp_path):
    srv = gateway(retention=RetentionConfig(max_disk_bytes=5000))
    with HeadRigClient(srv.endpoint, client_name="ann", timeout_s=5) as client:
        first = client.submit("probe", {}, [_file(tmp_path / "a.bin", 3000)])
        assert client.wait(first, timeout_s=30).type == "done"
        with pytest.raises(ClientError) as err:
            client.submit("probe", {}, [_file(tmp_path / "b.bin", 3000)])
        assert err.value.code == "disk_full" and "cap" in err.value.message and "keep-days" in err.value.message
        assert client.status(first)["state"] == "done"  # the finished result was not sacrificed


def test_a_job_that_runs_out_of_disk_fails_disk_full(tmp_path, monkeypatch):
    def full(runner, job_id, params, inputs, result_dir):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(workers.JOBS, "probe", full)
    events = []
    Runner(tmp_path, events.append).run("a" * 32, "probe", {}, [], str(tmp_path / "result"))
    assert events[-1][:3] == ("failed", "a" * 32, "disk_full") and "disk is full" in events[-1][3]


# ---- --force replaces only folders HeadRig wrote ---------------------------------------------------


def test_replace_refusal(tmp_path):
    assert replace_refusal(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert replace_refusal(tmp_path / "empty") is None
    photos = tmp_path / "Pictures"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8")
    assert "not a folder HeadRig wrote" in replace_refusal(photos)
    (photos / "head.json").write_text(json.dumps({"format": "someone.else"}))
    assert replace_refusal(photos) is not None
    mine = tmp_path / "anim"
    mine.mkdir()
    (mine / "animation.json").write_text(json.dumps({"format": "headrig.animation"}))
    assert replace_refusal(mine) is None
    (tmp_path / "link").symlink_to(mine)
    assert "not a plain folder" in replace_refusal(tmp_path / "link")
    (tmp_path / "file").write_text("x")
    assert replace_refusal(tmp_path / "file") is not None


def test_client_force_never_deletes_a_foreign_folder(gateway, tmp_path, capsys):
    srv = gateway()
    with HeadRigClient(srv.endpoint, client_name="headrig-cli", timeout_s=5) as client:
        job = client.submit("probe", {}, [_file(tmp_path / "in.bin")])
        assert client.wait(job, timeout_s=30).type == "done"
    photos = tmp_path / "Pictures"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"years of photos")
    args = ["client", "fetch", job, "--server", srv.endpoint, "-o", str(photos), "--force"]
    assert main(args) == 2
    assert "refusing to replace it" in capsys.readouterr().err
    assert (photos / "holiday.jpg").read_bytes() == b"years of photos"
    with HeadRigClient(srv.endpoint, client_name="headrig-cli", timeout_s=5) as client:  # the library refuses too
        with pytest.raises(ClientError) as err:
            client.fetch(job, photos, force=True)
        assert err.value.code == "exists"
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.jpg"]
    fetched = tmp_path / "result"
    assert main(["client", "fetch", job, "--server", srv.endpoint, "-o", str(fetched)]) == 0
    assert (fetched / FETCH_MARKER).is_file()
    assert main(["client", "fetch", job, "--server", srv.endpoint, "-o", str(fetched), "--force"]) == 0  # ours: replaced
    assert (fetched / "probe.json").is_file()


# ---- artist keys -----------------------------------------------------------------------------------


def test_add_and_revoke_clients(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert main(["keys", "add-client", "ann", "--keys", str(keys)]) == 2
    assert "headrig keys generate" in capsys.readouterr().err  # no server keys yet
    assert main(["keys", "generate", str(keys)]) == 0
    assert main(["keys", "add-client", "ann", "--keys", str(keys)]) == 0
    assert main(["keys", "add-client", "ann", "--keys", str(keys)]) == 2
    assert "exists already" in capsys.readouterr().err
    for bad in ("../evil", ".hidden", "a/b", ""):
        with pytest.raises(security.SecurityError, match="client name"):
            security.add_client(keys, bad)
    ring = security.KeyRing(keys)
    assert ring.refresh() and list(ring.clients.values()) == ["ann"] and not ring.admins
    (keys / "clients" / "ann" / "notes.txt").write_text("the artist's own file")
    assert main(["keys", "revoke-client", "ann", "--keys", str(keys)]) == 0
    assert main(["keys", "revoke-client", "ann", "--keys", str(keys)]) == 2
    assert "no client 'ann'" in capsys.readouterr().err
    assert sorted(p.name for p in (keys / "clients" / "ann").iterdir()) == ["notes.txt"]  # only our files went
    assert ring.refresh() and ring.clients == {}
    assert (keys / "server.key_secret").is_file()


def test_serve_options_are_checked(tmp_path, capsys):
    assert main(["serve", "--ray-address", "auto", "--data-dir", str(tmp_path)]) == 2
    assert "--ray-address needs --engine ray" in capsys.readouterr().err
    assert main(["serve", "--keep-days", "0", "--data-dir", str(tmp_path)]) == 2
    assert "--keep-days" in capsys.readouterr().err


# ---- start-up line -----------------------------------------------------------------------------------


def test_plaintext_startup_line_warns_about_local_users(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--bind", "tcp://127.0.0.1:*", "--data-dir",
                             str(tmp_path / "data")], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().decode() if ready else ""
        assert "every local user of this machine can reach every job" in line and "local engine" in line, line
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and b"stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
