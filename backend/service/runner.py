"""One job at a time, reported as events: what a local worker process and a Ray worker actor both run.

``Runner.run`` looks the kind up in ``job_kinds.JOBS``, turns every way a job can end into one event
(see ``workers``' docstring for their shapes) and logs to ``<data_dir>/logs/<job>.log``. It keeps the
Reconstructor between jobs, which is why workers are long-lived (warm) rather than one per job.
"""

from __future__ import annotations

import errno
import os
import socket
import traceback
from datetime import datetime, timezone
from pathlib import Path

from backend.errors import InputError
from backend.service.job_kinds import JOBS, MAX_MESSAGE, JobFailed

DISK_FULL = ("the server's disk is full (or over its quota) while writing this job's result; "
             "nothing half-written was kept: free space on the server, then submit the job again")


def job_log(data_dir: Path, job_id: str, text: str) -> None:
    if len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id):  # ids become file names
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        (Path(data_dir) / "logs").mkdir(parents=True, exist_ok=True)
        with open(Path(data_dir) / "logs" / f"{job_id}.log", "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {text.rstrip()}\n")


class Runner:
    """Runs one job at a time and reports it through ``emit``; keeps a Reconstructor between jobs.
    ``node`` names where it runs (the host, or the Ray node id); probe results record it."""

    def __init__(self, data_dir: Path, emit, node: str | None = None):
        self.data_dir, self.emit = Path(data_dir), emit
        self.node = node or socket.gethostname()
        self._reconstructor = None

    def close(self) -> None:
        if self._reconstructor is not None:
            self._reconstructor.close()

    def progress(self, job_id: str, stage: str, fraction: float, message: str = "") -> None:
        self.emit(("progress", job_id, stage, min(max(float(fraction), 0.0), 1.0), message[:MAX_MESSAGE]))

    def run(self, job_id: str, kind: str, params: dict, input_paths: list[str], result_dir: str) -> None:
        inputs = [Path(p) for p in input_paths]
        job_log(self.data_dir, job_id, f"start {kind} in pid {os.getpid()} on {self.node} with {len(inputs)} input(s)")
        try:
            files = JOBS[kind](self, job_id, params, inputs, Path(result_dir))
        except JobFailed as exc:
            self._fail(job_id, exc.code, exc.message)
        except InputError as exc:
            message = exc.one_line()
            for p in inputs:  # clients know their file names, not the server's folders
                message = message.replace(str(p), p.name)
            self._fail(job_id, exc.code, message)
        except OSError as exc:
            job_log(self.data_dir, job_id, traceback.format_exc())
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._fail(job_id, "disk_full", DISK_FULL)
            else:
                self._internal(job_id, exc)
        except Exception as exc:
            job_log(self.data_dir, job_id, traceback.format_exc())
            self._internal(job_id, exc)
        else:
            job_log(self.data_dir, job_id, f"done: {len(files)} file(s)")
            self.emit(("done", job_id, files))

    def _internal(self, job_id: str, exc: Exception) -> None:
        self._fail(job_id, "internal", f"internal error ({type(exc).__name__}) in the server; "
                                       f"its log for job {job_id} has the details")

    def _fail(self, job_id: str, code: str, message: str) -> None:
        job_log(self.data_dir, job_id, f"failed {code}: {message}")
        self.emit(("failed", job_id, code, message[:MAX_MESSAGE]))

    def reconstructor(self, job_id: str):
        if self._reconstructor is None:
            self.progress(job_id, "loading", 0.0, "loading the head model and detectors")
            from backend.reconstruct import ReconstructOptions, Reconstructor  # heavy: torch, MediaPipe

            self._reconstructor = Reconstructor(ReconstructOptions(progress=False))
        return self._reconstructor
