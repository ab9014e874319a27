"""Landmarks (and blendshape scores) for every frame of a clip, on one or two cores.

MediaPipe runs one frame at a time, so a long clip's landmark pass uses one core while the other
idles. With ``workers=2`` a second process takes the second half of the frames: it decodes the
clip from the start (decoding is needed to reach a frame; only its own frames are converted to
RGB) and follows the face from its first frame on, while this process does the first half. Short
clips stay in one process: starting the second one costs about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from backend.video.decode import DecodeReport, VideoInfo, read_frames

MIN_SPLIT_FRAMES = 150  # below this the second process's start-up eats the gain


@dataclass
class FramePass:
    """Per decoded frame (in order): time (s), points [478, 3] or None, sharpness, scores [52] or None."""

    times: list[float] = field(default_factory=list)
    points: list[np.ndarray | None] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    scores: list[np.ndarray | None] = field(default_factory=list)

    def extend(self, other: FramePass) -> None:
        self.times += other.times
        self.points += other.points
        self.sharpness += other.sharpness
        self.scores += other.scores


def track_range(info: VideoInfo, landmarker, tasks, report: DecodeReport, first: int = 0, stop: int | None = None,
                on_frame: Callable[[int], None] | None = None) -> FramePass:
    """Landmarks of frames ``first`` .. ``stop`` - 1 (``stop`` None: to the end). ``landmarker`` is a
    ``backend.landmarks.FaceLandmarker``; ``tasks`` a ``TasksFaceLandmarker`` or None (legacy mesh)."""
    from backend.video.face_track import VideoFaceTracker

    out = FramePass()
    # A range, not a set: ``in`` is O(1) and nothing is built for the frames to the end.
    wanted = None if first == 0 and stop is None else range(first, stop if stop is not None else 1 << 62)
    with VideoFaceTracker(landmarker, tasks=tasks) as tracker:
        for frame in read_frames(info, report, wanted):
            if frame.index < first:
                continue
            if stop is not None and frame.index >= stop:
                break
            found = tracker.track(frame.rgb, f"{info.path} (frame {frame.index}, {frame.time:.2f} s)", frame.time)
            out.times.append(frame.time)
            out.points.append(None if found is None else found.points)
            out.sharpness.append(0.0 if found is None else found.sharpness)
            out.scores.append(None if found is None else found.scores)
            if on_frame is not None:
                on_frame(frame.index)
    return out


def _run_worker(argv: list[str] | None = None) -> int:
    """The second process (``python -m backend.video.landmark_pass INFO_JSON FIRST OUT_NPZ [TASK]``):
    its own detectors, frames ``FIRST`` to the end, written to ``OUT_NPZ`` (no pickle)."""
    import json
    import sys

    from backend.landmarks import FaceLandmarker
    from backend.landmarks.blendshapes import TasksFaceLandmarker

    info_json, first, out, *task = (argv if argv is not None else sys.argv[1:])
    info = VideoInfo(**json.loads(info_json))
    report = DecodeReport()
    landmarker = FaceLandmarker()
    tasks = TasksFaceLandmarker(task[0]) if task else None
    try:
        got = track_range(info, landmarker, tasks, report, first=int(first))
    finally:
        landmarker.close()
        if tasks is not None:
            tasks.close()
    n = len(got.times)
    found = np.array([p is not None for p in got.points], bool)
    points = np.zeros((n, 478, 3), np.float32)
    scores = np.zeros((n, 52), np.float32)
    for i in np.flatnonzero(found):
        points[i] = got.points[i]
        if got.scores[i] is not None:
            scores[i] = got.scores[i]
    has_scores = np.array([s is not None for s in got.scores], bool)
    np.savez(out, times=np.asarray(got.times, np.float64), points=points, scores=scores, found=found, has_scores=has_scores,
             sharpness=np.asarray(got.sharpness, np.float64),
             report=np.frombuffer(json.dumps(vars(report)).encode(), np.uint8))
    return 0


def _read_worker(path) -> tuple[FramePass, dict]:
    import json

    with np.load(path, allow_pickle=False) as z:
        found, has = z["found"], z["has_scores"]
        out = FramePass(times=z["times"].tolist(), sharpness=z["sharpness"].tolist(),
                        points=[z["points"][i] if found[i] else None for i in range(len(found))],
                        scores=[z["scores"][i].astype(np.float64) if has[i] else None for i in range(len(found))])
        return out, json.loads(bytes(z["report"]).decode())


def landmark_pass(info: VideoInfo, landmarker, tasks, report: DecodeReport, workers: int = 1,
                  on_frame: Callable[[int], None] | None = None, min_split: int = MIN_SPLIT_FRAMES) -> FramePass:
    """Every frame's landmarks; ``report`` gets the decoding's notes (the whole file's)."""
    import dataclasses
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from backend.errors import InputError

    if workers < 2 or info.frame_estimate < min_split:
        return track_range(info, landmarker, tasks, report, on_frame=on_frame)
    # The main process also loads the models and fits while waiting: give it a little less than half.
    split = int(info.frame_estimate * 0.48)
    with tempfile.TemporaryDirectory(prefix="headrig-landmarks-") as tmp:
        out = Path(tmp) / "second_half.npz"
        # A fresh interpreter, not a fork (MediaPipe's graphs do not survive one) nor
        # multiprocessing's spawn (it re-imports the caller's main module).
        args = [sys.executable, "-m", "backend.video.landmark_pass", json.dumps(dataclasses.asdict(info)), str(split), str(out)]
        # The child imports this package from where this process did, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        worker = subprocess.Popen(args + ([] if tasks is None else [str(tasks.path)]), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=env)
        try:
            own = track_range(info, landmarker, tasks, DecodeReport(), stop=split, on_frame=on_frame)
            _, err = worker.communicate()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if worker.returncode != 0 or not out.is_file():
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise InputError(info.path, f"the second landmark process failed ({tail[0]})",
                             "try again; if it persists, report it with the clip", code="worker_failed")
        rest, rest_report = _read_worker(out)
    own.extend(rest)
    # The worker decoded the whole file: its report is the file's.
    for name, value in rest_report.items():
        setattr(report, name, value)
    return own


if __name__ == "__main__":
    raise SystemExit(_run_worker())
