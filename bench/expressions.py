"""The expression benchmark: tracked weights, pose and gaze against ground truth, beside all-zeros
and MediaPipe's own blendshapes, on the clips of ``bench.expression_data``.

    python -m bench.expressions --data bench/results/expressions/tune  [--methods solve predictor fused]
    python -m bench.expressions --data bench/results/expressions/report --json bench/results/expressions/report.json

Every clip (one folder per kind: mixed, turns, speech, rom, offmodel) is tracked whole by the video
pipeline once per method (``backend.video.track.ExpressionOptions.method``): ``solve`` (the landmark
solve alone, the tracker before issue 11), ``predictor`` (the learned predictor alone, the
real-time path) and ``fused`` (predictor as start and prior of the solve, then the offline
smoother; the default). Beside them, on the same frames: ``zeros`` (an all-zero prediction) and
``mediapipe`` (MediaPipe's 52 blendshape scores mapped to the model's keys, each key's rest level
over the clip subtracted as the tracker does; scores from the same Tasks graph run).

Metrics per clip and method: ``bench.expression_metrics`` (vertex error mm, per-key correlation,
MAE on active frames, all keys, moving keys, jitter on the still start) plus head rotation and gaze
error (degrees) and the run's speed (x real time). The report gives the median over clips and the
spread (min-max). Tune on ``tune`` (seeds 800-804); report on ``report`` (900-904), tuned on never.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.expression_metrics import expression_scores, face_basis_mm
from bench.video_metrics import gaze_angles_deg, load_clips, match_frames, rotation_errors_deg

METHODS = ("solve", "predictor", "fused")
PEERS = ("zeros", "mediapipe")
COLUMNS = [("vertex_mm", "expr vertex mm", 2), ("corr_median", "key corr median", 2), ("corr_worst", "key corr worst", 2),
           ("mae_active", "MAE active", 3), ("mae_moving", "MAE moving keys", 3), ("mae_all", "MAE all", 3),
           ("jitter", "jitter", 4), ("rot_deg", "rot err °", 2), ("gaze_deg", "gaze err °", 1), ("x_realtime", "× real time", 2)]


def clip_rows(truth, track, method: str, seconds: float, basis, names: list[str], peers: bool = False) -> list[dict]:
    """Rows for ``method`` (and, from its scores, the peers) on one clip."""
    from backend.landmarks.blendshapes import peer_weights

    gt = match_frames(track.times, truth.times)
    keep = gt >= 0
    keep[[m for m in track.missing if 0 <= m < len(keep)]] = False
    pos, frames = np.flatnonzero(keep), gt[keep]
    true = truth.expressions[frames]
    static = truth.static if truth.static[1] > truth.static[0] + 1 else None
    static_pos = None if static is None else (int(np.searchsorted(frames, static[0])), int(np.searchsorted(frames, static[1])))
    base = {"clip": truth.name, "kind": truth.record.get("kind", "mixed"), "frames": int(len(pos))}
    row = {**base, "method": method, **expression_scores(track.expressions[pos], true, basis, static_pos),
           "rot_deg": float(rotation_errors_deg(track.rotations[pos], truth.rotations[frames]).mean()),
           "x_realtime": float(truth.times[-1] + truth.times[1]) / seconds}
    if truth.gaze is not None:
        row["gaze_deg"] = float(gaze_angles_deg(track.gaze[pos], truth.gaze[frames]).mean())
    rows = [row]
    if peers and track.scores is not None:
        rows.append({**base, "method": "mediapipe", **expression_scores(peer_weights(track.scores, names)[pos], true, basis, static_pos)})
        rows.append({**base, "method": "zeros", **expression_scores(np.zeros_like(true), true, basis, static_pos)})
    return rows


def evaluate(data: Path, methods: list[str], photometric_steps: int | None, log=print) -> list[dict]:
    from backend.reconstruct import ReconstructOptions, Reconstructor
    from backend.video.pipeline import VideoPipeline
    from backend.video.track import ExpressionOptions, VideoOptions

    folders = sorted(p for p in Path(data).iterdir() if p.is_dir() and any(p.glob("clip_[0-9][0-9].json")))
    if not folders:
        raise SystemExit(f"{data}: no clip folders; render them with python -m bench.expression_data")
    ropts = ReconstructOptions(progress=False)
    if photometric_steps is not None:
        ropts.photometric.steps = photometric_steps
    rows: list[dict] = []
    with Reconstructor(ropts) as rec:
        names = list(rec.asset.expression_names)
        basis = face_basis_mm(rec.asset)
        for folder in folders:
            for truth in load_clips(folder, names):
                for method in methods:
                    vp = VideoPipeline(rec, VideoOptions(progress=False, expressions=ExpressionOptions(method=method)))
                    t0 = time.perf_counter()
                    track = vp.track(truth.video)
                    first_with_scores = next((m for m in methods if m != "solve"), None)
                    new = clip_rows(truth, track, method, time.perf_counter() - t0, basis, names, method == first_with_scores)
                    for r in new:
                        r["clip"] = f"{folder.name}/{truth.name}"
                        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
                    rows += new
    return rows


def summary(rows: list[dict]) -> dict:
    """Per method: median and (min, max) over clips of every column."""
    out = {}
    for method in sorted({r["method"] for r in rows}, key=lambda m: (list(PEERS) + list(METHODS)).index(m)):
        mine = [r for r in rows if r["method"] == method]
        out[method] = {}
        for key, _, _ in COLUMNS:
            vals = np.array([r[key] for r in mine if r.get(key) is not None], np.float64)
            if len(vals):
                out[method][key] = {"median": float(np.median(vals)), "min": float(vals.min()), "max": float(vals.max()),
                                    "n": int(len(vals))}
    return out


def markdown(rows: list[dict]) -> str:
    s = summary(rows)
    lines = ["| method | " + " | ".join(label for _, label, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for method, stats in s.items():
        cells = [f"{stats[k]['median']:.{d}f} ({stats[k]['min']:.{d}f}–{stats[k]['max']:.{d}f})" if k in stats else "–"
                 for k, _, d in COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Per clip (vertex mm / key corr median / worst / MAE active):", "",
              "| clip | " + " | ".join(s) + " |", "|---" * (len(s) + 1) + "|"]
    for clip in sorted({r["clip"] for r in rows}):
        cells = []
        for method in s:
            r = next((r for r in rows if r["clip"] == clip and r["method"] == method), None)
            f = lambda v, d: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
            cells.append("–" if r is None else f"{f(r['vertex_mm'], 2)} / {f(r['corr_median'], 2)} / {f(r['corr_worst'], 2)} / {f(r['mae_active'], 3)}")
        lines.append(f"| {clip} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.expressions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("bench/results/expressions/tune"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--photometric-steps", type=int, default=None, help="override the photometric stage (default: as shipped)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = evaluate(args.data, args.methods, args.photometric_steps)
    report = {"data": str(args.data), "methods": args.methods, "rows": rows, "summary": summary(rows)}
    (args.json or args.data.with_suffix(".json")).write_text(json.dumps(report, indent=1))
    text = markdown(rows)
    (args.json or args.data.with_suffix(".json")).with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
