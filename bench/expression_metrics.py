"""Expression metrics an artist can read (``bench.expressions``), for [N, E] predicted and true weights.

* ``vertex_mm``: the expression's vertex error on the face (mm; mean over the face's vertices, then
  over frames). ICT's expression shapes do not depend on identity, so this is the error on the
  true identity's mesh, and it does not punish two mixes of keys that make the same face.
* ``corr_median`` / ``corr_worst``: Pearson correlation over time of each key that moves in the
  clip (true range > ``MOVING``); a prediction that does not move scores 0.
* ``mae_active``: mean absolute error where the true weight exceeds ``ACTIVE`` (the frames an artist
  looks at); ``mae_all`` over all keys and frames; ``mae_moving`` over the moving keys (the old
  "active keys" figure).
* ``jitter``: mean absolute frame-to-frame change of the weights on the still segment (if any).
"""

from __future__ import annotations

import numpy as np

MOVING = 0.2
ACTIVE = 0.2


def face_basis_mm(asset, step: int = 2) -> np.ndarray:
    """[E, V', 3] expression shapes of every ``step``-th face vertex, in mm."""
    first, last = asset.parts["face"]
    return 10.0 * asset.expression_basis[:, first:last + 1:step].astype(np.float64)


def vertex_error_mm(pred: np.ndarray, true: np.ndarray, basis_mm: np.ndarray) -> np.ndarray:
    """[N] mean vertex distance (mm) between the faces of [N, E] weights."""
    d = np.einsum("ne,evc->nvc", np.asarray(pred, np.float64) - np.asarray(true, np.float64), basis_mm)
    return np.sqrt((d ** 2).sum(-1)).mean(-1)


def key_correlations(pred: np.ndarray, true: np.ndarray, moving: float = MOVING) -> np.ndarray:
    """[K] Pearson correlation per moving key (true range > ``moving``); constant predictions -> 0."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    keys = np.flatnonzero(np.ptp(true, axis=0) > moving)
    out = []
    for k in keys:
        p, t = pred[:, k] - pred[:, k].mean(), true[:, k] - true[:, k].mean()
        den = np.sqrt((p ** 2).sum() * (t ** 2).sum())
        out.append(float((p * t).sum() / den) if den > 1e-12 else 0.0)
    return np.array(out)


def expression_scores(pred: np.ndarray, true: np.ndarray, basis_mm: np.ndarray,
                      static: tuple[int, int] | None = None) -> dict:
    """All metrics of the module doc for one clip (rows of pred and true are the same frames)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    err = np.abs(pred - true)
    corr = key_correlations(pred, true)
    moving = np.ptp(true, axis=0) > MOVING
    active = true > ACTIVE
    row = {"vertex_mm": float(vertex_error_mm(pred, true, basis_mm).mean()),
           "corr_median": float(np.median(corr)) if len(corr) else None,
           "corr_worst": float(corr.min()) if len(corr) else None,
           "n_moving_keys": int(moving.sum()),
           "mae_active": float(err[active].mean()) if active.any() else None,
           "mae_moving": float(err[:, moving].mean()) if moving.any() else None,
           "mae_all": float(err.mean())}
    if static is not None and static[1] - static[0] > 1:
        row["jitter"] = float(np.abs(np.diff(pred[static[0]:static[1]], axis=0)).mean())
    return row
