"""``headrig`` command line: reconstruct, retarget, info, serve, client, keys.

Exit codes: 0 success; 2 bad input (one line: the file, what is wrong, what to do); 1 other failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from backend import __version__
from shared.protocol import AVATAR_PRESETS

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def _quiet_native_logs() -> None:
    # MediaPipe and TensorFlow Lite log through glog/absl to stderr; keep the terminal readable.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from backend.reconstruct import reconstruct_photos
    from backend.video_commands import reconstruct_options

    from backend.errors import InputError
    from backend.video.decode import is_video_path

    out = Path(args.output)
    if out.exists() and not args.force:
        print(f"{out}: output folder already exists; choose another -o or pass --force to replace it", file=sys.stderr)
        return EXIT_BAD_INPUT
    videos = [p for p in args.photos if is_video_path(p)]
    if videos:
        if len(args.photos) != 1:
            raise InputError(videos[0], "a video must be the only input", "reconstruct from one video, or from photos only",
                             code="mixed_inputs")
        from backend.video_commands import reconstruct_video

        return reconstruct_video(args, Path(videos[0]), out)
    if args.avatar:
        raise InputError(args.photos[0], "--avatar needs a video", "reconstruct from a clip to fit the Gaussian avatar",
                         code="bad_option")
    result = reconstruct_photos([Path(p) for p in args.photos], out, reconstruct_options(args), force=args.force)
    q = result.manifest.quality
    print(f"Head bundle: {result.bundle_dir.resolve()}")
    print(f"  landmark error {q['landmark_rmse_px']:.2f} px ({100 * q['landmark_rmse_iod']:.1f}% of eye distance), "
          f"texture coverage {100 * q['texture_coverage']:.0f}%, {sum(result.timings.values()):.1f} s")
    for note in result.manifest.notes:
        print(f"  note: {note}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from shared.bundle import bundle_summary, read_bundle

    manifest = read_bundle(Path(args.bundle), verify_hashes=not args.no_verify)
    print(bundle_summary(manifest))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headrig", description="Photos of a person -> an animation-ready head for Blender.")
    parser.add_argument("--version", action="version", version=f"headrig {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    from backend import video_commands

    rec = sub.add_parser("reconstruct", help="fit the head model to photos or a video of one person and write a head bundle")
    rec.add_argument("photos", nargs="+", metavar="INPUT",
                     help="one or more photos of the same person (JPEG, PNG, ...), or one video (MP4, MOV, MKV, WebM)")
    rec.add_argument("-o", "--output", required=True, help="bundle folder to create")
    rec.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    rec.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    rec.add_argument("--max-pixels", type=int, default=50_000_000, help="refuse images larger than this (default 50 MP)")
    rec.add_argument("--photometric-steps", type=int, default=None, metavar="N",
                     help="steps of the dense photometric shape fit after the landmark fit (default: the preset's; "
                          "0 = landmarks only, fastest; BENCHMARKS.md shows error versus seconds)")
    rec.add_argument("--max-seconds", type=float, default=600.0, help="refuse videos longer than this (default 600)")
    rec.add_argument("--avatar", choices=tuple(AVATAR_PRESETS), default=None,
                     help="also fit a Gaussian avatar bound to the mesh (video only): "
                          + "; ".join(f"{name} = {what}" for name, what in AVATAR_PRESETS.items()))
    rec.add_argument("--avatar-photos", nargs="+", default=None, metavar="PHOTO",
                     help="with a video and --avatar: photos of the same person (front, profiles) to train on too")
    rec.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="where the avatar trains and renders (default auto: CUDA when present)")
    rec.add_argument("--threads", default=None,
                     help="CPU threads for the avatar (default auto: the cores other programs leave free; "
                          "or $HEADRIG_THREADS)")
    video_commands.add_expression_options(rec)
    rec.set_defaults(func=cmd_reconstruct)

    info = sub.add_parser("info", help="summarise a head bundle")
    info.add_argument("bundle", help="bundle folder")
    info.add_argument("--no-verify", action="store_true", help="skip checking file hashes")
    info.set_defaults(func=cmd_info)

    # The service's commands live beside the service (serve, keys) and its client (client ...).
    from backend.service import client_commands, server_commands

    video_commands.register(sub)
    server_commands.register(sub)
    client_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_native_logs()
    args = build_parser().parse_args(argv)
    from backend.errors import HeadRigError
    from shared.bundle import BundleError

    try:
        return args.func(args)
    except (HeadRigError, BundleError) as exc:
        code = EXIT_BAD_INPUT if _is_bad_input(exc) else EXIT_FAILURE
        print(f"error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130


def _is_bad_input(exc: Exception) -> bool:
    from backend.errors import InputError
    from shared.bundle import BundleError

    return isinstance(exc, (InputError, BundleError))


if __name__ == "__main__":
    raise SystemExit(main())
