"""Likeness benchmark: how close the fitted head is to the person, on in-model and off-model heads.

All of it, data included, is ``make bench-likeness``; by hand:

    python -m bench.likeness_data --out bench/results/likeness/report --heads 12 --seed 700
    python -m bench.synthetic_video --out bench/results/likeness/report_clips_off --clips 3 --frames 40 \\
        --static-frames 8 --seed 750 --off-model-mm 2
    python -m bench.synthetic_video --out bench/results/likeness/report_clips_in --clips 3 --start 3 \\
        --frames 40 --static-frames 8 --seed 750
    python -m bench.likeness --heads bench/results/likeness/report \\
        --clips bench/results/likeness/report_clips_off bench/results/likeness/report_clips_in \\
        --md bench/results/likeness/report.md

Sets: every view alone (single photo), each head's views together (several photos), and clips
(the video pipeline's identity, from its own frame choice). Methods: the mean face, the landmark
fit alone (the photometric stage off), the shipped fit (landmarks + photometric stage), and for
off-model heads the ground truth projected onto the model's span (the floor of this model).
Scores per sample: the NoW protocol's scan-to-mesh distance (``bench.now_metric``) and the
face-region vertex-to-vertex median after rigid alignment (``bench.accuracy``), both on the
neutral identity mesh. For the several-photo set also the albedo error: the baked ``texture``
against the true skin texture on the narrow face, after one gain per channel (the light's
brightness and colour are not recoverable), shaded bake versus albedo.

``--option KEY=VALUE`` overrides ``PhotometricConfig`` fields (for tuning on another seed range).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.accuracy import mesh_error_mm
from bench.now_metric import NowScorer
from bench.offmodel import Bumps, model_projection, off_model_displacement
from bench.synthetic_sampling import nose_tip_vertex

METHODS = ("mean_face", "landmarks", "photometric", "model_floor")


def _observe(rec, images: list[np.ndarray], name: str):
    from backend.fitting.landmark_fit import Observation

    marks = [rec.landmarker.detect(im, f"{name} ({k})") for k, im in enumerate(images)]
    masks = [rec.segmenter.mask(im, name) for im in images]
    return [Observation(m.points, im.shape[1], im.shape[0]) for m, im in zip(marks, images)], masks


def fit_photos(rec, images: list[np.ndarray], name: str) -> dict:
    """{method: (identity [I], seconds, fit, lighting)} for the photo methods."""
    obs, masks = _observe(rec, images, name)
    t = time.perf_counter()
    fit = rec.fitter.fit(obs)
    t_lmk = time.perf_counter() - t
    refined = rec.refiner.refine(obs, images, masks, fit)
    return {"landmarks": (fit.identity, t_lmk, fit, None, masks),
            "photometric": (refined.fit.identity, t_lmk + refined.seconds, refined.fit, refined.lighting, masks)}


class Scorer:
    def __init__(self, asset, nose: int):
        self.asset = asset
        self.now = NowScorer(asset, nose)
        self.face = asset.part_mask("face")

    def truth(self, identity: np.ndarray, bumps: dict | None) -> np.ndarray:
        gt = self.asset.vertices(identity).astype(float)
        if bumps:
            gt = gt + off_model_displacement(self.asset, Bumps.from_json(bumps), identity)
        return gt

    def score(self, pred: np.ndarray, gt: np.ndarray, scan: np.ndarray) -> dict:
        e = self.now.error(pred, gt, scan)
        return {**e.as_dict(), "v2v_median_mm": mesh_error_mm(pred, gt, self.face)["median_mm"]}

    def rows(self, gt: np.ndarray, predictions: dict[str, np.ndarray], off_model: bool) -> dict:
        scan = self.now.scan(gt)
        out = {m: self.score(p, gt, scan) for m, p in predictions.items()}
        out["mean_face"] = self.score(self.asset.vertices(np.zeros(self.asset.n_identity)).astype(float), gt, scan)
        if off_model:
            out["model_floor"] = self.score(model_projection(self.asset, gt)[1], gt, scan)
        return out


def albedo_error(rec, record: dict, folder: Path, images, fit, masks, lighting) -> dict:
    """Mean absolute sRGB error (0-255) on the narrow face of the shaded and the albedo bake
    against the true skin texture, each after a least-squares gain per channel."""
    from backend.bundle.texture_bake import bake_texture

    views = [rec.view(im, m, fit.identity, p, None if lighting is None else lighting[k])
             for k, (im, m, p) in enumerate(zip(images, masks, fit.photos))]
    baked = bake_texture(rec.texels, views, *rec.skin_masks)
    texture = folder / record["texture"]
    texture = texture if texture.is_file() else Path(record["texture"])  # early records: relative to the repo
    truth = np.asarray(Image.open(texture).convert("RGB").resize(baked.shaded.shape[1::-1]), np.float64)
    pixels = rec.texels.pixel[rec.skin_masks[1]]

    def err(atlas: np.ndarray) -> float:
        pred = atlas.reshape(-1, 3)[pixels].astype(np.float64)
        ref = truth.reshape(-1, 3)[pixels]
        gain = (pred * ref).sum(0) / np.maximum((pred * pred).sum(0), 1e-9)
        return float(np.abs(pred * gain - ref).mean())

    return {"shaded_mae": err(baked.shaded), "albedo_mae": err(baked.albedo)}


def run_heads(rec, scorer: Scorer, folder: Path, limit: int | None, log) -> list[dict]:
    samples = []
    for path in sorted(folder.glob("[0-9][0-9][0-9][0-9].json"))[:limit]:
        record = json.loads(path.read_text())
        identity = np.asarray(record["identity"])
        for variant in ("in", "off"):
            gt = scorer.truth(identity, record["off_model"] if variant == "off" else None)
            images = [np.asarray(Image.open(folder / v["images"][variant]).convert("RGB")) for v in record["views"]]
            for k, image in enumerate(images):
                fits = fit_photos(rec, [image], f"{path.stem}_{variant}_{k}")
                rows = scorer.rows(gt, {m: rec.asset.vertices(f[0]).astype(float) for m, f in fits.items()}, variant == "off")
                samples.append({"set": "single", "variant": variant, "sample": f"{path.stem}_{k}", "scores": rows,
                                "seconds": {m: f[1] for m, f in fits.items()}})
            fits = fit_photos(rec, images, f"{path.stem}_{variant}")
            rows = scorer.rows(gt, {m: rec.asset.vertices(f[0]).astype(float) for m, f in fits.items()}, variant == "off")
            _, _, fit, lighting, masks = fits["photometric"]
            samples.append({"set": "multi", "variant": variant, "sample": path.stem, "scores": rows,
                            "seconds": {m: f[1] for m, f in fits.items()},
                            "albedo": albedo_error(rec, record, folder, images, fit, masks, lighting)})
            log(_line(samples[-1]))
    return samples


def run_curve(rec, scorer: Scorer, folder: Path, steps: list[int], limit: int | None, log) -> list[dict]:
    """Error versus seconds: each off-model view alone and each head's views together, refined
    from the same landmark fit with each number of photometric steps (0 = landmarks only)."""
    config = rec.refiner.config
    points = []
    for path in sorted(folder.glob("[0-9][0-9][0-9][0-9].json"))[:limit]:
        record = json.loads(path.read_text())
        gt = scorer.truth(np.asarray(record["identity"]), record["off_model"])
        scan = scorer.now.scan(gt)
        images = [np.asarray(Image.open(folder / v["images"]["off"]).convert("RGB")) for v in record["views"]]
        for kind, groups in (("single", [[k] for k in range(len(images))]), ("multi", [list(range(len(images)))])):
            for group in groups:
                obs, masks = _observe(rec, [images[k] for k in group], path.stem)
                t = time.perf_counter()
                fit = rec.fitter.fit(obs)
                t_lmk = time.perf_counter() - t
                for n in steps:
                    identity, secs = fit.identity, t_lmk
                    if n > 0:
                        rec.refiner.config = dataclasses.replace(config, steps=n)
                        refined = rec.refiner.refine(obs, [images[k] for k in group], masks, fit)
                        identity, secs = refined.fit.identity, t_lmk + refined.seconds
                    err = scorer.now.error(rec.asset.vertices(identity).astype(float), gt, scan).median_mm
                    points.append({"set": kind, "sample": f"{path.stem}/{group}", "steps": n, "seconds": secs,
                                   "landmark_seconds": t_lmk, "now_median_mm": err})
        rec.refiner.config = config
        log(f"curve: head {path.stem} done")
    return points


def curve_markdown(points: list[dict]) -> str:
    lines = ["| set | photometric steps | NoW median mm (median over samples) | seconds / landmark-fit seconds (median) |",
             "|---|---|---|---|"]
    for kind in ("single", "multi"):
        for n in sorted({p["steps"] for p in points}):
            group = [p for p in points if p["set"] == kind and p["steps"] == n]
            if group:
                ratio = np.median([p["seconds"] / max(p["landmark_seconds"], 1e-6) for p in group])
                lines.append(f"| {kind} | {n} | {np.median([p['now_median_mm'] for p in group]):.3f} | {ratio:.1f}x |")
    return "\n".join(lines) + "\n"


def run_clips(rec, scorer: Scorer, folders: list[Path], limit: int | None, log) -> list[dict]:
    from backend.video.pipeline import VideoPipeline

    samples = []
    steps = rec.options.photometric.steps
    for folder in folders:
        for path in sorted(folder.glob("clip_[0-9][0-9].json"))[:limit]:
            record = json.loads(path.read_text())
            identity = np.asarray(record["identity"])
            off = record.get("off_model")
            gt = scorer.truth(identity, off)
            preds, seconds = {}, {}
            for method, n_steps in (("landmarks", 0), ("photometric", steps)):
                rec.options.photometric.steps = n_steps  # the refiner shares this config
                t = time.perf_counter()
                track = VideoPipeline(rec).track(path.with_suffix(".mp4"))
                seconds[method] = time.perf_counter() - t
                preds[method] = rec.asset.vertices(track.identity).astype(float)
            rec.options.photometric.steps = steps
            samples.append({"set": "clip", "variant": "off" if off else "in", "sample": f"{folder.name}/{path.stem}",
                            "scores": scorer.rows(gt, preds, bool(off)), "seconds": seconds})
            log(_line(samples[-1]))
    return samples


def _line(sample: dict) -> str:
    s = sample["scores"]
    cells = "  ".join(f"{m} {s[m]['now_median_mm']:.2f}/{s[m]['v2v_median_mm']:.2f}" for m in METHODS if m in s)
    return f"{sample['set']:6} {sample['variant']:3} {sample['sample']:24} NoW/v2v mm: {cells}"


def summarize(samples: list[dict]) -> list[dict]:
    """Per (set, variant, method): median over samples of each score, its spread (25th-75th
    percentile) and the share of samples the method beats the mean face on (NoW median)."""
    rows = []
    for key in sorted({(s["set"], s["variant"]) for s in samples}, key=lambda k: (["single", "multi", "clip"].index(k[0]), k[1])):
        group = [s for s in samples if (s["set"], s["variant"]) == key]
        for method in METHODS:
            have = [s for s in group if method in s["scores"]]
            if not have:
                continue
            now = np.array([s["scores"][method]["now_median_mm"] for s in have])
            v2v = np.array([s["scores"][method]["v2v_median_mm"] for s in have])
            mean_face = np.array([s["scores"]["mean_face"]["now_median_mm"] for s in have])
            secs = [s["seconds"][method] for s in have if method in s.get("seconds", {})]
            rows.append({"set": key[0], "variant": key[1], "method": method, "n": len(have),
                         "now_median_mm": float(np.median(now)), "now_p25": float(np.percentile(now, 25)),
                         "now_p75": float(np.percentile(now, 75)),
                         "now_mean_mm": float(np.mean([s["scores"][method]["now_mean_mm"] for s in have])),
                         "v2v_median_mm": float(np.median(v2v)),
                         "beats_mean_face": float(np.mean(now < mean_face)) if method != "mean_face" else None,
                         "seconds_median": float(np.median(secs)) if secs else None})
    return rows


def markdown(rows: list[dict], samples: list[dict]) -> str:
    lines = ["| set | heads | method | n | NoW median mm (p25-p75) | NoW mean mm | v2v face median mm | beats mean face | s (median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        beats = "" if r["beats_mean_face"] is None else f"{100 * r['beats_mean_face']:.0f}%"
        secs = "" if r["seconds_median"] is None else f"{r['seconds_median']:.1f}"
        lines.append(f"| {r['set']} | {r['variant']}-model | {r['method']} | {r['n']} | {r['now_median_mm']:.2f} "
                     f"({r['now_p25']:.2f}-{r['now_p75']:.2f}) | {r['now_mean_mm']:.2f} | {r['v2v_median_mm']:.2f} | {beats} | {secs} |")
    albedo = [s["albedo"] for s in samples if "albedo" in s]
    if albedo:
        lines.append("")
        lines.append(f"Albedo (several-photo set, {len(albedo)} bakes): narrow-face sRGB MAE after per-channel gain: "
                     f"shaded bake median {np.median([a['shaded_mae'] for a in albedo]):.2f}, albedo bake median "
                     f"{np.median([a['albedo_mae'] for a in albedo]):.2f}; albedo better on "
                     f"{100 * np.mean([a['albedo_mae'] < a['shaded_mae'] for a in albedo]):.0f}% of bakes.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.likeness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=Path, default=None, help="folder of bench.likeness_data")
    parser.add_argument("--clips", type=Path, nargs="*", default=[], help="folders of bench.synthetic_video")
    parser.add_argument("--limit", type=int, default=None, help="the first N heads / clips of each folder")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="PhotometricConfig override")
    parser.add_argument("--curve", type=int, nargs="*", default=None, metavar="STEPS",
                        help="instead: error versus seconds on --heads' off-model heads for these step counts")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--md", type=Path, default=None)
    args = parser.parse_args(argv)

    from backend.fitting.photometric import PhotometricConfig
    from backend.reconstruct import ReconstructOptions, Reconstructor

    overrides = {}
    for item in args.option:
        key, value = item.split("=", 1)
        default = getattr(PhotometricConfig(), key)
        overrides[key] = type(default)(value) if not isinstance(default, tuple) else tuple(float(v) for v in value.split(","))
    config = dataclasses.replace(PhotometricConfig(), **overrides)
    samples: list[dict] = []
    with Reconstructor(ReconstructOptions(progress=False, photometric=config)) as rec:
        scorer = Scorer(rec.asset, nose_tip_vertex(rec.asset))
        if args.curve:
            points = run_curve(rec, scorer, args.heads, args.curve, args.limit, lambda s: print(s, flush=True))
            text = curve_markdown(points)
            print(text)
            for path, content in ((args.json, json.dumps({"curve": points}, indent=1)), (args.md, text)):
                if path:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(content)
            return 0
        if args.heads:
            samples += run_heads(rec, scorer, args.heads, args.limit, lambda s: print(s, flush=True))
        samples += run_clips(rec, scorer, args.clips, args.limit, lambda s: print(s, flush=True))
    rows = summarize(samples)
    report = {"command": "python -m bench.likeness " + " ".join(sys.argv[1:] if argv is None else argv),
              "photometric": dataclasses.asdict(config), "rows": rows, "samples": samples}
    text = markdown(rows, samples)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
