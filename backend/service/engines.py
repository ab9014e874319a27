"""What runs the gateway's jobs: local worker processes (``workers.WorkerPool``, the default) or a Ray
cluster (``ray_engine.RayEngine``, the optional "cluster" extra).

Both offer the same calls, which is all the server uses:

    submit(job_id, kind, params, input_paths, result_dir) -> bool   # False: no idle worker, nothing started
    idle_workers() -> int                                         # how many more jobs submit would take now
    poll_events(timeout) -> list[tuple]                           # progress/done/failed/cancelled (see workers)
    cancel(job_id) -> bool                                        # a "cancelled" event follows
    close() -> list[tuple]                                        # last events; running jobs "interrupted"

Neither queues: the server keeps the one waiting line (fair share, cancels, persistence).
"""

from __future__ import annotations

from pathlib import Path

from backend.service.devices import gpu_count

ENGINES = ("local", "ray")


def make_engine(kind: str, data_dir: Path, workers: int, ray_config=None):
    """The engine named ``kind``; ``ray_config`` is a ``ray_engine.RayConfig`` (default one if None)."""
    if kind == "ray":
        from backend.service.ray_engine import RayConfig, RayEngine  # only now: Ray is an optional extra

        return RayEngine(ray_config or RayConfig(), Path(data_dir))
    if kind != "local":
        raise ValueError(f"unknown engine {kind!r}; engines: {', '.join(ENGINES)}")
    from backend.service.workers import WorkerPool  # spawns processes: imported when a server opens

    gpus = list(range(gpu_count())) or None  # one worker per GPU, each pinned to its own
    return WorkerPool(workers, Path(data_dir), gpus=gpus)
