"""One job as the store keeps it (``state.json``): ``JobRecord``, its states and the legal moves between them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone

STATES = ("uploading", "queued", "running", "done", "failed", "cancelled")
TERMINAL = frozenset({"done", "failed", "cancelled"})
# Legal moves; terminal states have none. A job is never re-run in place: a retry is a new job.
TRANSITIONS = {
    "uploading": {"queued", "failed", "cancelled"},
    "queued": {"running", "failed", "cancelled"},
    "running": {"done", "failed", "cancelled"},
}
INTERRUPTED = "the server stopped while this job ran; submit it again"
UPLOAD_INTERRUPTED = "the server stopped during the upload; submit the job again"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class JobRecord:
    """One job as stored in ``state.json``. inputs: [{name, size, sha256, received}];
    progress: {stage, fraction, message}; error: {code, message} or None; result_files: [{name, size, sha256}]."""

    job_id: str
    kind: str
    params: dict
    client: str
    request_key: str | None
    state: str
    created: str
    updated: str
    inputs: list[dict] = field(default_factory=list)
    progress: dict = field(default_factory=lambda: {"stage": "", "fraction": 0.0, "message": ""})
    error: dict | None = None
    result_files: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "JobRecord":
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValueError(f"state.json fields differ from JobRecord: {sorted(set(data) ^ names) if isinstance(data, dict) else data!r}")
        return cls(**data)

    @property
    def inputs_complete(self) -> bool:
        return all(i["received"] == i["size"] for i in self.inputs)
