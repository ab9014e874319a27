"""Ground truth for the likeness benchmark: heads seen from several sides, in-model and off-model.

Each head (identity, skin texture, lights, lens from ``bench.synthetic_sampling.sample_spec``)
is rendered by Cycles from ``VIEWS`` yaws about the face (jittered; mild pitch and roll; the
first view neutral, the others with sparse expressions), twice: as the model's own head
(``in``) and with smooth off-model bumps (``off``, ``bench.offmodel``). The single-photo set is
every view on its own; the several-photo set is each head's views together.

    python -m bench.likeness_data --out bench/results/likeness/report --heads 12 --seed 700

Per head ``HHHH`` the folder holds ``HHHH_<variant>_<view>.png`` and ``HHHH.json``: identity [100],
``off_model`` (the bumps), lens, intrinsics, and per view yaw/pitch/roll, rotation [3, 3],
translation [3] (cm) and the expression by name; conventions are ``bench.synthetic``'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from backend.headmodel.asset import HeadModelAsset
from bench.offmodel import BUMP_TAG, draw_bumps, off_model_displacement
from bench.synthetic_sampling import FACING, euler_to_matrix, intrinsics, nose_tip_vertex, sample_expression, sample_spec
from bench.synthetic_scene import BlenderRenderer, composite
from bench.synthetic_textures import ensure_procedural_textures

VIEWS = (-36.0, -12.0, 12.0, 36.0)  # yaw of each view, degrees, before jitter
VARIANTS = ("in", "off")
VIEW_TAG = 0x7E5  # the views' own random stream


def head_views(asset: HeadModelAsset, seed: int, index: int, textures: list[str]) -> list:
    """The ``SampleSpec`` of every view of head ``index``: one identity, look and lens."""
    base = sample_spec(asset, seed, index, textures)
    rng = np.random.default_rng([seed, index, VIEW_TAG])
    neutral = asset.vertices(base.identity).astype(float)
    first, last = asset.parts["narrow_face"]
    centre = 0.5 * (neutral[first : last + 1].min(0) + neutral[first : last + 1].max(0))
    target = base.rotation @ centre + base.translation  # the face centre stays where sample_spec framed it
    specs = []
    for k, yaw in enumerate(VIEWS):
        yaw, pitch, roll = yaw + rng.uniform(-5, 5), rng.uniform(-10, 10), rng.uniform(-6, 6)
        expression = np.zeros(asset.n_expressions) if k == 0 else sample_expression(asset.expression_names, rng, 0.4)
        rotation = FACING @ euler_to_matrix(yaw, pitch, roll)
        specs.append(dataclasses.replace(base, expression=expression, yaw=float(yaw), pitch=float(pitch), roll=float(roll),
                                         rotation=rotation, translation=target - rotation @ centre))
    return specs


def generate(asset: HeadModelAsset, out: Path, heads: int, seed: int, size: int = 512, samples: int = 16,
             start: int = 0, off_model_mm: float = 2.0, command: str | None = None, log=print) -> None:
    out.mkdir(parents=True, exist_ok=True)
    textures = ensure_procedural_textures(asset, out / "textures", 8, seed)
    renderer = None
    for index in range(start, start + heads):
        record_path = out / f"{index:04d}.json"
        if record_path.is_file():
            continue
        specs = head_views(asset, seed, index, textures)
        bumps = draw_bumps(asset, np.random.default_rng([seed, index, BUMP_TAG]), off_model_mm)
        displacement = off_model_displacement(asset, bumps, specs[0].identity)
        renderer = renderer or BlenderRenderer(asset, samples=samples)
        t0 = time.perf_counter()
        views = []
        for k, spec in enumerate(specs):
            images = {}
            for variant in VARIANTS:
                verts = asset.vertices(spec.identity, spec.expression).astype(float)
                if variant == "off":
                    verts = verts + displacement
                renderer.set_sample(spec, verts)
                name = f"{index:04d}_{variant}_{k}.png"
                Image.fromarray(composite(renderer.render(size, size, out / name), spec.look)).save(out / name)
                images[variant] = name
            views.append({"yaw": spec.yaw, "pitch": spec.pitch, "roll": spec.roll, "rotation_matrix": spec.rotation.tolist(),
                          "translation": spec.translation.tolist(), "images": images,
                          "expression": {n: float(w) for n, w in zip(asset.expression_names, spec.expression)}})
        record = {"index": index, "seed": seed, "identity": specs[0].identity.tolist(), "off_model": bumps.to_json(),
                  "off_model_rms_mm": off_model_mm, "focal_mm_equivalent": specs[0].lens_mm,
                  "intrinsics": intrinsics(specs[0].lens_mm, size, size), "nose_tip_vertex": nose_tip_vertex(asset),
                  "texture": os.path.relpath(specs[0].texture, out),
                  "views": views, "render_seconds": round(time.perf_counter() - t0, 2)}
        record_path.write_text(json.dumps(record, indent=1))
        log(f"head {index:04d}: {len(views)} views x {len(VARIANTS)} variants in {record['render_seconds']:.0f} s")
    (out / "dataset.json").write_text(json.dumps({"command": command, "seed": seed, "size": size, "samples_per_pixel": samples,
                                                  "views": VIEWS, "variants": VARIANTS, "off_model_rms_mm": off_model_mm,
                                                  "conventions": __doc__}, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.likeness_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--seed", type=int, default=700)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel (denoised)")
    parser.add_argument("--off-model-mm", type=float, default=2.0)
    args = parser.parse_args(argv)
    from backend.headmodel.ict_source import load_ict

    command = "python -m bench.likeness_data " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    generate(load_ict(progress=False), args.out, args.heads, args.seed, args.size, args.samples, args.start,
             args.off_model_mm, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
