"""The ICT-FaceKit converter, the cached asset and its lookup/download code."""

from __future__ import annotations

import functools
import http.server
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backend.headmodel.asset import AssetError, load_head_model, save_asset
from backend.headmodel.ict_convert import SourceError, convert_ict, iter_facexmodel_files, parse_obj_vertices, triangulate
from tests.conftest import ICT_ARCHIVE, require_shared


def test_asset_contents(asset):
    assert asset.name == "ict-facekit"
    assert asset.neutral.shape == (26719, 3)
    assert asset.identity_basis.shape == (100, 26719, 3)
    assert asset.expression_basis.shape == (53, 26719, 3)
    assert len(asset.expression_names) == 53 and "jawOpen" in asset.expression_names and "eyeBlink_L" in asset.expression_names
    assert asset.extra_names == ["PupilDilate_L", "PupilDilate_R", "cheekRaiser_L", "cheekRaiser_R"]
    assert len(asset.face_sizes) == 26384 and (asset.face_sizes == 4).sum() == 25836
    assert len(asset.triangles) == 26384 + 25836
    assert asset.uvs.shape == (28911, 2)
    assert asset.landmarks68.shape == (68,) and asset.jawline_alternatives.shape == (2, 8)
    assert len(asset.material_names) == 12 and asset.face_material.max() == 11
    # centimetres: the head spans about 25 x 34 x 22
    extent = asset.neutral.max(0) - asset.neutral.min(0)
    assert 20 < extent[0] < 30 and 28 < extent[1] < 40


def test_float16_bases_match_the_obj_files(asset):
    require_shared()
    wanted = {"generic_neutral_mesh.obj", "identity007.obj", "jawOpen.obj"}
    files = {}
    with tarfile.open(ICT_ARCHIVE, "r|*") as tf:
        for member in tf:
            name = Path(member.name).name
            if name in wanted:
                files[name] = parse_obj_vertices(tf.extractfile(member).read())
            if len(files) == len(wanted):
                break
    neutral = files["generic_neutral_mesh.obj"]
    np.testing.assert_allclose(asset.neutral, neutral, atol=1e-6)
    # float16 storage: error below 0.002 cm (0.02 mm)
    assert np.abs(asset.identity_basis[7] - (files["identity007.obj"] - neutral)).max() < 2e-3
    jaw = asset.expression_names.index("jawOpen")
    assert np.abs(asset.expression_basis[jaw] - (files["jawOpen.obj"] - neutral)).max() < 2e-3


def test_triangulation_keeps_every_polygon_corner():
    sizes = np.array([3, 4, 4])
    corners = np.arange(11)
    tri_face, (tris,) = triangulate(sizes, corners)
    assert tri_face.tolist() == [0, 1, 1, 2, 2]
    assert tris.tolist() == [[0, 1, 2], [3, 4, 5], [3, 5, 6], [7, 8, 9], [7, 9, 10]]


def test_corrupt_cache_is_detected_and_rebuilt(asset, tmp_path, monkeypatch):
    path = tmp_path / "ict-facekit.npz"
    save_asset(asset, path)
    assert load_head_model(path).n_vertices == 26719
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AssetError, match="checksum"):
        load_head_model(path)


def test_not_ict_sources_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="FaceXModel"):
        list(iter_facexmodel_files(tmp_path / "empty"))
    bogus = tmp_path / "bogus.zip"
    with zipfile.ZipFile(bogus, "w") as zf:
        zf.writestr("ICT-FaceKit-master/README.md", "hello")
    with pytest.raises(SourceError, match="missing"):
        convert_ict(bogus, progress=False)


@pytest.fixture(scope="module")
def repo_zip(tmp_path_factory):
    """The public repository's archive layout (ICT-FaceKit-master/FaceXModel/...), made locally."""
    require_shared()
    path = tmp_path_factory.mktemp("archive") / "ICT-FaceKit-master.zip"
    with tarfile.open(ICT_ARCHIVE, "r|*") as tf, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("ICT-FaceKit-master/README.md", "ICT-FaceKit")
        for member in tf:
            if member.isfile():
                zf.writestr(f"ICT-FaceKit-master/FaceXModel/{Path(member.name).name}", tf.extractfile(member).read())
    return path


@pytest.mark.slow
def test_first_use_downloads_and_converts(repo_zip, tmp_path, monkeypatch, asset):
    """No local source: the archive is fetched (from 127.0.0.1 here), converted, cached, reused."""
    from backend.headmodel import ict_source

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo_zip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("HEADRIG_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setattr(ict_source, "find_local_source", lambda: None)
        url = f"http://127.0.0.1:{server.server_address[1]}/{repo_zip.name}"
        path = ict_source.ensure_ict_asset(progress=False, url=url)
        assert path.parent == tmp_path / "cache"
        converted = load_head_model(path)
        np.testing.assert_array_equal(converted.triangles, asset.triangles)
        np.testing.assert_allclose(converted.identity_basis, asset.identity_basis)
        # Second use: no download (the server is gone), the verified cache is used.
        server.shutdown()
        (tmp_path / "cache" / "ICT-FaceKit.zip").unlink()
        assert ict_source.ensure_ict_asset(progress=False, url=url) == path
    finally:
        server.shutdown()


def test_download_failure_says_what_to_do(tmp_path, monkeypatch):
    from backend.headmodel import ict_source

    monkeypatch.setenv("HEADRIG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(ict_source, "find_local_source", lambda: None)
    with pytest.raises(SourceError, match="HEADRIG_ICT_DIR"):
        ict_source.ensure_ict_asset(progress=False, url="http://127.0.0.1:9/nothing.zip")
    assert not list(tmp_path.glob("*.part"))
