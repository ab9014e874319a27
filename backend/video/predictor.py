"""The learned expression predictor (PGN / SHeaP's feed-forward step): MediaPipe's Tasks outputs
of one frame -> the 53 shape-key weights, in well under a millisecond on one core.

It is trained (``bench.predictor_train``) on Cycles renders of random ICT heads with known weights,
from what MediaPipe actually outputs on them -- its landmarks and its 52 blendshape scores -- so it
learns MediaPipe's systematic biases that a fixed landmark correspondence cannot. Used alone it is
the real-time path; in the offline tracker it starts every frame's solve and is the solve's prior.

Features of one frame: the 478 points similarity-aligned (rotation, scale, shift) to the template
the weights were trained with, minus that template, on the points that move with expression;
the alignment's rotation (9 numbers: MediaPipe's biases depend on the head's turn); the 51 scores.
A 3-layer MLP (ReLU) maps them to weights in [0, 1] (sigmoid) and to both eyes' gaze (yaw, pitch
in units of ``GAZE_SCALE`` degrees, relative to the head): the irises' place between the lids, as
MediaPipe reports it, is learned against the true eyeball turn. Inference is numpy only.

The weights file (``backend/assets/expression_predictor.npz``, numpy arrays, no pickle) is checked
against ``PREDICTOR_SHA256`` when loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.errors import InputError

# How a clip's weights are made (``backend.video.track.ExpressionOptions``); here, in a module
# without torch, so the command line can list them without loading the solver.
EXPRESSION_METHODS = ("fused", "predictor", "solve")
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "expression_predictor.npz"
PREDICTOR_SHA256 = "cb57f8b5d778e75ced5b766b23dfffdde782f6be88ffb6505ab1ff2d43a5393d"  # bench.predictor_train prints it

# MediaPipe face-mesh indices that move with expression: lids, brows, lips, irises, jaw line, cheeks.
_EYES = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
         263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
_LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270,
         409, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415]
_BROWS = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
_IRISES = list(range(468, 478))
_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
         148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
_CHEEKS_NOSE = [1, 2, 4, 5, 6, 48, 278, 64, 294, 98, 327, 205, 425, 50, 280, 187, 411, 116, 345, 36, 266]
GAZE_SCALE = 30.0  # degrees per unit of the gaze outputs
FEATURE_POINTS = np.array(sorted(set(_EYES + _LIPS + _BROWS + _IRISES + _OVAL + _CHEEKS_NOSE)))


def align(points: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarity-align each frame to ``template``.

    points: [N, 478, 3]; template: [478, 3] (zero mean, unit RMS radius).
    Returns (aligned [N, 478, 3], rotations [N, 3, 3] taking the template's axes to the frame's)."""
    p = np.asarray(points, np.float64)
    centred = p - p.mean(1, keepdims=True)
    scale = np.sqrt((centred ** 2).sum((1, 2)) / p.shape[1])[:, None, None]
    centred = centred / np.maximum(scale, 1e-9)
    h = np.einsum("npi,pj->nij", centred, template)  # cross-covariance
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt))
    u[:, :, -1] *= d[:, None]
    r = u @ vt  # [N, 3, 3]: frame -> template
    return np.einsum("npi,nij->npj", centred, r), np.transpose(r, (0, 2, 1))


def score_logits(scores: np.ndarray, shape_keys: list[str]) -> np.ndarray:
    """[N, E] logits of MediaPipe's own scores mapped onto the model's keys: the residual model's
    starting point (its MLP learns the correction, so little data does not unlearn what MediaPipe knows)."""
    from backend.landmarks.blendshapes import to_model_weights

    m = np.clip(to_model_weights(scores, shape_keys), 0.02, 0.98)
    return np.log(m / (1.0 - m))


def features(points: np.ndarray, scores: np.ndarray, template: np.ndarray) -> np.ndarray:
    """[N, F] predictor inputs of frames with points [N, 478, 3] and scores [N, 52]."""
    aligned, rot = align(points, template)
    shape = (aligned[:, FEATURE_POINTS] - template[FEATURE_POINTS]).reshape(len(aligned), -1)
    return np.concatenate([shape * 10.0, rot.reshape(len(rot), 9), np.asarray(scores, np.float64)[:, 1:]], axis=1)


@dataclass
class ExpressionPredictor:
    """The MLP's arrays. template: [478, 3]; mean/std: [F]; layers: [(W [in, out], b [out])];
    shape_keys: the E outputs' names."""

    template: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    shape_keys: list[str]
    meta: dict

    def __call__(self, points: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """[N, E] weights in [0, 1] for points [N, 478, 3] and scores [N, 52]."""
        return self.predict(points, scores)[0]

    def predict(self, points: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """([N, E] weights in [0, 1], [N, 2, 2] gaze (yaw, pitch) degrees per eye, eye 0 = the
        subject's left, or None for a model without gaze outputs)."""
        x = ((features(points, scores, self.template) - self.mean) / self.std).astype(np.float32)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                np.maximum(x, 0.0, out=x)
        e = len(self.shape_keys)
        logits = x[:, :e].astype(np.float64)
        if self.meta.get("residual"):
            logits = logits + score_logits(scores, self.shape_keys)
        weights = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid, without exp's overflow
        gaze = x[:, e:e + 4].astype(np.float64).reshape(-1, 2, 2) * GAZE_SCALE if x.shape[1] >= e + 4 else None
        return weights, gaze

    def save(self, path: Path) -> str:
        """Write the arrays (float16 weights) and return the file's SHA-256."""
        arrays = {"template": self.template.astype(np.float32), "mean": self.mean.astype(np.float32),
                  "std": self.std.astype(np.float32),
                  "meta": np.frombuffer(json.dumps({**self.meta, "shape_keys": self.shape_keys}).encode(), np.uint8)}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float16), b.astype(np.float32)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_predictor(path: str | Path | None = None, sha256: str | None = None) -> ExpressionPredictor:
    """The committed predictor (checksum-checked) or one at ``path`` (checked when ``sha256`` is given)."""
    chosen = Path(path) if path else DEFAULT_WEIGHTS
    expected = sha256 if path else (sha256 or PREDICTOR_SHA256)
    if not chosen.is_file():
        raise InputError(str(chosen), "the expression predictor's weights are missing",
                         "restore backend/assets/expression_predictor.npz from the repository, or retrain it "
                         "with `python -m bench.predictor_train`", code="missing_model")
    data = chosen.read_bytes()
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise InputError(str(chosen), "the expression predictor's weights do not match their checksum",
                         "restore the file from the repository (git checkout -- backend/assets)", code="bad_model")
    with np.load(chosen, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        n = sum(1 for k in z.files if k.startswith("w"))
        layers = [(z[f"w{i}"].astype(np.float32), z[f"b{i}"].astype(np.float32)) for i in range(n)]
        return ExpressionPredictor(z["template"].astype(np.float64), z["mean"].astype(np.float64),
                                   z["std"].astype(np.float64), layers, list(meta.pop("shape_keys")), meta)
