"""Video decoding: rotation metadata, variable frame rate, damage, limits, bad files (real PyAV, real clips)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from backend.errors import InputError
from backend.video.decode import DecodeReport, VideoLimits, probe_video, read_frames
from tests.conftest import MEDIA

D0 = MEDIA / "video" / "d0.mp4"


def quadrant_image(h: int = 96, w: int = 64) -> np.ndarray:
    """Red top-left, green top-right, blue bottom-left, white bottom-right: orientation is visible."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2:] = (0, 255, 0)
    img[h // 2:, : w // 2] = (0, 0, 255)
    img[h // 2:, w // 2:] = (255, 255, 255)
    return img


def write_clip(path: Path, frames: list[np.ndarray], pts: list[int] | None = None, time_base=Fraction(1, 1000),
               rotation: int | None = None, fps: int = 25) -> Path:
    """An H.264 MP4 with the given frames; ``pts`` in ``time_base`` units (variable frame rate)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        if pts is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def decode_all(path: Path, limits: VideoLimits | None = None):
    info = probe_video(path, limits)
    report = DecodeReport()
    return info, list(read_frames(info, report)), report


def test_real_clip_frames_and_times():
    info, frames, report = decode_all(D0)
    assert (info.width, info.height, info.rotation) == (512, 512, 0)
    assert len(frames) == 78 == report.decoded and not report.damaged
    times = np.array([f.time for f in frames])
    assert times[0] == 0 and np.allclose(np.diff(times), 1 / 25, atol=1e-6)
    assert frames[10].rgb.shape == (512, 512, 3) and frames[10].rgb.dtype == np.uint8


def test_only_wanted_frames_are_converted():
    info = probe_video(D0)
    frames = list(read_frames(info, DecodeReport(), wanted={3, 40}))
    assert len(frames) == 78
    assert [f.index for f in frames if f.rgb is not None] == [3, 40]


@pytest.mark.parametrize("display_rotation, turns", [(-90, 1), (90, -1), (180, 2)])
def test_rotation_metadata_makes_frames_upright(tmp_path, display_rotation, turns):
    """A phone stores the picture turned and a display rotation: frames come back as shown."""
    upright = quadrant_image()
    stored = np.ascontiguousarray(np.rot90(upright, k=turns))  # what the camera wrote
    clip = write_clip(tmp_path / "rot.mp4", [stored] * 3, rotation=display_rotation)
    info, frames, _ = decode_all(clip)
    assert (info.width, info.height) == (upright.shape[1], upright.shape[0])
    got = frames[0].rgb.astype(int)
    assert got.shape == upright.shape
    assert np.abs(got - upright).mean() < 12, "the frame is not upright"


def test_variable_frame_rate_keeps_real_times(tmp_path):
    img = quadrant_image()
    pts = [0, 40, 80, 200, 240, 500]  # milliseconds: irregular gaps
    clip = write_clip(tmp_path / "vfr.mp4", [img] * len(pts), pts=pts)
    _, frames, _ = decode_all(clip)
    assert np.allclose([f.time for f in frames], np.array(pts) / 1000, atol=2e-3)


def test_truncated_clip_keeps_decoded_frames_and_reports(tmp_path):
    data = D0.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    try:
        info, frames, report = decode_all(cut)
    except InputError as exc:  # the index (moov) may sit at the end: then nothing decodes at all
        assert exc.code == "not_video" and "cut.mp4" in str(exc)
        return
    assert 0 < len(frames) < 78
    assert report.damaged and report.notes and "cut.mp4" in report.notes[0] and "damaged" in report.notes[0]


def test_corrupted_middle_is_skipped_and_reported(tmp_path):
    data = bytearray(D0.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 2
    data[start:start + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    _, frames, report = decode_all(bad)
    assert len(frames) > 30  # frames on both sides of the damage decode
    assert report.decoded == len(frames)


@pytest.mark.parametrize("content, code", [(b"", "empty"), (b"not a video at all" * 100, "not_video")])
def test_bad_files_refused_with_the_file_named(tmp_path, content, code):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        probe_video(path)
    assert err.value.code == code and "clip.mp4" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        probe_video(tmp_path / "nope.mp4")
    assert err.value.code == "missing"


def test_limits_checked_before_decoding():
    with pytest.raises(InputError) as err:
        probe_video(D0, VideoLimits(max_seconds=2.0))
    assert err.value.code == "too_long" and "3 s" in err.value.reason and "limit of 2 s" in err.value.reason
    with pytest.raises(InputError) as err:
        probe_video(D0, VideoLimits(max_bytes=1000))
    assert err.value.code == "too_large"
    with pytest.raises(InputError) as err:
        probe_video(D0, VideoLimits(max_frame_pixels=100_000))
    assert err.value.code == "too_large" and "512x512" in err.value.reason
