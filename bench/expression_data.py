"""Render the expression benchmark's clips and the learned predictor's training stills (Cycles).

    python -m bench.expression_data --out bench/results/expressions [--sets tune report train]

Sets (disjoint seeds; nothing is tuned on ``report``, the predictor never sees either):

* ``tune`` (seed 800) and ``report`` (seed 900): one folder per clip kind -- ``mixed`` (20-frame
  neutral start), ``turns`` (+-45 deg yaw, no neutral start), ``speech`` (no neutral start), ``rom``
  (range-of-motion: every key alone, then pairs, gaze sweep), ``offmodel`` (mixed on an off-model
  head, no neutral start); one clip of each per set (rendering time: ~0.6 s a frame on 2 cores);
* ``train`` (seed 1100): ``random`` clips whose frames are independent stills (identity, skin and
  camera fixed per clip), the predictor's training data.

Test clips 320 x 320 px (faces 40-50 % of the width), stills 256 x 256 (48-60 %), 25 fps, 4 Cycles
samples denoised; each clip is
written by ``bench.synthetic_video.generate`` (mp4 + JSON ground truth), finished clips are skipped.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

FPS, SAMPLES = 25.0, 4


@dataclass(frozen=True)
class ClipSet:
    folder: str
    kind: str
    seed: int
    clips: int
    frames: int
    static: int
    off_model_mm: float = 0.0
    size: int = 320
    framing: tuple[float, float] = (0.40, 0.50)


def clip_sets(name: str) -> list[ClipSet]:
    """The folders of set ``name`` (``tune``, ``report`` or ``train``)."""
    if name == "train":
        # Smaller frames, larger faces: about the same pixels per face at half the render time.
        return [ClipSet("train", "random", 1100, 48, 60, 0, size=256, framing=(0.48, 0.60))]
    seed, n = {"tune": (800, 1), "report": (900, 1)}[name]
    return [ClipSet(f"{name}/mixed", "mixed", seed, n, 80, 20), ClipSet(f"{name}/turns", "turns", seed + 1, n, 80, 0),
            ClipSet(f"{name}/speech", "speech", seed + 2, n, 80, 0), ClipSet(f"{name}/rom", "rom", seed + 3, 1, 0, 10),
            ClipSet(f"{name}/offmodel", "mixed", seed + 4, n, 80, 0, off_model_mm=2.0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.expression_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/expressions"))
    parser.add_argument("--sets", nargs="+", default=["tune", "report", "train"], choices=["tune", "report", "train"])
    args = parser.parse_args(argv)
    from backend.headmodel.ict_source import load_ict
    from bench.synthetic_textures import ensure_procedural_textures
    from bench.synthetic_video import generate

    asset = load_ict(progress=False)
    for name in args.sets:
        # The predictor's stills get their own skins: no texture is shared with a test clip.
        textures = ensure_procedural_textures(asset, args.out / "textures", 12, 1100 if name == "train" else 800)
        for s in clip_sets(name):
            generate(asset, args.out / s.folder, s.clips, s.frames, s.seed, s.size, FPS, s.static, SAMPLES, textures,
                     off_model_mm=s.off_model_mm, command=f"python -m bench.expression_data --sets {name}",
                     kind=s.kind, framing=s.framing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
