"""MediaPipe landmarks on every frame of a clip, following the face from frame to frame.

The photo landmarker (``FaceLandmarker.detect``) runs two face detectors and sometimes a tile
pyramid: robust, but about 20 ms a frame. In a clip the face moves little between frames, so the
mesh runs in MediaPipe's tracking mode (no detector while the face stays found: about 4 ms a frame
instead of 6) on a square crop around the face (small faces in wide shots stay large enough). The
crop stays put until the face drifts from its centre or changes size, and the mesh is reset when it
moves, since its tracked region lives in crop pixels. The full search runs only to find the face
again after a frame without one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import mediapipe as mp
import numpy as np

from backend.errors import InputError
from backend.landmarks import FaceLandmarker
from backend.landmarks.blendshapes import TasksFaceLandmarker
from backend.landmarks.mediapipe_face import N_POINTS, _crop_with_padding


@dataclass
class FrameLandmarks:
    """points: [478, 3] full-frame pixels (z: MediaPipe relative depth, pixels); sharpness: variance
    of the Laplacian of the face crop (grey, 128 px), for picking identity frames; scores: [52]
    MediaPipe blendshape scores when the tracker runs the Tasks graph, else None."""

    points: np.ndarray
    sharpness: float
    reacquired: bool
    scores: np.ndarray | None = None


class VideoFaceTracker:
    """Landmarks frame after frame. Build once per clip (it keeps the previous face)."""

    def __init__(self, landmarker: FaceLandmarker, crop_scale: float = 2.2, crop_size: int = 256,
                 recrop_drift: float = 0.12, min_detection_confidence: float = 0.5,
                 tasks: TasksFaceLandmarker | None = None):
        """``tasks``: run MediaPipe's Tasks graph on the crop instead of the legacy mesh; it gives
        the blendshape scores too (and its own landmarks, which the scores must come from)."""
        self.landmarker = landmarker
        self.tasks = tasks
        self._time_ms = 0
        self._last_scores: np.ndarray | None = None
        self.crop_scale = crop_scale
        self.crop_size = crop_size  # MediaPipe resizes the face region to 192 px itself
        self.recrop_drift = recrop_drift
        # The legacy mesh only when the Tasks graph does not take its place.
        self._mesh = None if tasks is not None else mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=0.5)
        self._previous: np.ndarray | None = None
        self._crop: tuple[int, int, int] | None = None  # x0, y0, side in frame pixels

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()

    def __enter__(self) -> VideoFaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self) -> None:
        self._previous = None
        self._crop = None
        self._reset_mesh()

    def _reset_mesh(self) -> None:
        if self._mesh is not None:
            self._mesh.reset()
        if self.tasks is not None:
            self.tasks.reset()

    def track(self, rgb: np.ndarray, source: str, time_s: float = 0.0) -> FrameLandmarks | None:
        """The face in this frame (shown at ``time_s``), or None when there is none (the next frame
        searches afresh)."""
        points, reacquired = None, False
        self._last_sharpness = 0.0
        self._last_scores = None
        self._time_ms = int(round(1000 * time_s))
        if self._previous is not None:
            points = self._mesh_near(rgb, self._previous)
        if points is None:
            reacquired = True
            self.reset()
            try:
                points = self.landmarker.detect(rgb, source).points.astype(np.float64)
            except InputError as exc:
                if exc.code not in ("no_face", "face_too_small"):
                    raise
                self.reset()
                return None
            if self.tasks is not None:  # the scores need the Tasks graph's own landmarks
                points = self._mesh_near(rgb, points)
                if points is None:
                    self.reset()
                    return None
        self._previous = points
        return FrameLandmarks(points.astype(np.float32), self._last_sharpness, reacquired, self._last_scores)

    def _place_crop(self, previous: np.ndarray) -> tuple[int, int, int]:
        """The crop square for this frame: kept while the face stays near its centre and size."""
        x0, y0 = previous[:, :2].min(0)
        x1, y1 = previous[:, :2].max(0)
        size = max(x1 - x0, y1 - y0)
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        if self._crop is not None:
            cx0, cy0, side = self._crop
            drift = np.abs(centre - (np.array([cx0, cy0]) + side / 2)).max() / side
            scale = size * self.crop_scale / side
            if drift < self.recrop_drift and 0.85 < scale < 1.15:
                return self._crop
            self._reset_mesh()  # its tracked region is in the old crop's pixels
        side = max(16, int(round(size * self.crop_scale)))
        self._crop = (int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2)), side)
        return self._crop

    def _mesh_near(self, rgb: np.ndarray, previous: np.ndarray) -> np.ndarray | None:
        cx0, cy0, side = self._place_crop(previous)
        crop = _crop_with_padding(rgb, cx0, cy0, side)
        if side != self.crop_size:
            crop = cv2.resize(crop, (self.crop_size, self.crop_size), interpolation=cv2.INTER_LINEAR)
        self._last_sharpness = _sharpness(crop)
        scale = side  # crop pixels -> full-frame pixels (z is scaled by the width, like x)
        if self.tasks is not None:
            found = self.tasks.detect(crop, self._time_ms)
            if found is None:
                return None
            points, self._last_scores = found
            k = scale / self.crop_size  # Tasks points are in the resized crop's pixels
            return np.column_stack([cx0 + points[:, 0] * k, cy0 + points[:, 1] * k, points[:, 2] * k])
        result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            return None
        landmarks = result.multi_face_landmarks[0].landmark
        if len(landmarks) != N_POINTS:
            return None
        normalised = np.array([(p.x, p.y, p.z) for p in landmarks], dtype=np.float64)
        return np.column_stack([cx0 + normalised[:, 0] * scale, cy0 + normalised[:, 1] * scale, normalised[:, 2] * scale])


def _sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian over the middle of the face crop (the face, not the background)."""
    h, w = crop.shape[:2]
    grey = cv2.cvtColor(crop[h // 4: 3 * h // 4, w // 4: 3 * w // 4], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())
