"""The jobs the add-on runs on the server, as the UI shows them, and the look-ups operators share.

``Registry`` holds one ``JobEntry`` per job (what the panel draws), the worker threads
(``worker.py``) that send the files and follow the job, the queue those threads report on, and the
local backend this Blender started. Threads never touch bpy: ``drain.py`` (a ``bpy.app.timers``
callback) applies their news and brings the results in.

The registry is one ``Registry`` instance created by the add-on's ``register()`` (``drain.install``)
and dropped by ``unregister()`` (which stops every thread): no state survives a disable/enable cycle.
``registry_or_report`` and ``settings_or_report`` are how an operator gets the registry and the
client settings, or reports in one line why it cannot.
"""

from __future__ import annotations

import itertools
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from . import preferences
from .worker import ConnectionCheck, JobWorker

ACTIVE = ("starting", "queued", "running", "fetching", "importing")
# What the artist reads while a job of each kind is sent and fetched.
SENDING = {"reconstruct": "Sending photos to the server", "retarget": "Sending the video to the server",
           "turntable": "Sending the avatar to the server"}
FETCHING = {"retarget": "Downloading the animation", "turntable": "Downloading the turntable"}


@dataclass
class JobEntry:
    local_id: str
    label: str
    files: list = field(default_factory=list)
    kind: str = "reconstruct"
    apply: dict = field(default_factory=dict)  # retarget: target (object name), action_name, transfer_head
    job_id: str = ""
    state: str = "starting"    # starting queued running fetching importing | done failed cancelled error
    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    bundle_path: str = ""
    object_name: str = ""
    started: float = field(default_factory=time.monotonic)
    cancel_requested: bool = False

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class Registry:
    def __init__(self):
        self.events: queue.Queue = queue.Queue()
        self.jobs: dict[str, JobEntry] = {}
        self.workers: dict[str, JobWorker] = {}
        self.checks: list[ConnectionCheck] = []
        self.to_import: list[str] = []
        self.backend = None                 # subprocess.Popen of a local backend we started
        self.backend_address = ""
        self._ids = itertools.count(1)
        self.longest_timer_ms = 0.0
        self.longest_drain_ms = 0.0
        self.longest_import_ms = 0.0
        self.last_timer_ms = 0.0
        self.timer_calls = 0
        self.auto_import = True
        self.results_dir: Path | None = None  # where bundles are fetched; None: results_dir()

    def new_id(self) -> str:
        return f"j{next(self._ids)}"

    def start_job(self, label: str, files, settings: dict, out_dir, kind: str = "reconstruct",
                  params: dict | None = None, apply: dict | None = None) -> JobEntry:
        """Run one job in a worker thread; ``apply`` says what to do with a retarget's result."""
        local_id = self.new_id()
        entry = JobEntry(local_id, label, [str(f) for f in files], kind=kind, apply=dict(apply or {}),
                         message=SENDING.get(kind, "Sending the files to the server"))
        self.jobs[local_id] = entry
        worker = JobWorker(local_id, settings["address"], files, out_dir, self.events, kind=kind, params=params,
                           keys_dir=settings.get("keys_dir"), timeout_s=settings["timeout_s"],
                           retries=settings["retries"])
        self.workers[local_id] = worker
        worker.start()
        return entry

    def cancel(self, local_id: str) -> bool:
        entry, worker = self.jobs.get(local_id), self.workers.get(local_id)
        if entry is None or not entry.active:
            return False
        entry.cancel_requested = True
        entry.message = "Cancelling..."
        if worker is not None:
            worker.cancel()
        if entry.state == "importing":  # nothing runs any more on the server: drop the import
            if local_id in self.to_import:
                self.to_import.remove(local_id)
            entry.state, entry.message = "cancelled", "Cancelled before the import"
        return True

    def check_connection(self, settings: dict) -> None:
        token = self.new_id()
        check = ConnectionCheck(token, settings["address"], self.events, keys_dir=settings.get("keys_dir"),
                                timeout_s=min(settings["timeout_s"], 5.0), retries=1)
        self.checks.append(check)
        check.start()

    def busy(self) -> bool:
        return any(e.active for e in self.jobs.values()) or any(c.is_alive() for c in self.checks)

    def stop_all(self, join_s: float = 2.0) -> None:
        for worker in self.workers.values():
            worker.stop()
        end = time.monotonic() + join_s
        for thread in list(self.workers.values()) + self.checks:
            thread.join(max(0.0, end - time.monotonic()))
        self.workers.clear()
        self.checks.clear()
        stop_backend(self)

    def clear_finished(self) -> None:
        for key in [k for k, e in self.jobs.items() if not e.active]:
            del self.jobs[key]
            self.workers.pop(key, None)


def stop_backend(reg: Registry) -> bool:
    proc = reg.backend
    reg.backend = None
    if proc is None or proc.poll() is not None:
        return False
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except Exception:
        proc.kill()
    return True


_REGISTRY: list[Registry] = []  # the one instance, owned by register()/unregister() (drain.install/uninstall)


def registry() -> Registry | None:
    return _REGISTRY[0] if _REGISTRY else None


def create() -> Registry:
    """A fresh registry (after dropping any earlier one)."""
    drop()
    reg = Registry()
    _REGISTRY.append(reg)
    return reg


def drop() -> None:
    """Stop every thread and the local backend, forget the registry."""
    while _REGISTRY:
        _REGISTRY.pop().stop_all()


def registry_or_report(op):
    """The registry, or None after the operator reported that the add-on is not registered."""
    reg = registry()
    if reg is None:
        op.report({"ERROR"}, "HeadRig is not registered; re-enable the add-on")
    return reg


def settings_or_report(op, context):
    """The client settings (preferences.client_settings), or None after reporting why they cannot be used."""
    settings = preferences.client_settings(context)
    refusal = preferences.network_refusal(settings["address"])
    if refusal:
        op.report({"ERROR"}, refusal)
        return None
    keys = settings["keys_dir"]
    if keys and not os.path.isdir(keys):
        op.report({"ERROR"}, f"CURVE key folder {keys} does not exist; fix it in the HeadRig preferences")
        return None
    return settings


def results_dir() -> Path:
    """Where fetched bundles go: the user cache (kept across sessions), else Blender's temp dir."""
    reg = registry()
    if reg is not None and reg.results_dir is not None:
        Path(reg.results_dir).mkdir(parents=True, exist_ok=True)
        return Path(reg.results_dir)
    try:
        base = bpy.utils.user_resource("CACHE", path="headrig", create=True)
    except Exception:
        base = ""
    folder = Path(base) / "results" if base else Path(bpy.app.tempdir or "/tmp") / "headrig-results"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
