"""The worker side of ``--engine ray``: ``JobActor``, a warm Ray actor on a GPU node (see ``ray_engine``).

It receives a job's inputs from the object store, writes them to a scratch folder on its node, runs
the job through a ``Runner`` on a thread and yields the runner's events as they come (a streaming
generator: progress reaches the gateway while the job runs). Before the terminal event it yields the
job's log, so the gateway's ``logs/`` has it; a "done" event carries the result files' bytes.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from pathlib import Path

import ray

from backend.service.runner import Runner


@ray.remote(max_restarts=0, max_task_retries=0)
class JobActor:
    """A warm worker on one node; runs one job at a time through a ``Runner``."""

    def __init__(self):
        self.node = ray.get_runtime_context().get_node_id()
        self.scratch = Path(tempfile.mkdtemp(prefix="headrig-ray-"))
        self.events: queue.Queue = queue.Queue()
        self.runner = Runner(self.scratch, self.events.put, node=self.node)

    def ready(self) -> str:
        return self.node

    def _take_log(self, job_id: str) -> str:
        path = self.scratch / "logs" / f"{job_id}.log"
        try:
            text = path.read_text(encoding="utf-8")[-100_000:]
            path.unlink()
            return text
        except OSError:
            return ""

    def run(self, job_id: str, kind: str, params: dict, names: list[str], *blobs):
        """Yields the job's events; the last is terminal, a "done" one with ``{name: bytes}`` appended."""
        folder = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=self.scratch))
        inputs = folder / "inputs"
        inputs.mkdir()
        for name, blob in zip(names, blobs):
            with open(inputs / name, "wb") as fh:
                fh.write(memoryview(blob))
        result = folder / "result"
        worker = threading.Thread(target=self.runner.run, args=(job_id, kind, params, [str(inputs / n) for n in names],
                                                                  str(result)), daemon=True)
        worker.start()
        try:
            yield ("started", job_id, self.node)
            while True:
                event = self.events.get()
                if event[0] in ("done", "failed"):  # the runner logged the end before sending it
                    yield ("log", job_id, self._take_log(job_id))
                if event[0] == "done":
                    yield (*event, {f["name"]: (result / f["name"]).read_bytes() for f in event[2]})
                    return
                yield event
                if event[0] == "failed":
                    return
        finally:
            worker.join()
            shutil.rmtree(folder, ignore_errors=True)
