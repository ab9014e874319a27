"""``headrig serve``: the ZeroMQ job server the Blender add-on talks to.

One ROUTER socket and one thread. The loop polls the socket and drains engine events every ~50 ms;
compute runs in an engine (``engines``: local worker processes or a Ray cluster), so a job never
stalls the socket and a crashing job never takes the server down; uploads are hashed on a helper
thread for the same reason. Every state change goes to ``JobStore`` (on disk, journaled) before the
client hears of it, so a reply the client saw is never contradicted after a crash.

Who a client is, and what it may see, is ``sessions``' business (the CURVE key, or a declared name on
a loopback server); ownership, per-client limits and fair share (``fairqueue``) use that id. Peer
identities are per connection, so each job remembers the identity (and request id) that last
subscribed to it: ``submit`` or ``status`` subscribe (a reconnected client sends ``status`` to get its
events back), ``upload``/``fetch``/``cancel`` refresh the identity only.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from backend import __version__
from backend.service.devices import detect_device
from backend.service.engines import make_engine
from backend.service import security
from backend.service.fairqueue import FairQueue
from backend.service.job_kinds import KINDS
from backend.service.jobstore import TERMINAL, JobStore, StoreError
from backend.service.sessions import Sessions
from backend.service.retention import PRUNE_EVERY_S, RetentionConfig, prune, space_refusal
from shared import protocol
from shared.protocol import Code, ProtocolError

log = logging.getLogger(__name__)

INITIAL_CREDIT = 8              # upload chunks a client may have in flight per job
POLL_MS = 50                    # worker events are drained at least this often
MAX_BURST = 256                 # messages handled per wake-up before worker events get a turn
MAX_LIST_ITEMS = 100            # a ``jobs`` reply stays well under protocol.MAX_HEADER_BYTES
KEYS_CHECK_S = 1.0              # how soon an added or revoked client key takes effect
_STORE_CODES = {"unsafe_path": Code.UNSAFE_PATH, "unknown_job": Code.NOT_FOUND, "too_large": Code.TOO_LARGE,
                "illegal_transition": Code.BAD_STATE, "not_uploading": Code.BAD_STATE,
                "already_complete": Code.BAD_STATE}


@dataclass(kw_only=True)
class ServerConfig:
    data_dir: Path
    bind: str = "tcp://127.0.0.1:5555"
    workers: int = 1
    keys_dir: Path | None = None
    max_jobs_per_client: int = 8        # unfinished jobs (uploading, queued, running)
    max_uploads_per_client: int = 4     # jobs still uploading
    max_upload_bytes: int = 2 << 30     # total input bytes of one job
    heartbeat_s: float = 2.0            # ZMTP heartbeats: a vanished peer is dropped after 3x this
    engine: str = "local"               # "local": worker processes here; "ray": a Ray cluster
    ray: object | None = None           # a ray_engine.RayConfig when engine == "ray"
    retention: RetentionConfig = field(default_factory=RetentionConfig)


def encode_reply(type_: str, rid: str, blobs: tuple[bytes, ...] = (), **fields) -> list[bytes]:
    """A server reply, validated against the server schemas."""
    return protocol.encode(type_, rid, blobs, from_server=True, **fields)


class Server:
    """``Server(ServerConfig(...))``; ``run()`` serves until ``stop()`` (from any thread) and closes."""

    def __init__(self, config: ServerConfig):
        self.config = config
        security.check_bind_allowed(config.bind, config.keys_dir)
        if config.keys_dir is not None:
            security.load_server_keys(config.keys_dir)  # fail before anything starts
        self.store = JobStore(Path(config.data_dir), max_input_bytes=config.max_upload_bytes)
        self.endpoint: str | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._sessions = Sessions(config.keys_dir)
        self._subs: dict[str, tuple[bytes, str]] = {}     # job -> (identity, rid) for events
        self._queue = FairQueue()
        self._capabilities = {"device": detect_device(), "model": "ict-facekit", "kinds": list(KINDS),
                              "chunk_bytes": protocol.CHUNK_BYTES, "engine": config.engine}
        # Uploaded files are hashed here, off the socket loop: one 2 GiB upload must not stall the others.
        self._hashing: dict[concurrent.futures.Future, tuple[str, str, bytes, str]] = {}
        self._hasher = None
        self._next_keys_check = self._next_prune = 0.0
        self._ctx = self._sock = self._auth = self._pool = None

    # ---- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish (signal handlers and other threads may call this)."""
        self._stop.set()

    def run(self) -> None:
        """Open, serve until ``stop()``, close (workers too). ``endpoint`` and ``ready`` are set once bound."""
        try:
            self._open()
            self.ready.set()
            poller = zmq.Poller()
            poller.register(self._sock, zmq.POLLIN)
            while not self._stop.is_set():
                if poller.poll(POLL_MS):
                    for _ in range(MAX_BURST):
                        try:
                            frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_frames(frames)
                self._drain_hashes()
                self._drain_workers()
                self._dispatch()
                self._housekeeping()
        finally:
            self._close()

    def _open(self) -> None:
        cfg = self.config
        # Settle jobs a crash left behind before anyone can ask about them.
        for job_id in self.store.recover():
            self._queue.push(job_id, self.store.get(job_id).client)
        self._hasher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="headrig-hash")
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)  # larger frames drop the peer
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)   # a client reconnecting with its routing id takes over
        sock.sndhwm = sock.rcvhwm = 1000          # credit keeps uploads far below this
        ivl = max(100, int(cfg.heartbeat_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * ivl)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * ivl)
        if cfg.keys_dir is not None:
            self._sessions.refresh_keys()
            self._auth = security.start_authenticator(self._ctx, cfg.keys_dir)
            security.apply_server_keys(sock, cfg.keys_dir)
        self._sock = sock
        sock.bind(cfg.bind)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pool = make_engine(cfg.engine, Path(cfg.data_dir), cfg.workers, cfg.ray)
        log.info("listening on %s (%s, %s engine), data in %s", self.endpoint, "CURVE" if self._auth else "plaintext",
                 cfg.engine, cfg.data_dir)

    def _close(self) -> None:
        if self._hasher is not None:
            self._hasher.shutdown(wait=True, cancel_futures=True)
        if self._pool is not None:
            try:
                # Record what the workers finished (or were stopped in) before we exit.
                for event in self._pool.close():
                    self._on_worker_event(event)
            except Exception:
                log.exception("closing the worker pool failed")
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.term()
        self._pool = self._sock = self._auth = self._ctx = None

    # ---- messages ------------------------------------------------------------------------------

    def _send(self, identity: bytes, type_: str, rid: str, blobs: tuple[bytes, ...] = (), **fields) -> None:
        try:
            frames = encode_reply(type_, rid, blobs, **fields)
            # ROUTER never blocks: a full or vanished peer just loses the message (it can ask `status`).
            self._sock.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            log.debug("reply %s to a gone peer dropped: %s", type_, exc)
        except Exception:
            log.exception("could not send %s", type_)

    def _error(self, identity: bytes, rid: str, code: str, message: str) -> None:
        self._send(identity, "error", rid, code=code, message=message[: protocol.MAX_TEXT])

    def _on_frames(self, raw: list) -> None:
        if len(raw) < 2:
            return  # nothing after the identity: not even an error can be matched to a request
        identity = raw[0].bytes
        frames = [f.bytes for f in raw[1:]]
        rid = ""
        try:
            rid = protocol.rid_of(frames)
            msg = protocol.decode(frames, from_client=True)
            rid = msg.rid
            getattr(self, f"_on_{msg.type}")(identity, msg, raw[-1])
        except ProtocolError as exc:
            self._error(identity, rid, exc.code, exc.message)
        except StoreError as exc:
            self._error(identity, rid, _STORE_CODES.get(exc.code, Code.BAD_INPUT), str(exc))
        except Exception:
            log.exception("handler failed")
            self._error(identity, rid, Code.INTERNAL, "internal server error; the server logged it")

    def _owned(self, identity: bytes, job_id: str, rid: str | None = None):
        """The caller's job, or not_found (another client's job is indistinguishable from none)."""
        session = self._sessions.get(identity)
        rec = self.store.get(job_id)
        if rec is None or not self._sessions.may_see(session, rec.client):
            raise ProtocolError(Code.NOT_FOUND, f"no job {job_id!r:.80}")
        old_rid = self._subs.get(job_id, (b"", ""))[1]
        self._subs[job_id] = (identity, old_rid if rid is None else rid)
        return rec

    def _on_hello(self, identity: bytes, msg: protocol.Message, last) -> None:
        common = set(msg.fields["versions"]) & set(protocol.SUPPORTED_VERSIONS)
        if not common:
            raise ProtocolError(Code.UNSUPPORTED_VERSION, f"client speaks versions {msg.fields['versions'][:16]}; "
                                f"this server speaks {list(protocol.SUPPORTED_VERSIONS)}")
        zap_user = last.get("User-Id") if self._auth is not None else None  # set by ZAP from the client's key
        self._sessions.greet(identity, msg.fields["client"], zap_user, max(common))
        self._send(identity, "welcome", msg.rid, version=max(common), server=f"headrig {__version__}",
                   capabilities=self._capabilities)

    def _on_ping(self, identity: bytes, msg: protocol.Message, last) -> None:
        self._send(identity, "pong", msg.rid)

    def _on_submit(self, identity: bytes, msg: protocol.Message, last) -> None:
        session, f, cfg = self._sessions.get(identity), msg.fields, self.config
        if f["kind"] not in KINDS:
            raise ProtocolError(Code.BAD_INPUT, f"unknown kind {f['kind']!r:.80}; kinds: {', '.join(KINDS)}")
        mine = self.store.list(session.client)
        repeat = f["key"] is not None and any(r.request_key == f["key"] for r in mine)
        if not repeat:  # a retried submit is answered even at the limit: it creates nothing
            active = [r for r in mine if r.state not in TERMINAL]
            if len(active) >= cfg.max_jobs_per_client:
                raise ProtocolError(Code.LIMIT, f"{len(active)} unfinished jobs; at most {cfg.max_jobs_per_client} "
                                    "per client: wait for one to finish or cancel one")
            uploading = sum(r.state == "uploading" for r in active)
            if f["inputs"] and uploading >= cfg.max_uploads_per_client:
                raise ProtocolError(Code.LIMIT, f"{uploading} uploads in progress; at most {cfg.max_uploads_per_client} per client")
            total = sum(i["size"] for i in f["inputs"])
            if total > cfg.max_upload_bytes:
                raise ProtocolError(Code.TOO_LARGE, f"inputs total {total} bytes; at most {cfg.max_upload_bytes} per job")
            refusal = space_refusal(self.store, cfg.retention, total)
            if refusal is not None:
                raise ProtocolError("disk_full", refusal)
        # The inputs are declared on disk (create is durable) before the client may send a byte.
        rec = self.store.create(f["kind"], f["params"], session.client, f["inputs"], f["key"])
        self._subs[rec.job_id] = (identity, msg.rid)
        if rec.state == "uploading":
            for decl in rec.inputs:
                if decl["size"] == 0 and decl["received"] == 0:
                    rec = self.store.finish_input(rec.job_id, decl["name"])  # nothing will ever be sent
        missing = [i["name"] for i in rec.inputs if i["received"] != i["size"]] if rec.state == "uploading" else []
        self._send(identity, "accepted", msg.rid, job=rec.job_id, credit=INITIAL_CREDIT if missing else 0, missing=missing)
        if rec.state in TERMINAL:  # a retried submit of a finished job: tell how it ended
            self._replay_end(rec)
        self._maybe_queue(rec)

    def _replay_end(self, rec) -> None:
        if rec.state == "done":
            self._event(rec.job_id, "done", files=rec.result_files)
        elif rec.state == "failed":
            error = rec.error or {"code": Code.INTERNAL, "message": ""}
            self._event(rec.job_id, "failed", code=error["code"][: protocol.MAX_NAME], message=error["message"][: protocol.MAX_TEXT])
        else:
            self._event(rec.job_id, "cancelled")

    def _maybe_queue(self, rec) -> None:
        # A view counts bytes on disk, so an input still being hashed looks complete: wait for it
        # (with two inputs the first hash to finish would otherwise try to queue the job).
        hashing = any(job == rec.job_id for job, *_ in self._hashing.values())
        if rec.state == "uploading" and rec.inputs_complete and not hashing:
            rec = self.store.update(rec.job_id, state="queued")
        if rec.state == "queued" and rec.job_id not in self._queue:
            self._queue.push(rec.job_id, rec.client)
            self._event(rec.job_id, "queued")

    def _on_upload(self, identity: bytes, msg: protocol.Message, last) -> None:
        f = msg.fields
        rec = self._owned(identity, f["job"])
        decl = next((i for i in rec.inputs if i["name"] == f["name"]), None)
        received = self.store.write_input_chunk(rec.job_id, f["name"], f["offset"], msg.blobs[0])
        self._send(identity, "credit", msg.rid, job=rec.job_id, credit=1)
        if decl is not None and received == decl["size"]:
            part = self.store.input_part(rec.job_id, f["name"])
            self._hashing[self._hasher.submit(self.store.seal_part, part)] = (rec.job_id, f["name"], identity, msg.rid)

    def _drain_hashes(self) -> None:
        """Inputs whose hashing finished: checked against their declaration, then the job may queue."""
        for future in [f for f in self._hashing if f.done()]:
            job_id, name, identity, rid = self._hashing.pop(future)
            try:
                rec = self.store.get(job_id)
                if rec is not None and rec.state == "uploading":  # not cancelled meanwhile
                    self._maybe_queue(self.store.finish_input(job_id, name, digest=future.result()))
            except StoreError as exc:
                self._error(identity, rid, _STORE_CODES.get(exc.code, Code.BAD_INPUT), str(exc))
            except Exception:
                log.exception("finishing input %s of job %s failed", name, job_id)
                self._error(identity, rid, Code.INTERNAL, "internal server error; the server logged it")

    def _on_cancel(self, identity: bytes, msg: protocol.Message, last) -> None:
        rec = self._owned(identity, msg.fields["job"])
        if rec.state in ("uploading", "queued"):
            self._queue.remove(rec.job_id)
            self.store.update(rec.job_id, state="cancelled")
            self._send(identity, "cancelled", msg.rid, job=rec.job_id)
        elif rec.state == "running":
            self._subs[rec.job_id] = (identity, msg.rid)
            self._pool.cancel(rec.job_id)  # the worker's "cancelled" event answers
        elif rec.state == "cancelled":
            self._send(identity, "cancelled", msg.rid, job=rec.job_id)
        else:
            raise ProtocolError(Code.BAD_STATE, f"job {rec.job_id} is already {rec.state}")

    def _on_list(self, identity: bytes, msg: protocol.Message, last) -> None:
        session = self._sessions.get(identity)
        recs = self.store.list(None if session.admin else session.client)[-MAX_LIST_ITEMS:]
        # Summaries stay small (no free text) so that 100 of them fit in one header.
        items = [{"job": r.job_id, "kind": r.kind, "state": r.state, "created": r.created, "updated": r.updated,
                  "stage": r.progress["stage"][:64], "fraction": r.progress["fraction"],
                  "error": r.error["code"][:64] if r.error else None} for r in recs]
        self._send(identity, "jobs", msg.rid, items=items)

    def _on_status(self, identity: bytes, msg: protocol.Message, last) -> None:
        rec = self._owned(identity, msg.fields["job"], rid=msg.rid)
        self._send(identity, "status", msg.rid, job=rec.to_dict())

    def _on_fetch(self, identity: bytes, msg: protocol.Message, last) -> None:
        f = msg.fields
        rec = self._owned(identity, f["job"])
        if rec.state != "done":
            raise ProtocolError(Code.BAD_STATE, f"job {rec.job_id} is {rec.state}; results exist once it is done")
        # Only names the job itself recorded are served; the client's string is never a path.
        entry = next((e for e in rec.result_files if e["name"] == f["name"]), None)
        if entry is None:
            raise ProtocolError(Code.NOT_FOUND, f"job {rec.job_id} has no result file {f['name']!r:.80}")
        if f["length"] > protocol.CHUNK_BYTES:
            raise ProtocolError(Code.TOO_LARGE, f"length {f['length']} exceeds {protocol.CHUNK_BYTES}")
        if f["offset"] > entry["size"]:
            raise ProtocolError(Code.BAD_INPUT, f"offset {f['offset']} is past the end ({entry['size']} bytes)")
        root = self.store.result_dir(rec.job_id).resolve()
        path = (root / entry["name"]).resolve()
        if not path.is_relative_to(root):
            raise ProtocolError(Code.UNSAFE_PATH, f"result file {entry['name']!r} leaves the result folder")
        with open(path, "rb") as fh:
            fh.seek(f["offset"])
            data = fh.read(f["length"])
        final = f["offset"] + len(data) >= entry["size"]
        self._send(identity, "chunk", msg.rid, (data,), job=rec.job_id, name=entry["name"], offset=f["offset"], final=final)

    # ---- jobs and workers ----------------------------------------------------------------------

    def _event(self, job_id: str, type_: str, **fields) -> None:
        """Tell the job's subscriber, if any connection still claims it."""
        sub = self._subs.get(job_id)
        if sub is not None:
            self._send(sub[0], type_, sub[1], job=job_id, **fields)

    def _dispatch(self) -> None:
        """Feed the fair queue to the engine, one job per idle worker (the engine itself never queues)."""
        while len(self._queue) and self._pool.idle_workers() > 0:
            job_id = self._queue.pop()
            try:
                rec = self.store.get(job_id)
                if rec is None or rec.state != "queued":
                    continue
                inputs = [self.store.input_path(job_id, i["name"]) for i in rec.inputs]
                result_dir = self.store.result_dir(job_id)
                # Recorded first: if we die right after, recover() fails it "interrupted" (or keeps a
                # finished result) instead of running it twice.
                self.store.update(job_id, state="running")
                if not self._pool.submit(job_id, rec.kind, rec.params, inputs, result_dir):
                    raise RuntimeError("no idle worker")
            except Exception as exc:
                log.exception("could not start job %s", job_id)
                self._finish(job_id, "failed", code=Code.INTERNAL, message=f"could not start the job: {exc}"[:1000])

    def _drain_workers(self) -> None:
        for event in self._pool.poll_events(timeout=0):
            try:  # one bad event must not cost the others
                self._on_worker_event(event)
            except Exception:
                log.exception("worker event %r failed", event[:2])

    def _on_worker_event(self, event: tuple) -> None:
        kind, job_id = event[0], event[1]
        if kind == "progress":
            _, _, stage, fraction, message = event
            progress = {"stage": str(stage)[: protocol.MAX_NAME], "fraction": min(1.0, max(0.0, float(fraction))),
                        "message": str(message)[: protocol.MAX_TEXT]}
            rec = self.store.get(job_id)
            if rec is not None and rec.state == "running":
                self.store.update(job_id, progress=progress)
                self._event(job_id, "progress", **progress)
        elif kind == "done":
            self._finish(job_id, "done", files=list(event[2]))
        elif kind == "failed":
            self._finish(job_id, "failed", code=str(event[2])[: protocol.MAX_NAME], message=str(event[3])[: protocol.MAX_TEXT])
        elif kind == "cancelled":
            self._finish(job_id, "cancelled")
        else:
            log.error("unknown worker event %r", kind)

    def _finish(self, job_id: str, state: str, files=None, code: str = "", message: str = "") -> None:
        """Record a final state durably, then tell the subscriber."""
        rec = self.store.get(job_id)
        if rec is None or rec.state in TERMINAL:
            return
        if state == "done":
            self.store.update(job_id, state="done", result_files=files)
            self._event(job_id, "done", files=files)
        elif state == "failed":
            self.store.update(job_id, state="failed", error={"code": code, "message": message})
            self._event(job_id, "failed", code=code, message=message)
        else:
            self.store.update(job_id, state="cancelled")
            self._event(job_id, "cancelled")

    def _housekeeping(self) -> None:
        """Now and then: pick up added or revoked client keys; delete jobs past their retention."""
        now = time.monotonic()
        if self._auth is not None and now >= self._next_keys_check:
            self._next_keys_check = now + KEYS_CHECK_S
            if self._sessions.refresh_keys():
                self._auth.configure_curve(domain="*", location=str(Path(self.config.keys_dir) / security.AUTHORIZED))
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            for job_id in prune(self.store, self.config.retention):
                self._subs.pop(job_id, None)

