"""Which frames of a clip to fit the identity to: sharp ones, as different as possible.

PGN's point: many frames of one person pin down one identity better than any single frame, but
only if they differ: turned heads constrain depth, open and closed mouths keep expression from
leaking into identity. Features per frame are the rough head pose (from MediaPipe's 3D landmarks)
and a few landmark distances; frames are picked by farthest-point sampling in that space,
starting from the sharpest near-frontal frame.
"""

from __future__ import annotations

import numpy as np

# Landmark pairs (MediaPipe face mesh) whose distance, in inter-ocular units, tracks an expression.
_MOUTH_OPEN = (13, 14)
_MOUTH_WIDE = (61, 291)
_RIGHT_EYE_OPEN = (159, 145)
_LEFT_EYE_OPEN = (386, 374)
_BROW_RAISE = ((105, 159), (334, 386))


def gap_iod(points: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """Distance between two landmarks in inter-ocular units (iris centre to iris centre).

    points: [..., 478, 2+] pixels -> [...]."""
    iod = np.maximum(np.linalg.norm(points[..., 468, :2] - points[..., 473, :2], axis=-1), 1.0)
    return np.linalg.norm(points[..., pair[0], :2] - points[..., pair[1], :2], axis=-1) / iod


def frame_features(points: np.ndarray, yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """[6] features of one frame, each scaled so that 1 is a clearly visible change.

    points: [478, 3] landmarks in pixels."""
    def dist(pair) -> float:
        return float(gap_iod(points, pair))

    eyes = (dist(_RIGHT_EYE_OPEN) + dist(_LEFT_EYE_OPEN)) / 2
    brows = (dist(_BROW_RAISE[0]) + dist(_BROW_RAISE[1])) / 2
    return np.array([yaw_deg / 12.0, pitch_deg / 8.0, dist(_MOUTH_OPEN) / 0.12, dist(_MOUTH_WIDE) / 0.12,
                     eyes / 0.06, brows / 0.08])


def pick_frames(features: np.ndarray, sharpness: np.ndarray, count: int, sharp_quantile: float = 0.35) -> list[int]:
    """Indices (into the rows given) of up to ``count`` frames, in time order.

    Args:
        features: [N, F] per-frame features (``frame_features``).
        sharpness: [N] focus measure; frames below the ``sharp_quantile`` of the clip are skipped
            (motion blur and defocus move landmarks), unless that leaves fewer than ``count``.
    """
    n = len(features)
    if n <= count:
        return list(range(n))
    candidates = np.nonzero(sharpness >= np.quantile(sharpness, sharp_quantile))[0]
    if len(candidates) < count:
        candidates = np.argsort(-sharpness)[:count]
    feats = features[candidates]
    # Start near the clip's typical pose and expression: the most "central" sharp frame.
    centre = np.median(feats, axis=0)
    first = int(np.argmin(np.linalg.norm(feats - centre, axis=1) - 1e-3 * sharpness[candidates] / (sharpness.max() + 1e-9)))
    chosen = [first]
    nearest = np.linalg.norm(feats - feats[first], axis=1)
    while len(chosen) < count:
        nxt = int(np.argmax(nearest))
        if nearest[nxt] <= 0:
            break
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(feats - feats[nxt], axis=1))
    return sorted(int(candidates[i]) for i in chosen)
