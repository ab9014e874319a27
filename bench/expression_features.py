"""MediaPipe Tasks outputs (478 landmarks + 52 blendshape scores) for every frame of the
expression benchmark's clips, cached beside each clip as ``clip_KK.features.npz``.

    python -m bench.expression_features bench/results/expressions/train [--mirror]

Frames run through ``backend.video.face_track.VideoFaceTracker`` with the Tasks graph, as the
video path does. Training stills (independent frames) are fed twice each, so the second call is
in the graph's tracking state, as in a clip. ``--mirror`` also runs every frame flipped left to
right (a second, mirrored sample for the predictor: its targets swap _L and _R).

npz arrays: ``points`` [N, 478, 3] pixels, ``scores`` [N, 52], ``found`` [N] bool, and with
``--mirror`` the same with a ``mirror_`` prefix (points in the flipped image's pixels).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from backend.landmarks import FaceLandmarker
from backend.landmarks.blendshapes import N_SCORES, TasksFaceLandmarker
from backend.landmarks.mediapipe_face import N_POINTS
from backend.video.face_track import VideoFaceTracker


def clip_features(video: Path, stills: bool, mirror: bool, landmarker: FaceLandmarker, tasks: TasksFaceLandmarker) -> dict:
    from bench.synthetic_video import read_video

    images, times = read_video(video)
    out = {}
    for prefix, flip in (("", False), ("mirror_", True)) if mirror else (("", False),):
        points = np.zeros((len(images), N_POINTS, 3), np.float32)
        scores = np.zeros((len(images), N_SCORES), np.float32)
        found = np.zeros(len(images), bool)
        tracker = VideoFaceTracker(landmarker, tasks=tasks)
        tracker.reset()
        clock = 0.0
        for i, rgb in enumerate(images):
            rgb = rgb[:, ::-1] if flip else rgb
            for _ in range(2 if stills else 1):
                clock += 0.04
                got = tracker.track(rgb, f"{video}#{i}", clock if stills else float(times[i]) + (1000.0 if flip else 0.0))
            if got is not None and got.scores is not None:
                points[i], scores[i], found[i] = got.points, got.scores, True
        out.update({prefix + "points": points, prefix + "scores": scores, prefix + "found": found})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.expression_features", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--mirror", action="store_true")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    landmarker = FaceLandmarker()
    with TasksFaceLandmarker() as tasks:
        for folder in args.folders:
            for truth in sorted(folder.glob("clip_[0-9][0-9].json")):
                target = truth.with_suffix(".features.npz")
                if target.is_file() and not args.force:
                    continue
                rec = json.loads(truth.read_text())
                feats = clip_features(folder / rec["video"], rec.get("kind") == "random", args.mirror, landmarker, tasks)
                np.savez_compressed(target, **feats)
                print(f"{truth}: face in {int(feats['found'].sum())}/{len(feats['found'])} frames")
    landmarker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
