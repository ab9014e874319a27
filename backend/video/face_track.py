"""MediaPipe landmarks on every frame of a clip, following the face from frame to frame.

The photo landmarker (``FaceLandmarker.detect``) runs two face detectors and sometimes a tile
pyramid: robust, but about 20 ms a frame. In a clip the face moves little between frames, so the
mesh runs on a square crop around the previous frame's landmarks (about 6 ms on 2 cores, and the
crop keeps small faces in wide shots large enough), and the full search runs only to find the face
again after a frame without one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import mediapipe as mp
import numpy as np

from backend.errors import InputError
from backend.landmarks import FaceLandmarker
from backend.landmarks.mediapipe_face import N_POINTS, _crop_with_padding


@dataclass
class FrameLandmarks:
    """points: [478, 3] full-frame pixels (z: MediaPipe relative depth, pixels); sharpness: variance
    of the Laplacian of the face crop (grey, 128 px), for picking identity frames."""

    points: np.ndarray
    sharpness: float
    reacquired: bool


class VideoFaceTracker:
    """Landmarks frame after frame. Build once per clip (it keeps the previous face)."""

    def __init__(self, landmarker: FaceLandmarker, crop_scale: float = 1.9, crop_size: int = 384,
                 min_detection_confidence: float = 0.5):
        self.landmarker = landmarker
        self.crop_scale = crop_scale
        self.crop_size = crop_size
        # Static mode: every crop is judged on its own, so one bad frame cannot drag the next ones.
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=min_detection_confidence)
        self._previous: np.ndarray | None = None

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> VideoFaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self) -> None:
        self._previous = None

    def track(self, rgb: np.ndarray, source: str) -> FrameLandmarks | None:
        """The face in this frame, or None when there is none (the next frame searches afresh)."""
        points, reacquired = None, False
        if self._previous is not None:
            points = self._mesh_near(rgb, self._previous)
        if points is None:
            reacquired = True
            try:
                points = self.landmarker.detect(rgb, source).points.astype(np.float64)
            except InputError as exc:
                if exc.code not in ("no_face", "face_too_small"):
                    raise
                self._previous = None
                return None
        self._previous = points
        return FrameLandmarks(points.astype(np.float32), _sharpness(rgb, points), reacquired)

    def _mesh_near(self, rgb: np.ndarray, previous: np.ndarray) -> np.ndarray | None:
        x0, y0 = previous[:, :2].min(0)
        x1, y1 = previous[:, :2].max(0)
        side = max(16, int(round(max(x1 - x0, y1 - y0) * self.crop_scale)))
        cx0 = int(round((x0 + x1) / 2 - side / 2))
        cy0 = int(round((y0 + y1) / 2 - side / 2))
        crop = _crop_with_padding(rgb, cx0, cy0, side)
        if side != self.crop_size:
            interpolation = cv2.INTER_AREA if side > self.crop_size else cv2.INTER_LINEAR
            crop = cv2.resize(crop, (self.crop_size, self.crop_size), interpolation=interpolation)
        result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            return None
        landmarks = result.multi_face_landmarks[0].landmark
        if len(landmarks) != N_POINTS:
            return None
        normalised = np.array([(p.x, p.y, p.z) for p in landmarks], dtype=np.float64)
        scale = side  # crop pixels -> full-frame pixels (z is scaled by the width, like x)
        return np.column_stack([cx0 + normalised[:, 0] * scale, cy0 + normalised[:, 1] * scale, normalised[:, 2] * scale])


def _sharpness(rgb: np.ndarray, points: np.ndarray) -> float:
    x0, y0 = np.floor(points[:, :2].min(0)).astype(int)
    x1, y1 = np.ceil(points[:, :2].max(0)).astype(int)
    h, w = rgb.shape[:2]
    crop = rgb[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())
