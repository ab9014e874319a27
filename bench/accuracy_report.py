"""Reporting for ``bench.accuracy``: per-image rows summarised by size and overall, and the Markdown table.

``summarize`` / ``summarize_by_size`` turn the rows of ``bench.accuracy.evaluate`` into median and mean
over images of every numeric metric plus failure counts; ``markdown`` renders a saved report (the JSON
written by ``python -m bench.accuracy``) as ``accuracy.md``; ``_json_default`` serialises numpy values
and dataclasses in that JSON.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

GOAL_MM = 1.0

METRICS = [  # (key, label, digits) -- summary columns, in table order
    ("face_median_mm", "face median mm", 2), ("face_mean_mm", "face mean mm", 2),
    ("narrow_face_median_mm", "narrow median mm", 2), ("narrow_face_mean_mm", "narrow mean mm", 2),
    ("face_sim_median_mm", "face median mm (sim.)", 2), ("posed_face_median_mm", "posed face median mm", 2),
    ("expr_mae", "expr MAE", 3), ("expr_mae_active", "expr MAE active", 3),
    ("focal_err_pct", "focal err %", 1), ("rot_err_deg", "rot err deg", 2), ("seconds", "s / image", 1),
]


def summarize(rows: list[dict]) -> dict:
    """Median and mean over images of every numeric metric, plus counts."""
    ok = [r for r in rows if r.get("ok")]
    out: dict = {"images": len(rows), "ok": len(ok), "failed": len(rows) - len(ok), "failures": {}}
    for r in rows:
        if not r.get("ok"):
            out["failures"][r.get("failure", "error")] = out["failures"].get(r.get("failure", "error"), 0) + 1
    keys = sorted({k for r in ok for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for key in keys:
        values = np.array([r[key] for r in ok if r.get(key) is not None], np.float64)
        if key in ("size", "index") or not len(values):
            continue
        out[key] = {"median": float(np.median(values)), "mean": float(np.mean(values)), "n": int(len(values))}
    return out


def summarize_by_size(rows: list[dict]) -> dict:
    sizes = sorted({r["size"] for r in rows}, key=int)
    out = {str(s): summarize([r for r in rows if r["size"] == s]) for s in sizes}
    out["all"] = summarize(rows)
    return out



def _cell(stats: dict | None, digits: int) -> str:
    if not stats:
        return "-"
    return f"{stats['median']:.{digits}f} / {stats['mean']:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [
        "# Reconstruction accuracy on synthetic ground truth",
        "",
        f"Dataset: `{report['data']}` - {report['n_samples']} samples, sizes {', '.join(report['sizes'])} px, "
        f"{report.get('renderer') or 'rendered with Blender Cycles'}; textures: {report.get('textures_kind', '?')}.",
        f"Method: `{report['predictor']}`" + (f" with options `{json.dumps(report['options'])}`" if report["options"] else "")
        + "; every image is reconstructed on its own (one photo).",
        "",
        "Each cell is **median / mean over images** of the per-image value. Vertex errors are the per-image median "
        "(or mean) over the region's vertices, in mm, between the predicted and the true neutral identity mesh after a "
        "rigid (rotation + translation) umeyama alignment on that region; *sim.* also fits a scale. *face* = ICT vertices "
        "0-9408, *narrow* = 0-6705; *posed* compares identity + expression meshes. Expression MAE is over all 53 weights; "
        "*active* over the weights that are non-zero in the ground truth.",
        "",
    ]
    header = ["method", "size", "ok / images"] + [m[1] for m in METRICS]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    tables = [(report["predictor"], report["summary"], None), ("baseline: mean face", report["baseline"], None)]
    if report["summary"]["all"]["failed"]:  # the baseline above covers the images the method succeeded on
        tables.append(("baseline: mean face, all images", report["baseline_all_images"], ("all",)))
    for name, summary, only in tables:
        for size, s in summary.items():
            if only and size not in only:
                continue
            cells = [name, size if size == "all" else f"{size} px", f"{s['ok']} / {s['images']}"]
            for key, _, digits in METRICS:
                cells.append(_cell(s.get(key), digits))
            lines.append("| " + " | ".join(cells) + " |")
    overall = report["summary"]["all"].get("face_median_mm")
    lines.append("")
    if overall:
        verdict = "met" if overall["median"] <= GOAL_MM else "not met"
        lines.append(f"**Goal: median face error <= {GOAL_MM:.1f} mm from one photo - {verdict}** "
                     f"(median over images of the per-image median: {overall['median']:.2f} mm; mean face baseline "
                     f"on the same images {report['baseline']['all']['face_median_mm']['median']:.2f} mm).")
    failures = report["summary"]["all"]["failures"]
    if failures:
        lines.append("")
        failed = sorted({f"{r['sample']} ({r['yaw']:+.0f} deg yaw)" for r in report["rows"] if not r.get("ok")})
        lines.append("Failures (not in the error columns): " + ", ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
                     + f"; samples {', '.join(failed)}.")
    lines += ["", "Reproduce:", "", "```"]
    lines += [c for c in (report.get("dataset_command"), report["command"]) if c]
    lines += ["```", ""]
    return "\n".join(lines)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(type(value).__name__)
