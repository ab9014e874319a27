"""``headrig serve`` over real sockets: a raw DEALER client speaking ``shared.protocol``.

Every receive has a timeout, so a broken server fails a test instead of hanging it. The fuzz test's
size comes from ``HEADRIG_FUZZ_EXAMPLES`` (default 2000; set it lower in a hurry).
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.service import security
from shared import protocol
from shared.curve_keys import apply_client_keys
from shared.protocol import ProtocolError

REPO = Path(__file__).resolve().parents[1]
FUZZ_EXAMPLES = int(os.environ.get("HEADRIG_FUZZ_EXAMPLES", "2000"))
CHUNK = 64 << 10  # test uploads use small chunks so that credit matters


class Client:
    """A DEALER speaking the protocol; ``recv`` always times out rather than blocking forever."""

    def __init__(self, endpoint: str, keys_dir: Path | None = None, curve: tuple | None = None):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if keys_dir is not None:
            apply_client_keys(self.sock, keys_dir)
        elif curve is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.sock.connect(endpoint)
        self.n = 0

    def close(self):
        self.sock.close(linger=0)

    def send(self, type_: str, blobs=(), rid: str | None = None, **fields) -> str:
        self.n += 1
        rid = rid if rid is not None else f"r{self.n}"
        self.sock.send_multipart(protocol.encode(type_, rid, tuple(blobs), **fields))
        return rid

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout: float = 5.0) -> protocol.Message:
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("no reply")
        return protocol.decode(self.sock.recv_multipart(), from_client=False)

    def wait(self, pred, timeout: float = 10.0) -> protocol.Message:
        """The first message matching ``pred``; others are dropped."""
        end = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.0, end - time.monotonic()))
            if pred(msg):
                return msg

    def request(self, type_: str, blobs=(), timeout: float = 5.0, **fields) -> protocol.Message:
        rid = self.send(type_, blobs, **fields)
        return self.wait(lambda m: m.rid == rid, timeout)

    def hello(self, name: str = "tester") -> protocol.Message:
        msg = self.request("hello", versions=[1], client=name)
        assert msg.type == "welcome", msg
        return msg


def make_input(name: str, size: int, seed: int = 0) -> tuple[dict, bytes]:
    data = hashlib.sha256(f"{name}{seed}".encode()).digest() * (size // 32 + 1)
    data = data[:size]
    return {"name": name, "size": size, "sha256": hashlib.sha256(data).hexdigest()}, data


def upload(client: Client, job: str, credit: int, files: dict[str, bytes], limit_chunks: int | None = None) -> int:
    """Send every chunk, never more than ``credit`` unanswered; returns chunks sent."""
    chunks = [(name, off, data[off: off + CHUNK]) for name, data in files.items() for off in range(0, len(data), CHUNK)]
    chunks = chunks[:limit_chunks] if limit_chunks is not None else chunks
    sent = 0
    for name, off, blob in chunks:
        while credit == 0:
            msg = client.wait(lambda m: m.type in ("credit", "error"))
            assert msg.type == "credit", msg
            credit += msg.fields["credit"]
        client.send("upload", (blob,), job=job, name=name, offset=off)
        credit -= 1
        sent += 1
    return sent


def fetch(client: Client, job: str, name: str, length: int = 1000) -> bytes:
    out, offset = b"", 0
    while True:
        msg = client.request("fetch", job=job, name=name, offset=offset, length=length)
        assert msg.type == "chunk", msg
        out += msg.blobs[0]
        offset += len(msg.blobs[0])
        if msg.fields["final"]:
            return out


def run_probe(client: Client, inputs: dict[str, bytes], seconds: float = 0, key: str | None = None) -> str:
    decl = [make_input(n, len(d))[0] | {"sha256": hashlib.sha256(d).hexdigest()} for n, d in inputs.items()]
    acc = client.request("submit", kind="probe", params={"seconds": seconds}, inputs=decl, key=key)
    assert acc.type == "accepted", acc
    assert sorted(acc.fields["missing"]) == sorted(n for n, d in inputs.items() if d)
    upload(client, acc.fields["job"], acc.fields["credit"], inputs)
    return acc.fields["job"]




@pytest.fixture
def client():
    clients = []

    def make(endpoint, **kw) -> Client:
        clients.append(Client(endpoint, **kw))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


# ---- basics ----------------------------------------------------------------------------------------


def test_hello_versions_ping(server, client):
    c = client(server().endpoint)
    assert c.request("ping").type == "pong"
    before = c.request("list")
    assert before.type == "error" and before.fields["code"] == "bad_state"  # hello first
    welcome = c.request("hello", versions=[7, 1, 99], client="me")
    assert welcome.type == "welcome" and welcome.fields["version"] == 1
    caps = welcome.fields["capabilities"]
    assert caps["kinds"] == ["probe", "reconstruct", "retarget", "turntable"] and caps["chunk_bytes"] == protocol.CHUNK_BYTES
    assert caps["model"] == "ict-facekit" and isinstance(caps["device"], str)
    assert welcome.fields["server"].startswith("headrig ")
    bad = c.request("hello", versions=[99], client="me")
    assert bad.type == "error" and bad.fields["code"] == "unsupported_version"
    assert c.request("list").type == "jobs"


def test_probe_end_to_end(server, client):
    c = client(server().endpoint)
    c.hello()
    files = {"a.jpg": make_input("a.jpg", 5 * CHUNK + 123)[1], "b.png": make_input("b.png", 777)[1]}
    rid_jobs = []
    job = run_probe(c, files)
    rid_jobs.append(job)
    seen = []
    done = c.wait(lambda m: seen.append(m.type) or m.type in ("done", "failed"), timeout=20)
    assert done.type == "done", done
    assert "queued" in seen and "progress" in seen
    entry = next(f for f in done.fields["files"] if f["name"] == "probe.json")
    data = fetch(c, job, "probe.json", length=100)
    assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
    report = msgpack.unpackb(msgpack.packb(__import__("json").loads(data)))
    assert {i["name"]: i["sha256"] for i in report["inputs"]} == {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    status = c.request("status", job=job)
    assert status.fields["job"]["state"] == "done"
    # The client string never becomes a path: only recorded result names are served.
    for name in ("../state.json", "../../etc/passwd", "/etc/passwd", "probe.json/..", ""):
        err = c.request("fetch", job=job, name=name, offset=0, length=10)
        assert err.type == "error" and err.fields["code"] == "not_found", (name, err)
    assert c.request("fetch", job=job, name="probe.json", offset=0, length=protocol.CHUNK_BYTES + 1).fields["code"] == "too_large"
    # Another client cannot see, fetch or cancel the job.
    other = client(c.sock.getsockopt_string(zmq.LAST_ENDPOINT))
    other.hello("someone-else")
    for type_, extra in (("status", {}), ("cancel", {}), ("fetch", {"name": "probe.json", "offset": 0, "length": 10})):
        assert other.request(type_, job=job, **extra).fields.get("code") == "not_found"
    assert other.request("list").fields["items"] == []


def test_upload_errors_and_limits(server, client):
    c = client(server(max_jobs_per_client=2, max_uploads_per_client=1).endpoint)
    c.hello()
    decl, data = make_input("x.bin", 100)
    acc = c.request("submit", kind="probe", params={}, inputs=[decl], key="k1")
    job = acc.fields["job"]
    assert c.request("submit", kind="probe", params={}, inputs=[decl], key="k1").fields["job"] == job  # idempotent
    assert c.request("submit", kind="probe", params={}, inputs=[make_input("y", 5)[0]], key=None).fields["code"] == "limit"
    assert c.request("submit", kind="nope", params={}, inputs=[], key=None).fields["code"] == "bad_input"
    assert c.request("upload", (b"zz",), job=job, name="x.bin", offset=50).fields["code"] == "bad_input"  # offset
    assert c.request("upload", (b"zz",), job=job, name="../../etc/passwd", offset=0).fields["code"] == "unsafe_path"
    assert c.request("upload", (b"z" * 101,), job=job, name="x.bin", offset=0).fields["code"] == "bad_input"
    bad = c.request("upload", (b"\0" * 100,), job=job, name="x.bin", offset=0)
    assert bad.type == "credit"
    assert c.wait(lambda m: True).fields["code"] == "bad_input"  # sha256 mismatch: send it again from 0
    assert c.request("upload", (data,), job=job, name="x.bin", offset=0).type == "credit"
    assert c.wait(lambda m: m.type == "queued").fields["job"] == job
    big = {"name": "big", "size": 3 << 30, "sha256": "0" * 64}
    assert c.request("submit", kind="probe", params={}, inputs=[big], key=None).fields["code"] == "too_large"


def test_cancel_long_probe(server, client):
    c = client(server().endpoint)
    c.hello()
    acc = c.request("submit", kind="probe", params={"seconds": 30}, inputs=[], key=None)
    job = acc.fields["job"]
    c.wait(lambda m: m.type == "progress" and m.fields["job"] == job, timeout=20)
    start = time.monotonic()
    c.send("cancel", job=job)
    msg = c.wait(lambda m: m.type in ("cancelled", "done", "failed", "error"), timeout=5)
    assert msg.type == "cancelled" and msg.fields["job"] == job, msg
    assert time.monotonic() - start < 2.0
    assert c.request("status", job=job).fields["job"]["state"] == "cancelled"


def test_fifo_and_reconnect_resubscribes(server, client):
    srv = server(workers=1)
    a = client(srv.endpoint)
    a.hello("same-user")
    first = a.request("submit", kind="probe", params={"seconds": 0.6}, inputs=[], key=None).fields["job"]
    second = a.request("submit", kind="probe", params={"seconds": 0.2}, inputs=[], key=None).fields["job"]
    a.wait(lambda m: m.type == "progress" and m.fields["job"] == first)
    assert a.request("status", job=second).fields["job"]["state"] == "queued"  # one worker: it waits its turn
    a.close()  # the connection goes; the jobs stay
    b = client(srv.endpoint)
    b.hello("same-user")
    rids = {b.send("status", job=first): first, b.send("status", job=second): second}
    ends = {}
    while len(ends) < 2:
        msg = b.wait(lambda m: m.type in ("done", "failed", "cancelled"), timeout=15)
        assert msg.type == "done" and rids[msg.rid] == msg.fields["job"], msg
        ends[msg.fields["job"]] = msg
    assert [i["state"] for i in b.request("list").fields["items"]] == ["done", "done"]


# ---- fuzz ------------------------------------------------------------------------------------------

NAMES = ["../../etc/passwd", "/etc/passwd", "..", ".", "a/../../b", "x\x00y", "probe.json", "C:\\x", "a" * 300, ""]
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True),
                  st.text(max_size=20), st.binary(max_size=20), st.sampled_from(NAMES))
_value = st.recursive(_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                      max_leaves=10)
_field_names = sorted({k for f, _ in protocol.CLIENT_MESSAGES.values() for k in f} | {"job", "zzz", "type"})


@st.composite
def messages(draw, job_ids):
    """Frames a careless or hostile client might send."""
    shape = draw(st.integers(0, 3))
    if shape == 0:  # garbage frames
        return draw(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
    type_ = draw(st.sampled_from([*protocol.CLIENT_MESSAGES, "welcome", "error", "", "x" * 300]) | st.text(max_size=10))
    rid = draw(st.sampled_from(["", "r", "x" * 300]) | st.integers() | st.none() | st.text(max_size=10))
    header = {"type": type_, "rid": rid}
    if shape == 1:  # random fields of random types
        header |= draw(st.dictionaries(st.sampled_from(_field_names), _value, max_size=6))
    else:  # well-formed shape with hostile values (real job ids, traversal names, wrong sizes)
        header |= {"job": draw(st.sampled_from(job_ids + ["0" * 32, "../..", ""])), "name": draw(st.sampled_from(NAMES)),
                   "offset": draw(st.integers(0, 2**53)), "length": draw(st.integers(0, 2**22))}
        if shape == 3:
            header = {k: header[k] for k in header if draw(st.booleans()) or k in ("type", "rid")}
    try:
        head = msgpack.packb(header, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        head = b"\xc1"
    blobs = draw(st.lists(st.binary(max_size=64), max_size=3))
    return [head, *blobs]


def test_fuzz_never_crashes(server, client):
    srv = server()
    c = client(srv.endpoint)
    c.hello("fuzzer")
    decl, _ = make_input("in.bin", 10)
    job = c.request("submit", kind="probe", params={}, inputs=[decl], key=None).fields["job"]
    counter = [0]

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(messages([job]))
    def check(frames):
        counter[0] += 1
        try:
            protocol.decode(frames)
            expected = None
        except ProtocolError as exc:
            expected = exc.code
        c.send_raw(frames)
        sync = f"sync-{counter[0]}"
        c.send("ping", rid=sync)
        replies = []
        while True:
            msg = c.recv(5.0)  # decodes as a valid server message, or raises
            if msg.type == "pong" and msg.rid == sync:
                break
            replies.append(msg)
        if expected is not None:
            assert [m.fields["code"] for m in replies if m.type == "error"] == [expected], (frames, replies)
        assert all(m.type != "error" or m.fields["code"] != "internal" for m in replies), (frames, replies)

    check()
    # An oversized frame makes ZeroMQ drop that connection; the server carries on.
    big = client(srv.endpoint)
    big.send_raw([msgpack.packb({"type": "ping", "rid": "big"}), b"x" * (protocol.MAX_MESSAGE_BYTES + 10)])
    with pytest.raises(TimeoutError):
        big.recv(0.5)
    assert client(srv.endpoint).request("ping").type == "pong"
    assert c.request("ping").type == "pong"


# ---- CURVE -----------------------------------------------------------------------------------------


def test_curve_only_authorized_clients(server, client, tmp_path):
    keys = security.generate_keys(tmp_path / "keys")
    with pytest.raises(security.SecurityError, match="refusing to overwrite"):
        security.generate_keys(keys)
    assert oct((keys / "server.key_secret").stat().st_mode & 0o777) == "0o600"
    artist = security.add_client(keys, "ann")
    assert sorted(p.name for p in artist.iterdir()) == ["client.key", "client.key_secret", "server.key"]  # no server secret
    assert oct((artist / "client.key_secret").stat().st_mode & 0o777) == "0o600"
    srv = server(keys_dir=keys)
    good = client(srv.endpoint, keys_dir=artist)
    assert good.hello().type == "welcome"
    assert good.request("ping").type == "pong"
    server_public = security.load_server_keys(keys)[0]
    stranger_public, stranger_secret = zmq.curve_keypair()
    stranger = client(srv.endpoint, curve=(stranger_public, stranger_secret, server_public))
    stranger.send("ping")
    with pytest.raises(TimeoutError):
        stranger.recv(1.0)
    plain = client(srv.endpoint)
    plain.send("ping")
    with pytest.raises(TimeoutError):
        plain.recv(0.5)
    assert good.request("ping").type == "pong"
    opts = security.client_curve_options(artist)
    assert opts["curve_serverkey"] == server_public


def test_bind_policy():
    with pytest.raises(security.SecurityError, match="headrig keys generate"):
        security.check_bind_allowed("tcp://0.0.0.0:5555", None)
    with pytest.raises(security.SecurityError, match="refusing to listen on 192.168.1.5:1"):
        security.check_bind_allowed("tcp://192.168.1.5:1", None)
    for ok in ("tcp://127.0.0.1:5555", "tcp://localhost:*", "tcp://[::1]:5555", "tcp://127.3.0.1:1", "ipc:///tmp/x"):
        security.check_bind_allowed(ok, None)
    security.check_bind_allowed("tcp://0.0.0.0:5555", Path("/keys"))


# ---- kill -9 ---------------------------------------------------------------------------------------


class Subprocess:
    def __init__(self, data_dir: Path):
        env = dict(os.environ, GLOG_minloglevel="2", PYTHONPATH=str(REPO))
        # Own process group: SIGKILL to the group takes the workers too, like a power cut.
        self.proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--bind", "tcp://127.0.0.1:*",
                                      "--data-dir", str(data_dir)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        assert "listening on" in line, f"server did not start: {line!r}"
        self.endpoint = line.split("listening on ", 1)[1].split()[0]

    def kill9(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def test_kill9_loses_nothing_finished(tmp_path, client):
    data = tmp_path / "data"
    first = Subprocess(data)
    try:
        c = client(first.endpoint)
        c.hello("k9")
        finished = run_probe(c, {"f.txt": b"finished before the kill"})
        assert c.wait(lambda m: m.type in ("done", "failed") and m.fields["job"] == finished, 20).type == "done"
        before = fetch(c, finished, "probe.json")
        long = run_probe(c, {"l.txt": b"long"}, seconds=30)
        c.wait(lambda m: m.type == "progress" and m.fields["job"] == long and m.fields["stage"] == "wait", 20)
        decl, blob = make_input("big.bin", 4 * CHUNK)
        acc = c.request("submit", kind="probe", params={}, inputs=[decl], key="up-1")
        partial = acc.fields["job"]
        assert c.request("upload", (blob[:CHUNK],), job=partial, name="big.bin", offset=0).type == "credit"
    finally:
        first.kill9()
    second = Subprocess(data)
    try:
        c2 = client(second.endpoint)
        c2.hello("k9")
        st_long = c2.request("status", job=long).fields["job"]
        assert st_long["state"] == "failed" and st_long["error"]["code"] == "interrupted"
        st_partial = c2.request("status", job=partial).fields["job"]
        assert st_partial["state"] == "failed" and st_partial["error"]["code"] == "upload_interrupted"
        assert fetch(c2, finished, "probe.json") == before
        ids = [item["job"] for item in c2.request("list").fields["items"]]
        assert sorted(ids) == sorted({finished, long, partial})
        # A retry of the interrupted submit gets the same (failed) job back, not a duplicate.
        again = c2.request("submit", kind="probe", params={}, inputs=[decl], key="up-1")
        assert again.fields["job"] == partial
        assert len(c2.request("list").fields["items"]) == 3
    finally:
        second.kill9()
