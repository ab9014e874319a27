"""How well the expression bake (``backend.avatar.expression_bake``) stands in for the MLP.

    python -m bench.avatar_bake CLIP.npz [--preset fast] [--steps N] [--out result.json]

Trains the avatar on a prepared clip (``bench/avatar_prepare.py``), then compares the MLP's change
from neutral, MLP(w) - MLP(0), with the linear bake sum_k w_k delta_k for both linearisations
(secant, tangent) over: each key alone at 0.3 / 0.5 / 0.7 / 1.0, the clip's own tracked weights
(training and held-out frames), and a smile + blink. Offsets in millimetres on the neutral mesh,
colours in 8-bit levels; also the MLP's neutral output (folded into gaussians.ply), the float16
rounding of the file and its size.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

SINGLE_WEIGHTS = (0.3, 0.5, 0.7, 1.0)
SMILE_BLINK = {"mouthSmile_L": 0.8, "mouthSmile_R": 0.8, "eyeBlink_L": 1.0, "eyeBlink_R": 1.0}


def weight_sets(names: list[str], clip_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{label: [B, E]} the weight vectors measured."""
    e = len(names)
    sets = {f"single_{w}": torch.eye(e) * w for w in SINGLE_WEIGHTS}
    combo = torch.zeros(1, e)
    for key, w in SMILE_BLINK.items():
        combo[0, names.index(key)] = w
    sets["smile_blink"] = combo
    return sets | {k: v.float() for k, v in clip_weights.items()}


def measure(avatar, verts_m: torch.Tensor, clip_weights: dict[str, torch.Tensor]) -> dict:
    """All the numbers of the module docstring for a trained ``avatar`` on neutral ``verts_m`` [V, 3] (m)."""
    from backend.avatar.expression_bake import (expression_deltas, linearisation_error, neutral_outputs,
                                                triangle_sizes)
    from shared.gaussian_expressions import GaussianExpressions, expressions_bytes, parse_expressions

    names = list(avatar.asset.expression_names)
    triangles = torch.as_tensor(avatar.asset.triangles, dtype=torch.long, device=avatar.device)
    size = triangle_sizes(avatar.current_binding(), verts_m, triangles)
    offset0, colour0 = neutral_outputs(avatar)
    report = {"gaussians": int(avatar.canonical.shape[0]),
              "neutral_offset_mm": float((offset0.norm(dim=1) * size * 1000).mean()),
              "neutral_colour_levels": float(colour0.norm(dim=1).mean() * 255), "errors": {}}
    deltas = {}
    for method in ("secant", "tangent"):
        deltas[method] = expression_deltas(avatar, method)
        report["errors"][method] = {label: linearisation_error(avatar, *deltas[method], w.to(avatar.device), size)
                                    for label, w in weight_sets(names, clip_weights).items()}
    offsets, colours = deltas["secant"]
    expr = GaussianExpressions(names, offsets.cpu().numpy(), colours.cpu().numpy(), "0" * 64)
    sizes = {}
    for dtype in ("<f2", "<f4"):
        data = expressions_bytes(expr, dtype)
        sizes[dtype] = len(data)
        back = parse_expressions(data)
        if dtype == "<f2":
            rounded = (torch.as_tensor(back.offset), torch.as_tensor(back.colour))
    report["file_bytes"] = {"float16": sizes["<f2"], "float32": sizes["<f4"]}
    report["float16_rounding"] = {label: linearisation_error(avatar, *(r.to(avatar.device) for r in rounded),
                                                             w.to(avatar.device), size)
                                  for label, w in clip_weights.items()}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from backend.avatar.pipeline import fit_avatar
    from backend.avatar.prepared import load_prepared
    from backend.avatar.train import PRESETS
    from backend.headmodel.ict_source import load_ict

    asset = load_ict(progress=False)
    clip = load_prepared(args.clip)
    cfg = replace(PRESETS[args.preset], size=clip.size, train_frames=len(clip.train), heldout_frames=len(clip.heldout))
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    trainer, stats, _, _ = fit_avatar(asset, clip, cfg, args.device)
    identity = (trainer.identity0 + trainer.identity_delta).detach().cpu().numpy()
    verts = torch.as_tensor(asset.vertices(identity) / 100.0, dtype=torch.float32, device=trainer.device)
    with torch.no_grad():
        train_w = torch.stack([(f.expression + trainer.params.expression[k]).clamp(0, 1)
                               for k, f in enumerate(trainer.frames)]).cpu()
    held_w = torch.stack([f.expression for f in clip.heldout])
    report = {"clip": clip.clip, "preset": args.preset, "steps": stats["steps"],
              **measure(trainer.avatar, verts, {"clip_train": train_w, "clip_heldout": held_w})}
    text = json.dumps(report, indent=1)
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
