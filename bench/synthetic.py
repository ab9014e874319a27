"""Synthetic ground-truth dataset: random ICT heads rendered by Blender's Cycles.

Every sample is an ICT-FaceKit head with a random identity, a sparse random expression and a
random head pose, seen by a pinhole camera with a random focal length, textured with a skin
texture in the bundle's atlas layout (``backend.texture_layout``) and lit by a random area key
light, a fill light and a coloured ambient world, over a plain or gradient background.

    python -m bench.synthetic --out bench/results/synthetic --count 24 --sizes 512 1024 --seed 0
    python -m bench.synthetic --out DIR --count 24 --textures out/*/texture.png   # baked textures
    python -m bench.synthetic --out DIR --verify-only                             # MediaPipe check

Per sample ``NNNN`` and image size ``S`` the folder holds ``NNNN_S.png`` (RGB) and one
``NNNN.json`` with the ground truth (see ``sample_record``):

* ``identity`` [100], ``expression`` {name: weight} for all 53 ICT expressions;
* ``rotation_matrix`` [3, 3], ``rotation`` [3] (axis-angle, radians) and ``translation`` [3] (cm):
  model -> camera, ``x_cam = R @ x_model + t``, OpenCV camera axes (x right, y down, z forward).
  Model space is the asset's: centimetres, Y up, the face looks down +Z;
* ``intrinsics`` {"S": {fx, fy, cx, cy, width, height}} in pixels. Pixel coordinates are
  continuous with the image spanning [0, W] x [0, H], so the centre of pixel (i, j) is
  (i + 0.5, j + 0.5) -- the convention of MediaPipe's normalised landmarks times the image size.
  ``u = fx * x / z + cx``, ``v = fy * y / z + cy``.

Samples are independent (sample i's randomness comes from ``(seed, i)``), so a dataset can be
generated in pieces and existing samples are skipped unless ``--force``. Procedural textures are
made once into ``<out>/textures/procedural_<seed>_KK.png`` and reused (delete them to remake).
``--textures`` takes atlas PNGs (2:1, face tile left, back head right, v up) or folders searched
for ``texture.png`` (e.g. reconstruct bundles); each sample picks one at random.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from backend.headmodel.asset import HeadModelAsset

# The pieces live in their own modules; their names stay importable from here.
from bench.synthetic_sampling import (  # noqa: F401
    ACTIVE_POOL,
    EXCLUSIVE,
    FACING,
    IRIS_COLOURS,
    SENSOR_WIDTH_MM,
    SampleSpec,
    euler_to_matrix,
    intrinsics,
    nose_tip_vertex,
    project_points,
    rotation_to_axis_angle,
    sample_expression,
    sample_record,
    sample_spec,
)
from bench.synthetic_scene import (  # noqa: F401
    CORNEA_UV_RADIUS,
    HIDDEN_MATERIALS,
    IRIS_UV_RADIUS,
    PUPIL_UV_RADIUS,
    BlenderRenderer,
    background_image,
    composite,
)
from bench.synthetic_textures import (  # noqa: F401
    HAIR_COLOURS,
    SKIN_TONES,
    collect_textures,
    ensure_procedural_textures,
    fbm,
    procedural_texture,
    rasterize_uv_positions,
    value_noise,
)
from bench.synthetic_verify import MEDIAPIPE_CHECK, load_sample, mediapipe_landmarks, verify  # noqa: F401


# ----------------------------------------------------------------------------- generation


def generate(asset: HeadModelAsset, out: Path, count: int, sizes: list[int], seed: int = 0, textures: list[str] | None = None,
             samples: int = 24, start: int = 0, force: bool = False, n_procedural: int = 8, command: str | None = None,
             log=print) -> dict:
    """Render ``count`` samples into ``out``; returns the manifest (also written as dataset.json)."""
    out.mkdir(parents=True, exist_ok=True)
    textures = list(textures or [])
    procedural = not textures
    if procedural:
        t0 = time.perf_counter()
        textures = ensure_procedural_textures(asset, out / "textures", n_procedural, seed)
        log(f"procedural textures ready ({time.perf_counter() - t0:.1f} s): {out / 'textures'}")
    renderer = None
    times: dict[str, list[float]] = {str(s): [] for s in sizes}
    for index in range(start, start + count):
        spec = sample_spec(asset, seed, index, textures)
        record = sample_record(asset, spec, sizes)
        json_path = out / f"{index:04d}.json"
        images = [out / record["images"][str(s)] for s in sizes]
        if not force and json_path.is_file() and all(p.is_file() for p in images):
            continue
        if renderer is None:
            renderer = BlenderRenderer(asset, samples=samples)
        renderer.set_sample(spec, asset.vertices(spec.identity, spec.expression))
        record["render_seconds"], record["render_cpu_seconds"] = {}, {}
        for size, path in zip(sizes, images):
            t0, c0 = time.perf_counter(), time.process_time()
            rgba = renderer.render(size, size, path)
            Image.fromarray(composite(rgba, spec.look)).save(path)
            dt = time.perf_counter() - t0
            record["render_seconds"][str(size)] = round(dt, 3)
            record["render_cpu_seconds"][str(size)] = round(time.process_time() - c0, 3)
            times[str(size)].append(dt)
        if procedural:
            record["texture"] = os.path.relpath(spec.texture, out)
        json_path.write_text(json.dumps(record, indent=1))
        log(f"{index:04d}: " + ", ".join(f"{s}px {record['render_seconds'][str(s)]:.1f} s" for s in sizes)
            + f"  yaw {spec.yaw:+.0f} pitch {spec.pitch:+.0f} roll {spec.roll:+.0f}  {spec.lens_mm:.0f} mm  "
            + (", ".join(record["active_expressions"]) or "neutral"))
    manifest = {
        "command": command,
        "seed": seed, "sizes": sizes, "samples_per_pixel": samples, "renderer": _renderer_name(),
        "textures": "procedural" if procedural else textures,
        "samples": sorted(p.stem for p in out.glob("[0-9][0-9][0-9][0-9].json")),
        "render_seconds_mean_this_run": {s: (float(np.mean(t)) if t else None) for s, t in times.items()},
        "conventions": __doc__.split("Per sample")[1].strip() if __doc__ else "",
    }
    old = out / "dataset.json"
    if old.is_file() and manifest["command"] is None:
        manifest["command"] = json.loads(old.read_text()).get("command")
    old.write_text(json.dumps(manifest, indent=1))
    return manifest


def _renderer_name() -> str:
    try:
        import bpy

        return f"Blender {bpy.app.version_string} Cycles (CPU)"
    except ImportError:
        return "unavailable"



# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/synthetic"))
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--start", type=int, default=0, help="index of the first sample")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--textures", nargs="*", default=[], help="atlas PNGs or folders (texture.png files); default: procedural")
    parser.add_argument("--procedural-count", type=int, default=8, help="procedural textures to make when no --textures")
    parser.add_argument("--samples", type=int, default=24, help="Cycles samples per pixel (denoised)")
    parser.add_argument("--force", action="store_true", help="re-render samples that already exist")
    parser.add_argument("--verify", action="store_true", help="run the MediaPipe check after rendering")
    parser.add_argument("--verify-only", action="store_true", help="only run the MediaPipe check on --out")
    args = parser.parse_args(argv)

    if not args.verify_only:
        from backend.headmodel.ict_source import load_ict

        asset = load_ict(progress=False)
        textures = collect_textures(args.textures)
        manifest = generate(asset, args.out, args.count, args.sizes, seed=args.seed, textures=textures,
                            samples=args.samples, start=args.start, force=args.force, n_procedural=args.procedural_count,
                            command="python -m bench.synthetic " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))
        print(f"{len(manifest['samples'])} samples in {args.out}; mean render seconds per image "
              f"{manifest['render_seconds_mean_this_run']}")
    if args.verify or args.verify_only:
        summary = verify(args.out)
        if not summary["convention_ok"]:
            print("convention check FAILED: projected ground truth does not match MediaPipe", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
