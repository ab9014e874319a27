"""The expression path's parts: MediaPipe's blendshape model (Tasks API), the learned predictor,
the offline smoother, per-actor calibration and the benchmark's metrics."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from backend.errors import InputError
from backend.landmarks.blendshapes import SCORE_NAMES, TASK_SHA256, TasksFaceLandmarker, peer_weights, task_path, to_model_weights
from backend.retarget import MODEL_SHAPE_KEYS, neutral_levels, rom_gains
from backend.video.temporal import smooth_offline
from bench.expression_metrics import expression_scores, key_correlations, vertex_error_mm
from tests.conftest import MEDIA

NAMES = list(MODEL_SHAPE_KEYS)


def test_installed_blendshape_model_is_the_official_file():
    path = task_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == TASK_SHA256


def test_missing_blendshape_model_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(InputError) as err:
        TasksFaceLandmarker(tmp_path / "face_landmarker.task")
    assert err.value.code == "missing_model" and "make install" in str(err.value.hint if hasattr(err.value, "hint") else err.value)
    bad = tmp_path / "broken.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError) as err:
        TasksFaceLandmarker(bad)
    assert err.value.code == "bad_model"


def test_tasks_graph_on_a_real_photo_gives_landmarks_and_scores():
    rgb = np.asarray(Image.open(MEDIA / "images" / "d8.jpg").convert("RGB"))
    with TasksFaceLandmarker() as tasks:
        found = tasks.detect(rgb, 0)
        again = tasks.detect(rgb, 0)  # a repeated time is moved on, not refused
    assert found is not None and again is not None
    points, scores = found
    assert points.shape == (478, 3) and scores.shape == (len(SCORE_NAMES),)
    h, w = rgb.shape[:2]
    assert 0 < points[:, 0].min() and points[:, 0].max() < w and 0 < points[:, 1].min() and points[:, 1].max() < h
    assert 0.0 <= scores.min() and scores.max() <= 1.0 and scores[1:].max() > 0.05  # some key responds


def test_scores_map_onto_the_model_keys():
    scores = np.zeros((2, len(SCORE_NAMES)))
    scores[:, SCORE_NAMES.index("browInnerUp")] = [0.2, 0.6]
    scores[:, SCORE_NAMES.index("eyeBlinkLeft")] = [0.9, 0.1]
    w = to_model_weights(scores, NAMES)
    assert w.shape == (2, len(NAMES))
    assert np.allclose(w[:, NAMES.index("browInnerUp_L")], [0.2, 0.6]) and np.allclose(w[:, NAMES.index("browInnerUp_R")], [0.2, 0.6])
    assert np.allclose(w[:, NAMES.index("eyeBlink_L")], [0.9, 0.1]) and np.allclose(w[:, NAMES.index("eyeBlink_R")], 0)
    # The peer takes each key's rest level over the clip as 0 and keeps 1 at 1.
    clip = np.zeros((20, len(SCORE_NAMES)))
    clip[:, SCORE_NAMES.index("jawOpen")] = np.r_[np.full(10, 0.2), np.linspace(0.2, 1.0, 10)]
    peer = peer_weights(clip, NAMES)[:, NAMES.index("jawOpen")]
    assert peer[:10].max() < 1e-9 and peer[-1] == pytest.approx(1.0)


def test_offline_smoother_has_no_lag_and_removes_noise():
    t = np.arange(200) / 25.0
    bump = np.exp(-0.5 * ((t - 4.0) / 0.3) ** 2)
    noisy = bump + np.random.default_rng(0).normal(0, 0.05, len(t))
    smooth = smooth_offline(noisy[:, None], t, 4.0)[:, 0]
    assert np.abs(smooth - bump).mean() < 0.6 * np.abs(noisy - bump).mean()
    assert abs(t[np.argmax(smooth)] - 4.0) <= 0.04  # zero phase: the peak stays where it was
    assert np.array_equal(smooth_offline(noisy[:, None], t, 0.0), noisy[:, None])
    # A gap in time (dropped frames) ties its neighbours less: a step across it survives more.
    step = np.r_[np.zeros(10), np.ones(10)]
    even, gapped = np.arange(20.0), np.r_[np.arange(10.0), np.arange(10.0) + 20]
    assert smooth_offline(step[:, None], gapped, 4.0)[10, 0] > smooth_offline(step[:, None], even, 4.0)[10, 0]


def test_metrics_on_known_predictions(asset):
    from bench.expression_metrics import face_basis_mm

    basis = face_basis_mm(asset, step=8)
    rng = np.random.default_rng(1)
    true = np.clip(rng.uniform(-0.5, 1.0, (40, len(NAMES))), 0, 1)
    perfect = expression_scores(true, true, basis, static=(0, 5))
    assert perfect["vertex_mm"] == 0 and perfect["corr_median"] == pytest.approx(1) and perfect["mae_active"] == 0
    zeros = expression_scores(np.zeros_like(true), true, basis)
    assert zeros["corr_worst"] == 0 and zeros["vertex_mm"] > 1.0
    # An anti-correlated key is caught by the worst correlation.
    flipped = true.copy()
    flipped[:, 0] = 1 - true[:, 0]
    assert key_correlations(flipped, true).min() == pytest.approx(-1)
    # The vertex error is the mesh's: 0.1 on jawOpen moves the face more than 0.1 on a dimple.
    jaw, dimple = np.zeros((1, len(NAMES))), np.zeros((1, len(NAMES)))
    jaw[0, NAMES.index("jawOpen")], dimple[0, NAMES.index("mouthDimple_L")] = 0.1, 0.1
    zero = np.zeros((1, len(NAMES)))
    assert vertex_error_mm(jaw, zero, basis)[0] > vertex_error_mm(dimple, zero, basis)[0]


def test_calibration_takes():
    from shared.animation import AnimationClip

    def clip(weights: dict[str, np.ndarray]) -> AnimationClip:
        n = len(next(iter(weights.values())))
        return AnimationClip(fps=25.0, times=[i / 25 for i in range(n)], shape_keys=list(weights),
                             weights={k: v.tolist() for k, v in weights.items()},
                             head_rotation=[[1.0, 0, 0, 0]] * n, head_translation=[[0.0, 0, 0]] * n, head_origin=[0.0, 0, 0.5],
                             eye_left=[[0.0, 0.0]] * n, eye_right=[[0.0, 0.0]] * n, landmark_rmse_px=[0.0] * n)

    rest = clip({"jawOpen": np.r_[np.full(20, 0.1), [0.9]], "eyeBlink_L": np.full(21, 0.05)})
    levels = neutral_levels(rest)
    assert levels["jawOpen"] == pytest.approx(0.1) and levels["eyeBlink_L"] == pytest.approx(0.05)
    # The actor reaches only 0.5 on jawOpen (after the rest level): gain 2; blinks fully: gain 1;
    # a key the take never moves keeps gain 1 (not in the table).
    rom = clip({"jawOpen": np.r_[np.full(20, 0.1), np.linspace(0.1, 0.55, 30)], "eyeBlink_L": np.r_[np.zeros(40), np.ones(10)],
                "mouthPucker": np.full(50, 0.02)})
    gains = rom_gains(rom, levels)
    assert gains["jawOpen"] == pytest.approx(2.0, rel=0.05) and gains["eyeBlink_L"] == pytest.approx(1.0)
    assert "mouthPucker" not in gains
