"""Phone-shaped footage from a shared clip: a 9:16 window around the face, scaled to 720×1280 and
stored as a phone stores portrait video (landscape frames plus a display rotation), so the whole
path is exercised: decode turns the frames upright, tracking and the avatar see a tall frame.

    python -m bench.phone_clip ../shared/media/video/s32.mp4 -o bench/results/phone/s32_portrait.mp4

../shared has no portrait clip (s32 is a 1280×720 landscape shot); this reframes one. The window
sits on the face's median x over ten frames spread across the clip and is fixed for the clip (a hand-held phone is
not simulated). The output is written under a git-ignored folder: it is derived data, never committed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
from PIL import Image

from backend.video.decode import DecodeReport, probe_video, read_frames

PORTRAIT = (720, 1280)  # width, height as shown


def face_centre_x(frames: list[np.ndarray], source: str) -> float:
    """Median x (pixels) of the largest face's landmarks over ``frames`` [H, W, 3]."""
    from backend.landmarks.mediapipe_face import FaceLandmarker

    with FaceLandmarker() as marker:
        xs = [float(np.median(marker.detect(rgb, source).points[:, 0])) for rgb in frames]
    return float(np.median(xs))


def portrait_window(width: int, height: int, centre_x: float) -> tuple[int, int]:
    """(x0, x1): the widest 9:16 window of a ``width`` × ``height`` frame around ``centre_x``."""
    w = min(width, round(height * PORTRAIT[0] / PORTRAIT[1]))
    x0 = int(np.clip(round(centre_x - w / 2), 0, width - w))
    return x0, x0 + w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--crf", type=int, default=18, help="x264 quality (a phone's bitrate is about crf 18-23)")
    args = parser.parse_args(argv)
    info = probe_video(args.clip)
    frames = [f.rgb for f in read_frames(info, DecodeReport())]
    x0, x1 = portrait_window(info.width, info.height, face_centre_x(frames[::max(1, len(frames) // 10)], str(args.clip)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(args.out), "w") as out:
        stream = out.add_stream("libx264", rate=round(info.fps))
        # stored landscape (the sensor's orientation); the display matrix turns it upright
        stream.width, stream.height = PORTRAIT[1], PORTRAIT[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(args.crf)}
        stream.set_display_rotation(-90)
        for rgb in frames:
            tall = np.asarray(Image.fromarray(rgb[:, x0:x1]).resize(PORTRAIT, Image.Resampling.LANCZOS))
            stored = np.ascontiguousarray(np.rot90(tall, k=1))
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    shown = probe_video(args.out)
    print(f"{args.out}: {shown.width}×{shown.height} shown (stored turned, rotation {shown.rotation}°), "
          f"{len(frames)} frames from x {x0}-{x1} of {args.clip.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
