"""One Euro filter and retarget calibration (``backend/retarget``)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from backend.retarget import (
    MODEL_SHAPE_KEYS, OneEuroConfig, RetargetConfig, choose_neutral_frame, one_euro_filter, one_euro_quaternion,
    retarget_clip,
)
from shared.animation import AnimationClip, euler_ypr_to_quaternion, quaternion_multiply

KEYS = list(MODEL_SHAPE_KEYS)
NEUTRAL = 12  # the designed rest frame of make_driver


def make_driver(n: int = 40, seed: int = 0) -> AnimationClip:
    """Expressive frames (weights 0.2-0.9) around a rest frame NEUTRAL (0.02-0.1, a resting squint
    of 0.3), plus two decoys with all-zero weights: one missing, one badly fitted."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.2, 0.9, (n, len(KEYS)))
    w[NEUTRAL] = rng.uniform(0.02, 0.1, len(KEYS))
    w[NEUTRAL, KEYS.index("eyeSquint_L")] = 0.3
    w[3] = 0.0   # missing frame
    w[30] = 0.0  # fit collapsed: high landmark error
    rmse = rng.uniform(1.0, 2.0, n)
    rmse[30] = 9.0
    rmse[NEUTRAL] = 1.1  # a well fitted frame
    offset_q = euler_ypr_to_quaternion(0.3, -0.1, 0.05)  # camera not straight in front
    motion = [euler_ypr_to_quaternion(0.4 * math.sin(i / 5), 0.2 * math.cos(i / 7) - 0.2 * math.cos(NEUTRAL / 7),
                                      0.0) for i in range(n)]
    motion[NEUTRAL] = [1.0, 0.0, 0.0, 0.0]
    return AnimationClip(
        fps=30.0, times=[i / 30 for i in range(n)], shape_keys=KEYS,
        weights={k: w[:, j].tolist() for j, k in enumerate(KEYS)},
        head_rotation=[quaternion_multiply(offset_q, m) for m in motion],
        head_translation=rng.normal(0, 0.01, (n, 3)).tolist(), head_origin=[0.0, 0.0, 0.5],
        eye_left=rng.uniform(-20, 20, (n, 2)).tolist(), eye_right=rng.uniform(-20, 20, (n, 2)).tolist(),
        landmark_rmse_px=rmse.tolist(), missing=[3], notes=["tracked"])


def weights(clip: AnimationClip) -> np.ndarray:
    return np.array(clip.weight_rows())


# ---- One Euro ----

def test_constant_signal_stays_constant():
    times = np.cumsum(np.random.default_rng(1).uniform(0.005, 0.05, 200))
    values = np.tile([0.3, 0.0, 1.0], (200, 1))
    assert np.abs(one_euro_filter(values, times) - values).max() < 1e-12


def test_noisy_static_signal_jitter_drops_more_than_three_times():
    rng = np.random.default_rng(2)
    times = np.arange(600) / 60
    values = 0.5 + rng.normal(0, 0.05, (600, 4))
    out = one_euro_filter(values, times, OneEuroConfig())
    ratio = np.std(values[60:] - 0.5, axis=0) / np.std(out[60:] - 0.5, axis=0)
    assert (ratio > 3).all(), ratio


def step_lag(beta: float) -> float:
    """Seconds after a 0 -> 1 step until the filter reaches 0.9."""
    times = np.arange(240) / 60
    out = one_euro_filter((times >= 1.0).astype(float), times, OneEuroConfig(beta=beta))
    return times[np.argmax(out >= 0.9)] - 1.0


def test_step_lag_shrinks_as_beta_grows():
    lags = [step_lag(beta) for beta in (0.0, 0.3, 3.0, 30.0)]
    assert all(a > b for a, b in itertools.pairwise(lags)), lags
    assert lags[0] > 0.2 and lags[-1] < 0.05


def test_variable_frame_intervals_follow_real_time():
    """A step sampled at irregular times lands where the same step sampled at 240 Hz does."""
    rng = np.random.default_rng(3)
    irregular = np.concatenate([[0.0], np.cumsum(rng.uniform(1 / 120, 1 / 20, 200))])
    dense = np.arange(0, irregular[-1] + 1e-9, 1 / 240)
    config = OneEuroConfig(beta=0.0)  # a plain low-pass: its response depends on elapsed time only
    sparse_out = one_euro_filter((irregular >= 0.5).astype(float), irregular, config)
    dense_out = one_euro_filter((dense >= 0.5).astype(float), dense, config)
    for t in (0.7, 1.0, 1.5):
        i, j = np.searchsorted(irregular, t), np.searchsorted(dense, irregular[np.searchsorted(irregular, t)])
        assert abs(sparse_out[i] - dense_out[min(j, len(dense) - 1)]) < 0.06
    # Treating the irregular samples as evenly spaced would be visibly wrong.
    even = one_euro_filter((irregular >= 0.5).astype(float), np.arange(len(irregular)) / 30, config)
    assert np.abs(even - sparse_out).max() > 0.1


def test_filter_rejects_bad_times():
    with pytest.raises(ValueError, match="strictly increasing"):
        one_euro_filter(np.zeros((3, 1)), np.array([0.0, 0.1, 0.1]))
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroConfig(min_cutoff=0.0)


def test_quaternion_smoothing_renormalises_and_ignores_sign_flips():
    rng = np.random.default_rng(4)
    times = np.arange(120) / 60
    base = np.array(euler_ypr_to_quaternion(0.2, 0.1, 0.0))
    noisy = base + rng.normal(0, 0.01, (120, 4))
    noisy[::2] *= -1  # same rotations, alternate signs
    out = one_euro_quaternion(noisy, times)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    def angle_error(q: np.ndarray) -> np.ndarray:
        return 2 * np.arccos(np.clip(np.abs(q @ base) / np.linalg.norm(q, axis=1), 0, 1))

    assert angle_error(out)[30:].mean() < 0.5 * angle_error(noisy)[30:].mean()


# ---- config ----

def test_config_round_trips_and_rejects_unknown_names():
    config = RetargetConfig(neutral_frame=4, gain={"jawOpen": 1.5}, offset={"eyeBlink_L": -0.1}, clamp=(0.0, 0.9),
                            one_euro=OneEuroConfig(min_cutoff=2.0), head_translation=True)
    assert RetargetConfig.from_dict(config.to_dict()) == config
    assert RetargetConfig.from_dict({}) == RetargetConfig()
    with pytest.raises(ValueError, match="'jawOpn'.*valid keys:.*jawOpen"):
        RetargetConfig.from_dict({"gain": {"jawOpn": 2.0}})
    with pytest.raises(ValueError, match="offset.tongueOut"):
        RetargetConfig.from_dict({"offset": {"tongueOut": 0.1}})
    with pytest.raises(ValueError, match="unknown retarget option 'gian'"):
        RetargetConfig.from_dict({"gian": {}})
    with pytest.raises(ValueError, match="one_euro.speed"):
        RetargetConfig.from_dict({"one_euro": {"speed": 1}})
    with pytest.raises(ValueError, match="gain.jawOpen must be a finite number"):
        RetargetConfig.from_dict({"gain": {"jawOpen": "big"}})
    with pytest.raises(ValueError, match="clamp"):
        RetargetConfig.from_dict({"clamp": [0.5, 0.2]})
    with pytest.raises(ValueError, match="neutral_frame"):
        RetargetConfig(neutral_frame=-1)
    with pytest.raises(ValueError, match="smoothing"):
        RetargetConfig.from_dict({"smoothing": "yes"})
    with pytest.raises(ValueError, match="'noseWrinkle'"):
        retarget_clip(make_driver(), RetargetConfig(gain={"noseWrinkle": 2.0}))


# ---- retargeting ----

def test_automatic_neutral_frame_picks_the_designed_frame():
    driver = make_driver()
    assert choose_neutral_frame(driver) == NEUTRAL  # not the missing frame 3 nor the bad fit at 30
    result = retarget_clip(driver, RetargetConfig(smoothing=False))
    assert result.calibration["neutral_frame"] == NEUTRAL and result.calibration["neutral_frame_auto"] is True


def test_neutral_subtraction_zeroes_the_neutral_frame_and_keeps_full_range():
    driver = make_driver()
    driver.weights["eyeSquint_L"][5] = 1.0
    result = retarget_clip(driver, RetargetConfig(neutral_frame=NEUTRAL, smoothing=False))
    out = weights(result)
    assert np.abs(out[NEUTRAL]).max() < 1e-12
    j = KEYS.index("eyeSquint_L")
    assert out[5, j] == pytest.approx(1.0)  # w = 1 still maps to 1
    w = driver.weights["eyeSquint_L"][7]
    assert out[7, j] == pytest.approx(max(0.0, (w - 0.3) / 0.7))
    assert result.calibration["neutral_weights"]["eyeSquint_L"] == pytest.approx(0.3)


def test_gain_offset_and_clamp():
    driver = make_driver()
    config = RetargetConfig(gain={"jawOpen": 2.0, "mouthPucker": -1.0}, offset={"eyeBlink_L": 0.25},
                            clamp=(0.05, 0.8), smoothing=False, subtract_neutral=False)
    out = {k: np.array(v) for k, v in retarget_clip(driver, config).weights.items()}
    raw = {k: np.array(v) for k, v in driver.weights.items()}
    assert np.allclose(out["jawOpen"], np.clip(2.0 * raw["jawOpen"], 0.05, 0.8))
    assert np.allclose(out["eyeBlink_L"], np.clip(raw["eyeBlink_L"] + 0.25, 0.05, 0.8))
    assert np.allclose(out["mouthPucker"], 0.05)  # negative gain, clamped to the low end
    assert np.allclose(out["browDown_L"], np.clip(raw["browDown_L"], 0.05, 0.8))
    assert min(v.min() for v in out.values()) >= 0.05 and max(v.max() for v in out.values()) <= 0.8


def test_smoothing_reduces_frame_to_frame_jitter():
    driver = make_driver(n=120)
    plain = weights(retarget_clip(driver, RetargetConfig(smoothing=False)))
    smooth = weights(retarget_clip(driver, RetargetConfig(smoothing=True)))
    assert np.abs(np.diff(smooth, axis=0)).mean() < 0.5 * np.abs(np.diff(plain, axis=0)).mean()


def test_head_rotation_is_relative_to_the_neutral_frame():
    driver = make_driver()
    result = retarget_clip(driver, RetargetConfig(neutral_frame=NEUTRAL, smoothing=False))
    assert result.head_rotation[NEUTRAL] == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=1e-12)
    for i in (0, 20, 35):  # the performer's motion, without the camera's constant offset
        want = euler_ypr_to_quaternion(0.4 * math.sin(i / 5), 0.2 * math.cos(i / 7) - 0.2 * math.cos(NEUTRAL / 7), 0)
        assert abs(np.dot(result.head_rotation[i], want)) == pytest.approx(1.0, abs=1e-9)
    smoothed = retarget_clip(driver, RetargetConfig(neutral_frame=NEUTRAL))
    assert np.allclose(np.linalg.norm(smoothed.head_rotation, axis=1), 1.0)


def test_head_rotation_and_translation_switches():
    driver = make_driver()
    off = retarget_clip(driver, RetargetConfig(head_rotation=False))
    assert off.head_rotation == [[1.0, 0.0, 0.0, 0.0]] * driver.frame_count
    assert off.head_translation == [[0.0, 0.0, 0.0]] * driver.frame_count
    on = retarget_clip(driver, RetargetConfig(head_translation=True, smoothing=False))
    assert np.allclose(on.head_translation, driver.head_translation)
    assert on.eye_left == driver.eye_left and on.eye_right == driver.eye_right  # eyes pass through


def test_result_validates_and_records_config_target_and_key_changes():
    driver = make_driver()
    target_keys = [k for k in KEYS if k != "cheekPuff_R"] + ["tongueOut"]
    config = RetargetConfig(gain={"tongueOut": 1.0})
    head = {"bundle": "alice", "sha256": "0" * 64}
    result = retarget_clip(driver, config, target_shape_keys=target_keys, target=head)
    result.validate()
    assert AnimationClip.from_dict(result.to_dict()).shape_keys == target_keys
    assert result.weights["tongueOut"] == [0.0] * driver.frame_count
    assert result.target == head
    assert result.calibration["config"] == config.to_dict()
    assert RetargetConfig.from_dict(result.calibration["config"], shape_keys=target_keys) == config
    assert any("cheekPuff_R" in note for note in result.notes) and any("tongueOut" in note for note in result.notes)
    assert result.notes[0] == "tracked" and result.times == driver.times and result.missing == [3]


def test_neutral_frame_past_the_end_is_rejected():
    with pytest.raises(ValueError, match="neutral_frame 99"):
        retarget_clip(make_driver(), RetargetConfig(neutral_frame=99))
