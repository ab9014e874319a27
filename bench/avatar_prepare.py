"""Track a clip once and write its avatar inputs as one small file (``backend.avatar.prepared``),
for trainings that must not (or need not) track again: the GPU check, CPU before/after runs.

    python -m bench.avatar_prepare CLIP.mp4 [--preset fast|quality] [--size N] [--expressions METHOD]
                                   [--frames-like OTHER.npz] -o OUT.npz [--asset-to DIR]

``--asset-to DIR`` also copies the converted ICT-FaceKit asset (``ict-facekit.npz``) there: the
GPU machine has no ../shared. DIR must be a git-ignored folder (``.gpu/``); never commit it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from backend.avatar.pipeline import prepare_clip
from backend.avatar.prepared import load_prepared, save_prepared
from backend.avatar.train import PRESETS
from backend.video.predictor import EXPRESSION_METHODS


def spread_away_from(track, heldout: list[int], n: int, guard: int = 3) -> list[int]:
    """``n`` frame numbers spread over the clip, each at least ``guard`` frames from every held-out
    frame (more training frames against the same held-out ones)."""
    usable = np.setdiff1d(np.arange(track.n_frames), track.missing)
    far = usable[np.min(np.abs(usable[:, None] - np.asarray(heldout)[None]), axis=1) >= guard]
    return sorted({int(far[k]) for k in np.linspace(0, len(far) - 1, n).round().astype(int)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--preset", default="fast", choices=tuple(PRESETS))
    parser.add_argument("--size", type=int, default=None, help="crop side (default: the preset's)")
    parser.add_argument("--train-frames", type=int, default=None, help="default: the preset's")
    parser.add_argument("--expressions", default=None, choices=EXPRESSION_METHODS,
                        help="the tracker's expression method (default: the tracker's)")
    parser.add_argument("--smoothing", type=float, default=None, help="ExpressionOptions.offline_smoothing")
    parser.add_argument("--prior-weight", type=float, default=None, help="TrackConfig.prior_weight")
    parser.add_argument("--frames-like", type=Path, default=None,
                        help="a prepared file whose training and held-out frames to use (A/B on the same frames)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--asset-to", type=Path, default=None)
    args = parser.parse_args(argv)
    from backend.headmodel.ict_source import ensure_ict_asset
    from backend.reconstruct import ReconstructOptions, Reconstructor
    from backend.video.decode import decode_frames
    from backend.video.pipeline import VideoPipeline
    from backend.video.track import ExpressionOptions, VideoOptions
    from PIL import Image

    cfg = PRESETS[args.preset]
    if args.size:
        cfg = replace(cfg, size=args.size)
    if args.train_frames:
        cfg = replace(cfg, train_frames=args.train_frames)
    with Reconstructor(ReconstructOptions(progress=False)) as rec, tempfile.TemporaryDirectory() as tmp:
        given = {"method": args.expressions, "offline_smoothing": args.smoothing}
        options = VideoOptions(progress=False, expressions=ExpressionOptions(**{k: v for k, v in given.items() if v is not None}))
        if args.prior_weight is not None:
            options = replace(options, track=replace(options.track, prior_weight=args.prior_weight))
        vp = VideoPipeline(rec, options)
        result = vp.reconstruct(args.clip, Path(tmp) / "head")
        texture = np.asarray(Image.open(result.bundle_dir / "texture_shaded.png").convert("RGB"))  # the bake the pipeline starts the avatar from
        split = None
        if args.frames_like:
            like = load_prepared(args.frames_like)
            train, heldout = [f.index for f in like.train], [f.index for f in like.heldout]
            if args.train_frames and args.train_frames != len(train):
                train = spread_away_from(result.track, heldout, args.train_frames)
            split = (train, heldout)
        clip = prepare_clip(rec, result.track, texture, cfg, lambda wanted: decode_frames(result.track.info, wanted),
                            split=split)
    if not clip.heldout:
        print(f"{args.clip}: too short for {len(clip.train)} training frames and held-out ones at least 3 frames "
              "away; take a longer clip or fewer --train-frames")
        return 1
    path = save_prepared(args.out, clip)
    print(f"{path}: {len(clip.train)} training + {len(clip.heldout)} held-out frames at {clip.size}², "
          f"{path.stat().st_size / 2**20:.1f} MiB")
    if args.asset_to:
        args.asset_to.mkdir(parents=True, exist_ok=True)
        shutil.copy(ensure_ict_asset(progress=False), args.asset_to / "ict-facekit.npz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
