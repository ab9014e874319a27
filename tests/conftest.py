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


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A head bundle reconstructed from ../shared/media/images/d8.jpg (real pipeline)."""
    require_shared()
    from backend import cli

    out = tmp_path_factory.mktemp("render") / "d8"
    assert cli.main(["reconstruct", str(MEDIA / "images" / "d8.jpg"), "-o", str(out), "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def d8_bundle(reconstructor, tmp_path_factory):
    """A real head: d8.jpg through the session's Reconstructor (no second model load)."""
    out = tmp_path_factory.mktemp("d8") / "d8"
    reconstructor.reconstruct([MEDIA / "images" / "d8.jpg"], out)
    return out


@pytest.fixture(scope="module")
def registered_addon(tmp_path_factory):
    """The built extension imported as ``headrig`` and registered; the scene is reset afterwards."""
    import bpy

    import build_addon

    with build_addon.imported(tmp_path_factory.mktemp("addon"), register=True) as mod:
        yield mod
    bpy.ops.wm.read_factory_settings(use_empty=True)


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    """The add-on package from the built zip (vendored ``headrig_shared`` and all), importable as
    ``headrig`` (not registered). Shared here, never by importing another test module: a bpy test
    module imported under two names makes bpy 4.5 hang at interpreter exit."""
    import importlib
    import sys
    import zipfile

    import build_addon

    root = tmp_path_factory.mktemp("addon")
    with zipfile.ZipFile(build_addon.build(root / "dist", wheels=False)) as zf:
        zf.extractall(root / "headrig")
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("headrig")
    finally:
        sys.path.remove(str(root))
        for mod in [m for m in sys.modules if m == "headrig" or m.startswith("headrig.")]:
            del sys.modules[mod]


@pytest.fixture
def server(tmp_path):
    """start(**ServerConfig fields) -> a Server running in a thread on 127.0.0.1; all stopped at the end."""
    import threading

    from backend.service.server import Server, ServerConfig

    servers = []

    def start(**kw) -> Server:
        srv = Server(ServerConfig(bind="tcp://127.0.0.1:*", data_dir=tmp_path / f"data{len(servers)}", **kw))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        assert srv.ready.wait(30)
        servers.append((srv, thread))
        return srv

    yield start
    for srv, thread in servers:
        srv.stop()
        thread.join(15)
        assert not thread.is_alive(), "server did not stop"


@pytest.fixture(scope="session")
def expressive_avatar(asset):
    """make(identity, n) -> a small GaussianAvatar on that identity's neutral mesh whose expression
    MLP does something: its last layer (zero at initialisation, so training starts from the bound
    avatar) drawn at random, giving offsets of a few tenths of a triangle and colour changes of a
    few percent at full weight, nonlinear in the weights like a trained one (tanh, SiLU)."""
    import numpy as np
    import torch

    from backend.avatar.model import AvatarConfig, initial_avatar

    def make(identity, n: int = 600, seed: int = 3):
        verts = asset.vertices(np.asarray(identity, np.float64))
        texture = np.full((64, 128, 3), (190, 140, 120), np.uint8)
        with torch.random.fork_rng():  # the MLP's default initialisation draws from torch's global generator
            torch.manual_seed(seed)
            avatar = initial_avatar(asset, verts, texture,
                                    AvatarConfig(n_gaussians=n, sh_degree=0, mlp_hidden=16, seed=seed))
        gen = torch.Generator().manual_seed(seed)
        last = avatar.mlp.net[-1]
        with torch.no_grad():
            last.weight.copy_(torch.randn(last.weight.shape, generator=gen) * 0.5)
            last.bias.zero_()
            avatar.mlp.net[0].weight[:, :asset.n_expressions] *= 3.0  # expressions matter as much as position
        return avatar

    return make
