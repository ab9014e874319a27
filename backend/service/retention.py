"""How long the gateway keeps finished jobs and how much disk it may use (``--keep-days``, ``--max-disk-gb``).

Two rules, in this order of importance:

* a finished result is never deleted before its time: only jobs that ended (done, failed, cancelled)
  more than ``keep_days`` ago are removed, whatever the disk looks like;
* a full disk refuses new work instead: a submit whose inputs would not fit (under the cap, and
  leaving ``min_free_bytes`` free on the file system) is refused with a ``disk_full`` reason, and a
  job that runs out of space while writing fails "disk_full" with nothing half-written kept.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from backend.service.jobstore import TERMINAL, JobStore

PRUNE_EVERY_S = 600.0


@dataclass(kw_only=True)
class RetentionConfig:
    keep_days: float = 30.0                 # finished jobs are kept this long after they ended
    max_disk_bytes: int | None = None       # cap on inputs + results under the data folder; None: no cap
    min_free_bytes: int = 1 << 30           # always leave this much free on the data folder's disk

    def __post_init__(self):
        if not self.keep_days > 0:
            raise ValueError(f"--keep-days must be more than 0, got {self.keep_days}")
        if self.max_disk_bytes is not None and self.max_disk_bytes <= 0:
            raise ValueError(f"--max-disk-gb must be more than 0, got {self.max_disk_bytes / 1e9:g}")


def expired_jobs(store: JobStore, keep_days: float, now: datetime | None = None) -> list[str]:
    """Ids of finished jobs whose last change is more than ``keep_days`` old, oldest first."""
    limit = (now or datetime.now(timezone.utc)) - timedelta(days=keep_days)
    return [r.job_id for r in store.list() if r.state in TERMINAL and datetime.fromisoformat(r.updated) < limit]


def prune(store: JobStore, config: RetentionConfig, now: datetime | None = None) -> list[str]:
    """Remove expired jobs (their folders and records); returns their ids."""
    gone = expired_jobs(store, config.keep_days, now)
    for job_id in gone:
        store.remove(job_id)
    return gone


def space_refusal(store: JobStore, config: RetentionConfig, incoming: int) -> str | None:
    """Why ``incoming`` more bytes of inputs cannot be taken now, or None."""
    used = store.bytes_used()
    if config.max_disk_bytes is not None and used + incoming > config.max_disk_bytes:
        return (f"the server's job folder holds {used / 1e9:.2f} GB of its {config.max_disk_bytes / 1e9:.2f} GB cap and "
                f"this job needs {incoming / 1e9:.2f} GB more; finished jobs are kept until their time "
                f"(--keep-days {config.keep_days:g}): try again later or ask the server's owner for space")
    free = shutil.disk_usage(Path(store.data_dir)).free
    if free - incoming < config.min_free_bytes:
        return (f"the server's disk has {free / 1e9:.2f} GB free and this job needs {incoming / 1e9:.2f} GB plus "
                f"{config.min_free_bytes / 1e9:.2f} GB headroom; try again later or ask the server's owner for space")
    return None
