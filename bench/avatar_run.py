"""Train the avatar on a prepared clip (``bench/avatar_prepare.py``) and report what it is judged by:
held-out PSNR / SSIM, training seconds, render frames per second and the hole fraction from every
side (``backend.avatar.coverage``).

    python -m bench.avatar_run CLIP.npz [--preset fast] [--device auto] [--steps N] [--asset ICT.npz]
                               [--holes-only-initial] [--out result.json]

No MediaPipe, PyAV or ICT-FaceKit sources are needed (the GPU check runs it); ``--asset`` points at
a converted asset when the cache is absent. Times here are one machine's: on the shared 2-core CPU
they are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def render_fps(trainer, frames, repeats: int) -> float:
    """Forward renders per second at the training size, poses of ``frames`` in turn (the Gaussians
    are deformed once: this times the rasteriser, as the turntable and viewers use it)."""
    frame = frames[0].to(trainer.device)
    with torch.no_grad():
        verts, rot, trans, expr = trainer.pose(frame, None)
        g = trainer.avatar.gaussians(verts, expr)
        raster_args = (g["means"], g["quats"], g["scales"], g["opacities"], g["sh"])
        _, _, _, _ = trainer.render(frame, None)  # warm-up (kernels, allocator)
        from backend.avatar.raster import rasterize, rasterize_2dgs

        raster = rasterize_2dgs if trainer.avatar.config.surfels else rasterize
        size = trainer.config.size
        viewmat = torch.eye(4, device=trainer.device)
        viewmat[:3, :3], viewmat[:3, 3] = rot, trans
        bg = torch.zeros(1, 3, device=trainer.device)
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            raster(*raster_args, viewmat[None], frame.K[None], size, size, sh_degree=trainer.avatar.config.sh_degree,
                   backgrounds=bg)
        sync()
    return repeats / (time.perf_counter() - start)


def holes(trainer, asset, views) -> dict:
    """Hole fraction of the trained avatar at the neutral expression, refined identity."""
    from backend.avatar.coverage import hole_fractions, summarise
    from backend.avatar.model import bound_triangles

    with torch.no_grad():
        ident = (trainer.identity0 + trainer.identity_delta)[None]
        expr = torch.zeros(1, asset.n_expressions, device=trainer.device)
        verts = trainer.model.shape(ident, expr)[0]
        g = trainer.avatar.gaussians(verts, expr[0])
    tris = asset.triangles[bound_triangles(asset)]
    spill: dict = {}
    fractions = hole_fractions(g, verts.cpu().numpy().astype(np.float64), tris, views, trainer.avatar.config.surfels,
                               spill)
    return {**summarise(fractions), "spill": summarise(spill),
            "per_view_pct": {f"{p:+.0f}": [round(100 * x, 2) for x in f] for p, f in fractions.items()}}


def override(cfg, key: str, value: str):
    """cfg with field ``key`` (``avatar.x`` for the AvatarConfig) set from text, typed like the default."""
    if key.startswith("avatar."):
        return replace(cfg, avatar=override(cfg.avatar, key.split(".", 1)[1], value))
    current = getattr(cfg, key)
    if isinstance(current, bool):
        typed = value.lower() in ("1", "true", "yes")
    elif current is None:
        typed = None if value.lower() == "none" else float(value)
    else:
        typed = type(current)(value)
    return replace(cfg, **{key: typed})


def hole_sheet(trainer, asset, path: Path, size: int = 128) -> None:
    """PNG: rows pitch 0 / +30 / -30, columns yaw 0, 45, 90, 135, 180, 270: silhouette grey,
    holes red, avatar alpha as brightness."""
    from PIL import Image

    from backend.avatar.coverage import ViewSet, eroded, render_alphas, silhouettes, view_cameras
    from backend.avatar.model import bound_triangles

    with torch.no_grad():
        ident = (trainer.identity0 + trainer.identity_delta)[None]
        expr = torch.zeros(1, asset.n_expressions, device=trainer.device)
        verts = trainer.model.shape(ident, expr)[0]
        g = trainer.avatar.gaussians(verts, expr[0])
    v = verts.cpu().numpy().astype(np.float64)
    rows = []
    for pitch, (viewmats, K) in view_cameras(v.mean(0), ViewSet(yaws=8, size=size)).items():
        pick = viewmats[[0, 1, 2, 3, 4, 6]]
        sil = eroded(silhouettes(v, asset.triangles[bound_triangles(asset)], pick, K, size))
        alpha = render_alphas(g, pick, K, size, trainer.avatar.config.surfels).cpu().numpy()
        img = np.stack([alpha * 0.8 + 0.2 * sil] * 3, -1)
        img[(alpha < 0.5) & sil] = (1, 0, 0)
        rows.append(np.concatenate(list(img), 1))
    Image.fromarray((np.concatenate(rows, 0) * 255).astype(np.uint8)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="resize the prepared crops (area filter)")
    parser.add_argument("--train-frames", type=int, default=None, help="an evenly spread subset of the training frames")
    parser.add_argument("--asset", type=Path, default=None, help="converted ICT asset .npz (default: the cache)")
    parser.add_argument("--fps-repeats", type=int, default=20)
    parser.add_argument("--hole-size", type=int, default=128)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a TrainConfig field (float/int/bool), e.g. --set coverage_weight=0")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--sheet", type=Path, default=None, help="PNG of the holes from 18 views")
    parser.add_argument("--heldout-sheet", type=Path, default=None,
                        help="PNG of six held-out frames: input | Gaussians | error x4 | textured mesh")
    args = parser.parse_args(argv)

    from backend.avatar.coverage import ViewSet
    from backend.avatar.pipeline import fit_avatar, heldout_sheet
    from backend.avatar.prepared import load_prepared
    from backend.avatar.train import PRESETS

    if args.asset:
        from backend.headmodel.asset import load_head_model

        asset = load_head_model(args.asset, verify=False)
    else:
        from backend.headmodel.ict_source import load_ict

        asset = load_ict(progress=False)
    clip = load_prepared(args.clip)
    if args.size and args.size != clip.size:
        from backend.avatar.frames import resized

        clip = replace(clip, size=args.size, train=[resized(f, args.size) for f in clip.train],
                       heldout=[resized(f, args.size) for f in clip.heldout])
    if args.train_frames and args.train_frames < len(clip.train):
        keep = np.linspace(0, len(clip.train) - 1, args.train_frames).round().astype(int)
        clip = replace(clip, train=[clip.train[i] for i in keep])
    cfg = replace(PRESETS[args.preset], size=clip.size, train_frames=len(clip.train), heldout_frames=len(clip.heldout))
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    for item in args.set:
        cfg = override(cfg, *item.split("=", 1))
    wall = time.perf_counter()
    trainer, stats, metrics, mesh_baseline = fit_avatar(asset, clip, cfg, args.device)
    report = {"clip": clip.clip, "preset": args.preset, "device": str(trainer.device), "size": clip.size,
              "steps": cfg.steps, "training_s": round(stats["seconds"], 2), "fit_wall_s": round(time.perf_counter() - wall, 2),
              "gaussians": stats["gaussians"], "threads": stats.get("threads"),
              "heldout_psnr": round(metrics["mean"]["psnr"], 3), "heldout_ssim": round(metrics["mean"]["ssim"], 4),
              "mesh_psnr": round(metrics["mean"]["mesh_psnr"], 3),
              "render_fps": round(render_fps(trainer, clip.heldout, args.fps_repeats), 2),
              "holes": holes(trainer, asset, ViewSet(size=args.hole_size)),
              "overrides": args.set}
    if args.sheet:
        hole_sheet(trainer, asset, args.sheet)
    if args.heldout_sheet:
        args.heldout_sheet.write_bytes(heldout_sheet(trainer, clip.heldout, mesh_baseline))
    text = json.dumps(report)
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
