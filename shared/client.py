"""Client of ``headrig serve``: the library the CLI and the Blender add-on use (pure Python + pyzmq + msgpack).

One DEALER socket per client (not thread-safe: one client per thread). Requests carry a fresh
``rid``; the reply with that ``rid`` answers them. Job events (queued/progress/done/failed/cancelled)
and upload credit are stashed per job whichever request they answer, so nothing is lost while another
request is waiting.

Reliability is the zguide's Lazy Pirate: a request that gets no reply within ``timeout_s`` closes
and reopens the socket and is sent again (``retries`` tries in all, with a short backoff), then
``ClientError("server_unreachable")``. Waiting on a job pings every ``heartbeat_s`` of silence; after
a reconnect it asks ``status`` again (events sent to the old socket are gone; the server's job state is
the truth). Every failure is a ``ClientError(code, message)``; server error codes pass through.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import zmq

from .protocol import MAX_MESSAGE_BYTES, SUPPORTED_VERSIONS, ProtocolError, decode, encode
from .transfer import ClientError, download_file, fetch_into, file_entry, iter_chunks, result_files, safe_name

__all__ = ["ClientError", "Event", "HeadRigClient", "EVENT_TYPES", "TERMINAL", "file_entry", "iter_chunks", "safe_name"]

EVENT_TYPES = ("queued", "progress", "done", "failed", "cancelled")
TERMINAL = ("done", "failed", "cancelled")
# Job states in ``status`` replies that are final, and what event they become.
_STATE_EVENT = {"done": "done", "failed": "failed", "cancelled": "cancelled", "interrupted": "failed",
                "error": "failed", "lost": "failed"}


@dataclass
class Event:
    type: str                      # queued | progress | done | failed | cancelled
    job: str
    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    files: tuple = ()              # done: ({name, size, sha256}, ...)
    code: str = ""                 # failed: error code

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL


class HeadRigClient:
    def __init__(self, address: str, keys_dir: Path | None = None, client_name: str = "headrig-client",
                 timeout_s: float = 10.0, retries: int = 3, heartbeat_s: float = 2.0):
        self.address, self.keys_dir, self.client_name = address, keys_dir, client_name
        self.timeout_s, self.retries, self.heartbeat_s = float(timeout_s), max(1, int(retries)), float(heartbeat_s)
        self.server_version: int | None = None
        self.server_name = ""
        self.generation = 0                 # bumps on every reconnect
        self._keys = None
        if keys_dir is not None:
            from .curve_keys import load_client_keys  # lazy: only CURVE users need it
            self._keys = load_client_keys(Path(keys_dir))
        self._ctx = zmq.Context.instance()
        self._rids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._events: dict[str, deque] = defaultdict(lambda: deque(maxlen=1000))
        self._credit: dict[str, int] = defaultdict(int)
        self._greeted = False
        self._hello_gen = -1
        self._watch: set[str] = set()       # rids of uploads: their error replies are kept
        self._watch_errors: list = []
        self._sock: zmq.Socket | None = None
        self._open()

    # -- socket ---------------------------------------------------------------------------------
    def _open(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout_s * 1000)))
        if self._keys is not None:
            client_public, client_secret, server_public = self._keys
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = client_public, client_secret, server_public
        sock.connect(self.address)
        self._sock = sock

    def _reconnect(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        self._credit.clear()
        self.generation += 1
        self._open()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self) -> "HeadRigClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # -- messaging ------------------------------------------------------------------------------
    def _rid(self) -> str:
        return f"{self._prefix}-{next(self._rids)}"

    def _send(self, frames: list) -> bool:
        if self._sock is None:
            raise ClientError("closed", "the client is closed")
        try:
            self._sock.send_multipart(frames, copy=len(frames) < 2)
            return True
        except zmq.Again:
            return False

    def _recv(self, wait_s: float):
        """One decoded server message within wait_s (stashing job events and credit), or None."""
        if self._sock is None:
            raise ClientError("closed", "the client is closed")
        if not self._sock.poll(max(0, int(wait_s * 1000)), zmq.POLLIN):
            return None
        frames = self._sock.recv_multipart()
        try:
            msg = decode(frames, from_client=False)
        except ProtocolError as exc:
            raise ClientError(exc.code, f"invalid message from server: {exc.message}") from None
        job = msg.fields.get("job")
        if msg.type in EVENT_TYPES and isinstance(job, str):
            self._events[job].append(msg)
        elif msg.type == "credit":
            self._credit[job] += msg.fields["credit"]
        elif msg.type == "error" and msg.rid in self._watch:
            self._watch_errors.append(msg)
        return msg

    def _exchange(self, frames: list, rid: str, expect, deadline: float):
        """Send once and wait for the reply to rid (a type in expect, or error); None on timeout."""
        if not self._send(frames):
            return None
        while (left := deadline - time.monotonic()) > 0:
            msg = self._recv(left)
            if msg is None:
                return None
            if msg.rid == rid and (msg.type == "error" or expect is None or msg.type in expect):
                if msg.type == "error":
                    raise ClientError(msg.fields["code"], msg.fields["message"])
                return msg
        return None

    def _unreachable(self, tries: int) -> ClientError:
        hint = " (or the CURVE keys do not match)" if self._keys is not None else ""
        return ClientError("server_unreachable",
                           f"no reply from {self.address} after {tries} tries; is `headrig serve` running?{hint}")

    def _request(self, type_: str, expect=None, blobs: tuple = (), **fields):
        """Lazy Pirate request/reply: reopen the socket and resend on silence, then give up."""
        for attempt in range(self.retries):
            deadline = time.monotonic() + self.timeout_s
            if type_ != "hello" and self._greeted and self._hello_gen != self.generation:
                # a new socket is a new peer to the server: greet it again first.
                hrid = self._rid()
                if self._exchange(self._hello_frames(hrid), hrid, ("welcome",), deadline) is None:
                    self._backoff(attempt)
                    continue
                self._hello_gen = self.generation
            rid = self._rid()
            try:
                reply = self._exchange(encode(type_, rid, blobs, **fields), rid, expect, deadline)
            except ClientError as exc:
                # zmq reconnects by itself to a restarted server, which does not know this peer yet.
                if not (exc.code == "bad_state" and "hello" in exc.message and self._greeted and attempt + 1 < self.retries):
                    raise
                self._hello_gen = -1
                continue
            if reply is not None:
                return reply
            self._backoff(attempt)
        raise self._unreachable(self.retries)

    def _backoff(self, attempt: int) -> None:
        self._reconnect()
        if attempt + 1 < self.retries:
            time.sleep(min(0.05 * 2 ** attempt, 1.0))

    def _hello_frames(self, rid: str) -> list:
        return encode("hello", rid, versions=list(SUPPORTED_VERSIONS), client=self.client_name[:255])

    def _ensure_hello(self) -> None:
        if not self._greeted:
            self.hello()

    # -- API --------------------------------------------------------------------------------------
    def hello(self) -> dict:
        """Negotiate the protocol version; returns the server's capabilities."""
        reply = self._request("hello", ("welcome",), versions=list(SUPPORTED_VERSIONS), client=self.client_name[:255])
        version = reply.fields["version"]
        if version not in SUPPORTED_VERSIONS:
            raise ClientError("unsupported_version",
                              f"server speaks protocol {version}, this client {list(SUPPORTED_VERSIONS)}; update one of them")
        self.server_version, self.server_name = version, reply.fields["server"]
        self._greeted, self._hello_gen = True, self.generation
        return dict(reply.fields["capabilities"])

    def ping(self) -> float:
        """Round-trip time in seconds (including any reconnects)."""
        start = time.monotonic()
        self._request("ping", ("pong",))
        return time.monotonic() - start

    def list_jobs(self) -> list[dict]:
        self._ensure_hello()
        return list(self._request("list", ("jobs",)).fields["items"])

    def status(self, job_id: str) -> dict:
        self._ensure_hello()
        return dict(self._request("status", ("status",), job=job_id).fields["job"])

    def cancel(self, job_id: str) -> None:
        self._ensure_hello()
        self._request("cancel", None, job=job_id)

    def submit(self, kind: str, params: dict, files: list[Path], key: str | None = None) -> str:
        """Create a job and upload its inputs (by file name); returns the job id."""
        paths = [Path(p) for p in files]
        names = [p.name for p in paths]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ClientError("bad_input", f"two inputs are named {dupes[0]!r}; inputs are sent by file name only, rename one")
        for p in paths:
            if not p.is_file():
                raise ClientError("bad_input", f"{p}: no such file")
        entries = [file_entry(p) for p in paths]
        by_name = dict(zip(names, zip(paths, entries)))
        key = key or uuid.uuid4().hex
        self._ensure_hello()
        for attempt in range(self.retries):
            reply = self._request("submit", ("accepted",), kind=kind, params=dict(params), inputs=entries, key=key)
            job = reply.fields["job"]
            self._credit[job] += reply.fields["credit"]
            missing = reply.fields["missing"]
            unknown = [n for n in missing if n not in by_name]
            if unknown:
                raise ClientError("bad_message", f"server asked for an input it was not offered: {unknown[0][:80]!r}")
            if self._upload(job, [by_name[n] for n in missing]):
                return job
        raise self._unreachable(self.retries)

    def _upload(self, job: str, todo: list) -> bool:
        """Send chunks, never more than the granted credit in flight. False when the server went away."""
        self._watch.clear()
        self._watch_errors.clear()
        generation = self.generation
        try:
            for path, entry in todo:
                for offset, data in iter_chunks(path, entry["size"]):
                    while self._credit[job] <= 0:
                        if not self._await_credit(job):
                            return False
                    rid = self._rid()
                    self._watch.add(rid)
                    if not self._send(encode("upload", rid, (data,), job=job, name=entry["name"], offset=offset)):
                        return False
                    self._credit[job] -= 1
                    self._raise_upload_error()
            # One round trip: replies come back in order on one connection, so once it is answered the
            # server has every chunk (and closing the socket with LINGER 0 can no longer drop any).
            self.ping()
            self._raise_upload_error()
            return self.generation == generation
        finally:
            self._watch.clear()

    def _raise_upload_error(self) -> None:
        if self._watch_errors:
            msg = self._watch_errors[0]
            self._watch_errors.clear()
            raise ClientError(msg.fields["code"], msg.fields["message"])

    def _await_credit(self, job: str) -> bool:
        """Read messages until credit arrives; on silence ping. False after a reconnect (resubmit)."""
        silent = 0
        deadline = time.monotonic() + self.timeout_s
        while self._credit[job] <= 0:
            self._raise_upload_error()
            if (left := deadline - time.monotonic()) <= 0:
                generation = self.generation
                self.ping()  # raises server_unreachable if it is gone for good
                if self.generation != generation:
                    return False  # reconnected: the caller resubmits (the server is idempotent on key)
                silent += 1
                if silent >= self.retries:
                    raise ClientError("timeout", f"server granted no upload credit for job {job} in "
                                                 f"{silent * self.timeout_s:g} s although it answers pings")
                deadline = time.monotonic() + self.timeout_s
                continue
            self._recv(left)
        return True

    def events(self, job_id: str, timeout_s: float | None = None) -> Iterator[Event]:
        """Events of a job until (and including) its terminal one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        resync = True
        while True:
            if resync:
                # First time, and after every heartbeat_s of silence: status is the liveness check (Lazy
                # Pirate underneath), re-subscribes this socket to the job's events and tells a final state
                # whose event was lost (server restarted, socket reopened).
                resync = False
                terminal = self._state_event(job_id, self.status(job_id))
                if terminal is not None:
                    for msg in self._drain(job_id):
                        if msg.type in TERMINAL:
                            terminal = _event(msg)
                            break
                    yield terminal
                    return
            for msg in self._drain(job_id):
                yield _event(msg)
                if msg.type in TERMINAL:
                    return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise ClientError("timeout", f"job {job_id} did not finish within {timeout_s:g} s")
            wait = self.heartbeat_s if deadline is None else min(self.heartbeat_s, deadline - now)
            resync = self._recv_until(job_id, wait) is None

    def _recv_until(self, job_id: str, wait_s: float):
        end = time.monotonic() + wait_s
        while (left := end - time.monotonic()) > 0:
            msg = self._recv(left)
            if msg is None:
                return None
            if self._events.get(job_id):
                return msg
        return None

    def _drain(self, job_id: str) -> list:
        queue = self._events.pop(job_id, None)
        return list(queue) if queue else []

    @staticmethod
    def _state_event(job_id: str, job: dict) -> Event | None:
        kind = _STATE_EVENT.get(str(job.get("state", "")))
        if kind is None:
            return None
        err = job.get("error") or {}
        if isinstance(err, dict):
            code, message = str(err.get("code") or job.get("state")), str(err.get("message") or "")
        else:
            code, message = str(job.get("state")), str(err)
        if kind == "failed" and code in ("", "failed"):
            code = "internal"
        return Event(kind, job_id, message=message if kind != "done" else "",
                     files=tuple(job.get("result_files") or ()) if kind == "done" else (),
                     code=code if kind == "failed" else "")

    def wait(self, job_id: str, on_progress: Callable[[Event], None] | None = None,
             timeout_s: float | None = None) -> Event:
        """Block until the job ends; returns its terminal event (done, failed or cancelled)."""
        for event in self.events(job_id, timeout_s):
            if event.terminal:
                return event
            if on_progress is not None:
                on_progress(event)
        raise ClientError("internal", f"event stream of {job_id} ended without a terminal event")  # pragma: no cover

    def fetch(self, job_id: str, out_dir: Path, force: bool = False) -> Path:
        """Download every result file into out_dir (verified, then renamed into place atomically)."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not force:
            raise ClientError("exists", f"{out_dir}: output folder already exists; choose another or pass --force")
        job = self.status(job_id)
        if str(job.get("state")) != "done":
            raise ClientError("bad_state", f"job {job_id} is {job.get('state')}, not done; nothing to fetch")
        files = result_files(job_id, job)
        return fetch_into(out_dir, files, lambda entry, dest: download_file(self._request, job_id, entry, dest))


def _event(msg) -> Event:
    f = msg.fields
    return Event(msg.type, f["job"], stage=f.get("stage", ""), fraction=float(f.get("fraction", 0.0)),
                 message=f.get("message", ""), files=tuple(f.get("files", ())), code=f.get("code", ""))

