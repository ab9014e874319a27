"""Retargeting a tracked clip onto a head: neutral calibration, gain/offset/clamp, One Euro smoothing.

Per shape key with weight w (from the driver clip) and weight n at the neutral frame:

    w_n = (w - n) / (1 - n)          if subtract_neutral, else w
    w'  = clamp(gain * w_n + offset)

The subtraction makes a key that is already active in the performer's rest face (a resting
squint, a slightly open jaw) read 0 at the neutral frame, and the division keeps w = 1 mapping to
1, so the key keeps its full range instead of topping out at 1 - n. Values below the rest level
clamp to 0. The weights are then One Euro filtered over the clip's real frame times.

Head rotation is made relative to the neutral frame, q' = conj(q_n) q: a camera that was not
straight in front of the performer turns every frame by the same constant, and removing it on
the left makes the target face forward at the neutral frame while keeping the motion about the
head's own axes. Eyes pass through; head translation passes through only when asked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from shared.animation import AnimationClip, quaternion_multiply

from .one_euro import OneEuroConfig, continuous_hemisphere, one_euro_filter, one_euro_quaternion

MODEL_SHAPE_KEYS: tuple[str, ...] = tuple(
    "browDown_L browDown_R browInnerUp_L browInnerUp_R browOuterUp_L browOuterUp_R cheekPuff_L cheekPuff_R "
    "cheekSquint_L cheekSquint_R eyeBlink_L eyeBlink_R eyeLookDown_L eyeLookDown_R eyeLookIn_L eyeLookIn_R "
    "eyeLookOut_L eyeLookOut_R eyeLookUp_L eyeLookUp_R eyeSquint_L eyeSquint_R eyeWide_L eyeWide_R jawForward "
    "jawLeft jawOpen jawRight mouthClose mouthDimple_L mouthDimple_R mouthFrown_L mouthFrown_R mouthFunnel "
    "mouthLeft mouthLowerDown_L mouthLowerDown_R mouthPress_L mouthPress_R mouthPucker mouthRight mouthRollLower "
    "mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmile_L mouthSmile_R mouthStretch_L mouthStretch_R "
    "mouthUpperUp_L mouthUpperUp_R noseSneer_L noseSneer_R".split())
"""The ICT-FaceKit model's 53 shape keys (ARKit's 52 minus tongueOut, browInnerUp and cheekPuff split)."""


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


@dataclass
class RetargetConfig:
    """How a driver clip becomes a target clip (see the module docstring for the formula).

    ``neutral_frame`` None picks the most neutral frame automatically (``choose_neutral_frame``).
    ``gain`` / ``offset`` are per shape key (default 1 and 0); ``clamp`` is the [low, high] the
    weights end in, inside [0, 1]. ``head_rotation`` False gives identity rotations;
    ``head_translation`` False gives zero translations.
    """

    neutral_frame: int | None = None
    # The actor's rest levels per key from a separate neutral take (``neutral_levels``); when set
    # they replace the neutral frame's weights in the subtraction.
    neutral_weights: dict[str, float] = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)
    offset: dict[str, float] = field(default_factory=dict)
    clamp: tuple[float, float] = (0.0, 1.0)
    one_euro: OneEuroConfig = field(default_factory=OneEuroConfig)
    smoothing: bool = True
    head_rotation: bool = True
    head_translation: bool = False
    subtract_neutral: bool = True

    def __post_init__(self):
        # Normalise and check values here, so a bad config fails where it is built; shape-key
        # names are checked against a key list by from_dict and retarget_clip.
        if self.neutral_frame is not None and (isinstance(self.neutral_frame, bool)
                                               or not isinstance(self.neutral_frame, int) or self.neutral_frame < 0):
            raise ValueError(f"neutral_frame must be a frame index >= 0 or null, got {self.neutral_frame!r}")
        for name in ("gain", "offset", "neutral_weights"):
            table = getattr(self, name)
            if not isinstance(table, dict):
                raise ValueError(f"{name} must be an object of shape key: number, got {table!r}")
            setattr(self, name, {str(k): _number(v, f"{name}.{k}") for k, v in table.items()})
        clamp = self.clamp
        if isinstance(clamp, (str, bytes)) or not isinstance(clamp, Sequence) or len(clamp) != 2:
            raise ValueError(f"clamp must be [low, high], got {clamp!r}")
        low, high = _number(clamp[0], "clamp[0]"), _number(clamp[1], "clamp[1]")
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"clamp must satisfy 0 <= low < high <= 1, got [{low}, {high}]")
        self.clamp = (low, high)
        if isinstance(self.one_euro, dict):
            self.one_euro = _one_euro_from_dict(self.one_euro)
        elif not isinstance(self.one_euro, OneEuroConfig):
            raise ValueError(f"one_euro must be an object, got {self.one_euro!r}")
        for name in ("smoothing", "head_rotation", "head_translation", "subtract_neutral"):
            _flag(getattr(self, name), name)

    def check_keys(self, shape_keys: Iterable[str]) -> None:
        """ValueError naming the first gain/offset key not in ``shape_keys`` and listing valid ones."""
        valid = set(shape_keys)
        for name in ("gain", "offset", "neutral_weights"):
            for key in getattr(self, name):
                if key not in valid:
                    raise ValueError(f"{name}.{key}: unknown shape key {key!r}; valid keys: {', '.join(sorted(valid))}")

    def to_dict(self) -> dict:
        return {"neutral_frame": self.neutral_frame, "neutral_weights": dict(self.neutral_weights), "gain": dict(self.gain), "offset": dict(self.offset),
                "clamp": list(self.clamp), "one_euro": self.one_euro.to_dict(), "smoothing": self.smoothing,
                "head_rotation": self.head_rotation, "head_translation": self.head_translation,
                "subtract_neutral": self.subtract_neutral}

    @classmethod
    def from_dict(cls, data, shape_keys: Iterable[str] = MODEL_SHAPE_KEYS) -> RetargetConfig:
        """Build from job parameters / CLI options; ValueError names the bad option or key.

        Missing options take their defaults; gain/offset keys must be in ``shape_keys``.
        """
        if not isinstance(data, dict):
            raise ValueError(f"retarget options must be an object, got {type(data).__name__}")
        options = [f.name for f in fields(cls)]
        for key in data:
            if key not in options:
                raise ValueError(f"unknown retarget option {key!r}; valid options: {', '.join(options)}")
        config = cls(**data)
        config.check_keys(shape_keys)
        return config


def _one_euro_from_dict(data: dict) -> OneEuroConfig:
    options = [f.name for f in fields(OneEuroConfig)]
    for key in data:
        if key not in options:
            raise ValueError(f"unknown option 'one_euro.{key}'; valid options: {', '.join(options)}")
    return OneEuroConfig(**data)


def choose_neutral_frame(clip: AnimationClip) -> int:
    """The most neutral frame: the lowest sum of weights among frames with a good fit.

    A good fit is a frame with a face (not in ``missing``) whose landmark RMSE is at most the
    median RMSE of the frames with a face: the better half, so a badly fitted frame whose weights
    collapsed towards 0 cannot pass for a rest face. When every RMSE is equal (a Live Link import
    has zeros) every found frame qualifies. Ties go to the earliest frame.
    """
    n = clip.frame_count
    found = np.ones(n, dtype=bool)
    found[list(clip.missing)] = False
    if not found.any():
        found[:] = True
    rmse = np.asarray(clip.landmark_rmse_px, dtype=np.float64)
    good = found & (rmse <= np.median(rmse[found]) + 1e-9)
    rows = np.asarray(clip.weight_rows(), dtype=np.float64).reshape(n, -1)
    sums = np.where(good, rows.sum(axis=1), np.inf)
    return int(np.argmin(sums))


def neutral_levels(take: AnimationClip, quantile: float = 0.5) -> dict[str, float]:
    """The actor's rest level of every key from a neutral take: its median over the found frames
    (a blink or a twitch in the take does not move a median)."""
    found = np.setdiff1d(np.arange(take.frame_count), list(take.missing))
    if not len(found):
        raise ValueError("the neutral take has no frame with a face")
    return {k: float(np.quantile(np.asarray(v, np.float64)[found], quantile)) for k, v in take.weights.items()}


def rom_gains(take: AnimationClip, neutral: dict[str, float] | None = None, quantile: float = 0.98,
              reach: float = 0.15, max_gain: float = 3.0) -> dict[str, float]:
    """Per-key gains from a range-of-motion take (each key pulled as far as the actor can): the
    gain that maps the key's reach in the take (this quantile, after the neutral subtraction) to 1.

    Keys the take barely moves (reach below ``reach``) keep gain 1: the actor did not perform them,
    and a large gain would only amplify noise; gains never shrink a key (>= 1) nor exceed ``max_gain``."""
    found = np.setdiff1d(np.arange(take.frame_count), list(take.missing))
    gains = {}
    for k, v in take.weights.items():
        w = np.asarray(v, np.float64)[found]
        rest = (neutral or {}).get(k, float(np.quantile(w, 0.05)))
        top = (np.quantile(w, quantile) - rest) / max(1.0 - rest, 1e-6)
        if top >= reach:
            gains[k] = float(np.clip(1.0 / top, 1.0, max_gain))
    return gains


def _retarget_weights(driver: AnimationClip, keys: list[str], neutral: int, config: RetargetConfig,
                      times: np.ndarray, notes: list[str]) -> dict[str, np.ndarray]:
    """[N] weights for each of ``keys`` the driver has (see the module docstring)."""
    if not keys:
        return {}
    w = np.array([driver.weights[k] for k in keys], dtype=np.float64).T  # [N, K]
    rest = w[neutral].copy()
    for j, k in enumerate(keys):
        if k in config.neutral_weights:
            rest[j] = config.neutral_weights[k]
    if config.subtract_neutral:
        saturated = [k for k, v in zip(keys, rest) if v > 0.9]
        if saturated:
            notes.append(f"nearly fully on at the neutral frame, so little range is left: {', '.join(saturated)}")
        w = (w - rest) / np.maximum(1.0 - rest, 1e-6)
    gain = np.array([config.gain.get(k, 1.0) for k in keys])
    offset = np.array([config.offset.get(k, 0.0) for k in keys])
    low, high = config.clamp
    w = np.clip(gain * w + offset, low, high)
    if config.smoothing and len(w) > 1:
        w = np.clip(one_euro_filter(w, times, config.one_euro), low, high)  # clip: float rounding only
    return {k: w[:, j] for j, k in enumerate(keys)}


def retarget_clip(driver: AnimationClip, config: RetargetConfig, target_shape_keys: list[str] | None = None,
                  target: dict | None = None) -> AnimationClip:
    """A validated clip that drives ``target_shape_keys`` (default the driver's keys) from ``driver``.

    Driver keys the target lacks are dropped and target keys the driver lacks are 0 (both noted).
    ``calibration`` records the full config and the neutral frame used; ``target`` records
    ``target`` (for example the head bundle's name and hash). ValueError on a bad config.
    """
    driver = driver.validate()
    n = driver.frame_count
    keys = list(driver.shape_keys if target_shape_keys is None else target_shape_keys)
    if len(set(keys)) != len(keys):
        raise ValueError("target_shape_keys has duplicate names")
    if target is not None and not isinstance(target, dict):
        raise ValueError(f"target must be an object, got {type(target).__name__}")
    config.check_keys(set(driver.shape_keys) | set(keys))
    auto = config.neutral_frame is None
    neutral = choose_neutral_frame(driver) if auto else config.neutral_frame
    if neutral >= n:
        raise ValueError(f"neutral_frame {neutral} is past the clip's last frame ({n - 1})")
    notes = list(driver.notes)
    if neutral in driver.missing:
        notes.append(f"neutral frame {neutral} has no face (interpolated); its rest values may be off")
    times = np.asarray(driver.times, dtype=np.float64)

    shared = [k for k in keys if k in driver.weights]
    mapped = _retarget_weights(driver, shared, neutral, config, times, notes)
    absent = [k for k in keys if k not in driver.weights]
    dropped = [k for k in driver.shape_keys if k not in set(keys)]
    if dropped:
        notes.append(f"dropped driver keys the target lacks: {', '.join(dropped)}")
    if absent:
        notes.append(f"target keys the driver lacks, set to 0: {', '.join(absent)}")

    if config.head_rotation:
        q = np.asarray(driver.head_rotation, dtype=np.float64)
        rest = q[neutral] * np.array([1.0, -1.0, -1.0, -1.0])  # conjugate = inverse of a unit quaternion
        q = np.array([quaternion_multiply(rest, row) for row in q])  # shared's product, one frame at a time
        if config.smoothing and n > 1:
            q = one_euro_quaternion(q, times, config.one_euro)
        q = continuous_hemisphere(q / np.linalg.norm(q, axis=1, keepdims=True))
        rotation = -q if q[neutral, 0] < 0 else q  # w >= 0 at the neutral frame: it is the identity
    else:
        rotation = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    if config.head_translation:
        translation = np.asarray(driver.head_translation, dtype=np.float64)
        if config.smoothing and n > 1:
            translation = one_euro_filter(translation, times, config.one_euro)
    else:
        translation = np.zeros((n, 3))

    calibration = {"config": config.to_dict(), "neutral_frame": neutral, "neutral_frame_auto": auto,
                   "neutral_time": driver.times[neutral],
                   "neutral_weights": {k: driver.weights[k][neutral] for k in shared}}
    return AnimationClip(
        fps=driver.fps, times=list(driver.times), shape_keys=keys,
        weights={k: mapped[k].tolist() if k in mapped else [0.0] * n for k in keys},
        head_rotation=rotation.tolist(), head_translation=translation.tolist(), head_origin=list(driver.head_origin),
        eye_left=[list(e) for e in driver.eye_left], eye_right=[list(e) for e in driver.eye_right],
        landmark_rmse_px=list(driver.landmark_rmse_px), missing=list(driver.missing),
        gaps=[list(g) for g in driver.gaps], source=dict(driver.source), camera=dict(driver.camera),
        calibration=calibration, target=dict(target or {}), notes=notes,
    ).validate()
