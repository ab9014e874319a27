"""Person / background segmentation with MediaPipe's selfie segmentation (weights ship in the wheel).

Model choice: `model_selection=0`, the "general" model (256x256 input), by default. It follows hair
and shoulder outlines more closely on portrait-shaped photos (visibly crisper on d8.jpg), which is
what the texture and silhouette steps need. The "landscape" model (1, 144x256 input) is made for
16:9 video calls and was about 2x faster on a 2-core CPU (3-5 ms against 7-9 ms for a 720x720
photo); pass `model_selection=1` for long videos where speed matters more.

The model segments "the foreground subject", not specifically humans: it also marks cats and dogs.
"""

from __future__ import annotations

import mediapipe as mp
import numpy as np

from backend.errors import InputError


class PersonSegmenter:
    """Person-probability masks for RGB images. Build once, reuse; not thread-safe.

    Args:
        model_selection: 0 = general model (default), 1 = landscape model (see the module docstring).
    """

    def __init__(self, model_selection: int = 0):
        if model_selection not in (0, 1):
            raise ValueError(f"model_selection must be 0 (general) or 1 (landscape), got {model_selection}")
        self.model_selection = model_selection
        self._segmentation = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)

    def __enter__(self) -> PersonSegmenter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Frees the MediaPipe graph; the object cannot be used afterwards."""
        self._segmentation.close()

    def mask(self, rgb: np.ndarray, source: str = "") -> np.ndarray:
        """Probability that each pixel shows the person (face, hair, body).

        Args:
            rgb: [H, W, 3] uint8 image.
            source: the file or frame the image came from, named in errors.

        Returns:
            [H, W] float32 in [0, 1]; MediaPipe resamples its low-resolution output to the image size.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(source, f"image must be [H, W, 3] uint8 RGB, got {rgb.shape} {rgb.dtype}",
                             "load photos with backend.image_input.load_photo", code="bad_input")
        result = self._segmentation.process(np.ascontiguousarray(rgb))
        if result.segmentation_mask is None:
            # Not seen in practice; an all-background mask keeps callers simple.
            return np.zeros(rgb.shape[:2], dtype=np.float32)
        return np.clip(np.asarray(result.segmentation_mask, dtype=np.float32), 0.0, 1.0)
