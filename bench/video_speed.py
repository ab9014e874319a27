"""Video tracking speed: decode + landmarks + identity + per-frame solve for every shared clip, as a
multiple of real time (clip duration / wall time; > 1 is faster than real time).

    python -m bench.video_speed [--clips DIR] [--out bench/results/video_speed.json] [--method fused|predictor|solve] [--workers N]

One warm ``Reconstructor`` (as in a service worker) tracks every clip in turn; stage times come
from the tracker's progress calls. Ratios, not seconds, are reported for this CPU (project rule).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from backend.reconstruct import ReconstructOptions, Reconstructor
from backend.video.predictor import EXPRESSION_METHODS
from backend.video.track import ExpressionOptions, VideoOptions, track_video

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO.parent / "shared" / "media" / "video"


def time_clip(rec: Reconstructor, path: Path, options: VideoOptions) -> dict:
    marks: list[tuple[str, float]] = []

    def on_progress(stage: str, fraction: float) -> None:
        if not marks or marks[-1][0] != stage:
            marks.append((stage, time.perf_counter()))

    start = time.perf_counter()
    track = track_video(rec, path, options, on_progress)
    end = time.perf_counter()
    stamps = [start] + [t for _, t in marks[1:]] + [end]
    stages = {name: b - a for (name, _), a, b in zip(marks, stamps, stamps[1:])}
    duration = float(track.times[-1] + 1.0 / track.info.fps)
    wall = end - start
    return {"clip": path.name, "frames": track.n_frames, "fps": track.info.fps, "size": [track.info.width, track.info.height],
            "duration_s": duration, "x_real_time": duration / wall,
            "stage_share": {k: v / wall for k, v in stages.items()},
            "frames_without_face": len(track.missing),
            "landmark_rmse_px_median": float(np.median(track.landmark_rmse_px[track.landmark_rmse_px > 0])),
            "landmark_rmse_iod_median": float(np.median([
                r / max(np.linalg.norm(p[468, :2] - p[473, :2]), 1.0)
                for r, p in zip(track.landmark_rmse_px, track.landmarks) if p is not None]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=Path, default=CLIPS)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "video_speed.json")
    parser.add_argument("--method", default="fused", choices=EXPRESSION_METHODS,
                        help="expression method (backend.video.track.ExpressionOptions)")
    parser.add_argument("--workers", type=int, default=0, help="landmark processes (0: as many as the cores allow, up to 2)")
    parser.add_argument("--photometric-steps", type=int, default=None, help="override the identity's photometric stage (0: off)")
    parser.add_argument("--only", nargs="*", default=None, help="clip file names to time (default: all)")
    args = parser.parse_args(argv)
    options = VideoOptions(progress=False, workers=args.workers, expressions=ExpressionOptions(method=args.method))
    ropts = ReconstructOptions(progress=False)
    if args.photometric_steps is not None:
        ropts = replace(ropts, photometric=replace(ropts.photometric, steps=args.photometric_steps))
    rec = Reconstructor(ropts)
    clips = [p for p in sorted(args.clips.glob("*.mp4")) if not args.only or p.name in args.only]
    track_video(rec, clips[0], options)  # warm-up
    rows = [time_clip(rec, p, options) for p in clips]
    total_media = sum(r["duration_s"] for r in rows)
    total_wall = sum(r["duration_s"] / r["x_real_time"] for r in rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"clips": rows, "overall_x_real_time": total_media / total_wall}, indent=1) + "\n")
    print(f"method {args.method}, workers {args.workers or 'auto'}, photometric steps "
          f"{rec.options.photometric.steps}")
    print("| clip | frames | size | × real time | landmarks | identity | photometric | tracking | landmark RMSE (px / % IOD) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["stage_share"]
        print(f"| {r['clip']} | {r['frames']} @ {r['fps']:g} fps | {r['size'][0]}×{r['size'][1]} | {r['x_real_time']:.2f}× | "
              f"{100 * s.get('landmarks', 0):.0f}% | {100 * s.get('identity', 0):.0f}% | {100 * s.get('photometric', 0):.0f}% | "
              f"{100 * s.get('tracking', 0):.0f}% | "
              f"{r['landmark_rmse_px_median']:.2f} / {100 * r['landmark_rmse_iod_median']:.1f}% |")
    print(f"\nAll clips: {total_media / total_wall:.2f}× real time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
