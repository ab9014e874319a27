"""Shared fixtures. Tests read the data folder ``../shared`` beside the repository (never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"
ICT_ARCHIVE = SHARED / "ict-facekit" / "FaceXModel.tar.xz"

os.environ.setdefault("GLOG_minloglevel", "2")


def require_shared() -> None:
    if not ICT_ARCHIVE.is_file():
        pytest.skip(f"data folder missing: {ICT_ARCHIVE} (clone the repo beside ../shared)")


@pytest.fixture(scope="session")
def asset():
    require_shared()
    from backend.headmodel.ict_source import load_ict

    return load_ict(progress=False)


@pytest.fixture(scope="session")
def correspondence():
    from backend.landmarks.correspondence import load_correspondence

    return load_correspondence()


@pytest.fixture(scope="session")
def reconstructor():
    require_shared()
    from backend.reconstruct import ReconstructOptions, Reconstructor

    rec = Reconstructor(ReconstructOptions(progress=False))
    yield rec
    rec.close()
