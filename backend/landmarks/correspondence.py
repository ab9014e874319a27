"""MediaPipe's 478 landmarks as barycentric points on the ICT-FaceKit surface.

The committed asset is made by ``tools/build_mediapipe_correspondence.py`` (see its docstring for
the procedure). Contour (face oval) points slide over the surface as the head turns; the fitter
re-selects their surface point on the silhouette (see ``backend.fitting.contour``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OUTPUT_PATH = Path(__file__).resolve().parents[1] / "assets" / "mediapipe_ict.json"

# MediaPipe face-mesh index of each iBUG-68 point (the widely used mapping; 0-16 are contour).
MEDIAPIPE_TO_IBUG68 = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301, 168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
)


@dataclass(frozen=True)
class LandmarkCorrespondence:
    """corners: [478, 3] vertex ids; bary: [478, 3] weights; contour: indices of sliding points."""

    corners: np.ndarray
    bary: np.ndarray
    contour: np.ndarray
    head_model: str

    @property
    def n_points(self) -> int:
        return len(self.corners)

    def positions(self, verts: np.ndarray) -> np.ndarray:
        """[..., 478, 3] surface points of vertices [..., V, 3]."""
        return np.einsum("...pkc,pk->...pc", verts[..., self.corners, :], self.bary)


def load_correspondence(path: Path = OUTPUT_PATH) -> LandmarkCorrespondence:
    data = json.loads(Path(path).read_text())
    return LandmarkCorrespondence(
        corners=np.array(data["corners"], dtype=np.int64),
        bary=np.array(data["bary"], dtype=np.float32),
        contour=np.array(data["contour"], dtype=np.int64),
        head_model=data["head_model"],
    )
