"""Durable job store of ``headrig serve``: every job is a folder, its ``state.json`` the truth.

Layout under ``data_dir``::

    jobs/<job_id>/state.json      the JobRecord, replaced atomically (temp file, fsync, os.replace, fsync folder)
    jobs/<job_id>/inputs/<name>   uploaded files; ``<name>.part`` while a file is being received
    jobs/<job_id>/result/         the finished result folder, renamed into place whole by the worker
    journal.jsonl                 append-only audit trail, one line per state change (state.json wins)

One process (the server) owns a store; worker processes only write ``result/`` through an atomic
rename, so a record and its folder never disagree except after a crash, which ``recover`` settles.
Errors are ``StoreError`` (a ``ValueError``) with a stable ``code`` and a message that names the
job, the field and what was expected, so the server can pass them to clients unchanged.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import threading
import uuid
from pathlib import Path

from backend.service.job_checks import (IllegalTransition, StoreError, UnknownJob, UnsafePath, UploadError,  # noqa: F401  (re-exports)
    _check_inputs, _check_text, _check_update, check_file_name, describe_files, fsync_dir, sha256_file, trusted_result_files)
from backend.service.jobrecord import (INTERRUPTED, STATES, TERMINAL, TRANSITIONS, UPLOAD_INTERRUPTED,  # noqa: F401  (re-exports)
    JobRecord, utc_now)

log = logging.getLogger(__name__)

MAX_PARAMS_BYTES = 65536
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_UPDATABLE = ("state", "progress", "error", "result_files")


class JobStore:
    """Jobs on disk under ``data_dir`` (see the module docstring); one owning process, thread-safe."""

    def __init__(self, data_dir: Path, max_input_bytes: int = 1 << 30):
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.max_input_bytes = max_input_bytes
        self._lock = threading.RLock()
        self._jobs: dict[str, JobRecord] = {}
        self._keys: dict[tuple[str, str], str] = {}
        for folder in sorted(self.jobs_dir.iterdir()):
            if not _JOB_ID.fullmatch(folder.name):
                continue  # temp folders of an interrupted create; recover() removes them
            try:
                rec = JobRecord.from_dict(json.loads((folder / "state.json").read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                log.error("job folder %s skipped: unreadable state.json (%s)", folder, exc)
                continue
            self._remember(rec)

    # ---- records -------------------------------------------------------------------------------

    def create(self, kind: str, params: dict, client: str, inputs: list[dict], request_key: str | None = None) -> JobRecord:
        """A new job: "uploading" when it has inputs, else "queued". With ``request_key``, a repeat of
        the same request by the same client returns the existing job (a retry after a lost reply)."""
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise StoreError(f"kind must be a lowercase identifier of at most 32 characters, got {kind!r:.80}")
        if not isinstance(params, dict):
            raise StoreError(f"params must be an object, got {type(params).__name__}")
        try:
            size = len(json.dumps(params, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"params must be plain JSON ({exc})") from None
        if size > MAX_PARAMS_BYTES:
            raise StoreError(f"params take {size} bytes as JSON; at most {MAX_PARAMS_BYTES} allowed")
        _check_text(client, "client")
        _check_text(request_key, "request_key", optional=True)
        declared = _check_inputs(inputs)
        total = sum(i["size"] for i in declared)
        if total > self.max_input_bytes:
            raise StoreError(f"inputs total {total} bytes; at most {self.max_input_bytes} allowed", code="too_large")
        with self._lock:
            if request_key is not None and (client, request_key) in self._keys:
                old = self._jobs[self._keys[client, request_key]]
                same = old.kind == kind and old.params == params and \
                    [(i["name"], i["size"], i["sha256"]) for i in old.inputs] == [(i["name"], i["size"], i["sha256"]) for i in declared]
                if not same:
                    raise StoreError(f"request_key {request_key!r} was already used for job {old.job_id} with a different "
                                     "request; use a new key for a new job", code="request_key_reused")
                return self._view(old)
            now = utc_now()
            rec = JobRecord(uuid.uuid4().hex, kind, copy.deepcopy(params), client, request_key,
                            "uploading" if declared else "queued", now, now, declared)
            # Built in a temp folder and renamed, so a job folder always has a state.json.
            tmp = self.jobs_dir / f".tmp-{rec.job_id}"
            (tmp / "inputs").mkdir(parents=True)
            self._write_state(tmp, rec, durable=True)
            os.rename(tmp, self.jobs_dir / rec.job_id)
            fsync_dir(self.jobs_dir)
            self._remember(rec)
            self._journal(rec, "created")
            return self._view(rec)

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            rec = self._jobs.get(job_id) if isinstance(job_id, str) else None
            return self._view(rec) if rec else None

    def list(self, client: str | None = None) -> list[JobRecord]:
        """All jobs (of one client if given), oldest first."""
        with self._lock:
            recs = [r for r in self._jobs.values() if client is None or r.client == client]
            return [self._view(r) for r in sorted(recs, key=lambda r: (r.created, r.job_id))]

    def update(self, job_id: str, **changes) -> JobRecord:
        """Change state, progress, error or result_files. Terminal jobs never change; "queued" needs
        every input received; "failed" needs an error. Progress-only updates skip the fsyncs (a lost
        progress value is harmless) but are still replaced atomically."""
        unknown = sorted(set(changes) - set(_UPDATABLE))
        if unknown:
            raise StoreError(f"job {job_id}: cannot update {', '.join(unknown)}; updatable: {', '.join(_UPDATABLE)}")
        with self._lock:
            rec = self._require(job_id)
            if rec.state in TERMINAL:
                raise IllegalTransition(f"job {job_id} is {rec.state}, a final state; it cannot change")
            new = changes.get("state", rec.state)
            if new not in STATES:
                raise StoreError(f"job {job_id}: unknown state {new!r}; states: {', '.join(STATES)}")
            if new != rec.state and new not in TRANSITIONS[rec.state]:
                raise IllegalTransition(f"job {job_id}: {rec.state} -> {new} is not allowed "
                                        f"(from {rec.state}: {', '.join(sorted(TRANSITIONS[rec.state]))})")
            for key, value in changes.items():
                if key != "state":
                    _check_update(job_id, key, value)
            if new == "queued" and rec.state == "uploading":
                missing = [f"{i['name']} ({self._received(rec, i)} of {i['size']} bytes)"
                           for i in rec.inputs if i["received"] != i["size"]]
                if missing:
                    raise IllegalTransition(f"job {job_id}: inputs not complete: {', '.join(missing)}")
            if new == "failed" and not changes.get("error", rec.error):
                raise StoreError(f"job {job_id}: a failed job needs error={{code, message}}")
            for key, value in changes.items():
                setattr(rec, key, copy.deepcopy(value))
            rec.updated = utc_now()
            self._write_state(self._job_dir(job_id), rec, durable=set(changes) != {"progress"})
            if "state" in changes:
                self._journal(rec, "state")
            return self._view(rec)

    # ---- files ---------------------------------------------------------------------------------

    def input_path(self, job_id: str, name: str) -> Path:
        """The path of input ``name`` of an existing job; UnsafePath for anything but a plain file name."""
        check_file_name(name)
        with self._lock:
            self._require(job_id)
        folder = self._job_dir(job_id) / "inputs"
        path = folder / name
        if path.resolve().parent != folder.resolve():  # e.g. a symlink planted in inputs/
            raise UnsafePath(f"input {name!r} of job {job_id} resolves outside the job's inputs folder")
        return path

    def write_input_chunk(self, job_id: str, name: str, offset: int, data: bytes) -> int:
        """Append ``data`` at ``offset`` (must equal the bytes received so far) to ``<name>.part``;
        returns the bytes received. Not fsynced: an interrupted upload is failed by recover() anyway."""
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise UploadError(f"offset must be a non-negative integer, got {offset!r:.40}", code="bad_offset")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UploadError(f"data must be bytes, got {type(data).__name__}")
        with self._lock:
            rec, decl, part = self._upload_target(job_id, name)
            have = part.stat().st_size if part.exists() else 0
            if offset != have:
                raise UploadError(f"job {job_id}, input {name!r}: expected offset {have}, got {offset}; "
                                  f"resume from {have}", code="bad_offset")
            if have + len(data) > decl["size"]:
                raise UploadError(f"job {job_id}, input {name!r}: {have + len(data)} bytes would exceed the declared "
                                  f"size {decl['size']}", code="too_much_data")
            with open(part, "ab") as fh:
                fh.write(data)
            return have + len(data)

    def input_part(self, job_id: str, name: str) -> Path:
        """The partial file of an input being uploaded, for ``seal_part`` on another thread."""
        with self._lock:
            return self._upload_target(job_id, name)[2]

    @staticmethod
    def seal_part(part: Path) -> str:
        """sha256 of a received file, after syncing it to disk: the slow half of ``finish_input``
        (seconds for 2 GiB), which needs no lock and so can run off the server's socket loop."""
        digest = sha256_file(part)
        with open(part, "rb") as fh:
            os.fsync(fh.fileno())
        return digest

    def finish_input(self, job_id: str, name: str, digest: str | None = None) -> JobRecord:
        """Check the received size and sha256 against the declaration and move the file into place;
        ``digest`` is ``seal_part``'s (else it is sealed here). A wrong hash discards the partial file
        (upload it again from 0); a short file is kept."""
        with self._lock:
            rec, decl, part = self._upload_target(job_id, name)
            if not part.exists() and decl["size"] == 0:
                part.touch()
            have = part.stat().st_size if part.exists() else 0
            if have != decl["size"]:
                raise UploadError(f"job {job_id}, input {name!r}: received {have} of {decl['size']} bytes; "
                                  f"send the rest from offset {have}", code="incomplete")
            digest = digest or self.seal_part(part)
            if digest != decl["sha256"]:
                part.unlink()
                raise UploadError(f"job {job_id}, input {name!r}: sha256 is {digest}, declared {decl['sha256']}; "
                                  "the data was damaged, upload the file again from offset 0", code="hash_mismatch")
            os.replace(part, part.with_name(name))
            fsync_dir(part.parent)
            decl["received"] = decl["size"]
            rec.updated = utc_now()
            self._write_state(self._job_dir(job_id), rec, durable=True)
            return self._view(rec)

    def remove(self, job_id: str) -> None:
        """Delete a finished job (retention): its folder goes first, then the record."""
        with self._lock:
            rec = self._require(job_id)
            if rec.state not in TERMINAL:
                raise IllegalTransition(f"job {job_id} is {rec.state}; only finished jobs are removed")
            trash = self.jobs_dir / f".tmp-removed-{job_id}"  # renamed first: never half a job folder
            os.rename(self._job_dir(job_id), trash)
            fsync_dir(self.jobs_dir)
            shutil.rmtree(trash, ignore_errors=True)
            del self._jobs[job_id]
            self._keys.pop((rec.client, rec.request_key), None)
            self._journal(rec, "removed")

    def bytes_used(self) -> int:
        """Declared inputs plus recorded results of every job (what the disk cap counts)."""
        with self._lock:
            return sum(sum(i["size"] for i in r.inputs) + sum(f["size"] for f in r.result_files) for r in self._jobs.values())

    def result_dir(self, job_id: str) -> Path:
        with self._lock:
            self._require(job_id)
        return self._job_dir(job_id) / "result"

    # ---- restart -------------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Settle every job after a (re)start; returns the ids of "queued" jobs, oldest first, for the
        server to submit again (their inputs are complete and verified, and none of them ever ran).

        * temp files go: ``jobs/.tmp-*``, ``state.json.tmp``, ``inputs/*.part``, ``.result.tmp-*``/``.result.old-*``;
        * "uploading" -> failed "upload_interrupted" (partial uploads are not resumed across restarts);
        * "running" whose result folder is complete and valid -> done (the worker finished, the server
          died before recording it: a finished result is never lost); otherwise -> failed "interrupted"
          (not re-run: a job that was running when the server died may be what killed it);
        * "queued" stays queued if its inputs still match their sha256, else failed "inputs_missing";
        * "done" whose result no longer validates -> failed "result_lost" (the only change to a final
          state, made here because the record would otherwise promise files that are not there).
        """
        with self._lock:
            for tmp in self.jobs_dir.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)
            requeue = []
            for rec in sorted(self._jobs.values(), key=lambda r: (r.created, r.job_id)):
                folder = self._job_dir(rec.job_id)
                for junk in [*folder.glob("state.json.tmp*"), *(folder / "inputs").glob("*.part")]:
                    junk.unlink(missing_ok=True)
                for junk in [*folder.glob(".result.tmp-*"), *folder.glob(".result.old-*")]:
                    shutil.rmtree(junk, ignore_errors=True)
                result = folder / "result"
                files = trusted_result_files(rec.kind, result)
                if rec.state == "done" and (files is None or (rec.result_files and files != rec.result_files)):
                    self._force(rec, "failed", "result_lost", "the finished result was damaged or removed on the "
                                "server; submit the job again")
                elif rec.state == "running" and files is not None:
                    self._force(rec, "done", result_files=files)
                elif rec.state == "running":
                    self._discard_result(result)
                    self._force(rec, "failed", "interrupted", INTERRUPTED)
                elif rec.state == "uploading":
                    self._force(rec, "failed", "upload_interrupted", UPLOAD_INTERRUPTED)
                elif rec.state == "queued":
                    self._discard_result(result)
                    if all(self._input_ok(rec, i) for i in rec.inputs):
                        requeue.append(rec.job_id)
                    else:
                        self._force(rec, "failed", "inputs_missing", "the uploaded files were damaged or removed on "
                                    "the server; submit the job again")
            return requeue

    # ---- internals -----------------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise UnsafePath(f"job id {job_id!r:.80} is not 32 lowercase hex digits")
        return self.jobs_dir / job_id

    def _require(self, job_id: str) -> JobRecord:
        self._job_dir(job_id)
        rec = self._jobs.get(job_id)
        if rec is None:
            raise UnknownJob(f"no job {job_id}")
        return rec

    def _upload_target(self, job_id: str, name: str) -> tuple[JobRecord, dict, Path]:
        path = self.input_path(job_id, name)
        rec = self._jobs[job_id]
        if rec.state != "uploading":
            raise UploadError(f"job {job_id} is {rec.state}; uploads are accepted only while uploading", code="not_uploading")
        decl = next((i for i in rec.inputs if i["name"] == name), None)
        if decl is None:
            raise UploadError(f"job {job_id} declared no input {name!r}; declared: "
                              f"{', '.join(i['name'] for i in rec.inputs)}", code="not_declared")
        if decl["received"] == decl["size"] and path.exists():
            raise UploadError(f"job {job_id}, input {name!r} is already complete", code="already_complete")
        return rec, decl, path.with_name(name + ".part")

    def _received(self, rec: JobRecord, decl: dict) -> int:
        if decl["received"] == decl["size"]:
            return decl["received"]
        part = self._job_dir(rec.job_id) / "inputs" / (decl["name"] + ".part")
        try:
            return part.stat().st_size
        except OSError:
            return 0

    def _input_ok(self, rec: JobRecord, decl: dict) -> bool:
        path = self._job_dir(rec.job_id) / "inputs" / decl["name"]
        try:
            return path.stat().st_size == decl["size"] and sha256_file(path) == decl["sha256"]
        except OSError:
            return False

    def _view(self, rec: JobRecord) -> JobRecord:
        """A copy for callers (they cannot alter the store by mutating it), with live upload counts."""
        out = copy.deepcopy(rec)
        if out.state == "uploading":
            for decl in out.inputs:
                decl["received"] = self._received(rec, decl)
        return out

    def _remember(self, rec: JobRecord) -> None:
        self._jobs[rec.job_id] = rec
        if rec.request_key is not None:
            self._keys[rec.client, rec.request_key] = rec.job_id

    def _force(self, rec: JobRecord, state: str, code: str | None = None, message: str | None = None,
               result_files: list[dict] | None = None) -> None:
        """recover()'s transitions, which bypass update()'s rules on purpose (see recover)."""
        log.warning("recover: job %s %s -> %s%s", rec.job_id, rec.state, state, f" ({code})" if code else "")
        rec.state, rec.updated = state, utc_now()
        if code:
            rec.error = {"code": code, "message": message}
        if result_files is not None:
            rec.result_files = result_files
        self._write_state(self._job_dir(rec.job_id), rec, durable=True)
        self._journal(rec, "recovered")

    @staticmethod
    def _discard_result(result: Path) -> None:
        if result.exists():  # an untrusted leftover: the job will run again or has failed
            shutil.rmtree(result, ignore_errors=True)

    @staticmethod
    def _write_state(folder: Path, rec: JobRecord, durable: bool) -> None:
        tmp, final = folder / "state.json.tmp", folder / "state.json"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(rec.to_dict(), fh, indent=1, allow_nan=False)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        if durable:
            fsync_dir(folder)

    def _journal(self, rec: JobRecord, event: str) -> None:
        line = {"time": rec.updated, "event": event, "job_id": rec.job_id, "kind": rec.kind, "client": rec.client,
                "state": rec.state, "error": rec.error}
        with open(self.data_dir / "journal.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
