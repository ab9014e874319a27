"""Face landmarks, person segmentation and their correspondence to the head model.

The MediaPipe-based names are imported on first use, so that `backend.landmarks.correspondence`
and friends do not pay for importing MediaPipe (about a second).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_EXPORTS = {
    "FaceLandmarks": "backend.landmarks.mediapipe_face",
    "FaceLandmarker": "backend.landmarks.mediapipe_face",
    "PersonSegmenter": "backend.landmarks.segmentation",
    "FaceAlignment68": "backend.landmarks.face_alignment_detector",
    "FaceAlignmentUnavailable": "backend.landmarks.face_alignment_detector",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
