"""Video tracking and the video CLI on real clips (real ICT model, real MediaPipe)."""

from __future__ import annotations

import csv
import json

import av
import numpy as np
import pygltflib
import pytest
from PIL import Image

from backend.cli import main
from backend.errors import InputError
from backend.video.track import VideoOptions, track_video
from shared.animation import read_animation
from shared.bundle import read_bundle
from shared.livelink import ARKIT_CURVES
from tests.conftest import MEDIA
from tests.test_video_decode import write_clip

VIDEO = MEDIA / "video"


def d0_frames(count: int | None = None) -> list[np.ndarray]:
    with av.open(str(VIDEO / "d0.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return frames[:count] if count else frames


@pytest.fixture(scope="module")
def d0_track(reconstructor):
    return track_video(reconstructor, VIDEO / "d0.mp4", VideoOptions(progress=False))


def test_track_covers_every_frame(d0_track, reconstructor):
    t = d0_track
    assert t.n_frames == 78 and t.missing == [] and t.gaps == []
    assert t.expressions.shape == (78, 53) and (t.expressions >= 0).all() and (t.expressions <= 1).all()
    assert t.rotations.shape == (78, 3) and t.translations.shape == (78, 3) and t.gaze.shape == (78, 2, 2)
    assert 8 <= len(t.identity_frames) <= 16 and len(set(t.identity_frames)) == len(t.identity_frames)
    # A 512-pixel talking head: the fit lands within a few pixels of MediaPipe's points.
    assert np.median(t.landmark_rmse_px) < 6.0
    assert 300 < t.focal < 3000
    # Temporal smoothness: the head moves little between frames of a talking head.
    step = np.degrees(np.linalg.norm(np.diff(t.rotations, axis=0), axis=1))
    assert np.median(step) < 1.0
    # Eyes look roughly at the camera in this clip.
    assert np.abs(np.median(t.gaze.reshape(-1, 2), axis=0)).max() < 15


def test_one_identity_for_the_whole_track(d0_track):
    """The photometric stage ran on the identity frames before tracking: the tracked frames, the
    identity fit and the lighting the bake divides out all belong to the refined head."""
    t = d0_track
    assert t.lighting is not None and t.lighting.shape == (9, 3)
    assert np.array_equal(t.identity, t.identity_fit.identity)
    assert t.focal == pytest.approx(t.identity_fit.photos[0].focal)


def test_identity_from_many_frames_is_a_plausible_person(d0_track):
    assert np.mean(d0_track.identity ** 2) < 1.5  # ICT identity weights are N(0, 1)
    assert np.abs(d0_track.identity).max() < 5


def test_no_face_anywhere_is_a_clear_error(tmp_path, reconstructor):
    cat = np.asarray(Image.open(MEDIA / "images" / "s40.jpg").convert("RGB").resize((256, 256)))
    clip = write_clip(tmp_path / "cat.mp4", [cat] * 12)
    with pytest.raises(InputError) as err:
        track_video(reconstructor, clip, VideoOptions(progress=False))
    assert err.value.code == "no_face" and "cat.mp4" in str(err.value) and "12 frames" in err.value.reason


def test_gap_without_face_is_interpolated_and_reported(tmp_path, reconstructor):
    frames = d0_frames(50)
    black = np.zeros_like(frames[0])
    frames = frames[:20] + [black] * 20 + frames[20:]  # 0.8 s without a face at 25 fps
    clip = write_clip(tmp_path / "gap.mp4", frames)
    t = track_video(reconstructor, clip, VideoOptions(progress=False))
    assert t.missing == list(range(20, 40))
    assert t.gaps == [(20, 39)]
    assert any("no face from" in n and "frames 20-39" in n for n in t.notes)
    # Interpolated rows lie between their neighbours.
    lo, hi = np.minimum(t.expressions[19], t.expressions[40]), np.maximum(t.expressions[19], t.expressions[40])
    assert ((t.expressions[20:40] >= lo - 1e-6) & (t.expressions[20:40] <= hi + 1e-6)).all()
    assert (t.landmark_rmse_px[20:40] == 0).all()


@pytest.mark.slow
def test_cli_reconstruct_video_then_retarget(tmp_path, capsys):
    """The issue's 'done when': d3 -> animated bundle; d6 retargeted onto it."""
    head = tmp_path / "X"
    assert main(["reconstruct", str(VIDEO / "d3.mp4"), "-o", str(head), "-q"]) == 0
    manifest = read_bundle(head)
    assert manifest.files["animation.json"]["role"] == "animation"
    assert manifest.files["texture_shaded.png"]["role"] == "texture_shaded"
    assert manifest.inputs[0].file == "d3.mp4" and all(f.frame is not None for f in manifest.fits)
    clip = read_animation(head)
    assert clip.frame_count == 354 and abs(clip.fps - 30) < 1e-6 and clip.source["file"] == "d3.mp4"
    assert clip.duration == pytest.approx(11.8, abs=0.05)
    # The wink in d3: one eye's blink weight rises well above its median somewhere in the clip.
    blink = np.array([clip.weights["eyeBlink_L"], clip.weights["eyeBlink_R"]])
    assert (blink.max(1) - np.median(blink, axis=1)).max() > 0.3
    gltf = pygltflib.GLTF2().load(str(head / "head.glb"))
    anim = gltf.animations[0]
    assert {c.target.path for c in anim.channels} == {"weights", "rotation", "translation"}
    times = gltf.accessors[anim.samplers[0].input]
    assert times.count == 354 and times.max[0] == pytest.approx(clip.times[-1], abs=1e-4)
    assert gltf.accessors[anim.samplers[0].output].count == 354 * 53

    out = tmp_path / "Y"
    assert main(["retarget", str(VIDEO / "d6.mp4"), "--head", str(head), "-o", str(out), "-q", "--beta", "0.5",
                 "--no-smoothing"]) == 0
    anim_clip = read_animation(out)
    assert anim_clip.frame_count == 1008 and anim_clip.target["name"] == "X"
    assert anim_clip.calibration["config"]["one_euro"]["beta"] == 0.5
    neutral = anim_clip.calibration["neutral_frame"]
    assert max(anim_clip.weights[k][neutral] for k in anim_clip.shape_keys) < 1e-6  # neutral subtracted
    assert max(max(v) for v in anim_clip.weights.values()) > 0.3  # d6 has strong expressions
    with open(out / "livelink.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:2] == ["Timecode", "BlendShapeCount"] and rows[0][2:54] == list(ARKIT_CURVES)
    assert len(rows) == 1 + 1008
    assert json.loads((out / "retarget.json").read_text())["target"]["name"] == "X"
    printed = capsys.readouterr().out
    assert "Head bundle:" in printed and "Animation:" in printed


def test_cli_video_errors(tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert main(["reconstruct", str(empty), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert main(["reconstruct", str(VIDEO / "d0.mp4"), str(MEDIA / "images" / "d8.jpg"), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert main(["reconstruct", str(VIDEO / "d0.mp4"), "-o", str(tmp_path / "o"), "-q", "--max-seconds", "1"]) == 2
    assert main(["retarget", str(VIDEO / "d0.mp4"), "--head", str(tmp_path), "-o", str(tmp_path / "r"), "-q",
                 "--gain", "jawOpn=2"]) == 2
    err = capsys.readouterr().err
    assert "empty.mp4" in err and "only input" in err and "limit of 1 s" in err and "jawOpn" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()
