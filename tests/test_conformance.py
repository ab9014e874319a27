"""Conformance with the reference tools of the ecosystems artists take heads to (issue 14).

* Every kind of head.glb (one photo, several photos, a video with its animation, an avatar bundle)
  passes the Khronos glTF-Validator with no errors and no warnings; the infos left are the ones
  the README explains.
* gaussians.ply survives PlayCanvas' splat-transform to SOG and back within SOG's quantisation.
* ``headrig export-web`` writes a page that headless Chromium (SwiftShader) shows with the head
  upright and framed, where the Gaussians project with the page's own camera.

The tools come from tools/web (``make web-tools``) and Debian's chromium (``make browser``); a
missing one fails these tests with the command that installs it.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import MEDIA, require_shared

# Infos the validator may report, each explained in the README ("Conformance"):
#  * UNUSED_OBJECT on TEXCOORD_0 of flat-coloured parts (teeth, gums, irises, eye shells): their
#    uv layout is kept for artists who paint them, though no texture reads it yet.
ALLOWED_INFOS = {("UNUSED_OBJECT", "TEXCOORD_0")}


def _quiet_bar(stage, fraction):
    pass


@pytest.fixture(scope="module")
def several_photos_bundle(tmp_path_factory):
    """Three frames of one clip as photos: one identity, three fits."""
    require_shared()
    import av

    from backend import cli

    root = tmp_path_factory.mktemp("several")
    paths = []
    with av.open(str(MEDIA / "video" / "d3.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in (0, 40, 80):
                paths.append(str(root / f"frame{i}.png"))
                frame.to_image().save(paths[-1])
            if len(paths) == 3:
                break
    assert cli.main(["reconstruct", *paths, "-o", str(root / "bundle"), "-q"]) == 0
    return root / "bundle"


@pytest.fixture(scope="module")
def video_bundles(reconstructor, tmp_path_factory, monkeypatch_module):
    """d0.mp4 (3 s) as an animated bundle and as an avatar bundle (the tiny CPU training config)."""
    from backend.avatar import train
    from backend.avatar.model import AvatarConfig
    from backend.video.pipeline import VideoPipeline

    tiny = train.TrainConfig(size=64, steps=80, train_frames=6, heldout_frames=3, densify_every=40,
                             avatar=AvatarConfig(n_gaussians=3000, sh_degree=0, mlp_hidden=16))
    monkeypatch_module.setitem(train.PRESETS, "fast", tiny)
    root = tmp_path_factory.mktemp("video")
    vp = VideoPipeline(reconstructor)
    track = vp.track(MEDIA / "video" / "d0.mp4")
    vp.track = lambda path, on_progress=None: track  # tracked once for both bundles (minutes on 2 cores)
    vp.reconstruct(MEDIA / "video" / "d0.mp4", root / "video", on_progress=_quiet_bar)
    vp.reconstruct(MEDIA / "video" / "d0.mp4", root / "avatar", on_progress=_quiet_bar, avatar="fast")
    return {"video": root / "video", "avatar": root / "avatar"}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


# ---------------------------------------------------------------- glTF validator

@pytest.mark.slow
def test_every_kind_of_head_glb_passes_the_khronos_validator(bundle_dir, several_photos_bundle, video_bundles):
    from backend.web_tools import validate_gltf

    kinds = {"photo": bundle_dir, "several photos": several_photos_bundle, **video_bundles}
    assert (video_bundles["avatar"] / "gaussians.ply").is_file()
    assert "animations" in json.loads(_glb_json(video_bundles["video"] / "head.glb"))
    reports = validate_gltf([folder / "head.glb" for folder in kinds.values()])
    assert len(reports) == len(kinds)
    for kind, report in zip(kinds, reports):
        assert report.validator_version.startswith("2.0.0"), report.validator_version
        assert report.errors == 0, (kind, report.of("error")[:5])
        assert report.warnings == 0, (kind, report.of("warning")[:5])
        unexplained = [m for m in report.of("info") if (m["code"], m["pointer"].rsplit("/", 1)[-1]) not in ALLOWED_INFOS]
        assert not unexplained, (kind, unexplained[:5])
        assert report.hints == 0, kind


def test_validator_catches_a_broken_file(tmp_path, bundle_dir):
    """The check can fail: a bufferView of length 0 (the issue's error) is reported as one."""
    import pygltflib

    from backend.web_tools import validate_gltf

    gltf = pygltflib.GLTF2.load_from_bytes((bundle_dir / "head.glb").read_bytes())
    gltf.bufferViews.append(pygltflib.BufferView(buffer=0, byteOffset=0, byteLength=0))
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"".join(gltf.save_to_bytes()))
    (report,) = validate_gltf([broken])
    assert report.errors >= 1 and "VALUE_NOT_IN_RANGE" in {m["code"] for m in report.of("error")}


def _glb_json(path: Path) -> str:
    data = path.read_bytes()
    length = int.from_bytes(data[12:16], "little")
    return data[20:20 + length].decode()


# ---------------------------------------------------------------- splat-transform round trip

# SOG's quantisation (PlayCanvas' SOG format): means 16 bits per axis after a log transform,
# log-scales and colours through 256-entry codebooks, rotations as 8-bit "smallest three",
# opacity 8 bits. Measured on the d0 avatar (fast preset, 8,820 Gaussians) in the comments; the
# bounds leave room for other heads (a codebook's error grows where few values lie) and stay far
# below a visible change.
POSITION_TOL_M = 5e-5     # 7.4 um on a 35 cm head
LOG_SCALE_TOL = 0.08      # 8 % of a Gaussian's size; 0.039 (surfels' flat axis stretches the range)
ROTATION_TOL_DEG = 3.0    # 1.5 degrees
OPACITY_TOL = 1.5 / 255   # 1.0 / 255
COLOUR_TOL = 3.0 / 255    # 1.8 / 255, of the shown DC colour clip(0.5 + C0 f_dc) of visible Gaussians


@pytest.mark.slow
def test_gaussians_round_trip_through_sog(video_bundles, tmp_path):
    from plyfile import PlyData
    from scipy.spatial import cKDTree

    from backend.web_tools import splat_transform

    src = video_bundles["avatar"] / "gaussians.ply"
    splat_transform(["-q", str(src), str(tmp_path / "head.sog")])
    splat_transform(["-q", str(tmp_path / "head.sog"), str(tmp_path / "back.ply")])
    a = PlyData.read(str(src))["vertex"].data
    b = PlyData.read(str(tmp_path / "back.ply"))["vertex"].data
    assert len(a) == len(b)

    def cols(rows, names) -> np.ndarray:
        return np.stack([rows[n].astype(np.float64) for n in names], axis=1)

    # SOG reorders the Gaussians (Morton order): pair them by position, one to one.
    dist, match = cKDTree(cols(b, "xyz")).query(cols(a, "xyz"))
    assert len(np.unique(match)) == len(a)
    b = b[match]
    assert dist.max() < POSITION_TOL_M, dist.max()
    scales = ["scale_0", "scale_1", "scale_2"]
    assert np.abs(cols(a, scales) - cols(b, scales)).max() < LOG_SCALE_TOL
    qa, qb = (cols(r, [f"rot_{i}" for i in range(4)]) for r in (a, b))
    qa, qb = (q / np.linalg.norm(q, axis=1, keepdims=True) for q in (qa, qb))
    angle = np.degrees(2 * np.arccos(np.clip(np.abs((qa * qb).sum(1)), 0, 1)))
    assert angle.max() < ROTATION_TOL_DEG, angle.max()
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    assert np.abs(sigmoid(cols(a, ["opacity"])) - sigmoid(cols(b, ["opacity"]))).max() < OPACITY_TOL
    # Colour as shown (0.5 + C0 f_dc, clamped), of the Gaussians one can see: SOG's colour codebook
    # covers the visible range, so an over-bright or transparent one may come back far off unseen.
    dc = ["f_dc_0", "f_dc_1", "f_dc_2"]
    shown = [np.clip(0.5 + 0.28209479 * cols(r, dc), 0, 1) for r in (a, b)]
    visible = sigmoid(cols(a, ["opacity"]))[:, 0] > 0.02
    assert visible.mean() > 0.95
    assert np.abs(shown[0] - shown[1])[visible].max() < COLOUR_TOL


# ---------------------------------------------------------------- the web viewer

VIEW = 480  # screenshot side in pixels


def _serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def screenshot(page: Path, out_png: Path, wait_ms: int = 25000) -> dict:
    """``page`` served on 127.0.0.1, shot by headless Chromium (noui: no buttons; noanim: the
    initial camera, not the orbit; webgl: SwiftShader has no WebGPU adapter)."""
    from backend.web_tools import WEB_TOOLS, run_node

    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: run 'make browser' (apt-get install chromium)"
    server = _serve(page.parent)
    try:
        url = f"http://127.0.0.1:{server.server_port}/{page.name}?noui&noanim&webgl"
        log = run_node(WEB_TOOLS / "screenshot.js", [url, str(out_png), "--width", str(VIEW), "--height", str(VIEW),
                                                     "--wait-ms", str(wait_ms), "--chromium", chromium], timeout=300)
    finally:
        server.shutdown()
    return json.loads(log)


def expected_view(cloud, camera: dict, size: int) -> np.ndarray:
    """[size, size] luminance of the opaque Gaussians' DC colours at their means seen through the
    page's camera (look-at, vertical fov; nearest wins), -1 where none lands. A crude point
    render: enough to tell hair from face from shirt, which is what orientation needs."""
    from scipy.ndimage import grey_dilation

    from backend.avatar.web_export import viewer_from_gltf

    keep = cloud.opacities > 0.3
    pts = viewer_from_gltf(cloud.means[keep])
    lum = np.clip(0.5 + 0.28209479 * cloud.sh[keep, 0], 0, 1) @ [0.299, 0.587, 0.114]
    eye, target = np.asarray(camera["position"]), np.asarray(camera["target"])
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rel = pts - eye
    z = rel @ forward
    focal = (size / 2) / np.tan(np.radians(camera["fov"]) / 2)
    px = (size / 2 + focal * (rel @ right) / z).astype(int)
    py = (size / 2 - focal * (rel @ up) / z).astype(int)
    inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    order = np.argsort(-z[inside])  # far first: nearer points overwrite them
    image = np.full((size, size), -1.0)
    image[py[inside][order], px[inside][order]] = lum[inside][order]
    for _ in range(3):  # close the gaps between points
        image = np.where(image < 0, grey_dilation(image, size=(3, 3)), image)
    return image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _correlation(shot_lum: np.ndarray, head: np.ndarray, expected: np.ndarray) -> float:
    both = head & (expected >= 0)
    return float(np.corrcoef(shot_lum[both], expected[both])[0, 1])


@pytest.mark.slow
def test_export_web_page_shows_the_head_upright_and_framed(video_bundles, tmp_path):
    from backend import cli
    from backend.avatar.ply import read_gaussians_ply
    from backend.avatar.web_export import WebViewOptions, framing

    bundle = video_bundles["avatar"]
    page = tmp_path / "site" / "head.html"
    assert cli.main(["export-web", str(bundle), "-o", str(page)]) == 0
    html = page.read_text()
    assert "<script" in html and "data:application/octet-stream;base64," in html  # the Gaussians inside
    assert "http://" not in html.split("<body>")[0].replace("http://www.w3.org", "")  # nothing fetched

    log = screenshot(page, tmp_path / "shot.png")
    assert not log["pageErrors"], log
    assert any("Renderer: webgl2" in line for line in log["console"]), log
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).astype(np.int16)
    background = np.round(np.asarray(WebViewOptions().background) * 255)
    corner = shot[:8, :8].reshape(-1, 3).mean(0)
    assert np.abs(corner - background).max() < 4, corner  # the page's own background, nothing else
    head = np.abs(shot - corner).max(axis=2) > 12

    cloud = read_gaussians_ply(bundle / "gaussians.ply")
    expected = expected_view(cloud, framing(cloud.means, cloud.opacities), VIEW)
    rows, cols = np.nonzero(head)
    height, width = np.ptp(rows) / VIEW, np.ptp(cols) / VIEW
    assert 0.55 < height < 0.9, height  # framed: the head fills most of the height (not tiny) ...
    assert 0.12 < head.mean() < 0.6, head.mean()  # ... covers a good part of the view, not all of it
    assert abs(cols.mean() / VIEW - 0.5) < 0.1 and abs(rows.mean() / VIEW - 0.5) < 0.15  # ... centred
    assert height > width  # upright, not lying on its side
    iou = _iou(head, expected >= 0)
    assert iou > 0.6, iou  # the page shows the Gaussians where its camera puts them
    lum = shot @ np.array([0.299, 0.587, 0.114]) / 255
    upright = _correlation(lum, head, expected)
    print(f"web viewer: height {height:.2f} width {width:.2f} cover {head.mean():.2f} iou {iou:.2f} "
          f"upright {upright:.2f} flipped {_correlation(lum, head, expected[::-1]):.2f} "
          f"side {_correlation(lum, head, expected.T):.2f}")
    # Measured on this tiny avatar: iou 0.74, upright 0.79, upside down 0.38, on its side 0.29.
    assert upright > 0.55, upright  # hair, face, shirt where they belong ...
    for name, wrong in (("upside down", expected[::-1]), ("on its side", expected.T)):
        assert _correlation(lum, head, wrong) < upright - 0.15, name  # ... and not turned


def test_viewer_world_is_upright_and_faces_the_camera():
    """The page's camera maths: in the viewer's world the head stands up (+y) and faces -z, where
    the framing puts the camera; a turn, so left and right are not swapped."""
    from backend.avatar.web_export import framing, viewer_from_gltf

    up, face, right = viewer_from_gltf(np.eye(3)[[1, 2, 0]])
    np.testing.assert_allclose(up, [0, 1, 0])
    np.testing.assert_allclose(face, [0, 0, -1])
    assert np.isclose(np.linalg.det(np.stack([right, up, face])), 1.0)  # images of x, y, z
    means = np.random.default_rng(0).normal(0, 0.1, (500, 3))
    camera = framing(means, np.ones(500))
    assert camera["position"][2] < camera["target"][2] - 0.3  # in front of the face


def test_export_web_refuses_a_bundle_without_gaussians(bundle_dir, tmp_path, capsys):
    from backend import cli

    assert cli.main(["export-web", str(bundle_dir), "-o", str(tmp_path / "x.html")]) == 2
    assert "gaussians.ply" in capsys.readouterr().err and not (tmp_path / "x.html").exists()
