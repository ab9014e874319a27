"""Pure checks and file helpers of the job store (``backend.service.jobstore``), kept apart so the
store itself stays about records and their life cycle.

* the error classes: ``StoreError`` (a ``ValueError`` with a stable ``code``) and its kinds;
* request checks: file names (``check_file_name``), short texts, declared inputs, record updates;
* file helpers: ``describe_files``, ``trusted_result_files`` (is a result folder complete and valid
  for its job kind) and ``fsync_dir``.

Nothing here holds state; ``jobstore`` re-exports the public names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.animation import ANIMATION_FILE, read_animation
from shared.bundle import BundleError, read_bundle, sha256_file
from shared.folders import fsync_dir  # noqa: F401 (re-exported to jobstore)

MAX_NAME = 128          # characters in an input file name
MAX_INPUTS = 64         # files per job
MAX_TEXT = 256          # client ids, request keys
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StoreError(ValueError):
    """A request the store refuses; ``code`` is stable and machine-readable."""

    code = "bad_request"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class UnsafePath(StoreError):
    code = "unsafe_path"


class UnknownJob(StoreError):
    code = "unknown_job"


class IllegalTransition(StoreError):
    code = "illegal_transition"


class UploadError(StoreError):
    code = "upload_error"


def describe_files(folder: Path) -> list[dict]:
    """[{name, size, sha256}] of every file under ``folder`` (relative POSIX names, sorted)."""
    folder = Path(folder)
    return [{"name": p.relative_to(folder).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()]


def trusted_result_files(kind: str, folder: Path) -> list[dict] | None:
    """The files of a result folder if it is complete and valid for ``kind``, else None.

    A reconstruct result must be a head bundle that ``read_bundle`` accepts (head.json present, every
    listed file's size and sha256 right); a retarget result an ``animation.json`` that
    ``read_animation`` accepts; a probe result must have a readable ``probe.json``.
    Unknown kinds are never trusted: no validator, no trust.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        if kind == "reconstruct":
            read_bundle(folder, verify_hashes=True)
        elif kind == "retarget":
            read_animation(folder / ANIMATION_FILE)
        elif kind == "turntable":
            if (folder / "turntable.mp4").stat().st_size == 0:
                return None
        elif kind == "probe":
            if not isinstance(json.loads((folder / "probe.json").read_text(encoding="utf-8")), dict):
                return None
        else:
            return None
        return describe_files(folder)
    except (BundleError, OSError, ValueError):
        return None


def check_file_name(name) -> str:
    """A plain file name or UnsafePath: no separators, no '.'/'..', no NUL or control characters,
    no leading dot (hidden and temp files are ours), no '.part' ending (our partial uploads)."""
    if not isinstance(name, str):
        raise UnsafePath(f"file name must be a string, got {type(name).__name__}")
    if not name:
        raise UnsafePath("file name is empty")
    if len(name) > MAX_NAME:
        raise UnsafePath(f"file name has {len(name)} characters; at most {MAX_NAME} allowed")
    bad = sorted({c for c in name if c in "/\\:" or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise UnsafePath(f"file name {name!r} contains {', '.join(repr(c) for c in bad)}; send a plain file name")
    if name.startswith("."):
        raise UnsafePath(f"file name {name!r} starts with '.'; '.', '..' and hidden names are not allowed")
    if name.endswith(".part"):
        raise UnsafePath(f"file name {name!r} ends with '.part', which the server uses for partial uploads")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePath(f"file name {name!r} is not valid UTF-8") from None
    return name


def _check_text(value, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise StoreError(f"{what} must be a non-empty string of at most {MAX_TEXT} characters, got {value!r:.80}")
    return value


def _check_inputs(inputs) -> list[dict]:
    if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS:
        raise StoreError(f"inputs must be a list of at most {MAX_INPUTS} entries")
    out, seen = [], set()
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or set(item) - {"received"} != {"name", "size", "sha256"}:
            raise StoreError(f"inputs[{i}] must be an object with exactly name, size and sha256")
        name = check_file_name(item["name"])
        if name in seen:
            raise StoreError(f"inputs[{i}].name {name!r} is given twice")
        seen.add(name)
        size, digest = item["size"], item["sha256"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise StoreError(f"inputs[{i}].size must be a non-negative integer, got {size!r}")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise StoreError(f"inputs[{i}].sha256 must be 64 lowercase hex digits, got {digest!r:.80}")
        out.append({"name": name, "size": size, "sha256": digest, "received": 0})
    return out


def _check_update(job_id: str, key: str, value) -> None:
    if key == "progress":
        ok = isinstance(value, dict) and set(value) == {"stage", "fraction", "message"} \
            and isinstance(value["stage"], str) and isinstance(value["message"], str) \
            and isinstance(value["fraction"], (int, float)) and not isinstance(value["fraction"], bool) \
            and 0.0 <= value["fraction"] <= 1.0
        if not ok:
            raise StoreError(f"job {job_id}: progress must be {{stage: str, fraction: 0..1, message: str}}, got {value!r:.200}")
    elif key == "error":
        ok = value is None or (isinstance(value, dict) and set(value) == {"code", "message"}
                               and all(isinstance(v, str) for v in value.values()))
        if not ok:
            raise StoreError(f"job {job_id}: error must be {{code: str, message: str}} or null, got {value!r:.200}")
    elif key == "result_files":
        ok = isinstance(value, list) and all(isinstance(f, dict) and set(f) == {"name", "size", "sha256"} for f in value)
        if not ok:
            raise StoreError(f"job {job_id}: result_files must be a list of {{name, size, sha256}}")
