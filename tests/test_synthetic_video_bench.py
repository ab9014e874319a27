"""The synthetic video benchmark: the scripted performance, one tiny Cycles clip, the video metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_synthetic_bench import (
    _TinyAsset,  # the photo bench's small linear model (tests/ is on sys.path)
)

from bench.accuracy import Evaluator
from bench.synthetic_sampling import (
    EXCLUSIVE,
    FACING,
    euler_to_matrix,
    rotation_to_axis_angle,
)
from bench.video_accuracy import (
    ClipTruth,
    FakeTrack,
    fake_track,
    markdown,
    match_frames,
    mean_abs_step,
    rotation_errors_deg,
    score_track,
    weight_errors,
)

FPS = 25.0


class _Asset(_TinyAsset):
    expression_names = tuple(f"key{i}" for i in range(53))


def _truth(n: int = 40, static: int = 20) -> ClipTruth:
    """A clip of ``n`` frames: still and neutral for ``static`` frames, then a smile and a head turn."""
    times = np.arange(n) / FPS
    expressions = np.zeros((n, 53))
    ramp = np.clip((np.arange(n) - static) / 10.0, 0, 1)
    expressions[:, 7], expressions[:, 26] = 0.8 * ramp, 0.05 * ramp  # key 26 never exceeds 0.1: not active
    yaw = 5 + 20 * ramp
    rotations = np.stack([rotation_to_axis_angle(FACING @ euler_to_matrix(y, 2, 1)) for y in yaw])
    translations = np.tile([1.0, -2.0, 70.0], (n, 1))
    identity = np.random.default_rng(0).normal(size=100)
    return ClipTruth("clip_00", {}, Path("clip_00.mp4"), identity, times, expressions, rotations, translations, (0, static), 900.0)


def test_perfect_track_scores_zero_and_zeros_baseline_is_the_mean_weight():
    truth, ev = _truth(), Evaluator(_Asset())
    row = score_track(truth, fake_track(truth), ev)
    for key in ("expr_mae", "expr_mae_active", "jitter_weight", "jitter_rot_deg", "jitter_trans_mm", "rot_err_deg",
                "trans_err_cm", "focal_err_pct", "identity_face_median_mm"):
        assert row[key] == pytest.approx(0, abs=1e-6), key
    assert (row["scored_frames"], row["missing"], row["static_pairs"], row["n_active_keys"]) == (40, 0, 19, 1)
    assert row["zeros_mae"] == pytest.approx(truth.expressions.mean())
    assert row["zeros_mae_active"] == pytest.approx(truth.expressions[:, 7].mean())
    assert row["meanface_face_median_mm"] > 1.0


def test_known_offset_gives_known_mae_and_no_jitter():
    truth, ev = _truth(), Evaluator(_Asset())
    row = score_track(truth, fake_track(truth, expression_offset=0.1), ev)
    assert row["expr_mae"] == pytest.approx(0.1)
    assert row["expr_mae_active"] == pytest.approx(0.1)
    assert row["jitter_weight"] == pytest.approx(0.0, abs=1e-12)  # a constant error does not jitter


def test_jitter_and_rotation_metrics():
    assert mean_abs_step(np.full((10, 53), 0.3)) == 0.0
    assert mean_abs_step(np.array([[0.0], [0.2], [0.0], [0.2]])) == pytest.approx(0.2)
    assert mean_abs_step(np.zeros((1, 3))) == 0.0
    truth = _truth()
    track = fake_track(truth)
    # Static segment: the head rocks by 1 degree about z from frame to frame.
    base = FACING @ euler_to_matrix(5, 2, 1)
    track.rotations[:20] = [rotation_to_axis_angle(euler_to_matrix(0, 0, (i % 2) * 1.0) @ base) for i in range(20)]
    row = score_track(truth, track, Evaluator(_Asset()))
    assert row["jitter_rot_deg"] == pytest.approx(1.0, abs=1e-6)
    assert row["rot_err_deg"] == pytest.approx(10 * 1.0 / 40, abs=1e-6)  # 10 of 40 frames 1 degree off
    turned = rotation_to_axis_angle(euler_to_matrix(0, 0, 10) @ base)
    assert rotation_errors_deg(turned[None], rotation_to_axis_angle(base)[None])[0] == pytest.approx(10)


def test_frames_are_matched_by_time_and_missing_frames_are_left_out():
    truth = _truth()
    assert list(match_frames(truth.times + 0.01, truth.times)) == list(range(40))
    assert list(match_frames(np.array([-1.0, 0.5 / FPS - 1e-6, 100.0]), truth.times)) == [-1, 0, -1]
    track = fake_track(truth)
    track.expressions[[3, 30]] = 1.0  # garbage where the tracker says it lost the face
    track.missing = [3, 30]
    row = score_track(truth, track, Evaluator(_Asset()))
    assert row["expr_mae"] == pytest.approx(0, abs=1e-12) and row["scored_frames"] == 38
    assert row["static_pairs"] == 17  # pairs (2, 3) and (3, 4) are gone
    # A track with every other frame (e.g. a 12.5 fps tracker) is scored on its own frames.
    half = FakeTrack(truth.identity, truth.focal, truth.times[::2], truth.expressions[::2], truth.rotations[::2],
                     truth.translations[::2])
    row = score_track(truth, half, Evaluator(_Asset()))
    assert row["scored_frames"] == 20 and row["expr_mae"] == 0 and "jitter_weight" not in row


def test_weight_errors_and_report():
    gt = np.zeros((4, 53))
    gt[2, 5] = 0.5
    e = weight_errors(gt + 0.02, gt)
    assert e["mae"] == pytest.approx(0.02) and e["mae_active"] == pytest.approx(0.02) and e["n_active_keys"] == 1
    assert weight_errors(gt, np.zeros((4, 53)))["mae_active"] is None
    truth = _truth()
    truth.rotations[25] = rotation_to_axis_angle(FACING)  # frontal, but not neutral
    truth.rotations[12] = rotation_to_axis_angle(FACING @ euler_to_matrix(1, 0, 0))
    assert truth.frontal_neutral_frame() == 12
    from bench.accuracy_report import summarize

    row = {"clip": "clip_00", "ok": True, **score_track(truth, fake_track(truth), Evaluator(_Asset()))}
    text = markdown({"data": "x", "tracker": "oracle", "rows": [row], "summary": summarize([row])})
    assert "| clip_00 | 40 (0) | 0.000 |" in text and "**mean**" in text


def test_scripted_performance(asset):
    from bench.synthetic_video_script import (
        LOOK_KEYS,
        POSE_LIMITS,
        clip_spec,
        look_weights,
    )

    spec = clip_spec(asset, seed=500, index=1, textures=["a.png", "b.png"], n_frames=100)
    names = asset.expression_names
    w = spec.expressions
    assert w.shape == (100, 53) and w.min() >= 0 and w.max() <= 1
    assert spec.static == (0, 25) and not w[:25].any()
    assert np.ptp(spec.poses_deg[:25], 0).max() == 0 and np.ptp(spec.translations[:25], 0).max() == 0
    assert w[:, names.index("jawOpen")].max() >= 0.4 and w[:, names.index("eyeBlink_L")].max() > 0.8
    assert (np.abs(spec.poses_deg) <= POSE_LIMITS + 1e-9).all() and np.ptp(spec.poses_deg[:, 0]) > 10
    # Eased, no jumps: expression events ramp over >= 0.15 s (blinks shut in 0.08-0.12 s and gaze
    # shifts take 0.1-0.25 s, as real ones do: they may change by most of their range in a frame).
    steps = np.abs(np.diff(w, axis=0))
    fast = [names.index(k) for k in ["eyeBlink_L", "eyeBlink_R", *LOOK_KEYS]]
    assert np.delete(steps, fast, axis=1).max() < 0.5
    for a, b in EXCLUSIVE:
        assert not ((w[:, names.index(a)] > 0) & (w[:, names.index(b)] > 0)).any()
    # Gaze: both eyes together, and the eyeLook* weights are its angles over GAZE_RANGE_DEG.
    assert np.array_equal(spec.gaze[:, 0], spec.gaze[:, 1]) and not spec.gaze[:25].any()
    looks = [names.index(k) for k in LOOK_KEYS]
    assert np.allclose(w[:, looks], look_weights(spec.gaze, names)[:, looks])
    again = clip_spec(asset, seed=500, index=1, textures=["a.png", "b.png"], n_frames=100)
    assert np.array_equal(again.expressions, w) and np.array_equal(again.identity, spec.identity)
    other = clip_spec(asset, seed=500, index=2, textures=["a.png"], n_frames=100)
    assert not np.array_equal(other.identity, spec.identity)


def test_gaze_turns_the_eyeballs(asset):
    from bench.synthetic_video_script import (
        gaze_of_weights,
        look_weights,
        posed_vertices,
    )

    names = asset.expression_names
    gaze = np.array([[20.0, -10.0], [-15.0, 12.0]])  # left eye: to the subject's left and down
    weights = look_weights(gaze, names)
    assert weights[names.index("eyeLookOut_L")] == pytest.approx(20 / 30)
    assert weights[names.index("eyeLookOut_R")] == pytest.approx(15 / 30)  # the right eye looks to its right: out
    assert weights[names.index("eyeLookDown_L")] == pytest.approx(10 / 25)
    assert gaze_of_weights(weights, names) == pytest.approx(gaze)
    rest, posed = asset.vertices(np.zeros(100), weights), posed_vertices(asset, np.zeros(100), weights)
    for part, (yaw, pitch) in (("eyeball_left", gaze[0]), ("eyeball_right", gaze[1])):
        ball = slice(asset.parts[part][0], asset.parts[part][1] + 1)
        centre = rest[ball].mean(0)
        front = int(np.argmax(rest[ball][:, 2]))  # the pupil's pole, about straight ahead at rest
        moved = posed[ball][front] - rest[ball][front]
        assert np.sign(moved[:2]).tolist() == [np.sign(yaw), np.sign(pitch)]  # +x: subject's left; +y: up
        expected = euler_to_matrix(yaw, -pitch, 0) @ (rest[ball] - centre).T
        assert np.allclose(posed[ball] - centre, expected.T, atol=1e-5)
    others = np.ones(len(rest), bool)
    others[asset.parts["eyeball_left"][0] : asset.parts["eyeball_right"][1] + 1] = False
    assert np.array_equal(posed[others], rest[others])


def test_gaze_error_metric():
    from bench.video_metrics import gaze_angles_deg

    truth = _truth()
    truth.gaze = np.zeros((40, 2, 2))
    track = fake_track(truth)
    track.gaze[:, :, 0] = 3.0  # 3 degrees of yaw on every frame, both eyes
    row = score_track(truth, track, Evaluator(_Asset()))
    assert row["gaze_err_deg"] == pytest.approx(3.0)
    assert gaze_angles_deg(np.array([0.0, 10.0]), np.array([0.0, -5.0])) == pytest.approx(15.0)


@pytest.mark.blender
def test_tiny_clip_renders_with_ground_truth(tmp_path):
    pytest.importorskip("bpy")
    av = pytest.importorskip("av")
    from PIL import Image

    from backend.headmodel import ict_source

    if ict_source.find_local_source() is None and not (ict_source.cache_dir() / ict_source.ASSET_FILE).is_file():
        pytest.skip("ICT-FaceKit is not available locally")
    from bench.synthetic_video import generate, read_video

    asset = ict_source.load_ict(progress=False)
    texture = tmp_path / "skin.png"
    Image.new("RGB", (64, 32), (200, 150, 120)).save(texture)
    out = tmp_path / "clips"
    generate(asset, out, clips=1, frames=3, size=128, static_frames=1, samples=1, denoise=False,
             textures=[str(texture)], log=lambda *a: None)
    rec = json.loads((out / "clip_00.json").read_text())
    assert len(rec["identity"]) == 100 and (rec["static_segment"]["start"], rec["static_segment"]["stop"]) == (0, 1)
    assert set(rec["intrinsics"]) == {"fx", "fy", "cx", "cy", "width", "height"} and rec["intrinsics"]["width"] == 128
    assert [f["time"] for f in rec["frames"]] == pytest.approx([0.0, 0.04, 0.08])
    for f in rec["frames"]:
        assert len(f["expression"]) == 53 and len(f["rotation"]) == 3 and len(f["translation"]) == 3
        assert np.shape(f["gaze_deg"]) == (2, 2)
        assert rotation_errors_deg(np.array([f["rotation"]]), np.array([rotation_to_axis_angle(np.array(f["rotation_matrix"]))]))[0] < 1e-6
    images, times = read_video(out / "clip_00.mp4")
    assert len(images) == 3 and images[0].shape == (128, 128, 3)
    assert times == pytest.approx([0.0, 0.04, 0.08], abs=1e-6)
    with av.open(str(out / "clip_00.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 25 and stream.codec_context.pix_fmt == "yuv420p"
    assert not (out / "clip_00.frames").exists()
    # The head is in the picture where the ground truth says: not background at the nose tip.
    from bench.synthetic_scene import background_image

    background = background_image(rec["look"], 128, 128) * 255
    u, v = np.floor(rec["frames"][0]["nose_tip_2d"]).astype(int)
    assert np.abs(images[0][v, u] - background[v, u]).sum() > 30
    assert np.abs(images[0][2, 2] - background[2, 2]).sum() < 15
    # Finished clips are skipped.
    mtime = (out / "clip_00.mp4").stat().st_mtime_ns
    generate(asset, out, clips=1, frames=3, size=128, static_frames=1, samples=1, denoise=False,
             textures=[str(texture)], log=lambda *a: None)
    assert (out / "clip_00.mp4").stat().st_mtime_ns == mtime
