"""The real tracker against ground truth: a committed 48-frame synthetic clip (Cycles, random ICT
identity, scripted expressions, blinks, gaze and head motion; ``tests/data/expression_clip``) is
tracked by the video pipeline as shipped, and its weights must clearly beat an all-zeros
prediction on the keys that move, and follow them over time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.expression_metrics import expression_scores, face_basis_mm

DATA = Path(__file__).resolve().parent / "data" / "expression_clip"


@pytest.fixture(scope="module")
def truth():
    rec = json.loads((DATA / "truth.json").read_text())
    return {"names": rec["expression_names"], "times": np.array([f["time"] for f in rec["frames"]]),
            "weights": np.array([f["expression"] for f in rec["frames"]]),
            "gaze": np.array([f["gaze_deg"] for f in rec["frames"]])}


def track(reconstructor, method: str):
    from backend.video.pipeline import VideoPipeline
    from backend.video.track import ExpressionOptions, VideoOptions

    vp = VideoPipeline(reconstructor, VideoOptions(progress=False, expressions=ExpressionOptions(method=method)))
    return vp.track(DATA / "clip.mp4")


@pytest.mark.slow
def test_tracker_beats_zeros_and_follows_the_keys(reconstructor, truth, asset):
    result = track(reconstructor, "fused")
    assert result.n_frames == len(truth["times"]) and not result.missing
    assert np.allclose(result.times, truth["times"], atol=1e-3)
    names = list(asset.expression_names)
    assert names == truth["names"]
    basis = face_basis_mm(asset, step=4)
    got = expression_scores(result.expressions, truth["weights"], basis)
    zeros = expression_scores(np.zeros_like(truth["weights"]), truth["weights"], basis)
    print("tracker", got, "zeros", zeros)
    # Margins from the measured run (vertex 0.40x, active 0.46x, moving keys 0.59x of zeros; key
    # correlation 0.50): a tracker that only predicted rest faces or got keys swapped fails them.
    assert got["vertex_mm"] < 0.6 * zeros["vertex_mm"]
    assert got["mae_active"] < 0.65 * zeros["mae_active"]
    assert got["mae_moving"] < 0.8 * zeros["mae_moving"]
    assert got["corr_median"] > 0.3
