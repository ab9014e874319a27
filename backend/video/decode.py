"""Video files -> upright RGB frames with their real timestamps (PyAV).

Why the care: phones store portrait clips as landscape frames plus a display rotation, screen
recordings and phones write variable frame rates, and uploads get cut short. So frames are turned
upright from each frame's display matrix, times come from presentation timestamps (not
index / fps), and a decode error part-way keeps the frames before it and says where it stopped.
Limits are checked from the container header before any frame is decoded.
"""

from __future__ import annotations

import re

import os
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from backend.errors import InputError
from shared.media import VIDEO_EXTENSIONS, is_video_path  # noqa: F401  (importable from here too)

_HINT_VIDEO = "use an MP4/MOV/MKV/WebM clip that plays in a video player"


@dataclass
class VideoLimits:
    """Refuse clips over these before decoding (the service sets them per deployment)."""

    max_seconds: float = 600.0
    max_bytes: int = 4 << 30
    max_frame_pixels: int = 3840 * 2160


@dataclass
class VideoInfo:
    """What the container header says. width/height are after display rotation."""

    path: str
    width: int
    height: int
    rotation: int            # degrees the stored frames are turned to display upright (0, 90, 180, 270)
    fps: float               # nominal (average) frame rate
    duration: float          # seconds (header estimate)
    frame_estimate: int
    codec: str
    size_bytes: int
    sha256: str = ""
    focal_35mm: float | None = None  # the lens (35 mm equivalent) when the container says, e.g. phone clips


@dataclass
class VideoFrame:
    """index: position among decoded frames; time: seconds from the first frame; rgb: [H, W, 3] uint8."""

    index: int
    time: float
    rgb: np.ndarray


@dataclass
class DecodeReport:
    """Filled while frames are read: how many decoded, and where damage stopped or skipped decoding."""

    decoded: int = 0
    skipped_corrupt: int = 0
    dropped_duplicate_times: int = 0
    stopped_at: float | None = None   # seconds: decoding ended early here
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return self.stopped_at is not None or self.skipped_corrupt > 0


def probe_video(path: str | os.PathLike, limits: VideoLimits | None = None) -> VideoInfo:
    """Open the container, check it against ``limits`` and return its header facts.

    Raises:
        InputError: missing, empty, not_video (no video stream or not a container), too_large.
    """
    limits = limits or VideoLimits()
    shown = str(path)
    p = Path(path)
    if not p.exists():
        raise InputError(shown, "file not found", "check the path", code="missing")
    if not p.is_file():
        raise InputError(shown, "not a file", "pass a video file", code="not_a_file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(shown, "the file is empty (0 bytes)", "copy or export the clip again", code="empty")
    if size > limits.max_bytes:
        raise InputError(shown, f"the file is {size / 2**30:.1f} GiB, over the limit of {limits.max_bytes / 2**30:.1f} GiB",
                         "trim or re-encode the clip, or raise the limit", code="too_large")
    try:
        with av.open(shown) as container:
            if not container.streams.video:
                raise InputError(shown, "has no video stream", _HINT_VIDEO, code="not_video")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = (stream.frames or 0) / fps
            rotation = _stream_rotation(container, stream)
            width, height = ctx.width, ctx.height
            codec = ctx.name
            frames = int(stream.frames or round(duration * fps))
            focal_35mm = container_focal_35mm({**container.metadata, **stream.metadata})
    except InputError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(shown, f"not a readable video ({_av_reason(exc)})", _HINT_VIDEO, code="not_video") from None
    if width <= 0 or height <= 0:
        raise InputError(shown, "the video stream has no picture size", _HINT_VIDEO, code="not_video")
    if duration > limits.max_seconds:
        raise InputError(shown, f"the clip is {duration:.0f} s long, over the limit of {limits.max_seconds:.0f} s",
                         "trim the clip to the part you need, or raise the limit", code="too_long")
    if width * height > limits.max_frame_pixels:
        raise InputError(shown, f"frames are {width}x{height}, over the limit of {limits.max_frame_pixels / 1e6:.1f} MP",
                         "export the clip at a lower resolution", code="too_large")
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(shown, width, height, rotation, fps, duration, frames, codec, size, focal_35mm=focal_35mm)


def container_focal_35mm(metadata: dict) -> float | None:
    """The 35 mm equivalent focal length from container metadata (Apple's QuickTime key
    ``com.apple.quicktime.camera.focal_length.35mm_equivalent`` and Android/ffmpeg variants: any
    key naming a 35 mm focal length), or None; values outside 10-1200 mm are ignored."""
    for key, value in metadata.items():
        k = key.lower()
        if "focal" in k and "35" in k:
            match = re.search(r"[0-9]+(?:\.[0-9]+)?", str(value))
            if match and 10.0 <= float(match.group()) <= 1200.0:
                return float(match.group())
    return None


def decode_frames(info: VideoInfo, wanted: set[int]) -> dict[int, np.ndarray]:
    """{frame index: RGB [H, W, 3] uint8} of the wanted frames, decoded again: keeping every frame
    of a clip in memory would not scale. Frames that no longer decode are left out."""
    return {f.index: f.rgb for f in read_frames(info, DecodeReport(), wanted) if f.index in wanted}


def read_frames(info: VideoInfo, report: DecodeReport, wanted: Container[int] | None = None) -> Iterator[VideoFrame]:
    """Upright frames in display order with times from their timestamps.

    ``wanted`` limits which frame indices are converted to RGB (the rest are decoded, which is
    needed to reach them, but not converted). Damage does not raise: decoding stops or skips and
    ``report`` says where; the caller decides whether what decoded is enough.
    """
    index = 0
    first_time = None
    last_time = -1.0
    try:
        container = av.open(info.path)
    except av.error.FFmpegError as exc:
        report.error = _av_reason(exc)
        report.stopped_at = 0.0
        return
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
                frames = packet.decode()
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                # A damaged packet: skip it and go on; a run of them means the rest is unreadable.
                report.skipped_corrupt += 1
                report.error = _av_reason(exc)
                if report.skipped_corrupt > 50:
                    report.stopped_at = max(last_time, 0.0)
                    break
                continue
            for frame in frames:
                if frame.is_corrupt:
                    report.skipped_corrupt += 1
                    continue
                t = _frame_time(frame, index, info.fps)
                if first_time is None:
                    first_time = t
                t -= first_time
                if t <= last_time:  # duplicated or reordered timestamps (some VFR muxers)
                    report.dropped_duplicate_times += 1
                    continue
                last_time = t
                rgb = None
                if wanted is None or index in wanted:
                    rgb = _upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                report.decoded += 1
                yield VideoFrame(index, t, rgb)
                index += 1
    if report.stopped_at is None and info.duration > 0 and last_time < info.duration - 3.0 / info.fps - 0.5:
        # The header promised more than the file holds: a cut-off upload or copy.
        report.stopped_at = max(last_time, 0.0)
        report.error = report.error or "the file ends early"
    if report.damaged:
        where = f"decoding stopped at {report.stopped_at:.2f} s of {info.duration:.2f} s" if report.stopped_at is not None else ""
        skipped = f"{report.skipped_corrupt} damaged packet(s) skipped" if report.skipped_corrupt else ""
        report.notes.append(f"{Path(info.path).name}: the video is damaged ({'; '.join(x for x in (where, skipped) if x)}"
                            f"{': ' + report.error if report.error else ''}); the {report.decoded} frames that decoded were used")


def _frame_time(frame, index: int, fps: float) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    return index / fps


def _stream_rotation(container, stream) -> int:
    """Display rotation from the first frame's display matrix (PyAV exposes it per frame)."""
    for frame in container.decode(stream):
        return _rotation_steps(frame.rotation) * 90
    return 0


def _rotation_steps(rotation) -> int:
    """Quarter turns counter-clockwise (np.rot90's k) that make a stored frame upright.

    FFmpeg's display-matrix angle is counter-clockwise; players rotate frames by its negative
    (``ffmpeg -autorotate``), e.g. a phone's portrait clip says -90 and is shown turned clockwise."""
    return int(round(float(rotation or 0) / 90.0)) % 4


def _upright(rgb: np.ndarray, rotation) -> np.ndarray:
    k = _rotation_steps(rotation)
    return np.ascontiguousarray(np.rot90(rgb, k=k)) if k else rgb


def _av_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0].strip() or type(exc).__name__
