"""Accuracy of video tracking against the synthetic clips of ``bench.synthetic_video``.

    python -m bench.synthetic_video --out bench/results/synthetic_video --clips 4 --frames 100 --seed 500
    python -m bench.video_accuracy --data bench/results/synthetic_video [--predictor pipeline|oracle|noisy] [--no-photo]

Each clip is tracked as a whole (``backend.video.pipeline.VideoPipeline.track``). Track frames are
matched to ground-truth frames by time (nearest frame within half a frame period); frames the
tracker lists in ``missing`` are left out of every metric and counted. Metrics per clip:

* ``expr_mae``: mean absolute weight error over all 53 weights and all frames; ``expr_mae_active``
  over the keys whose true weight exceeds 0.1 somewhere in the clip; ``zeros_mae`` (``_active``):
  the same for an all-zero prediction, to show what an MAE means;
* jitter on the static segment (neutral face, head still): ``jitter_weight`` = mean absolute
  frame-to-frame change of the 53 weights, ``jitter_rot_deg`` = mean angle between consecutive
  head rotations, ``jitter_trans_mm``; all 0 for a perfect tracker;
* ``rot_err_deg`` (mean geodesic angle to the true rotation), ``trans_err_cm``, ``focal_err_pct``,
  ``gaze_err_deg`` (mean angle between true and tracked gaze directions, both eyes, when the track
  has ``gaze`` [N, 2, 2]);
* identity: face-region vertex error in mm of the neutral identity mesh after rigid alignment
  (``bench.accuracy.Evaluator.mesh_metrics``) for the video identity (``identity_face_median_mm``
  ...), for a single-photo fit of the clip's most frontal neutral frame (``photo_...``) and for the
  mean face (``meanface_...``).

Overall values are the median and mean over clips (``bench.accuracy_report.summarize``). Writes the
JSON report (default ``bench/results/video_accuracy.json``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from bench.accuracy import Evaluator, expression_errors, focal_error_pct
from bench.accuracy_report import _json_default, summarize
from bench.video_metrics import (  # noqa: F401 -- re-exported: the metric half of this benchmark
    ACTIVE_THRESHOLD,
    ClipTruth,
    FakeTrack,
    fake_track,
    load_clips,
    match_frames,
    mean_abs_step,
    rotation_errors_deg,
    score_track,
    static_runs,
    weight_errors,
)

DEFAULT_JSON = Path("bench/results/video_accuracy.json")


def photo_fit_row(truth: ClipTruth, reconstructor, evaluator: Evaluator) -> dict:
    """Identity error (and pose, expression, focal) of the single-photo fit of the most frontal
    neutral frame, decoded from the clip as the tracker sees it."""
    from backend.fitting.landmark_fit import Observation
    from bench.synthetic_video import read_video

    frame = truth.frontal_neutral_frame()
    (rgb,), _ = read_video(truth.video, [frame])
    marks = reconstructor.landmarker.detect(rgb, f"{truth.video}#{frame}")
    fit = reconstructor.fitter.fit([Observation(marks.points, rgb.shape[1], rgb.shape[0])])
    p = fit.photos[0]
    asset = evaluator.asset
    row = {"photo_frame": frame, "photo_expr_mae": expression_errors(p.expression, truth.expressions[frame])["mae"],
           "photo_rot_err_deg": float(rotation_errors_deg(p.rotation, truth.rotations[frame])[0]),
           "photo_focal_err_pct": focal_error_pct(float(p.focal), truth.focal)}
    row.update(evaluator.mesh_metrics(asset.vertices(fit.identity), asset.vertices(truth.identity), prefix="photo_"))
    return row


# ----------------------------------------------------------------------------- trackers


def pipeline_tracker(options: dict, stack: contextlib.ExitStack, reconstructor):
    """The tracker under test: one ``VideoPipeline`` for all clips. It either borrows the models of
    a ``Reconstructor`` (``VideoPipeline(rec, options)``, shared with the photo fit) or builds its own
    (``VideoPipeline(options)``, a context manager)."""
    import inspect

    from backend.video.pipeline import VideoOptions, VideoPipeline
    from bench.accuracy_predictors import build_options

    opts = build_options(VideoOptions, {"progress": False, **options})
    first = next(iter(inspect.signature(VideoPipeline).parameters), "options")
    vp = VideoPipeline(opts) if first in ("options", "opts") else VideoPipeline(reconstructor(), opts)
    if hasattr(vp, "__enter__"):
        vp = stack.enter_context(vp)
    return lambda truth: vp.track(truth.video)


def oracle_tracker(options: dict, stack: contextlib.ExitStack, reconstructor):
    """The ground truth itself: every error and jitter must come out 0 (a check of the metrics)."""
    return lambda truth: fake_track(truth)


def noisy_tracker(options: dict, stack: contextlib.ExitStack, reconstructor):
    """Ground truth plus noise (weights sigma 0.05, rotation 1 deg, identity sigma 0.3 by default)."""
    sigma = {"expression_sigma": 0.05, "rotation_sigma_deg": 1.0, "identity_sigma": 0.3, **options}
    return lambda truth: fake_track(truth, np.random.default_rng(int(truth.name[-2:])), **sigma)


TRACKERS = {"pipeline": pipeline_tracker, "oracle": oracle_tracker, "noisy": noisy_tracker}


# ----------------------------------------------------------------------------- evaluation and report


def evaluate(data: Path, tracker: str, asset, options: dict | None = None, photo: bool = True, limit: int | None = None,
             log=print) -> dict:
    clips = load_clips(data, asset.expression_names)[:limit]
    if not clips:
        raise SystemExit(f"{data}: no clips (clip_KK.json); render them with python -m bench.synthetic_video --out {data}")
    evaluator, rows = Evaluator(asset), []
    with contextlib.ExitStack() as stack:
        shared: list = []

        def reconstructor():  # built once, on first use: it loads MediaPipe and the fitter
            if not shared:
                from backend.reconstruct import ReconstructOptions, Reconstructor

                shared.append(stack.enter_context(Reconstructor(ReconstructOptions(progress=False))))
            return shared[0]

        track_fn = TRACKERS[tracker](options or {}, stack, reconstructor)
        for truth in clips:
            row = {"clip": truth.name, "ok": True}
            try:
                t0 = time.perf_counter()
                track = track_fn(truth)
                row["seconds"] = time.perf_counter() - t0
                row.update(score_track(truth, track, evaluator))
                row["track_fps"] = row["track_frames"] / max(row["seconds"], 1e-9)
            except Exception as exc:  # noqa: BLE001 -- a crash on one clip is a counted failure
                row.update({"ok": False, "failure": type(exc).__name__, "message": str(exc),
                            "traceback": traceback.format_exc(limit=6)})
            if photo:
                try:
                    row.update(photo_fit_row(truth, reconstructor(), evaluator))
                except Exception as exc:  # noqa: BLE001 -- e.g. no face: reported, not averaged
                    row.update({"photo_failure": type(exc).__name__, "photo_message": str(exc)})
            rows.append(row)
            log(_row_line(row))
    ok = [r for r in rows if r["ok"]]
    keys = {k: {"mae": float(np.mean([r["key_mae"][k] for r in ok])), "bias": float(np.mean([r["key_bias"][k] for r in ok]))}
            for k in (ok[0]["key_mae"] if ok else {})}
    return {"rows": rows, "summary": summarize(rows), "keys": dict(sorted(keys.items(), key=lambda kv: -kv[1]["mae"]))}


def _row_line(row: dict) -> str:
    if not row["ok"]:
        return f"{row['clip']}: FAILED {row['failure']}: {row['message']}"
    photo = f"  photo {row['photo_face_median_mm']:.2f} mm" if "photo_face_median_mm" in row else ""
    return (f"{row['clip']}: expr MAE {row['expr_mae']:.3f} (zeros {row['zeros_mae']:.3f})  jitter {row.get('jitter_weight', float('nan')):.4f}"
            f"  rot {row['rot_err_deg']:.2f} deg  identity {row['identity_face_median_mm']:.2f} mm{photo}  {row['seconds']:.1f} s")


COLUMNS = [  # (key, label, digits)
    ("expr_mae", "expr MAE", 3), ("expr_mae_active", "MAE active", 3), ("zeros_mae", "zeros MAE", 3),
    ("zeros_mae_active", "zeros MAE active", 3), ("jitter_weight", "jitter w", 4), ("jitter_rot_deg", "jitter rot deg", 3),
    ("rot_err_deg", "rot err deg", 2), ("gaze_err_deg", "gaze err deg", 1), ("focal_err_pct", "focal err %", 1), ("identity_face_median_mm", "id video mm", 2),
    ("photo_face_median_mm", "id photo mm", 2), ("meanface_face_median_mm", "id mean face mm", 2), ("track_fps", "track fps", 1),
]


def markdown(report: dict) -> str:
    """The per-clip table and the mean over clips (identity columns: face-region median vertex error)."""
    header = ["clip", "frames (missing)"] + [c[1] for c in COLUMNS]
    lines = [f"Video tracking on `{report['data']}` - tracker `{report['tracker']}`", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    for r in report["rows"]:
        if not r["ok"]:
            lines.append(f"| {r['clip']} | FAILED: {r['failure']} |" + " |" * (len(header) - 2))
            continue
        lines.append(f"| {r['clip']} | {r['frames']} ({r['missing']}) | " + " | ".join(cell(r.get(k), d) for k, _, d in COLUMNS) + " |")
    s = report["summary"]
    lines.append(f"| **mean** | {s['ok']}/{s['images']} ok | " + " | ".join(cell((s.get(k) or {}).get("mean"), d) for k, _, d in COLUMNS) + " |")
    worst = list(report.get("keys", {}).items())[:8]
    if worst:
        lines += ["", "Largest weight errors (MAE / mean signed error over clips): "
                  + ", ".join(f"{k} {v['mae']:.3f} / {v['bias']:+.3f}" for k, v in worst)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.video_accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("bench/results/synthetic_video"), help="folder of bench.synthetic_video")
    parser.add_argument("--tracker", "--predictor", dest="tracker", choices=sorted(TRACKERS), default="pipeline",
                        help="pipeline (default); oracle and noisy check the metrics")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a VideoOptions field (JSON value), or a noisy-tracker sigma; repeatable")
    parser.add_argument("--no-photo", action="store_true", help="skip the single-photo identity fit")
    parser.add_argument("--limit", type=int, default=None, help="the first N clips")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    from backend.headmodel.ict_source import load_ict
    from bench.accuracy import _parse_options

    options = _parse_options(args.option)
    t0 = time.perf_counter()
    result = evaluate(args.data, args.tracker, load_ict(progress=False), options, photo=not args.no_photo, limit=args.limit)
    manifest = args.data / "dataset.json"
    report = {"data": str(args.data), "tracker": args.tracker, "options": options,
              "command": "python -m bench.video_accuracy " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
              "dataset": json.loads(manifest.read_text()) if manifest.is_file() else None,
              "active_threshold": ACTIVE_THRESHOLD, "seconds_total": time.perf_counter() - t0, **result}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=_json_default))
    print(markdown(report))
    print(f"wrote {args.json}")
    return 0 if all(r["ok"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
