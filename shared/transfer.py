"""File transfer helpers of the service client (pure Python: vendored into the Blender add-on).

File naming and safety (``safe_name``), local file digests and chunking for uploads (``file_entry``,
``iter_chunks``), and the verified download of a job's result files into a temporary folder that is
swapped into place whole (``result_files``, ``download_file``, ``fetch_into``). ``ClientError``
lives here so these helpers can raise it; ``shared.client`` re-exports it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

from .bundle import sha256_file
from .folders import FETCH_MARKER, replace_refusal, staged_folder
from .protocol import CHUNK_BYTES


class ClientError(Exception):
    """A failure talking to the server, or a job that failed (``code`` is stable, ``message`` human)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def safe_name(name) -> str:
    """A server-given file name, refused unless it is one plain path component."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name or ".." in name or ":" in name or len(name) > 255):
        raise ClientError("unsafe_path", f"server sent an unsafe file name {str(name)[:80]!r}")
    return name


def file_entry(path: Path) -> dict:
    """{name, size, sha256} of a local file."""
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def iter_chunks(path: Path, size: int) -> Iterator[tuple[int, bytes]]:
    """(offset, data) chunks of CHUNK_BYTES; a single empty chunk for an empty file."""
    with open(path, "rb") as f:
        offset = 0
        while True:
            data = f.read(CHUNK_BYTES)
            if not data and offset:
                return
            yield offset, data
            offset += len(data)
            if offset >= size:
                return


def result_files(job_id: str, job: dict) -> list[dict]:
    """The result files a ``status`` reply lists, each with size and sha256 and a safe, unique name."""
    files = list(job.get("result_files") or ())
    if not all(isinstance(f, dict) and {"name", "size", "sha256"} <= set(f) for f in files):
        raise ClientError("bad_message", f"status of {job_id} lists result files without size and sha256")
    names = [safe_name(f["name"]) for f in files]
    if len(set(names)) != len(names):
        raise ClientError("unsafe_path", f"job {job_id} lists a result file twice")
    return files


def download_file(request: Callable, job_id: str, entry: dict, dest: Path) -> None:
    """Fetch one result file chunk by chunk into dest (fsynced), verified against its size and sha256.

    ``request(type_, expect, **fields)`` sends one request and returns its reply (the client's
    ``_request``)."""
    name, size = entry["name"], int(entry["size"])
    digest, offset = hashlib.sha256(), 0
    with open(dest, "wb") as f:
        while True:
            reply = request("fetch", ("chunk",), job=job_id, name=name, offset=offset, length=CHUNK_BYTES)
            if reply.fields["name"] != name or reply.fields["offset"] != offset:
                raise ClientError("corrupt", f"{name}: server sent the chunk at {reply.fields['offset']}, asked for {offset}")
            data = reply.blobs[0]
            f.write(data)
            digest.update(data)
            offset += len(data)
            if offset > size:
                raise ClientError("corrupt", f"{name}: server sent more than the announced {size} bytes")
            if reply.fields["final"]:
                break
            if not data:
                raise ClientError("corrupt", f"{name}: empty non-final chunk at {offset}")
        f.flush()
        os.fsync(f.fileno())
    if offset != size or digest.hexdigest() != entry["sha256"]:
        raise ClientError("corrupt", f"{name}: downloaded {offset} bytes that do not match the announced "
                                     f"size {size} and sha256; fetch again")


def fetch_into(out_dir: Path, files: list[dict], download: Callable[[dict, Path], None]) -> Path:
    """Download every entry (``download(entry, dest)``) into a temporary sibling folder, then swap it
    into place (``shared.folders.staged_folder``); the temporary folder is removed on failure. An
    existing ``out_dir`` is replaced only if HeadRig wrote it (``replace_refusal``); the new folder
    carries ``FETCH_MARKER`` so that a later ``--force`` may replace it too."""
    out_dir = Path(out_dir)
    refusal = replace_refusal(out_dir)
    if refusal is not None:
        raise ClientError("exists", f"{out_dir}: {refusal}")
    with staged_folder(out_dir) as tmp:
        for entry in files:
            download(entry, tmp / entry["name"])
        marker = {"files": [entry["name"] for entry in files]}
        (tmp / FETCH_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
    return out_dir
