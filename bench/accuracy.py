"""Accuracy of single-photo reconstruction against the synthetic ground truth of ``bench.synthetic``.

    python -m bench.synthetic --out bench/results/synthetic --count 24 --sizes 512 1024 --seed 0
    python -m bench.accuracy --data bench/results/synthetic [--limit N] [--sizes 512]

Every image is reconstructed on its own (``backend.reconstruct.reconstruct_photos`` with one
photo). Metrics per image:

* face-region vertex error (mm) between the predicted neutral identity mesh and the ground-truth
  neutral identity mesh (expression zero on both), after rigid alignment (umeyama rotation +
  translation, no scale) over the same region: per-vertex median and mean, for ``face``
  (vertices 0-9408) and ``narrow_face`` (0-6705); also with a similarity (scale) alignment;
* the same for the posed mesh (identity + expression);
* expression weights: mean absolute error over all 53 keys and over the keys active in the
  ground truth;
* focal length error (%), head rotation error (degrees), translation error (cm).

Per-image values are summarised by size and overall as the median and the mean over images.
The baseline row is the mean face (identity 0, neutral expression) under the same alignment.
Failures (no face found, errors) are counted, not averaged. Results: ``--json`` and ``--md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from backend.fitting.geometry import umeyama
from bench.accuracy_predictors import (  # noqa: F401 -- re-exported: the methods under test
    Prediction, PredictionFailed, Sample, load_samples, Predictor, build_options, reconstruct_predictor, oracle_predictor, perturbed_predictor, mean_face_predictor, PREDICTORS,
)
from bench.accuracy_report import (  # noqa: F401 -- re-exported: the reporting half of this benchmark
    GOAL_MM,
    METRICS,
    _cell,
    _json_default,
    markdown,
    summarize,
    summarize_by_size,
)

REGIONS = ("face", "narrow_face")
DEFAULT_DATA = Path("bench/results/synthetic")


# ----------------------------------------------------------------------------- metrics


def rigid_align(src: np.ndarray, dst: np.ndarray, scale: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """dst ~ s * R @ src + t by least squares (umeyama); ``scale=False`` fixes s = 1.

    The optimal rotation does not depend on the scale, so the rigid fit only recomputes t.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    s, rot, t = umeyama(src, dst)
    if not scale:
        s = 1.0
        t = dst.mean(0) - rot @ src.mean(0)
    return s, rot, t


def aligned_errors(pred: np.ndarray, gt: np.ndarray, scale: bool = False) -> np.ndarray:
    """Per-point distances [N] after aligning ``pred`` [N, 3] onto ``gt`` [N, 3] (same units)."""
    s, rot, t = rigid_align(pred, gt, scale)
    moved = s * np.asarray(pred, np.float64) @ rot.T + t
    return np.linalg.norm(moved - np.asarray(gt, np.float64), axis=1)


def mesh_error_mm(pred_cm: np.ndarray, gt_cm: np.ndarray, mask: np.ndarray | None = None, scale: bool = False) -> dict:
    """Median and mean vertex error in millimetres over ``mask`` after aligning on the same vertices."""
    pred_cm, gt_cm = np.asarray(pred_cm), np.asarray(gt_cm)
    if mask is not None:
        pred_cm, gt_cm = pred_cm[mask], gt_cm[mask]
    err = aligned_errors(pred_cm, gt_cm, scale) * 10.0
    return {"median_mm": float(np.median(err)), "mean_mm": float(np.mean(err))}


def expression_errors(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Mean absolute weight error over all keys and over the keys active (> 0) in ``gt``."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    err = np.abs(pred - gt)
    active = gt > 0
    return {"mae": float(err.mean()), "mae_active": float(err[active].mean()) if active.any() else None,
            "n_active": int(active.sum())}


def rotation_error_deg(pred_axis_angle: np.ndarray, gt_matrix: np.ndarray) -> float:
    """Geodesic angle between two rotations, in degrees."""
    from scipy.spatial.transform import Rotation

    pred = Rotation.from_rotvec(np.asarray(pred_axis_angle, np.float64))
    relative = pred.inv() * Rotation.from_matrix(np.asarray(gt_matrix, np.float64))
    return float(np.degrees(relative.magnitude()))


def focal_error_pct(pred: float, gt: float) -> float:
    return float(100.0 * abs(pred - gt) / gt)


# ----------------------------------------------------------------------------- evaluation


class Evaluator:
    """Ground-truth meshes and region masks of one head model; scores predictions."""

    def __init__(self, asset):
        self.asset = asset
        self.masks = {r: asset.part_mask(r) for r in REGIONS}

    def _identity(self, identity: np.ndarray | None) -> np.ndarray:
        out = np.zeros(self.asset.n_identity)
        if identity is not None:
            identity = np.asarray(identity, np.float64).ravel()[: self.asset.n_identity]
            out[: len(identity)] = identity
        return out

    def _expression(self, expression: np.ndarray | None) -> np.ndarray:
        out = np.zeros(self.asset.n_expressions)
        if expression is not None:
            expression = np.asarray(expression, np.float64).ravel()[: self.asset.n_expressions]
            out[: len(expression)] = expression
        return out

    def mesh_metrics(self, pred_cm: np.ndarray, gt_cm: np.ndarray, prefix: str = "") -> dict:
        out = {}
        for region, mask in self.masks.items():
            for scale, tag in ((False, ""), (True, "_sim")):
                err = mesh_error_mm(pred_cm, gt_cm, mask, scale)
                out[f"{prefix}{region}{tag}_median_mm"] = err["median_mm"]
                out[f"{prefix}{region}{tag}_mean_mm"] = err["mean_mm"]
        return out

    def score(self, sample: Sample, size: str, pred: Prediction) -> dict:
        asset = self.asset
        gt_neutral = asset.vertices(sample.identity)
        identity = self._identity(pred.identity)
        pred_neutral = asset.vertices(identity)
        row: dict = {"mesh_source": "identity"}
        if pred.vertices_cm is not None and np.shape(pred.vertices_cm) == gt_neutral.shape:
            row["mesh_source"] = "vertices_cm"
            row.update(self.mesh_metrics(pred_neutral, gt_neutral, prefix="identity_only_"))
            pred_neutral = np.asarray(pred.vertices_cm, np.float64)
        row.update(self.mesh_metrics(pred_neutral, gt_neutral))
        expression = self._expression(pred.expression)
        gt_posed = asset.vertices(sample.identity, sample.expression)
        posed = asset.vertices(identity, expression)
        if row["mesh_source"] == "vertices_cm":  # the free-form part rides on top of the expression
            posed = posed + (pred_neutral - asset.vertices(identity))
        for key, value in self.mesh_metrics(posed, gt_posed, prefix="posed_").items():
            if "_sim" not in key:
                row[key] = value
        if pred.expression is not None:
            e = expression_errors(expression, sample.expression)
            row.update({"expr_mae": e["mae"], "expr_mae_active": e["mae_active"], "n_active": e["n_active"]})
        if pred.focal is not None:
            row["focal_px"] = pred.focal
            row["focal_err_pct"] = focal_error_pct(pred.focal, sample.focal(size))
        if pred.rotation is not None:
            row["rot_err_deg"] = rotation_error_deg(pred.rotation, sample.rotation)
        if pred.translation is not None:
            row["trans_err_cm"] = float(np.linalg.norm(np.asarray(pred.translation) - sample.translation))
        row["seconds"] = pred.seconds
        row.update(pred.extra)
        return row

    def baseline(self, sample: Sample) -> dict:
        """The mean face with a neutral expression, aligned the same way."""
        mean = self.asset.vertices()
        row = self.mesh_metrics(mean, self.asset.vertices(sample.identity))
        posed = self.mesh_metrics(mean, self.asset.vertices(sample.identity, sample.expression), prefix="posed_")
        row.update({k: v for k, v in posed.items() if "_sim" not in k})
        e = expression_errors(np.zeros_like(sample.expression), sample.expression)
        row.update({"expr_mae": e["mae"], "expr_mae_active": e["mae_active"], "n_active": e["n_active"]})
        return row


def evaluate(data: Path, predictor: Predictor, asset, limit: int | None = None, sizes: list[str] | None = None,
             keep: Path | None = None, log=print, fail_fast: bool = False) -> dict:
    evaluator = Evaluator(asset)
    samples = load_samples(data, asset.expression_names)
    if limit:
        samples = samples[:limit]
    if not samples:
        raise SystemExit(f"{data}: no samples (NNNN.json); generate them with python -m bench.synthetic --out {data}")
    rows, baseline_rows = [], []
    work_root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="headrig-accuracy-"))
    try:
        for sample in samples:
            base = evaluator.baseline(sample)
            for size in sample.record["images"]:
                if sizes and size not in sizes:
                    continue
                image = sample.image(data, size)
                row = {"sample": sample.name, "size": size, "image": str(image), "n_active": int((sample.expression > 0).sum()),
                       "yaw": sample.record["head_pose_deg"]["yaw"]}
                baseline_rows.append({**row, **base, "ok": True})
                work = work_root / f"{sample.name}_{size}"
                work.mkdir(parents=True, exist_ok=True)
                try:
                    pred = predictor(sample, size, image, work)
                    if pred.identity is None and pred.vertices_cm is None:
                        raise PredictionFailed("no_identity", "the prediction has neither identity nor vertices")
                    row.update(evaluator.score(sample, size, pred))
                    row["ok"] = True
                except PredictionFailed as exc:
                    row.update({"ok": False, "failure": exc.code, "message": exc.message})
                except Exception as exc:  # noqa: BLE001 -- a crash on one image is a counted failure
                    if fail_fast:
                        raise
                    row.update({"ok": False, "failure": type(exc).__name__, "message": str(exc),
                                "traceback": traceback.format_exc(limit=6)})
                rows.append(row)
                if row["ok"]:
                    log(f"{sample.name} {size:>5}px  face median {row['face_median_mm']:.2f} mm  mean {row['face_mean_mm']:.2f} mm"
                        + (f"  expr MAE {row['expr_mae']:.3f}" if "expr_mae" in row else "")
                        + (f"  focal {row['focal_err_pct']:.1f}%" if "focal_err_pct" in row else "")
                        + f"  (mean face {base['face_median_mm']:.2f} mm)  {row['seconds']:.1f} s")
                else:
                    log(f"{sample.name} {size:>5}px  FAILED {row['failure']}: {row['message']}")
                if not keep:
                    shutil.rmtree(work, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(work_root, ignore_errors=True)
    same = [b for b, r in zip(baseline_rows, rows) if r["ok"]] or baseline_rows
    return {"rows": rows, "baseline_rows": baseline_rows, "summary": summarize_by_size(rows),
            "baseline": summarize_by_size(same), "baseline_all_images": summarize_by_size(baseline_rows)}


def _parse_options(items: list[str]) -> dict:
    options = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder written by bench.synthetic")
    parser.add_argument("--limit", type=int, default=None, help="use the first N samples (every size of each)")
    parser.add_argument("--sizes", nargs="*", default=None, help="only these image sizes, e.g. 512")
    parser.add_argument("--predictor", choices=sorted(PREDICTORS), default="reconstruct",
                        help="reconstruct (default); oracle, perturbed, mean check the metrics")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a ReconstructOptions field (JSON value), or a perturbed-predictor setting; repeatable")
    parser.add_argument("--json", type=Path, default=None, help="default: <data>/../accuracy.json")
    parser.add_argument("--md", type=Path, default=None, help="default: <data>/../accuracy.md")
    parser.add_argument("--keep", type=Path, default=None, help="keep reconstruction outputs in this folder")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first unexpected exception")
    parser.add_argument("--from-json", type=Path, default=None, help="only rewrite the Markdown from a saved JSON report")
    args = parser.parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        md_path = args.md or args.from_json.with_suffix(".md")
        md_path.write_text(markdown(report))
        print(markdown(report))
        return 0

    from backend.headmodel.ict_source import load_ict

    asset = load_ict(progress=False)
    options = _parse_options(args.option)
    predictor = PREDICTORS[args.predictor](options)
    t0 = time.perf_counter()
    result = evaluate(args.data, predictor, asset, limit=args.limit, sizes=args.sizes, keep=args.keep, fail_fast=args.fail_fast)
    manifest_path = args.data / "dataset.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    report = {
        "data": str(args.data), "predictor": args.predictor, "options": options,
        "command": "python -m bench.accuracy " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "dataset_command": manifest.get("command"), "renderer": manifest.get("renderer"),
        "textures_kind": "procedural" if manifest.get("textures") == "procedural" else "baked from photos" if manifest else None,
        "n_samples": len({r["sample"] for r in result["rows"]}), "sizes": sorted({r["size"] for r in result["rows"]}, key=int),
        "seconds_total": time.perf_counter() - t0, **result,
    }
    json_path = args.json or args.data.parent / "accuracy.json"
    md_path = args.md or args.data.parent / "accuracy.md"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1, default=_json_default))
    md_path.write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
