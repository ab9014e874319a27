"""Per-clip metrics of the video benchmark (``bench.video_accuracy``): the ground truth of a clip
written by ``bench.synthetic_video``, a fake track built from it (tests and metric checks), frame
matching by time, weight MAE, jitter on the static segment, rotation, gaze and identity errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.accuracy import Evaluator, focal_error_pct

ACTIVE_THRESHOLD = 0.1  # a key is "active" in a clip when its true weight exceeds this somewhere


# ----------------------------------------------------------------------------- ground truth


@dataclass
class ClipTruth:
    """One clip's ground truth. F frames, E expressions, I identity weights."""

    name: str
    record: dict
    video: Path
    identity: np.ndarray  # [I]
    times: np.ndarray  # [F] seconds
    expressions: np.ndarray  # [F, E] in the asset's expression order
    rotations: np.ndarray  # [F, 3] axis-angle, model -> OpenCV camera
    translations: np.ndarray  # [F, 3] cm
    static: tuple[int, int]  # half-open frame range
    focal: float  # px
    gaze: np.ndarray | None = None  # [F, 2, 2] (yaw, pitch) degrees, eye 0 = the subject's left

    def frontal_neutral_frame(self) -> int:
        """The neutral frame (all weights < 0.01) whose head turns least away from the camera."""
        from scipy.spatial.transform import Rotation

        from bench.synthetic_sampling import FACING

        neutral = np.flatnonzero(self.expressions.max(1) < 0.01)
        if not len(neutral):
            neutral = np.arange(len(self.times))
        away = (Rotation.from_matrix(FACING).inv() * Rotation.from_rotvec(self.rotations[neutral])).magnitude()
        return int(neutral[int(np.argmin(away))])


def load_clips(data: Path, expression_names: list[str]) -> list[ClipTruth]:
    clips = []
    for path in sorted(Path(data).glob("clip_[0-9][0-9].json")):
        rec = json.loads(path.read_text())
        frames = rec["frames"]
        clips.append(ClipTruth(
            name=path.stem, record=rec, video=path.parent / rec["video"], identity=np.asarray(rec["identity"], np.float64),
            times=np.array([f["time"] for f in frames], np.float64),
            expressions=np.array([[f["expression"].get(n, 0.0) for n in expression_names] for f in frames], np.float64),
            rotations=np.array([f["rotation"] for f in frames], np.float64),
            translations=np.array([f["translation"] for f in frames], np.float64),
            static=(int(rec["static_segment"]["start"]), int(rec["static_segment"]["stop"])),
            focal=float(rec["intrinsics"]["fx"]),
            gaze=np.array([f["gaze_deg"] for f in frames], np.float64) if frames and "gaze_deg" in frames[0] else None))
    return clips


@dataclass
class FakeTrack:
    """The fields of ``backend.video.pipeline.VideoTrack`` the evaluator reads (N track frames)."""

    identity: np.ndarray  # [I]
    focal: float  # px
    times: np.ndarray  # [N] seconds
    expressions: np.ndarray  # [N, E]
    rotations: np.ndarray  # [N, 3] axis-angle, model -> OpenCV camera
    translations: np.ndarray  # [N, 3] cm
    missing: list[int] = field(default_factory=list)
    landmark_rmse_px: np.ndarray | None = None  # [N]
    identity_frames: list[int] = field(default_factory=list)
    gaze: np.ndarray | None = None  # [N, 2, 2] (yaw, pitch) degrees, eye 0 = the subject's left


def fake_track(truth: ClipTruth, rng: np.random.Generator | None = None, expression_sigma: float = 0.0,
               rotation_sigma_deg: float = 0.0, identity_sigma: float = 0.0, expression_offset: float = 0.0) -> FakeTrack:
    """The ground truth as a track, plus optional noise and a constant weight offset (unclipped)."""
    from scipy.spatial.transform import Rotation

    rng = rng or np.random.default_rng(0)
    n = len(truth.times)
    noise = Rotation.from_rotvec(rng.normal(0, np.radians(rotation_sigma_deg) / np.sqrt(3), (n, 3)))
    weights = truth.expressions + expression_offset + rng.normal(0, expression_sigma, truth.expressions.shape)
    return FakeTrack(identity=truth.identity + rng.normal(0, identity_sigma, truth.identity.shape), focal=truth.focal,
                     times=truth.times.copy(), expressions=weights if expression_offset else np.clip(weights, 0, 1),
                     rotations=(noise * Rotation.from_rotvec(truth.rotations)).as_rotvec(),
                     translations=truth.translations.copy(), landmark_rmse_px=np.zeros(n),
                     gaze=None if truth.gaze is None else truth.gaze.copy())


# ----------------------------------------------------------------------------- metrics


def match_frames(track_times: np.ndarray, truth_times: np.ndarray) -> np.ndarray:
    """[N] ground-truth frame of each track frame (nearest time), -1 where none is within half a frame."""
    track_times, truth_times = np.asarray(track_times, np.float64), np.asarray(truth_times, np.float64)
    period = float(np.median(np.diff(truth_times))) if len(truth_times) > 1 else 1.0
    last = len(truth_times) - 1
    after = np.clip(np.searchsorted(truth_times, track_times), 0, last)
    before = np.clip(after - 1, 0, last)
    nearest = np.where(np.abs(truth_times[before] - track_times) <= np.abs(truth_times[after] - track_times), before, after)
    return np.where(np.abs(truth_times[nearest] - track_times) < 0.5 * period, nearest, -1)


def weight_errors(pred: np.ndarray, gt: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> dict:
    """MAE over all [N, E] weights and over the keys (columns) whose ``gt`` exceeds ``threshold``."""
    err = np.abs(np.asarray(pred, np.float64) - np.asarray(gt, np.float64))
    active = np.asarray(gt).max(0) > threshold
    return {"mae": float(err.mean()), "mae_active": float(err[:, active].mean()) if active.any() else None,
            "n_active_keys": int(active.sum())}


def mean_abs_step(values: np.ndarray) -> float:
    """Jitter of [N, K] values: mean absolute change between consecutive rows (0 when N < 2)."""
    values = np.asarray(values, np.float64)
    return float(np.abs(np.diff(values, axis=0)).mean()) if len(values) > 1 else 0.0


def rotation_errors_deg(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[N] geodesic angles (degrees) between [N, 3] axis-angle rotations."""
    from scipy.spatial.transform import Rotation

    rel = Rotation.from_rotvec(np.asarray(pred, np.float64)).inv() * Rotation.from_rotvec(np.asarray(gt, np.float64))
    return np.degrees(np.atleast_1d(rel.magnitude()))


def gaze_angles_deg(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[...] angles (degrees) between gaze directions given as [..., 2] (yaw, pitch) degrees."""

    def direction(g):
        yaw, pitch = np.radians(np.asarray(g, np.float64)[..., 0]), np.radians(np.asarray(g, np.float64)[..., 1])
        return np.stack([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)], -1)

    return np.degrees(np.arccos(np.clip((direction(pred) * direction(gt)).sum(-1), -1.0, 1.0)))


def static_runs(frames: np.ndarray, static: tuple[int, int]) -> np.ndarray:
    """[P, 2] positions (into ``frames``) of consecutive pairs of ground-truth frames inside ``static``."""
    frames = np.asarray(frames)
    pairs = [(a, b) for a in range(len(frames)) for b in (a + 1,) if b < len(frames)
             and frames[b] == frames[a] + 1 and static[0] <= frames[a] and frames[b] < static[1]]
    return np.array(pairs, int).reshape(-1, 2)


def score_track(truth: ClipTruth, track, evaluator: Evaluator) -> dict:
    """The per-clip metrics of one track (see the module doc)."""
    asset = evaluator.asset
    gt_frame = match_frames(track.times, truth.times)
    keep = gt_frame >= 0
    keep[[m for m in (track.missing or []) if 0 <= m < len(keep)]] = False
    pos, frames = np.flatnonzero(keep), gt_frame[keep]
    if not len(pos):
        raise ValueError(f"no tracked frame matches a ground-truth frame of {truth.name}")
    pred_w = np.asarray(track.expressions, np.float64)[pos]
    gt_w = truth.expressions[frames]
    row = {"frames": len(truth.times), "track_frames": len(gt_frame), "scored_frames": len(pos),
           "missing": len(track.missing or []), "unmatched": int((gt_frame < 0).sum())}
    e, z = weight_errors(pred_w, gt_w), weight_errors(np.zeros_like(gt_w), gt_w)
    row.update({"expr_mae": e["mae"], "expr_mae_active": e["mae_active"], "n_active_keys": e["n_active_keys"],
                "zeros_mae": z["mae"], "zeros_mae_active": z["mae_active"]})
    names = list(asset.expression_names)  # per key: where the error sits, and its sign (bias)
    row["key_mae"] = dict(zip(names, np.abs(pred_w - gt_w).mean(0).round(5).tolist()))
    row["key_bias"] = dict(zip(names, (pred_w - gt_w).mean(0).round(5).tolist()))
    rot = rotation_errors_deg(np.asarray(track.rotations)[pos], truth.rotations[frames])
    row.update({"rot_err_deg": float(rot.mean()), "rot_err_median_deg": float(np.median(rot)), "rot_err_max_deg": float(rot.max()),
                "trans_err_cm": float(np.linalg.norm(np.asarray(track.translations)[pos] - truth.translations[frames], axis=1).mean()),
                "focal_px": float(track.focal), "focal_err_pct": focal_error_pct(float(track.focal), truth.focal)})
    pairs = static_runs(frames, truth.static)
    if len(pairs):
        a, b = pos[pairs[:, 0]], pos[pairs[:, 1]]
        weights, rots = np.asarray(track.expressions, np.float64), np.asarray(track.rotations, np.float64)
        trans = np.asarray(track.translations, np.float64)
        row.update({"static_pairs": len(pairs), "jitter_weight": float(np.abs(weights[b] - weights[a]).mean()),
                    "jitter_rot_deg": float(rotation_errors_deg(rots[b], rots[a]).mean()),
                    "jitter_trans_mm": float(10 * np.linalg.norm(trans[b] - trans[a], axis=1).mean())})
    gaze = getattr(track, "gaze", None)
    if gaze is not None and truth.gaze is not None and len(pos):
        row["gaze_err_deg"] = float(gaze_angles_deg(np.asarray(gaze)[pos], truth.gaze[frames]).mean())
    if track.landmark_rmse_px is not None and len(pos):
        row["landmark_rmse_px"] = float(np.nanmean(np.asarray(track.landmark_rmse_px, np.float64)[pos]))
    gt_neutral = asset.vertices(truth.identity)
    row.update(evaluator.mesh_metrics(asset.vertices(np.asarray(track.identity, np.float64)), gt_neutral, prefix="identity_"))
    row.update(evaluator.mesh_metrics(asset.vertices(), gt_neutral, prefix="meanface_"))
    row["identity_frames"] = len(getattr(track, "identity_frames", None) or [])
    return row
