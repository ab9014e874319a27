"""Zero-phase smoothing of per-frame values for recorded clips (the offline tracker's last step).

The causal One Euro filter (``backend.retarget.one_euro``) can only look back, so it lags and
still lets single-frame noise through; a recorded clip can look both ways. ``smooth_offline``
is the forward-backward (Rauch-Tung-Striebel) smoother of a random-walk model, written as the
equivalent least-squares problem

    x = argmin  sum_i |x_i - y_i|^2 + strength * sum_i |(x_{i+1} - x_i) * (period / dt_i)|^2

whose normal equations are tridiagonal (one banded solve per clip, all channels at once). Gaps in
time (dropped frames) weaken the link between their neighbours.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_banded


def smooth_offline(values: np.ndarray, times: np.ndarray, strength: float) -> np.ndarray:
    """values: [N, K]; times: [N] s (increasing); strength >= 0 (0 returns the values).
    Returns [N, K] smoothed values."""
    y = np.asarray(values, np.float64)
    n = len(y)
    if strength <= 0 or n < 3:
        return y.copy()
    dt = np.diff(np.asarray(times, np.float64))
    period = float(np.median(dt)) if len(dt) else 1.0
    link = strength * (period / np.maximum(dt, 1e-9 * period)) ** 2  # [N-1]
    diag = np.ones(n)
    diag[:-1] += link
    diag[1:] += link
    bands = np.zeros((3, n))
    bands[0, 1:] = -link
    bands[1] = diag
    bands[2, :-1] = -link
    return solve_banded((1, 1), bands, y.reshape(n, -1)).reshape(y.shape)
