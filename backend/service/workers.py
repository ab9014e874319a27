"""Worker processes of ``headrig serve``: jobs run here, never in the socket loop.

``WorkerPool`` starts ``n_workers`` processes (spawn context: no inherited sockets, threads or
locks). Each worker has its own task queue and its own event queue, so killing one (cancel, crash)
can only damage its own queues, which are thrown away with it; a shared queue could be left
locked or half-written for every other worker. Events are tuples:

    ("progress", job_id, stage, fraction, message)
    ("done", job_id, result_files)          # [{name, size, sha256}] of the result folder
    ("failed", job_id, code, message)       # code: an InputError code, "bad_params", "internal",
                                            # "disk_full", "worker_crashed", "interrupted" (from
                                            # close()), or with the Ray engine "node_lost"
    ("cancelled", job_id)

These are the events of every engine (``engines``; ``ray_engine`` sends the same). ``submit`` never
queues: it returns False when every worker is busy, so the server keeps the one waiting queue (its order, its cancels, its persistence). Workers put events on a multiprocessing
Queue, whose feeder thread buffers them, so a slow server loop never stalls a job or loses events.
Events stay small (one pipe write each, well under PIPE_BUF), so a worker killed while sending
cannot leave half a message in its queue.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from backend.service.job_kinds import JOBS, KINDS  # noqa: F401  (JOBS: tests patch it here)
from backend.service.jobstore import INTERRUPTED
from backend.service.runner import Runner, job_log

log = logging.getLogger(__name__)

TERM_GRACE_S = 0.5      # SIGTERM, then SIGKILL after this


@dataclass
class _Slot:
    index: int
    process: multiprocessing.process.BaseProcess
    tasks: multiprocessing.queues.Queue
    events: multiprocessing.queues.Queue
    job_id: str | None = None
    result_dir: Path | None = None


class WorkerPool:
    """``n_workers`` worker processes for jobs of kinds ``KINDS``; see the module docstring."""

    def __init__(self, n_workers: int, data_dir: Path, gpus: list[int] | None = None):
        """``gpus``: CUDA device indices; worker i sees only ``gpus[i % len(gpus)]`` (one worker per
        GPU on a GPU machine), so no job ever competes for another worker's GPU memory."""
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
        self.data_dir = Path(data_dir)
        self.gpus = list(gpus or [])
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._ctx = multiprocessing.get_context("spawn")
        self._pending: list[tuple] = []
        self._closed = False
        self._slots = [self._start(i) for i in range(n_workers)]

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- public ----------------------------------------------------------------------------------

    def submit(self, job_id: str, kind: str, params: dict, input_paths: list[Path], result_dir: Path) -> bool:
        """Start the job on an idle worker; False (nothing started) when all are busy."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}; kinds: {', '.join(KINDS)}")
        if any(s.job_id == job_id for s in self._slots):
            raise ValueError(f"job {job_id} is already running")
        for slot in self._slots:
            if slot.job_id is None and not slot.process.is_alive():
                self._pending += self._replace(slot, "died while idle")
        slot = next((s for s in self._slots if s.job_id is None), None)
        if slot is None:
            return False
        slot.tasks.put((job_id, kind, dict(params), [str(p) for p in input_paths], str(result_dir)))
        slot.job_id, slot.result_dir = job_id, Path(result_dir)
        return True

    def poll_events(self, timeout: float = 0) -> list[tuple]:
        """Events since the last call; waits up to ``timeout`` seconds for the first. Also notices
        dead workers: their job fails with "worker_crashed" and a fresh worker takes the place."""
        deadline = time.monotonic() + timeout
        while True:
            out = self._collect()
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            time.sleep(min(0.01, left))

    def cancel(self, job_id: str) -> bool:
        """Stop the worker running ``job_id`` (SIGTERM, SIGKILL after 0.5 s), queue ("cancelled", job_id)
        and start a fresh worker. False if no worker runs it, or it finished just before the kill
        (then its "done"/"failed" event comes from poll_events instead)."""
        slot = next((s for s in self._slots if s.job_id == job_id), None)
        if slot is None:
            return False
        _stop(slot.process)
        self._pending += self._drain(slot)
        finished = slot.job_id is None
        if not finished:
            self._pending.append(("cancelled", job_id))
            slot.job_id = None  # reported as cancelled, not as a crash
        self._replace(slot, f"cancelled job {job_id}")
        return not finished

    def running(self) -> dict[str, int]:
        """job_id -> pid of the worker running it."""
        return {s.job_id: s.process.pid for s in self._slots if s.job_id is not None}

    def worker_pids(self) -> list[int]:
        return [s.process.pid for s in self._slots]

    def idle_workers(self) -> int:
        return sum(s.job_id is None for s in self._slots)

    def close(self, timeout: float = 2.0) -> list[tuple]:
        """Stop every worker; returns the events not yet polled, plus ("failed", job_id, "interrupted",
        ...) for each job stopped mid-run, so the server can record them before it exits."""
        if self._closed:
            return []
        events = self._collect()
        self._closed = True
        for slot in self._slots:
            if slot.job_id is None:
                try:
                    slot.tasks.put(None)
                except (OSError, ValueError):
                    pass
            else:
                slot.process.terminate()
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                _stop(slot.process)
            events += self._drain(slot)
            if slot.job_id is not None:
                events.append(("failed", slot.job_id, "interrupted", INTERRUPTED))
                _remove_temp_results(slot.result_dir)
            _close_queues(slot)
        return events

    # ---- internals -------------------------------------------------------------------------------

    def _start(self, index: int) -> _Slot:
        tasks, events = self._ctx.Queue(), self._ctx.Queue()
        # daemon: if the server exits without close(), the workers go with it.
        gpu = self.gpus[index % len(self.gpus)] if self.gpus else None
        proc = self._ctx.Process(target=_worker_main, args=(tasks, events, str(self.data_dir), os.getpid(), gpu),
                                 name=f"headrig-worker-{index}", daemon=True)
        proc.start()
        return _Slot(index, proc, tasks, events)

    def _collect(self) -> list[tuple]:
        out, self._pending = self._pending, []
        for slot in list(self._slots):
            dead = not slot.process.is_alive()  # checked first: whatever it sent before dying is in the pipe now
            out += self._drain(slot)
            if dead and not self._closed:
                code = slot.process.exitcode
                why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                out += self._replace(slot, why)
        return out

    def _drain(self, slot: _Slot) -> list[tuple]:
        out = []
        while True:
            try:
                event = slot.events.get_nowait()
            except queue.Empty:
                return out
            except Exception:  # a damaged queue of a dead worker: what was readable is kept
                log.exception("worker %d: unreadable event queue", slot.index)
                return out
            if event[0] in ("done", "failed") and event[1] == slot.job_id:
                slot.job_id = slot.result_dir = None
            out.append(event)

    def _replace(self, slot: _Slot, why: str) -> list[tuple]:
        """Start a fresh worker in ``slot``'s place; its unfinished job (if any) fails "worker_crashed"."""
        events = []
        if slot.job_id is not None:
            log.error("worker %d (pid %s) %s while running job %s", slot.index, slot.process.pid, why, slot.job_id)
            job_log(self.data_dir, slot.job_id, f"worker pid {slot.process.pid} {why}")
            events.append(("failed", slot.job_id, "worker_crashed",
                           f"the worker process stopped unexpectedly ({why}); submit the job again"))
        _remove_temp_results(slot.result_dir)
        _close_queues(slot)
        self._slots[slot.index] = self._start(slot.index)
        return events


def _stop(proc) -> None:
    proc.terminate()
    proc.join(TERM_GRACE_S)
    if proc.is_alive():
        proc.kill()
        proc.join(1.0)


def _close_queues(slot: _Slot) -> None:
    for q in (slot.tasks, slot.events):
        q.cancel_join_thread()  # never block the server on a dead worker's pipe
        q.close()


def _remove_temp_results(result_dir: Path | None) -> None:
    """Temp folders a stopped job left beside its result (probe and write_bundle use ``.<name>.tmp-*``)."""
    if result_dir is not None and result_dir.parent.is_dir():
        for tmp in result_dir.parent.glob(f".{result_dir.name}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


# ---- inside a worker process ---------------------------------------------------------------------


def _worker_main(tasks, events, data_dir: str, parent_pid: int, gpu: int | None = None) -> None:
    # Ctrl-C in the server's terminal reaches the whole process group; the pool stops workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpu is not None:  # before anything imports torch: CUDA reads it once
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    os.environ.setdefault("GLOG_minloglevel", "2")
    runner = Runner(Path(data_dir), events.put)
    try:
        while True:
            try:
                task = tasks.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent_pid:
                    return  # the server died without close(): do not linger as an orphan
                continue
            if task is None:
                return
            runner.run(*task)
    finally:
        runner.close()
