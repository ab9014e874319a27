"""Which input files are videos (pure Python: the add-on, the CLI and the service agree on it)."""

from __future__ import annotations

import os
from pathlib import PurePath

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


def is_video_path(path: str | os.PathLike) -> bool:
    return PurePath(path).suffix.lower() in VIDEO_EXTENSIONS
