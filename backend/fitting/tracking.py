"""Per-frame pose and expression for a clip, with identity and focal length held fixed.

Frames are solved in consecutive batches: every frame's pose starts from MediaPipe's 3D
landmarks (PGN), its expression from the last solved frame (warm start), and the temporal terms
tie each batch to the frame before it, so batch borders do not show. Batching lets one Adam run
serve dozens of frames at once, which is what keeps tracking faster than real time on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.fitting.landmark_fit import LandmarkFitter, Observation, PhotoFit
from backend.fitting.landmark_solve import SolveSpec

# MediaPipe face-mesh contours of both eyes' lids and of the lips (outer and inner).
EYE_LANDMARKS = np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
                          263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466])
LIP_LANDMARKS = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270,
                          409, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311,
                          310, 415])


@dataclass
class TrackConfig:
    """Batch size, steps (the first batch starts cold and gets more) and temporal weights.

    The smoothness weights multiply mean squared steps between frames (expression weights; pose
    in radians), next to a data term in inter-ocular units."""

    batch: int = 64
    first_batch: int = 8  # solved cold (first_* steps); small, since cold steps cost 4x warm ones
    first_rigid_steps: int = 30
    first_steps: int = 120
    rigid_steps: int = 6
    steps: int = 30
    lr: float = 0.02
    expression_lr: float = 0.06
    smooth_expression: float = 0.1
    smooth_pose: float = 30.0
    # 53 weights are not all identifiable from 478 points: with perfect synthetic landmarks, true
    # identity and focal, weight error was 0.036 at L1 5e-4 and 0.019 at 2e-3 (the sparsity picks
    # one of the equivalent mixes); with MediaPipe's landmarks 4e-3 was best. The few landmarks on
    # lids and lips (blinks and speech among hundreds of mostly rigid points) count more.
    expression_l1: float = 4e-3
    eye_weight: float = 3.0
    lip_weight: float = 2.0
    # Pull towards the learned predictor's weights (when given): mean squared weight difference.
    prior_weight: float = 0.05
    # L1 on the weights when a prior is given: the prior already settles equivalent mixes.
    prior_expression_l1: float = 1e-3


def track_frames(fitter: LandmarkFitter, observations: list[Observation], frame_indices: list[int],
                 identity: np.ndarray, focal: float, config: TrackConfig | None = None,
                 on_batch: Callable[[int, int], None] | None = None,
                 expression_free: np.ndarray | None = None,
                 expression_prior: np.ndarray | None = None) -> list[PhotoFit]:
    """One PhotoFit per observation, in order.

    Args:
        observations: the frames that have a face, in time order.
        frame_indices: [N] their frame numbers (gaps in the numbering weaken the temporal terms).
        identity: [I] the clip's identity; focal: its focal length in pixels.
        on_batch: called with (frames done, total) after each batch.
        expression_free: [E] bool, weights the landmarks may move (the rest stay at their start).
        expression_prior: [N, E] the learned predictor's weights: every frame starts from them and is
            pulled towards them (``TrackConfig.prior_weight``).
    """
    cfg = config or TrackConfig()
    weights = fitter.weights.numpy().copy()
    weights[EYE_LANDMARKS] *= cfg.eye_weight
    weights[LIP_LANDMARKS] *= cfg.lip_weight
    fits: list[PhotoFit] = []
    anchor = None
    previous_index = None
    starts = [0] + list(range(min(cfg.first_batch, len(observations)), len(observations), cfg.batch))
    for start, stop in zip(starts, starts[1:] + [len(observations)]):
        if stop <= start:
            continue
        batch = observations[start:stop]
        indices = np.asarray(frame_indices[start:stop])
        first = anchor is None
        spacing = np.diff(indices, prepend=indices[0] - 1 if previous_index is None else previous_index)
        spec = SolveSpec(
            focal=focal, identity=identity, optimise_identity=False, optimise_focal=False,
            rigid_steps=cfg.first_rigid_steps if first else cfg.rigid_steps,
            steps=cfg.first_steps if first else cfg.steps, lr=cfg.lr, expression_lr=cfg.expression_lr,
            expression=expression_prior[start:stop] if expression_prior is not None else
            None if first else np.repeat(anchor[0][None], len(batch), axis=0),
            smooth_expression=cfg.smooth_expression, smooth_pose=cfg.smooth_pose,
            anchor=anchor, spacing=spacing, expression_free=expression_free,
            expression_l1=cfg.expression_l1 if expression_prior is None else cfg.prior_expression_l1,
            point_weights=weights,
            expression_prior=None if expression_prior is None else expression_prior[start:stop],
            prior_weight=cfg.prior_weight,
        )
        solved = fitter.solve(batch, spec)
        fits.extend(fitter.photo_fits(batch, solved))
        anchor = (solved.expressions[-1], solved.rotations[-1], solved.translations[-1])
        previous_index = int(indices[-1])
        if on_batch is not None:
            on_batch(len(fits), len(observations))
    return fits
