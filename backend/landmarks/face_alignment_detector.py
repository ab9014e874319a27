"""Optional 68-point (iBUG / Multi-PIE) landmarks from the `face-alignment` package (Bulat's FAN).

Not a dependency of HeadRig: the package is not installed by default and its weights come from
its author's own host, not PyPI. HeadRig never downloads at run time, so this module refuses to
start unless the package and both weight files (the S3FD face detector and 2DFAN-4) are already
in torch hub's checkpoint folder. To set them up, on a machine with internet:

    pip install face-alignment
    python -c "import face_alignment as fa; fa.FaceAlignment(fa.LandmarksType.TWO_D, device='cpu')"

then copy ~/.cache/torch/hub/checkpoints/ (or $TORCH_HOME/hub/checkpoints/) to the offline machine.
"""

from __future__ import annotations

import importlib
import posixpath
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

import numpy as np

from backend.errors import HeadRigError, InputError

# What face-alignment 1.4 asks torch hub for when torch is not 1.5 or 1.6 (its own tables win if present).
_FAN_2D_URL = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip"
_S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"

_SETUP_HINT = ("on a machine with internet run `pip install face-alignment` and create "
               "face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device='cpu') once; it caches "
               "the weights from adrianbulat.com under ~/.cache/torch/hub/checkpoints; copy that folder here. "
               "Or use the built-in MediaPipe landmarks instead")


class FaceAlignmentUnavailable(HeadRigError):
    """The face-alignment package or its weights are not installed on this machine."""


class FaceAlignment68:
    """68-point 2D landmarks with face-alignment's S3FD detector + 2DFAN-4. Build once, reuse.

    Args:
        device: torch device for both networks, e.g. "cpu" or "cuda".

    Raises:
        FaceAlignmentUnavailable: the package is not importable or a weight file is not cached.
    """

    def __init__(self, device: str = "cpu"):
        package = _import_face_alignment()
        missing = [path for path in required_weight_files(package) if not path.is_file()]
        if missing:
            names = ", ".join(str(path) for path in missing)
            raise FaceAlignmentUnavailable(f"face-alignment weights are missing: {names}; "
                                           f"they are never downloaded at run time; {_SETUP_HINT}")
        self._model = package.FaceAlignment(package.LandmarksType.TWO_D, device=device, flip_input=False)

    def detect(self, rgb: np.ndarray, source: str = "") -> np.ndarray:
        """[68, 2] float32 pixel points (x, y) of the largest face in rgb: [H, W, 3] uint8.

        Raises:
            InputError: code "no_face" when S3FD finds no face.
        """
        faces = self._model.get_landmarks_from_image(np.ascontiguousarray(rgb))
        if not faces:
            raise InputError(source, "no face found by face-alignment",
                             "use a photo where one human face is clearly visible", code="no_face")
        areas = [np.ptp(points[:, 0]) * np.ptp(points[:, 1]) for points in faces]
        return np.asarray(faces[int(np.argmax(areas))][:, :2], dtype=np.float32)


def required_weight_files(package: ModuleType | None = None) -> list[Path]:
    """The checkpoint files face-alignment would otherwise download, in torch hub's checkpoint folder."""
    import torch  # only needed here; keeps importing this module cheap

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    fan_url, s3fd_url = _FAN_2D_URL, _S3FD_URL
    if package is not None:
        # Mirror face-alignment's own choice: its URL tables are keyed by "major.minor" of torch.
        api = importlib.import_module(package.__name__ + ".api")
        torch_minor = torch.__version__.split("+")[0].rsplit(".", 1)[0]
        table = getattr(api, "models_urls", {}).get(torch_minor, getattr(api, "default_model_urls", {}))
        fan_url = table.get("2DFAN-4", fan_url)
        try:
            sfd = importlib.import_module(package.__name__ + ".detection.sfd.sfd_detector")
            s3fd_url = getattr(sfd, "models_urls", {}).get("s3fd", s3fd_url)
        except ImportError:
            pass
    # Same naming as face_alignment.utils.load_file_from_url: the URL path's last part.
    return [checkpoints / posixpath.basename(urlparse(url).path) for url in (s3fd_url, fan_url)]


def _import_face_alignment() -> ModuleType:
    try:
        return importlib.import_module("face_alignment")
    except ImportError as exc:
        raise FaceAlignmentUnavailable(f"the optional face-alignment package is not installed ({exc}); "
                                       f"{_SETUP_HINT}") from None
