"""Held-out quality of the Gaussian avatar on every shared clip (``--avatar`` preset), against the
textured mesh alone on the same frames.

    python -m bench.avatar_eval [--preset fast] [--clips DIR] [--out bench/results/avatar_eval.json]

Each clip: track, bake, train the avatar on spread frames, then PSNR / SSIM on held-out frames
(never used in fitting, at least 3 frames from any training frame) inside the person mask, at the
preset's crop size. Times are reported as multiples of the clip's length (CPU rule: ratios).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from shared.protocol import AVATAR_PRESETS
from backend.reconstruct import ReconstructOptions, Reconstructor
from backend.video.pipeline import VideoPipeline

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO.parent / "shared" / "media" / "video"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="fast", choices=tuple(AVATAR_PRESETS))
    parser.add_argument("--clips", type=Path, default=CLIPS)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "avatar_eval.json")
    args = parser.parse_args(argv)
    rows = []
    with Reconstructor(ReconstructOptions(progress=False)) as rec, tempfile.TemporaryDirectory() as tmp:
        pipeline = VideoPipeline(rec)
        for clip in sorted(args.clips.glob("*.mp4")):
            start = time.perf_counter()
            result = pipeline.reconstruct(clip, Path(tmp) / clip.stem, avatar=args.preset)
            wall = time.perf_counter() - start
            report = json.loads((result.bundle_dir / "avatar.json").read_text())
            mean = report["heldout"]["mean"]
            rows.append({"clip": clip.name, "duration_s": result.clip.duration, "x_clip_length": wall / result.clip.duration,
                         "training_share": report["training"]["seconds"] / wall, "gaussians": report["training"]["gaussians"],
                         "heldout_frames": len(report["heldout_frames"]), **mean})
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"preset": args.preset, "clips": rows}, indent=1) + "\n")
    print("\n| clip | held-out frames | Gaussians | PSNR dB | SSIM | textured mesh PSNR dB | mesh SSIM | time × clip length |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clip']} | {r['heldout_frames']} | {r['gaussians']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{r['mesh_psnr']:.2f} | {r['mesh_ssim']:.3f} | {r['x_clip_length']:.1f}× |")
    n = len(rows)
    print(f"| **mean** | | | {sum(r['psnr'] for r in rows) / n:.2f} | {sum(r['ssim'] for r in rows) / n:.3f} | "
          f"{sum(r['mesh_psnr'] for r in rows) / n:.2f} | {sum(r['mesh_ssim'] for r in rows) / n:.3f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
