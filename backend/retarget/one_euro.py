"""The One Euro filter (Casiez, Roussel and Vogel, CHI 2012), offline and vectorised over channels.

A first-order low-pass filter whose cutoff rises with the signal's speed: still signals get a low
cutoff (little jitter), fast motion a high one (little lag). Per sample i with interval dt_i:

    dx_i   = (x_i - xhat_{i-1}) / dt_i                       raw speed
    dxhat_i = dxhat_{i-1} + a(d_cutoff, dt_i) (dx_i - dxhat_{i-1})
    fc_i   = min_cutoff + beta |dxhat_i|
    xhat_i = xhat_{i-1} + a(fc_i, dt_i) (x_i - xhat_{i-1})
    a(fc, dt) = 1 / (1 + tau / dt),  tau = 1 / (2 pi fc)

The real interval of each frame drives ``a``, so variable frame rate clips and dropped frames are
filtered as the same continuous signal would be. Each output is a convex mix of the previous
output and the new sample, so the filter never leaves the range of its input.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from backend.fitting.geometry import continuous_quaternions as continuous_hemisphere  # noqa: F401  (part of this API)


@dataclass(frozen=True)
class OneEuroConfig:
    """Cutoffs in Hz; ``beta`` in seconds per signal unit (how fast the cutoff rises with speed).

    Defaults suit shape-key weights in [0, 1] at 24-60 fps: 1 Hz hides tracking jitter on a still
    face, and beta 0.3 lets a blink (speed ~10/s) through with a cutoff near 4 Hz.
    """

    min_cutoff: float = 1.0
    beta: float = 0.3
    d_cutoff: float = 1.0

    def __post_init__(self):
        for name, low, strict in (("min_cutoff", 0.0, True), ("beta", 0.0, False), ("d_cutoff", 0.0, True)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < low or (strict and value == low):
                bound = "> 0" if strict else ">= 0"
                raise ValueError(f"one_euro.{name} must be a finite number {bound}, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _alpha(cutoff, dt: float):
    """Smoothing factor of a first-order low-pass with ``cutoff`` Hz over ``dt`` seconds."""
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro_filter(values: np.ndarray, times: np.ndarray, config: OneEuroConfig = OneEuroConfig(),
                    joint_speed: bool = False) -> np.ndarray:
    """Filter each column of ``values``.

    Parameters
    ----------
    values : [N, K] (or [N]) samples, one row per frame.
    times : [N] seconds, strictly increasing (any spacing).
    config : cutoffs and speed coefficient.
    joint_speed : if True, all K channels share one cutoff driven by the norm of their joint
        speed (for parts of one quantity, such as the components of a quaternion).

    Returns
    -------
    [N, K] (or [N]) filtered samples, float64; the first equals the first input.
    """
    x = np.asarray(values, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    flat = x.ndim == 1
    x2 = x[:, None] if flat else x
    if x2.ndim != 2 or t.shape != (x2.shape[0],):
        raise ValueError(f"values must be [N, K] and times [N]; got {x.shape} and {t.shape}")
    if not (np.isfinite(x2).all() and np.isfinite(t).all()):
        raise ValueError("values and times must be finite")
    dts = np.diff(t)
    if (dts <= 0).any():
        raise ValueError(f"times must be strictly increasing (frame {int(np.argmax(dts <= 0)) + 1} is not)")
    out = np.empty_like(x2)
    if len(x2) == 0:
        return out.reshape(x.shape)
    x_hat, dx_hat = x2[0].copy(), np.zeros(x2.shape[1])
    out[0] = x_hat
    a_d = _alpha(config.d_cutoff, dts)  # the derivative's cutoff is fixed: one factor per interval
    for i in range(1, len(x2)):
        dt = dts[i - 1]
        dx_hat += a_d[i - 1] * ((x2[i] - x_hat) / dt - dx_hat)
        speed = np.linalg.norm(dx_hat) if joint_speed else np.abs(dx_hat)
        x_hat += _alpha(config.min_cutoff + config.beta * speed, dt) * (x2[i] - x_hat)
        out[i] = x_hat
    return out[:, 0] if flat else out


def one_euro_quaternion(quaternions: np.ndarray, times: np.ndarray,
                        config: OneEuroConfig = OneEuroConfig()) -> np.ndarray:
    """Smooth [N, 4] unit quaternions (any component order) sampled at ``times`` [N].

    Components are filtered in a continuous hemisphere with one shared cutoff (the speed is the
    norm of dq/dt, about half the angular speed in rad/s), then renormalised. For the small
    frame-to-frame steps of head motion this matches filtering on the rotation manifold.
    """
    q = np.asarray(quaternions, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 4:
        raise ValueError(f"quaternions must be [N, 4], got {q.shape}")
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if (norms < 1e-9).any():
        raise ValueError("quaternions must be non-zero")
    smooth = one_euro_filter(continuous_hemisphere(q / norms), times, config, joint_speed=True)
    return smooth / np.linalg.norm(smooth, axis=1, keepdims=True)
