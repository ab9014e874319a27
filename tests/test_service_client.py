"""The service client (shared/client.py) and `headrig client ...` against a real `headrig serve`.

Each test has a hard alarm so nothing can hang; the server runs as a subprocess in its own process
group (its workers die with it).
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import zmq

from shared import protocol
from shared.client import ClientError, HeadRigClient, iter_chunks, safe_name
from shared.folders import FETCH_MARKER
from bench.serverproc import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[1]
D8 = REPO.parent / "shared" / "media" / "images" / "d8.jpg"


@pytest.fixture(autouse=True)
def _hard_timeout(request):
    limit = 300 if request.node.get_closest_marker("slow") else 90
    faulthandler.dump_traceback_later(limit, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("serve") / "data").start()
    # warm the worker up (its first job pays the imports) so timings in tests stay small
    with HeadRigClient(srv.address, client_name="warmup") as c:
        job = c.submit("probe", {}, [_write(tmp_path_factory.mktemp("w") / "w.txt", b"warm")])
        assert c.wait(job, timeout_s=120).type == "done"
    yield srv
    srv.kill(signal.SIGTERM)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- without a server --------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, protocol.CHUNK_BYTES, protocol.CHUNK_BYTES + 1, 3 * protocol.CHUNK_BYTES - 7])
def test_chunks_cover_the_file(tmp_path, size):
    data = os.urandom(size)
    path = _write(tmp_path / "f.bin", data)
    chunks = list(iter_chunks(path, size))
    assert all(len(c) <= protocol.CHUNK_BYTES for _, c in chunks)
    assert [o for o, _ in chunks] == [sum(len(c) for _, c in chunks[:i]) for i in range(len(chunks))]
    assert b"".join(c for _, c in chunks) == data and len(chunks) == max(1, -(-size // protocol.CHUNK_BYTES))


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", "/etc/passwd", "x\x00", "c:evil", "..hidden..", 5])
def test_unsafe_names_refused(bad):
    with pytest.raises(ClientError) as e:
        safe_name(bad)
    assert e.value.code == "unsafe_path"


def test_safe_names_pass():
    for ok in ("head.json", "texture.png", "probe.json", ".hidden"):
        assert safe_name(ok) == ok


def test_server_down_is_unreachable_quickly(tmp_path):
    start = time.monotonic()
    with HeadRigClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.3, retries=3) as c:
        with pytest.raises(ClientError) as e:
            c.hello()
    assert e.value.code == "server_unreachable" and "headrig serve" in e.value.message
    assert time.monotonic() - start < 0.3 * 3 + 1.5


def test_duplicate_names_refused_before_network(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    files = [_write(tmp_path / "a" / "x.jpg", b"1"), _write(tmp_path / "b" / "x.jpg", b"2")]
    with HeadRigClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.2, retries=1) as c:
        with pytest.raises(ClientError) as e:
            c.submit("probe", {}, files)
    assert e.value.code == "bad_input" and "x.jpg" in e.value.message


class FakeServer:
    """A ROUTER answering hello/status/fetch with a given result listing (to test fetch's checks)."""

    def __init__(self, files: dict[str, bytes], listing: list[dict]):
        self.files, self.listing = files, listing
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, *frames = self.sock.recv_multipart()
            msg = protocol.decode(frames)
            if msg.type == "hello":
                out = protocol.encode("welcome", msg.rid, from_server=True, version=1, server="fake", capabilities={})
            elif msg.type == "status":
                out = protocol.encode("status", msg.rid, from_server=True, job={
                    "job_id": "j", "kind": "probe", "state": "done", "error": None, "result_files": self.listing})
            elif msg.type == "fetch":
                f = msg.fields
                data = self.files[f["name"]][f["offset"]:f["offset"] + f["length"]]
                final = f["offset"] + len(data) >= len(self.files[f["name"]])
                out = protocol.encode("chunk", msg.rid, (data,), from_server=True, job="j", name=f["name"], offset=f["offset"], final=final)
            else:
                out = protocol.encode("error", msg.rid, from_server=True, code="bad_state", message="fake")
            self.sock.send_multipart([ident, *out])

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        self.ctx.term()


def _entry(name, data, sha=None):
    return {"name": name, "size": len(data), "sha256": sha or hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("case", ["good", "bad_sha", "bad_size", "unsafe"])
def test_fetch_verifies_and_is_atomic(tmp_path, case):
    big = os.urandom(protocol.CHUNK_BYTES * 2 + 5)
    files = {"a.bin": big, "b.txt": b"hello"}
    listing = [_entry("a.bin", big), _entry("b.txt", b"hello")]
    if case == "bad_sha":
        listing[1] = _entry("b.txt", b"hello", sha="0" * 64)
    elif case == "bad_size":
        listing[0] = {**listing[0], "size": len(big) - 1}
    elif case == "unsafe":
        listing.append(_entry("../evil", b"x"))
    fake = FakeServer(files, listing)
    out = tmp_path / "out"
    try:
        with HeadRigClient(fake.address, timeout_s=2, retries=1) as c:
            if case == "good":
                assert c.fetch("j", out) == out
                assert (out / "a.bin").read_bytes() == big and (out / "b.txt").read_bytes() == b"hello"
                _write(out / "stale", b"old")
                c.fetch("j", out, force=True)  # replaces the whole folder
                assert sorted(p.name for p in out.iterdir()) == [FETCH_MARKER, "a.bin", "b.txt"]
            else:
                with pytest.raises(ClientError) as e:
                    c.fetch("j", out)
                assert e.value.code == ("unsafe_path" if case == "unsafe" else "corrupt")
    finally:
        fake.close()
    expected = ["out"] if case == "good" else []
    assert sorted(p.name for p in tmp_path.iterdir()) == expected  # no temp folder, nothing half-written
    assert not (tmp_path.parent / "evil").exists()


def test_cli_refuses_missing_and_empty_files(tmp_path, capsys):
    from backend.cli import main

    empty = _write(tmp_path / "empty.jpg", b"")
    for bad, word in ((tmp_path / "nope.jpg", "not found"), (empty, "empty")):
        rc = main(["client", "reconstruct", "--server", f"tcp://127.0.0.1:{free_port()}", str(bad), "-o", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and bad.name in err and word in err
    rc = main(["client", "jobs", "--server", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.2", "--retries", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: no reply") and "server_unreachable" in err


# ---- against a real server ---------------------------------------------------------------------

def test_probe_round_trip(server, tmp_path):
    a = _write(tmp_path / "a.bin", os.urandom(protocol.CHUNK_BYTES * 3 + 11))  # more chunks than one
    b = _write(tmp_path / "b.txt", b"second file")
    with HeadRigClient(server.address, client_name="roundtrip") as c:
        caps = c.hello()
        assert "probe" in caps["kinds"] and c.ping() < 1.0
        job = c.submit("probe", {"seconds": 1}, [a, b])
        events = list(c.events(job, timeout_s=60))
        assert events[-1].type == "done" and any(e.type == "progress" for e in events)
        assert [f["name"] for f in events[-1].files] == ["probe.json"]
        out = c.fetch(job, tmp_path / "result")
        assert any(item["job"] == job and item["state"] == "done" for item in c.list_jobs())
        assert c.status(job)["state"] == "done"
    report = json.loads((out / "probe.json").read_text())
    assert {i["name"]: (i["size"], i["sha256"]) for i in report["inputs"]} == {
        "a.bin": (a.stat().st_size, _sha(a)), "b.txt": (b.stat().st_size, _sha(b))}


def test_resubmit_with_same_key_is_one_job(server, tmp_path):
    f = _write(tmp_path / "x.txt", b"idempotent")
    with HeadRigClient(server.address, client_name="idem") as c:
        first = c.submit("probe", {}, [f], key="fixed-key-1")
        assert c.submit("probe", {}, [f], key="fixed-key-1") == first
        assert c.wait(first, timeout_s=60).type == "done"


def test_failed_job_and_cli_exit_codes(server, tmp_path, capsys):
    from backend.cli import main

    f = _write(tmp_path / "x.txt", b"data")
    with HeadRigClient(server.address, client_name="bad") as c:
        job = c.submit("probe", {"nope": 1}, [f])
        final = c.wait(job, timeout_s=60)
        assert final.type == "failed" and final.code == "bad_params"
        with pytest.raises(ClientError) as e:
            c.fetch(job, tmp_path / "never")
        assert e.value.code == "bad_state" and not (tmp_path / "never").exists()
        with pytest.raises(ClientError) as e:
            c.status("0" * 32)
        assert e.value.code == "not_found"
    assert main(["client", "probe", str(f), "--server", server.address, "-q", "--seconds", "1e9"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
    assert main(["client", "probe", str(f), "--server", server.address, "-q"]) == 0
    assert '"inputs"' in capsys.readouterr().out
    assert main(["client", "jobs", "--server", server.address]) == 0


def test_cli_cancel_and_fetch(server, tmp_path, capsys):
    from backend.cli import main

    f = _write(tmp_path / "x.txt", b"data")
    with HeadRigClient(server.address, client_name="headrig-cli") as c:
        long_job = c.submit("probe", {"seconds": 30}, [f])
        done_job = c.submit("probe", {}, [f])
    assert main(["client", "cancel", long_job, "--server", server.address]) == 0
    assert "cancelled" in capsys.readouterr().out
    with HeadRigClient(server.address, client_name="headrig-cli") as c:
        assert c.wait(long_job, timeout_s=30).type == "cancelled"
        assert c.wait(done_job, timeout_s=30).type == "done"
    assert main(["client", "fetch", done_job, "-o", str(tmp_path / "r"), "--server", server.address]) == 0
    assert json.loads((tmp_path / "r" / "probe.json").read_text())["job_id"] == done_job


def test_load_five_clients_two_jobs_each(server, tmp_path):
    f = _write(tmp_path / "x.bin", os.urandom(100_000))
    results, errors = {}, []

    def worker(i: int) -> None:
        try:
            with HeadRigClient(server.address, client_name=f"load-{i}", timeout_s=10) as c:
                jobs = [c.submit("probe", {}, [f]) for _ in range(2)]
                results[i] = [(j, c.wait(j, timeout_s=120).type) for j in jobs]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not errors
    pairs = [p for r in results.values() for p in r]
    assert len(pairs) == 10 and len({j for j, _ in pairs}) == 10 and all(s == "done" for _, s in pairs)


def test_lazy_pirate_server_killed_and_restarted(tmp_path):
    servers = [ServerProcess(tmp_path / "data").start()]
    f = _write(tmp_path / "x.txt", b"data")
    try:
        with HeadRigClient(servers[0].address, client_name="pirate", timeout_s=1.0, retries=8, heartbeat_s=0.3) as c:
            job = c.submit("probe", {"seconds": 60}, [f])
            seen, start = [], time.monotonic()
            for event in c.events(job, timeout_s=80):
                seen.append(event)
                if event.type == "progress" and event.stage == "wait" and len(servers) == 1:
                    servers[0].kill()                   # SIGKILL: the server and its worker vanish
                    # back after a few client timeouts, so the client has to reopen its socket
                    servers.append(ServerProcess(servers[0].data_dir, servers[0].port))
                    threading.Timer(2.5, servers[1].start, kwargs={"wait_s": 30}).start()
            final = seen[-1]
            assert c.generation >= 1  # it did reconnect
        assert final.type == "failed" and final.code == "interrupted", final
        assert time.monotonic() - start < 45
    finally:
        time.sleep(0.1 if len(servers) < 2 or servers[1].proc else 3)
        for srv in servers:
            srv.kill()


def test_unreachable_while_waiting(tmp_path):
    srv = ServerProcess(tmp_path / "data").start()
    f = _write(tmp_path / "x.txt", b"data")
    try:
        with HeadRigClient(srv.address, client_name="gone", timeout_s=0.5, retries=2, heartbeat_s=0.3) as c:
            job = c.submit("probe", {"seconds": 60}, [f])
            srv.kill()
            start = time.monotonic()
            with pytest.raises(ClientError) as e:
                c.wait(job, timeout_s=30)
        assert e.value.code == "server_unreachable" and time.monotonic() - start < 0.3 + 0.5 * 2 + 2
    finally:
        srv.kill()


@pytest.mark.slow
def test_cli_reconstruct_matches_local(server, tmp_path, capsys):
    from backend.cli import main

    if not D8.is_file():
        pytest.skip(f"sample photo missing: {D8}")
    remote, local = tmp_path / "remote", tmp_path / "local"
    assert main(["client", "reconstruct", "--server", server.address, "--timeout", "30", str(D8), "-o", str(remote), "-q"]) == 0
    assert "Head bundle:" in capsys.readouterr().out
    assert main(["reconstruct", str(D8), "-o", str(local), "-q"]) == 0
    assert sorted(p.name for p in remote.iterdir()) == sorted([FETCH_MARKER, *(p.name for p in local.iterdir())])
    r, l = (json.loads((d / "head.json").read_text()) for d in (remote, local))
    keys = [k for k in l if "shape" in k or "vert" in k or "face" in k]
    assert keys and all(r[k] == l[k] for k in keys)
