"""Background threads that talk to ``headrig serve`` (no bpy here: threads never touch Blender data).

Every thread owns its own ``HeadRigClient`` (a client is not thread-safe) and reports to the main
thread only through a ``queue.Queue`` of small tuples, which ``drain.drain`` consumes on a bpy timer:

    ("connection", token, True, {"server", "version", "device", "model", "kinds"})
    ("connection", token, False, {"code", "message"})
    ("submitted", local_id, job_id)
    ("progress", local_id, stage, fraction, message)
    ("fetching", local_id)
    ("done", local_id, bundle_path)
    ("failed", local_id, code, message)        # the job ran and failed (no_face, ...)
    ("cancelled", local_id, message)
    ("error", local_id, code, message)         # could not talk to the server, fetch failed, ...
    ("stopped", local_id)                      # the add-on was disabled while the thread ran

Messages are written for artists: one line, naming the file or the server and what to do.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from .headrig_shared.client import ClientError, HeadRigClient

__all__ = ["JobWorker", "ConnectionCheck", "describe_error", "is_loopback"]

_POLL_S = 0.5  # how often a waiting worker looks at its cancel / stop flags


def is_loopback(address: str) -> bool:
    """True for tcp://127.x, tcp://localhost, tcp://[::1] and ipc:// / inproc:// addresses."""
    addr = address.strip().lower()
    if addr.startswith(("ipc://", "inproc://")):
        return True
    host = addr.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def describe_error(code: str, message: str, address: str, files=(), keys_dir=None) -> str:
    """One line for the artist from a ClientError / failed event (code, message)."""
    message = " ".join(str(message).split())
    if code == "server_unreachable" and keys_dir:
        # A CURVE server silently ignores a client whose key it does not list: to the client that
        # looks exactly like a server that is down, so name both causes.
        return (f"Server {address} did not answer with the CURVE keys in {keys_dir}: check that this client's "
                f"public key is in the server's authorized_clients folder, or that the backend is running")
    if code == "server_unreachable":
        return (f"Server {address} did not answer: start the backend (HeadRig > Start local backend) "
                f"or check the address")
    if code in ("closed",):
        return f"Connection to {address} was closed"
    names = [Path(f).name for f in files]
    if code in ("no_face", "implausible_face", "not_image", "face_too_small", "truncated", "empty", "too_large",
                "missing", "bad_input") and names and not any(n in message for n in names):
        # the backend names the file; if it did not (one photo), name it here
        prefix = names[0] if len(names) == 1 else ", ".join(names)
        return f"{prefix}: {message}" if message else f"{prefix}: {code.replace('_', ' ')}"
    if not message:
        return code.replace("_", " ")
    return message


class JobWorker(threading.Thread):
    """Submit files as one job, forward its events, fetch the result into ``out_dir / <job id>``."""

    def __init__(self, local_id: str, address: str, files, out_dir, events: queue.Queue, kind: str = "reconstruct",
                 params: dict | None = None, keys_dir=None, timeout_s: float = 10.0, retries: int = 3,
                 client_name: str = "headrig-blender"):
        super().__init__(name=f"headrig-job-{local_id}", daemon=True)
        self.local_id, self.address = local_id, address
        self.files = [Path(f) for f in files]
        self.out_dir = Path(out_dir)
        self.events, self.kind, self.params = events, kind, dict(params or {})
        self.keys_dir = Path(keys_dir) if keys_dir else None
        self.timeout_s, self.retries, self.client_name = float(timeout_s), int(retries), client_name
        self.job_id: str | None = None
        self._cancel_flag = threading.Event()
        self._halt = threading.Event()

    # -- called from the main thread -----------------------------------------------------------
    def cancel(self) -> None:
        """Ask the server to cancel the job (done by this thread: the client belongs to it)."""
        self._cancel_flag.set()

    def stop(self) -> None:
        """Leave as soon as possible without cancelling (add-on disabled); the server keeps the job."""
        self._halt.set()

    # -- the thread -------------------------------------------------------------------------------
    def _put(self, *item) -> None:
        self.events.put(item)

    def run(self) -> None:
        client = None
        try:
            client = HeadRigClient(self.address, keys_dir=self.keys_dir, client_name=self.client_name,
                                   timeout_s=self.timeout_s, retries=self.retries,
                                   heartbeat_s=min(2.0, max(0.2, self.timeout_s)))
            if self._halt.is_set():
                return self._put("stopped", self.local_id)
            if self._cancel_flag.is_set():
                return self._put("cancelled", self.local_id, "Cancelled before it was sent")
            job = client.submit(self.kind, self.params, self.files)
            self.job_id = job
            self._put("submitted", self.local_id, job)
            self._follow(client, job)
        except ClientError as exc:
            self._put("error", self.local_id, exc.code, describe_error(exc.code, exc.message, self.address, self.files, self.keys_dir))
        except Exception as exc:  # never let a thread die silently: the artist sees one line
            self._put("error", self.local_id, "internal", f"HeadRig add-on: unexpected {type(exc).__name__}: {exc}")
        finally:
            if client is not None:
                client.close()

    def _follow(self, client: HeadRigClient, job: str) -> None:
        cancel_sent = False
        while True:
            if self._halt.is_set():
                return self._put("stopped", self.local_id)
            if self._cancel_flag.is_set() and not cancel_sent:
                client.cancel(job)
                cancel_sent = True
            terminal = None
            try:
                for event in client.events(job, timeout_s=_POLL_S):
                    if event.terminal:
                        terminal = event
                        break
                    if event.type == "progress":
                        self._put("progress", self.local_id, event.stage, float(event.fraction), event.message)
                    elif event.type == "queued":
                        self._put("progress", self.local_id, "queued", 0.0, event.message or "Waiting for a worker")
                    if self._cancel_flag.is_set() and not cancel_sent or self._halt.is_set():
                        break
            except ClientError as exc:
                if exc.code != "timeout":
                    raise
            if terminal is None:
                continue
            if terminal.type == "done":
                self._put("fetching", self.local_id)
                target = self.out_dir / job
                path = client.fetch(job, target, force=True)
                return self._put("done", self.local_id, str(path))
            if terminal.type == "cancelled":
                return self._put("cancelled", self.local_id, "Cancelled" + (f": {terminal.message}" if terminal.message else ""))
            return self._put("failed", self.local_id, terminal.code or "failed",
                             describe_error(terminal.code, terminal.message, self.address, self.files, self.keys_dir))


class ConnectionCheck(threading.Thread):
    """hello -> ("connection", token, ok, info) on the queue."""

    def __init__(self, token: str, address: str, events: queue.Queue, keys_dir=None, timeout_s: float = 3.0,
                 retries: int = 1, client_name: str = "headrig-blender"):
        super().__init__(name="headrig-check", daemon=True)
        self.token, self.address, self.events = token, address, events
        self.keys_dir = Path(keys_dir) if keys_dir else None
        self.timeout_s, self.retries, self.client_name = float(timeout_s), int(retries), client_name

    def run(self) -> None:
        start = time.monotonic()
        try:
            with HeadRigClient(self.address, keys_dir=self.keys_dir, client_name=self.client_name,
                               timeout_s=self.timeout_s, retries=self.retries) as client:
                caps = client.hello()
                info = {"server": client.server_name, "version": str(client.server_version),
                        "device": str(caps.get("device", "?")), "model": str(caps.get("model", "")),
                        "kinds": ", ".join(map(str, caps.get("kinds", []))),
                        "ms": round(1000 * (time.monotonic() - start), 1)}
            self.events.put(("connection", self.token, True, info))
        except ClientError as exc:
            self.events.put(("connection", self.token, False,
                             {"code": exc.code, "message": describe_error(exc.code, exc.message, self.address, keys_dir=self.keys_dir)}))
        except Exception as exc:
            self.events.put(("connection", self.token, False,
                             {"code": "internal", "message": f"{self.address}: {type(exc).__name__}: {exc}"}))
