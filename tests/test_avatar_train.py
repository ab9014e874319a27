"""The Gaussian avatar on a real clip, CPU, tiny: loss falls, held-out frames beat the textured mesh,
photometric gradients reach the 3DMM, the bundle gets a standard PLY, and the turntable renders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.avatar.model import AvatarConfig
from backend.avatar.train import TrainConfig
from tests.conftest import MEDIA

VIDEO = MEDIA / "video"
TINY = TrainConfig(size=64, steps=80, train_frames=6, heldout_frames=3, densify_every=40,
                   avatar=AvatarConfig(n_gaussians=3000, sh_degree=0, mlp_hidden=16))


@pytest.fixture(scope="module")
def avatar_run(reconstructor, tmp_path_factory):
    """The avatar of d0 next to its textured mesh: the baseline is the bundle's own baked texture."""
    from PIL import Image

    from backend.avatar.pipeline import build_avatar
    from backend.video.pipeline import VideoPipeline

    vp = VideoPipeline(reconstructor)
    bundle = vp.reconstruct(VIDEO / "d0.mp4", tmp_path_factory.mktemp("avatar") / "head")
    texture = np.asarray(Image.open(bundle.bundle_dir / "texture.png").convert("RGB"))
    track = bundle.track
    return track, build_avatar(reconstructor, track, texture, "fast", lambda wanted: vp._frames(track, wanted), config=TINY)


def test_loss_falls_and_heldout_beats_textured_mesh(avatar_run):
    _, result = avatar_run
    report = result.report
    assert report["training"]["loss_last"] < 0.8 * report["training"]["loss_first"]
    mean = report["heldout"]["mean"]
    assert mean["psnr"] > mean["mesh_psnr"], mean
    assert set(report["train_frames"]).isdisjoint(report["heldout_frames"])


def test_photometric_fit_refines_the_3dmm(avatar_run):
    track, result = avatar_run
    assert 0 < result.report["identity_change"] < 1.0


def test_bundle_files(avatar_run, tmp_path):
    from backend.avatar.ply import read_gaussians_ply

    _, result = avatar_run
    assert {"gaussians.ply", "avatar.json", "avatar_sheet.png"} <= set(result.files)
    path = tmp_path / "gaussians.ply"
    path.write_bytes(result.files["gaussians.ply"])
    cloud = read_gaussians_ply(path)
    assert cloud.binding is not None and len(cloud.means) == result.report["training"]["gaussians"]
    assert json.loads(result.files["avatar.json"])["preset"] == "fast"
