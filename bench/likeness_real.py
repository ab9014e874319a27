"""Real footage: does the photometric stage make the textured mesh match held-out frames better?

    python -m bench.likeness_real [--clips ../shared/media/video/*.mp4] [--md FILE]

No ground-truth shape exists for real clips, so the shape is judged by what it predicts: each
clip is reconstructed twice (landmarks only, and with the photometric stage), the shaded texture
is baked from the bundle's texture frames, and the textured mesh is rendered at the tracked pose
and expression of 8 held-out frames (at least 3 frames from every identity and texture frame,
spread over the clip); PSNR inside the person mask at 256² face crops (``backend.avatar.frames``).
A better shape with a better-aligned texture predicts unseen frames better.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SHARED_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "media" / "video"
CROP = 256
HELD_OUT = 8


def held_out_frames(track, used: list[int], count: int = HELD_OUT, guard: int = 3) -> list[int]:
    """``count`` tracked frames spread over the clip, each at least ``guard`` frames from ``used``."""
    used_arr = np.asarray(sorted(set(used)))
    ok = [i for i in range(track.n_frames)
          if i not in track.missing and (len(used_arr) == 0 or np.abs(used_arr - i).min() >= guard)]
    if len(ok) <= count:
        return ok
    return [ok[int(round(k))] for k in np.linspace(0, len(ok) - 1, count)]


def score_clip(rec, path: Path, steps: int) -> dict:
    from backend.avatar.frames import make_frame
    from backend.avatar.mesh_render import ict_textured_mesh, render_mesh
    from backend.avatar.ssim import psnr
    from backend.video.decode import decode_frames
    from backend.video.pipeline import VideoPipeline, pick_texture_frames

    rec.options.photometric.steps = steps  # the refiner shares this config
    pipeline = VideoPipeline(rec)
    with tempfile.TemporaryDirectory() as tmp:
        result = pipeline.reconstruct(path, Path(tmp) / "bundle")
        texture = np.asarray(Image.open(Path(tmp) / "bundle" / "texture_shaded.png").convert("RGB"))
    track = result.track
    used = list(track.identity_frames) + pick_texture_frames(track, pipeline.texture_frames)
    frames_ids = held_out_frames(track, used)
    images = decode_frames(track.info, set(frames_ids))
    textured = ict_textured_mesh(rec.asset, texture)
    scores = []
    for i in frames_ids:
        mask = rec.segmenter.mask(images[i], f"{path.name} frame {i}")
        frame = make_frame(i, images[i], mask, track, CROP)
        verts = rec.asset.vertices(track.identity, track.expressions[i]) @ frame.rotation.numpy().T.astype(float) + track.translations[i]
        image = render_mesh(verts, frame.K.numpy(), textured, CROP, CROP).image
        scores.append(float(psnr(torch.as_tensor(image, dtype=torch.float32) * frame.mask, frame.rgb, frame.mask)))
    return {"psnr": float(np.mean(scores)), "frames": frames_ids, "seconds": result.timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.likeness_real", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=Path, nargs="*", default=sorted(SHARED_CLIPS.glob("*.mp4")))
    parser.add_argument("--md", type=Path, default=None)
    args = parser.parse_args(argv)
    from backend.reconstruct import ReconstructOptions, Reconstructor

    lines = ["| clip | held-out PSNR dB, landmarks only | with the photometric stage | gain dB |", "|---|---|---|---|"]
    gains = []
    with Reconstructor(ReconstructOptions(progress=False)) as rec:
        default_steps = rec.options.photometric.steps
        for clip in args.clips:
            base = score_clip(rec, clip, 0)
            photo = score_clip(rec, clip, default_steps)
            gains.append(photo["psnr"] - base["psnr"])
            lines.append(f"| {clip.name} | {base['psnr']:.2f} | {photo['psnr']:.2f} | {gains[-1]:+.2f} |")
            print(lines[-1], flush=True)
    lines.append(f"| **median gain** | | | **{np.median(gains):+.2f}** (better on {sum(g > 0 for g in gains)} of {len(gains)}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
