"""The job kinds a worker runs: probe, reconstruct (photos or a video), retarget, turntable.

Each takes (runner, job id, params, input paths, result folder), writes the result folder
atomically and returns its file list; bad params or inputs raise ``JobFailed`` (a stable code and
one line), bad media ``InputError``. ``JOBS`` is the one list of kinds: the server accepts and
announces ``KINDS``, the engines run ``JOBS[kind]``; a new kind also needs a result check in
``job_checks.trusted_result_files`` (an unchecked result is never trusted after a restart).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from backend.service.jobstore import describe_files, sha256_file
from shared.folders import staged_folder
from shared.media import is_video_path
from shared.protocol import AVATAR_PRESETS

MAX_MESSAGE = 1000      # characters of a failure message
MAX_PROBE_SECONDS = 3600


class JobFailed(Exception):
    """A job's own refusal (bad params): sent to the client as (code, message)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def run_probe(runner, job_id: str, params: dict, inputs: list[Path], result_dir: Path) -> list[dict]:
    """Health check: hash every input, wait ``params["seconds"]`` (reporting progress), write probe.json."""
    unknown = sorted(set(params) - {"seconds"})
    if unknown:
        raise JobFailed("bad_params", f"probe: unknown params {', '.join(unknown)}; it takes only 'seconds'")
    seconds = params.get("seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_PROBE_SECONDS:
        raise JobFailed("bad_params", f"probe: params.seconds must be a number from 0 to {MAX_PROBE_SECONDS}, got {seconds!r:.40}")
    files = []
    for i, path in enumerate(inputs):
        runner.progress(job_id, "hash", i / len(inputs), path.name)
        files.append({"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)})
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        runner.progress(job_id, "wait", 1.0 - left / seconds, f"{left:.1f} s left")
        time.sleep(min(0.25, left))
    report = {"job_id": job_id, "inputs": files, "seconds": seconds, "worker_pid": os.getpid(), "node": runner.node,
              "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
    write_result_folder(result_dir, {"probe.json": (json.dumps(report, indent=1) + "\n").encode()})
    runner.progress(job_id, "finished", 1.0, "")
    return describe_files(result_dir)


def run_reconstruct(runner, job_id: str, params: dict, inputs: list[Path], result_dir: Path) -> list[dict]:
    """Photos, or one video, -> head bundle in ``result_dir`` (written atomically by ``write_bundle``).

    params: {"avatar": a name of ``AVATAR_PRESETS``} (video only) also fits the Gaussian avatar."""
    unknown = sorted(set(params) - {"avatar"})
    if unknown:
        raise JobFailed("bad_params", f"reconstruct: unknown params {', '.join(unknown)}; it takes only 'avatar'")
    avatar = params.get("avatar")
    if avatar is not None and avatar not in AVATAR_PRESETS:
        raise JobFailed("bad_params", f"reconstruct: params.avatar must be one of {', '.join(AVATAR_PRESETS)}, "
                                      f"got {avatar!r:.40}")
    rec = runner.reconstructor(job_id)
    videos = [p for p in inputs if is_video_path(p)]
    if videos:
        if len(inputs) != 1:
            raise JobFailed("mixed_inputs", f"reconstruct: a video must be the only input; got {len(inputs)} files")
        from backend.video.pipeline import VideoPipeline

        runner.progress(job_id, "started", 0.0, f"video {videos[0].name}")
        VideoPipeline(rec).reconstruct(videos[0], result_dir, job_id=job_id, avatar=avatar,
                                       on_progress=lambda stage, f: runner.progress(job_id, stage, f, ""))
    else:
        if avatar:
            raise JobFailed("bad_params", "reconstruct: params.avatar needs a video input")
        runner.progress(job_id, "started", 0.0, f"{len(inputs)} photo(s)")
        rec.reconstruct(inputs, result_dir, job_id=job_id,
                        on_stage=lambda name, done, total: runner.progress(job_id, name, done / max(total, 1), ""))
    runner.progress(job_id, "finished", 1.0, "")
    return describe_files(result_dir)


def run_retarget(runner, job_id: str, params: dict, inputs: list[Path], result_dir: Path) -> list[dict]:
    """One driving video -> ``animation.json`` + ``livelink.csv`` (params: a RetargetConfig as a dict)."""
    from backend.retarget import RetargetConfig

    if len(inputs) != 1 or not is_video_path(inputs[0]):
        raise JobFailed("bad_inputs", f"retarget: takes exactly one video; got {', '.join(p.name for p in inputs) or 'none'}")
    try:
        config = RetargetConfig.from_dict(params)
    except ValueError as exc:
        raise JobFailed("bad_params", f"retarget: {exc}"[:MAX_MESSAGE]) from None
    rec = runner.reconstructor(job_id)
    from backend.video.pipeline import VideoPipeline

    runner.progress(job_id, "started", 0.0, f"video {inputs[0].name}")
    VideoPipeline(rec).retarget(inputs[0], result_dir, config,
                                on_progress=lambda stage, f: runner.progress(job_id, stage, f, ""))
    runner.progress(job_id, "finished", 1.0, "")
    return describe_files(result_dir)


def run_turntable(runner, job_id: str, params: dict, inputs: list[Path], result_dir: Path) -> list[dict]:
    """head.json + gaussians.ply (+ animation.json) -> turntable.mp4. params: frames, size, fps."""
    from backend.avatar.turntable import TurntableOptions, render_turntable

    names = {p.name for p in inputs}
    if not {"head.json", "gaussians.ply"} <= names or not names <= {"head.json", "gaussians.ply", "animation.json"}:
        raise JobFailed("bad_inputs", "turntable: send head.json and gaussians.ply (and optionally animation.json) "
                                      f"of one bundle; got {', '.join(sorted(names))}")
    limits = {"frames": (1, 1200), "size": (16, 2048), "fps": (1, 120)}
    unknown = sorted(set(params) - set(limits))
    if unknown:
        raise JobFailed("bad_params", f"turntable: unknown params {', '.join(unknown)}; it takes {', '.join(limits)}")
    for key, (low, high) in limits.items():
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high):
            raise JobFailed("bad_params", f"turntable: params.{key} must be a number from {low} to {high}, got {value!r:.40}")
    opts = TurntableOptions(**{k: (int(v) if k != "fps" else float(v)) for k, v in params.items()})
    folder = inputs[0].parent
    animation = folder / "animation.json" if "animation.json" in names else None
    if result_dir.exists():  # a result is written once
        raise FileExistsError(f"result folder exists: {result_dir}")
    with staged_folder(result_dir) as tmp:
        render_turntable(folder, tmp / "turntable.mp4", opts, animation=animation, asset=runner.reconstructor(job_id).asset,
                         on_frame=lambda done, total: runner.progress(job_id, "render", done / total, ""))
    runner.progress(job_id, "finished", 1.0, "")
    return describe_files(result_dir)


JOBS = {"probe": run_probe, "reconstruct": run_reconstruct, "retarget": run_retarget, "turntable": run_turntable}
KINDS = tuple(JOBS)


def write_result_folder(result_dir: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (relative name -> bytes) into a hidden sibling temp folder, fsync, and rename it
    to ``result_dir``. Probe results are written so, and the Ray engine writes every job's result so."""
    if result_dir.exists():  # os.rename would silently replace an empty folder
        raise FileExistsError(f"result folder exists: {result_dir}")
    with staged_folder(result_dir) as tmp:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)  # bundles may nest files
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
