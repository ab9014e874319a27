"""CLI for video: ``headrig reconstruct VIDEO`` (via ``cli.cmd_reconstruct``) and ``headrig retarget``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from backend.errors import InputError

EXIT_OK = 0

# Share of the progress bar per stage (landmarks dominate: every frame is decoded and searched).
_STAGES = {"landmarks": (0, 55), "identity": (55, 58), "photometric": (58, 65), "tracking": (65, 92), "texture": (92, 98), "gltf": (98, 100),
           "finished": (100, 100)}
_AVATAR_STAGES = {"landmarks": (0, 14), "identity": (14, 15), "photometric": (15, 17), "tracking": (17, 25), "texture": (25, 27),
                  "avatar": (27, 98), "gltf": (98, 100), "finished": (100, 100)}


def reconstruct_options(args: argparse.Namespace):
    """ReconstructOptions from the ``reconstruct`` command's arguments."""
    from backend.fitting.photometric import PhotometricConfig
    from backend.reconstruct import ReconstructOptions

    steps = getattr(args, "photometric_steps", None)
    photometric = PhotometricConfig() if steps is None else PhotometricConfig(steps=max(int(steps), 0))
    return ReconstructOptions(progress=not args.quiet, max_pixels=args.max_pixels,
                              photometric=photometric)


class StageBar:
    """A 0-100 tqdm bar driven by ``(stage, fraction)`` progress calls."""

    def __init__(self, label: str, enabled: bool, stages: dict | None = None):
        self.stages = stages or _STAGES
        self.bar = tqdm(total=100, desc=label, unit="%", disable=not enabled,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")

    def __call__(self, stage: str, fraction: float) -> None:
        lo, hi = self.stages.get(stage, (self.bar.n, self.bar.n))
        target = lo + (hi - lo) * min(max(fraction, 0.0), 1.0)
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)
        self.bar.set_postfix_str(stage, refresh=False)

    def close(self) -> None:
        self.bar.close()


def expression_options(args: argparse.Namespace):
    """ExpressionOptions from ``--expressions`` and ``--face-landmarker``."""
    from backend.video.track import ExpressionOptions

    return ExpressionOptions(method=getattr(args, "expressions", None) or "fused",
                             face_landmarker=getattr(args, "face_landmarker", None))


def add_expression_options(parser: argparse.ArgumentParser) -> None:
    from backend.video.predictor import EXPRESSION_METHODS

    parser.add_argument("--expressions", choices=EXPRESSION_METHODS, default="fused",
                        help="how a video's shape-key weights are made: fused (default: the learned predictor starts and "
                             "guides the landmark solve, then a two-way smoother), predictor (the predictor alone, the "
                             "real-time path), solve (landmarks alone)")
    parser.add_argument("--face-landmarker", default=None, metavar="PATH",
                        help="your own MediaPipe face_landmarker.task (default: the one `make install` fetched)")


def reconstruct_video(args: argparse.Namespace, video: Path, out: Path) -> int:
    from backend.reconstruct import Reconstructor
    from backend.video.pipeline import VideoPipeline

    with Reconstructor(reconstruct_options(args)) as rec:
        pipeline = VideoPipeline(rec)
        pipeline.options.limits.max_seconds = args.max_seconds
        pipeline.options.expressions = expression_options(args)
        bar = StageBar("Reconstructing from video", not args.quiet, _AVATAR_STAGES if args.avatar else None)
        try:
            result = pipeline.reconstruct(video, out, force=args.force, on_progress=bar, avatar=args.avatar,
                                          avatar_device=getattr(args, "device", "auto"),
                                          avatar_threads=getattr(args, "threads", None),
                                          avatar_photos=getattr(args, "avatar_photos", None))
        finally:
            bar.close()
    track, clip = result.track, result.clip
    print(f"Head bundle: {result.bundle_dir.resolve()}")
    print(f"  {track.n_frames} frames ({clip.duration:.1f} s at {clip.fps:g} fps), identity from {len(track.identity_frames)} "
          f"frames, tracking error {result.track.landmark_rmse_px[result.track.landmark_rmse_px > 0].mean():.2f} px, "
          f"{sum(result.timings.values()):.1f} s")
    for note in clip.notes:
        print(f"  note: {note}")
    return EXIT_OK


def retarget_config(args: argparse.Namespace):
    """A RetargetConfig from the command-line options (errors name the option)."""
    from backend.retarget import RetargetConfig

    def pairs(items: list[str], option: str) -> dict[str, float]:
        out = {}
        for item in items or []:
            key, sep, value = item.partition("=")
            try:
                out[key] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise InputError(option, f"expected KEY=NUMBER, got {item!r}", "e.g. --gain jawOpen=1.2", code="bad_option")
        return out

    neutral = None if args.neutral_frame in (None, "auto") else args.neutral_frame
    data = {
        "neutral_frame": None if neutral is None else _int_option(neutral, "--neutral-frame"),
        "gain": pairs(args.gain, "--gain"), "offset": pairs(args.offset, "--offset"),
        "one_euro": {"min_cutoff": args.min_cutoff, "beta": args.beta, "d_cutoff": args.d_cutoff},
        "smoothing": not args.no_smoothing, "head_rotation": not args.no_head_rotation,
        "head_translation": args.head_translation,
    }
    try:
        return RetargetConfig.from_dict(data)
    except ValueError as exc:
        raise InputError("(options)", str(exc), "see 'headrig retarget --help'", code="bad_option") from None


def _int_option(value: str, option: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(option, f"expected a frame number or 'auto', got {value!r}", "", code="bad_option") from None


def cmd_retarget(args: argparse.Namespace) -> int:
    from backend.reconstruct import ReconstructOptions, Reconstructor
    from backend.video.pipeline import VideoPipeline

    out = Path(args.output)
    if out.exists() and not args.force:
        print(f"{out}: output folder already exists; choose another -o or pass --force to replace it", file=sys.stderr)
        return 2
    config = retarget_config(args)
    with Reconstructor(ReconstructOptions(progress=not args.quiet)) as rec:
        pipeline = VideoPipeline(rec)
        pipeline.options.limits.max_seconds = args.max_seconds
        pipeline.options.expressions = expression_options(args)
        bar = StageBar("Tracking the driving video", not args.quiet)
        try:
            if args.neutral_take or args.rom_take:
                config = pipeline.calibrate(config, args.neutral_take, args.rom_take, on_progress=bar)
            result = pipeline.retarget(Path(args.video), out, config, head_dir=Path(args.head), force=args.force,
                                       on_progress=bar)
        finally:
            bar.close()
    clip = result.clip
    print(f"Animation: {out.resolve()} (animation.json, livelink.csv)")
    print(f"  {clip.frame_count} frames at {clip.fps:g} fps for {clip.target.get('name', 'the head')}; "
          f"neutral frame {clip.calibration.get('neutral_frame_used', clip.calibration.get('neutral_frame'))}")
    for note in clip.notes:
        print(f"  note: {note}")
    return EXIT_OK


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    """The retarget calibration and smoothing options (``headrig retarget`` and ``headrig client retarget``)."""
    parser.add_argument("--neutral-frame", default="auto", help="frame number of the actor's neutral face, or 'auto' (default)")
    parser.add_argument("--gain", action="append", metavar="KEY=G", help="per-shape-key gain, e.g. jawOpen=1.2 (repeatable)")
    parser.add_argument("--offset", action="append", metavar="KEY=O", help="per-shape-key offset (repeatable)")
    parser.add_argument("--min-cutoff", type=float, default=1.0, help="One Euro filter: minimum cutoff in Hz (lower = smoother)")
    parser.add_argument("--beta", type=float, default=0.3, help="One Euro filter: speed coefficient (higher = less lag)")
    parser.add_argument("--d-cutoff", type=float, default=1.0, help="One Euro filter: derivative cutoff in Hz")
    parser.add_argument("--no-smoothing", action="store_true", help="do not filter the curves")
    parser.add_argument("--no-head-rotation", action="store_true", help="do not transfer the head's rotation")
    parser.add_argument("--head-translation", action="store_true", help="also transfer the head's translation")


def cmd_turntable(args: argparse.Namespace) -> int:
    from backend.avatar.turntable import TurntableOptions, render_turntable

    out = Path(args.output)
    if out.exists() and not args.force:
        print(f"{out}: exists; choose another -o or pass --force to replace it", file=sys.stderr)
        return 2
    opts = TurntableOptions(frames=args.frames, size=args.size, fps=args.fps)
    bar = tqdm(total=args.frames, desc="Turntable", unit="frame", disable=args.quiet)
    try:
        path = render_turntable(args.bundle, out, opts, animation=args.animation, device=args.device,
                                on_frame=lambda done, total: bar.update(1))
    finally:
        bar.close()
    print(f"Turntable: {Path(path).resolve()} ({args.frames} frames, {args.size}x{args.size})")
    return EXIT_OK


def cmd_export_web(args: argparse.Namespace) -> int:
    from backend.avatar.web_export import export_web

    out = Path(args.output)
    if out.exists() and not args.force:
        print(f"{out}: exists; choose another -o or pass --force to replace it", file=sys.stderr)
        return 2
    path = export_web(args.bundle, out)
    print(f"Web viewer: {path.resolve()} ({path.stat().st_size / 1e6:.1f} MB, self-contained; serve it over http, "
          f"e.g. 'python -m http.server' in its folder)")
    return EXIT_OK


def register(sub) -> None:
    """Add ``retarget``, ``turntable`` and ``export-web`` to the ``headrig`` sub-commands."""
    tt = sub.add_parser("turntable", help="render the bundle's Gaussian avatar orbiting once, to an MP4")
    tt.add_argument("bundle", help="head bundle folder with gaussians.ply (from 'headrig reconstruct VIDEO --avatar ...')")
    tt.add_argument("-o", "--output", required=True, help="MP4 file to write")
    tt.add_argument("--frames", type=int, default=120, help="frames in one orbit (default 120)")
    tt.add_argument("--size", type=int, default=512, help="image side in pixels (default 512; keep it small on a CPU)")
    tt.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    tt.add_argument("--animation", default=None, help="an animation.json (or its folder) to play while orbiting")
    tt.add_argument("--force", action="store_true", help="replace the output file if it exists")
    tt.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where to splat (default auto: gsplat on CUDA when present, else the CPU rasteriser)")
    tt.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tt.set_defaults(func=cmd_turntable)

    web = sub.add_parser("export-web", help="write a self-contained web page showing the bundle's Gaussian avatar")
    web.add_argument("bundle", help="head bundle folder with gaussians.ply (or a gaussians.ply)")
    web.add_argument("-o", "--output", required=True, help="HTML file to write")
    web.add_argument("--force", action="store_true", help="replace the output file if it exists")
    web.set_defaults(func=cmd_export_web)

    ret = sub.add_parser("retarget", help="track a driving video and write its performance as keyframes for a head")
    ret.add_argument("video", help="the driving video (the actor's performance)")
    ret.add_argument("--head", required=True, help="the target head bundle folder (from 'headrig reconstruct')")
    ret.add_argument("-o", "--output", required=True, help="animation folder to create (animation.json, livelink.csv)")
    add_calibration_options(ret)
    ret.add_argument("--max-seconds", type=float, default=600.0, help="refuse longer clips (default 600)")
    ret.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    add_expression_options(ret)
    ret.add_argument("--neutral-take", default=None, metavar="VIDEO",
                     help="a short clip of the actor's relaxed face: its median weights are the rest levels")
    ret.add_argument("--rom-take", default=None, metavar="VIDEO",
                     help="a range-of-motion clip (every expression as far as the actor can): scales each key "
                          "so the actor's full reach gives 1")

    ret.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ret.set_defaults(func=cmd_retarget)
