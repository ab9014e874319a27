"""``headrig serve --engine ray``: jobs run on a Ray cluster behind the ZeroMQ gateway.

The gateway (``Server``) keeps everything it owns today: the job store, the fair queue, the client
protocol. ``RayEngine`` replaces ``WorkerPool`` with the same five calls (``submit``, ``poll_events``,
``cancel``, ``idle_workers``, ``close``) and the same event tuples, so the server does not know which
engine runs its jobs.

* Workers are warm actors (``JobActor``), each holding one ``Runner`` (and so one Reconstructor) and
  ``gpus_per_job`` GPUs (``num_gpus=1``: Ray pins the GPU through CUDA_VISIBLE_DEVICES). There are as
  many as the cluster has GPUs (or ``workers``); the pool grows when GPU boxes join.
* A job is one call of the actor's streaming-generator method ``run``: progress events stream back
  as they happen; the last item is the terminal event. A stream that ends without one, or raises,
  means the actor (or its node) died.
* Data travels through the object store, not a shared folder: GPU boxes then need no file system
  mounted from the gateway, Ray moves each input straight to the node that runs the job and frees
  it by reference counting. Inputs go as read-only numpy views (zero-copy on the worker); results
  come back as bytes in the terminal event and the gateway writes them with ``staged_folder`` (a
  result folder is whole or absent, so a re-run never meets half a result).
* Node loss: a job whose actor dies mid-run runs once more on another actor (a fresh actor replaces
  the dead one; Ray places it on a live node); if that run is lost too the job fails "node_lost".
  Only the first terminal event of a job counts, so no job completes twice.
* Cancel: ``ray.kill`` of the actor running the job (a sync actor task cannot be interrupted
  otherwise), then a fresh actor takes its place.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray

from backend.service.job_kinds import KINDS, write_result_folder
from backend.service.jobstore import INTERRUPTED, describe_files
from backend.service.ray_actor import JobActor
from backend.service.runner import DISK_FULL, job_log

log = logging.getLogger(__name__)

NODE_LOST = "it had already been re-run once after a loss; submit the job again"
POOL_CHECK_S = 2.0            # how often the pool is fitted to the cluster's GPUs


@dataclass(kw_only=True)
class RayConfig:
    """Where the Ray cluster is and what each job asks of it."""

    address: str | None = None          # None: start a local instance; "auto" or HOST:PORT: join a cluster
    gpus_per_job: float = 1.0           # num_gpus of each worker actor (0 on a CPU-only cluster)
    cpus_per_job: float = 1.0
    workers: int | None = None          # worker actors; default one per gpus_per_job GPUs in the cluster
    object_store_bytes: int = 3 << 30   # the local instance's object store (>= the 2 GiB upload limit)
    node_ip: str = "127.0.0.1"          # the local instance listens here only
    retries_on_loss: int = 1            # re-runs after the worker (or its node) died mid-job


@dataclass
class _Job:
    job_id: str
    kind: str
    params: dict
    input_paths: list[Path]
    result_dir: Path
    refs: list = field(default_factory=list)   # ObjectRefs of the inputs, freed when the job ends
    attempts: int = 0               # runs that began on a worker
    lost_on: list[str] = field(default_factory=list)


@dataclass
class _Actor:
    handle: object
    ready_ref: object
    node: str | None = None         # set once the actor runs
    job: _Job | None = None
    stream: object = None           # ObjectRefGenerator of the running job


class RayEngine:
    """Runs jobs on Ray; see the module docstring. One instance per gateway process."""

    def __init__(self, config: RayConfig, data_dir: Path):
        self.config, self.data_dir = config, Path(data_dir)
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            _init_ray(config)
        self._actors: list[_Actor] = []
        self._retry: collections.deque[_Job] = collections.deque()
        self._pending: list[tuple] = []
        self._writes: dict[concurrent.futures.Future, _Job] = {}
        self._puts: dict[concurrent.futures.Future, tuple[_Actor, _Job]] = {}
        # Inputs go into the object store and results onto disk on these threads, never in the socket
        # loop: a 2 GiB upload takes seconds to read.
        self._io = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="headrig-ray-io")
        self._gpus = self._gpus_per_actor()
        self._last_fit = 0.0
        self._closed = False
        self._fit_pool()

    # ---- the WorkerPool interface ----------------------------------------------------------------

    def submit(self, job_id: str, kind: str, params: dict, input_paths: list[Path], result_dir: Path) -> bool:
        if self._closed:
            raise RuntimeError("the Ray engine is closed")
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}; kinds: {', '.join(KINDS)}")
        actor = self._idle_actor()
        if actor is None:
            return False
        job = _Job(job_id, kind, dict(params), [Path(p) for p in input_paths], Path(result_dir))
        actor.job = job  # reserved while its inputs go into the object store
        self._puts[self._io.submit(_put_inputs, job.input_paths)] = (actor, job)
        return True

    def idle_workers(self) -> int:
        return max(0, sum(a.node is not None and a.job is None for a in self._actors) - len(self._retry))

    def running(self) -> dict[str, str]:
        """job_id -> node id of the actor running it."""
        return {a.job.job_id: a.node for a in self._actors if a.job is not None}

    def poll_events(self, timeout: float = 0) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while True:
            self._check_actors()
            self._start_uploaded()
            self._read_streams()
            self._collect_writes()
            self._run_retries()
            if time.monotonic() - self._last_fit > POOL_CHECK_S:
                self._fit_pool()
            out, self._pending = self._pending, []
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(0.01)

    def cancel(self, job_id: str) -> bool:
        waiting = next((j for j in self._retry if j.job_id == job_id), None)
        if waiting is not None:
            self._retry.remove(waiting)
            self._pending.append(("cancelled", job_id))
            return True
        actor = next((a for a in self._actors if a.job is not None and a.job.job_id == job_id), None)
        if actor is None:
            return False
        if actor.stream is None:  # still uploading its inputs: nothing runs yet
            actor.job = None
            self._pending.append(("cancelled", job_id))
            return True
        ray.kill(actor.handle, no_restart=True)
        self._drop(actor)
        self._pending.append(("cancelled", job_id))
        self._fit_pool()
        return True

    def close(self, timeout: float = 2.0) -> list[tuple]:
        if self._closed:
            return []
        events = self.poll_events(0)
        self._closed = True
        self._io.shutdown(wait=True)
        self._collect_writes()
        events, self._pending = events + self._pending, []
        for actor in self._actors:
            if actor.job is not None:
                events.append(("failed", actor.job.job_id, "interrupted", INTERRUPTED))
            ray.kill(actor.handle, no_restart=True)
        events += [("failed", job.job_id, "interrupted", INTERRUPTED) for job in self._retry]
        self._actors, self._retry = [], collections.deque()
        if self._owns_ray:
            ray.shutdown()
        return events

    # ---- internals -------------------------------------------------------------------------------

    def _gpus_per_actor(self) -> float:
        """``gpus_per_job``, or 0 on a cluster without GPUs (CPU actors then, so a laptop still works)."""
        want = self.config.gpus_per_job
        if want > 0 and ray.cluster_resources().get("GPU", 0.0) < want:
            log.warning("the Ray cluster has no GPU; jobs run on CPU workers")
            return 0.0
        return want

    def _target(self) -> int:
        """Worker actors wanted now: ``workers``, else one per ``gpus_per_job`` GPUs of the live nodes."""
        if self.config.workers is not None:
            return self.config.workers
        if not self._gpus:
            return 1
        return max(1, int(ray.cluster_resources().get("GPU", 0.0) // self._gpus))

    def _fit_pool(self) -> None:
        """Grow to the target when GPU boxes joined; dead actors' places are refilled here too."""
        self._last_fit = time.monotonic()
        target = self._target()
        while not self._closed and len(self._actors) < target:
            handle = JobActor.options(num_gpus=self._gpus, num_cpus=self.config.cpus_per_job,
                                      scheduling_strategy="SPREAD").remote()
            self._actors.append(_Actor(handle, handle.ready.remote()))

    def _idle_actor(self, avoid: list[str] = ()) -> _Actor | None:
        idle = [a for a in self._actors if a.node is not None and a.job is None]
        return next((a for a in idle if a.node not in avoid), idle[0] if idle else None)

    def _start(self, actor: _Actor, job: _Job) -> None:
        actor.job = job
        names = [p.name for p in job.input_paths]
        actor.stream = actor.handle.run.remote(job.job_id, job.kind, job.params, names, *job.refs)

    def _start_uploaded(self) -> None:
        """Jobs whose inputs are in the object store start on the actor reserved for them."""
        for future in [f for f in self._puts if f.done()]:
            actor, job = self._puts.pop(future)
            if actor.job is not job:
                continue  # cancelled (or its actor died) meanwhile
            try:
                job.refs = future.result()
            except Exception as exc:
                log.exception("job %s: inputs could not be put into the object store", job.job_id)
                actor.job = None
                self._pending.append(("failed", job.job_id, "internal", f"could not send the inputs to the cluster ({exc})"[:1000]))
                continue
            self._start(actor, job)

    def _check_actors(self) -> None:
        starting = [a.ready_ref for a in self._actors if a.node is None]
        if not starting:
            return
        ready, _ = ray.wait(starting, num_returns=len(starting), timeout=0)
        for ref in ready:
            actor = next(a for a in self._actors if a.ready_ref is ref)
            try:
                actor.node = ray.get(ref)
            except ray.exceptions.RayError as exc:  # died while starting (its node went away)
                log.warning("worker actor failed to start: %s", str(exc).splitlines()[0])
                self._drop(actor)

    def _read_streams(self) -> None:
        busy = [a for a in self._actors if a.stream is not None]
        if not busy:
            return
        ready, _ = ray.wait([a.stream for a in busy], num_returns=len(busy), timeout=0)
        for stream in ready:
            actor = next(a for a in busy if a.stream is stream)
            try:
                event = ray.get(next(stream))
            except StopIteration:  # ended without a terminal event: the actor went away mid-job
                self._lost(actor, "its worker stopped without finishing")
                continue
            except ray.exceptions.RayError as exc:
                self._lost(actor, str(exc).splitlines()[0])
                continue
            self._on_event(actor, event)

    def _on_event(self, actor: _Actor, event: tuple) -> None:
        job = actor.job
        if event[0] == "started":  # the job is running (its inputs reached the node): now it counts
            job.attempts += 1
        elif event[0] == "log":
            job_log(self.data_dir, job.job_id, f"[node {actor.node[:12]}]\n{event[2]}")
        elif event[0] == "done":
            actor.job = actor.stream = None
            self._writes[self._io.submit(_write_result, job.result_dir, event[3], event[2])] = job
        else:
            self._pending.append(event)
            if event[0] == "failed":
                actor.job = actor.stream = None

    def _collect_writes(self) -> None:
        for future in [f for f in self._writes if f.done()]:
            job = self._writes.pop(future)
            try:
                self._pending.append(("done", job.job_id, future.result()))
            except OSError as exc:
                log.exception("writing the result of job %s failed", job.job_id)
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                self._pending.append(("failed", job.job_id, "disk_full" if full else "internal",
                                      DISK_FULL if full else f"could not store the result ({exc})"[:1000]))
            except Exception as exc:
                log.exception("writing the result of job %s failed", job.job_id)
                self._pending.append(("failed", job.job_id, "internal", f"could not store the result ({exc})"[:1000]))

    def _lost(self, actor: _Actor, why: str) -> None:
        job = actor.job
        self._drop(actor)
        alive = _node_alive(actor.node)
        where = "its worker process died" if alive else f"node {actor.node[:12]} was lost"
        log.error("job %s: %s (%s)", job.job_id, where, why)
        job.lost_on.append(actor.node)
        if not alive:  # its other actors went with it; nothing more may be sent to them
            for other in [a for a in self._actors if a.node == actor.node and a.job is None]:
                self._drop(other)
        if job.attempts > self.config.retries_on_loss:
            self._pending.append(("failed", job.job_id, "node_lost", f"{where} during its re-run; {NODE_LOST}"))
        else:
            self._pending.append(("progress", job.job_id, "retry", 0.0, f"{where}; running the job again on another worker"))
            self._retry.append(job)
        self._fit_pool()

    def _run_retries(self) -> None:
        while self._retry:
            actor = self._idle_actor(avoid=self._retry[0].lost_on)
            if actor is None:
                return
            self._start(actor, self._retry.popleft())

    def _drop(self, actor: _Actor) -> None:
        actor.job = actor.stream = None
        if actor in self._actors:
            self._actors.remove(actor)


def _put_inputs(paths: list[Path]) -> list:
    """Each input into the object store; np.fromfile + put is one copy, and workers read it without one."""
    return [ray.put(np.fromfile(p, dtype=np.uint8)) for p in paths]


def _write_result(result_dir: Path, blobs: dict[str, bytes], files: list[dict]) -> list[dict]:
    """Write a job's result folder whole (on the gateway's disk); checks it against the worker's list."""
    write_result_folder(result_dir, blobs)
    written = describe_files(result_dir)
    if written != files:
        raise ValueError("the result files differ from what the worker reported")
    return written


def _node_alive(node_id: str | None) -> bool:
    try:
        return any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())
    except Exception:
        return False


def _init_ray(config: RayConfig) -> None:
    """Connect to (or start) Ray without letting it take the gateway's signal handlers: ray.init
    installs its own SIGTERM handler in the main thread, which would skip our clean shutdown."""
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        if config.address:
            ray.init(address=config.address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
        else:
            from backend.service.devices import gpu_count

            ray.init(num_gpus=gpu_count(), object_store_memory=config.object_store_bytes, include_dashboard=False,
                     _node_ip_address=config.node_ip, logging_level=logging.WARNING, log_to_driver=False)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
