"""The synthetic accuracy benchmark: its metrics, its camera convention, one tiny Cycles render."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.accuracy import (  # noqa: E402
    Evaluator,
    Prediction,
    Sample,
    aligned_errors,
    expression_errors,
    focal_error_pct,
    mesh_error_mm,
    rigid_align,
    rotation_error_deg,
    summarize,
)
from bench.synthetic import (  # noqa: E402
    FACING,
    euler_to_matrix,
    intrinsics,
    project_points,
    rotation_to_axis_angle,
    sample_expression,
)


def _rotation(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_identical_meshes_have_zero_error():
    pts = np.random.default_rng(0).normal(size=(500, 3)) * 5
    for scale in (False, True):
        err = mesh_error_mm(pts, pts.copy(), scale=scale)
        assert err["median_mm"] < 1e-9 and err["mean_mm"] < 1e-9


def test_rigidly_moved_mesh_aligns_to_zero():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(400, 3)) * 5
    pred = gt @ _rotation(rng).T + np.array([3.0, -2.0, 10.0])
    assert mesh_error_mm(pred, gt)["mean_mm"] < 1e-6
    # Without alignment the same meshes are centimetres apart.
    assert np.linalg.norm(pred - gt, axis=1).mean() > 1.0


def test_scaled_mesh_has_known_rigid_error_and_zero_similarity_error():
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)  # cm
    rng = np.random.default_rng(2)
    rot, shift = _rotation(rng), np.array([1.0, 2.0, 3.0])
    pred = (1.1 * corners) @ rot.T + shift  # 10 % larger, moved
    err = mesh_error_mm(pred, corners)  # rigid: each corner stays 0.1 * sqrt(3) cm off
    assert err["median_mm"] == pytest.approx(np.sqrt(3), abs=1e-6)
    assert err["mean_mm"] == pytest.approx(np.sqrt(3), abs=1e-6)
    assert mesh_error_mm(pred, corners, scale=True)["mean_mm"] < 1e-6
    s, r, t = rigid_align(pred, corners, scale=True)
    assert s == pytest.approx(1 / 1.1)


def test_region_mask_and_known_local_error():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(300, 3))
    pred = gt.copy()
    mask = np.zeros(300, bool)
    mask[:100] = True
    pred[100:] += rng.normal(size=(200, 3))  # damage outside the region only
    assert mesh_error_mm(pred, gt, mask)["mean_mm"] < 1e-9
    assert aligned_errors(pred, gt).mean() > 0.1


def test_expression_rotation_and_focal_errors():
    gt = np.zeros(53)
    gt[[3, 10]] = [0.5, 1.0]
    pred = gt.copy()
    pred[10] = 0.6
    pred[20] = 0.2
    e = expression_errors(pred, gt)
    assert e["mae"] == pytest.approx(0.6 / 53)
    assert e["mae_active"] == pytest.approx(0.2)
    assert e["n_active"] == 2
    assert expression_errors(np.zeros(53), np.zeros(53))["mae_active"] is None
    gt_rot = euler_to_matrix(10, -5, 3)
    turned = euler_to_matrix(0, 0, 10) @ gt_rot
    assert rotation_error_deg(rotation_to_axis_angle(gt_rot), gt_rot) == pytest.approx(0, abs=1e-6)
    assert rotation_error_deg(rotation_to_axis_angle(turned), gt_rot) == pytest.approx(10, abs=1e-6)
    assert focal_error_pct(1100, 1000) == pytest.approx(10)


class _TinyAsset:
    """Enough of HeadModelAsset for the Evaluator: a random linear model on 60 vertices."""

    def __init__(self):
        rng = np.random.default_rng(4)
        self.neutral = rng.normal(size=(60, 3)).astype(np.float32) * 5
        self.identity_basis = rng.normal(size=(100, 60, 3)).astype(np.float32) * 0.1
        self.expression_basis = rng.normal(size=(53, 60, 3)).astype(np.float32) * 0.2
        self.parts = {"face": (0, 39), "narrow_face": (0, 19)}
        self.n_identity, self.n_expressions, self.n_vertices = 100, 53, 60

    def part_mask(self, *names):
        mask = np.zeros(60, bool)
        for n in names:
            mask[self.parts[n][0] : self.parts[n][1] + 1] = True
        return mask

    def vertices(self, identity=None, expression=None):
        v = self.neutral.astype(np.float64).copy()
        if identity is not None:
            v += np.tensordot(identity, self.identity_basis, 1)
        if expression is not None:
            v += np.tensordot(expression, self.expression_basis, 1)
        return v


def _sample(rng) -> Sample:
    rot = FACING @ euler_to_matrix(20, 5, -3)
    record = {"images": {"512": "x.png"}, "intrinsics": {"512": intrinsics(50, 512, 512)}}
    expression = np.zeros(53)
    expression[[1, 7]] = [0.4, 0.9]
    return Sample("0000", record, rng.normal(size=100), expression, rot, np.array([1.0, 2.0, 60.0]))


def test_evaluator_oracle_is_zero_and_mean_face_is_the_baseline():
    asset, rng = _TinyAsset(), np.random.default_rng(5)
    sample = _sample(rng)
    ev = Evaluator(asset)
    oracle = Prediction(identity=sample.identity, expression=sample.expression,
                        rotation=rotation_to_axis_angle(sample.rotation), translation=sample.translation,
                        focal=sample.focal("512"))
    row = ev.score(sample, "512", oracle)
    for key in ("face_median_mm", "face_mean_mm", "narrow_face_mean_mm", "face_sim_mean_mm", "posed_face_mean_mm",
                "expr_mae", "expr_mae_active", "focal_err_pct", "rot_err_deg", "trans_err_cm"):
        assert row[key] == pytest.approx(0, abs=1e-4), key
    mean_row = ev.score(sample, "512", Prediction(identity=np.zeros(100), expression=np.zeros(53)))
    base = ev.baseline(sample)
    assert mean_row["face_median_mm"] == pytest.approx(base["face_median_mm"])
    assert base["face_median_mm"] > 1.0
    # A prediction with its own vertices is scored on them.
    shifted = Prediction(identity=np.zeros(100), vertices_cm=asset.vertices(sample.identity) + 1.0)
    row = ev.score(sample, "512", shifted)
    assert row["mesh_source"] == "vertices_cm" and row["face_mean_mm"] < 1e-4
    assert row["identity_only_face_mean_mm"] == pytest.approx(base["face_mean_mm"])


def test_summarize_counts_failures():
    rows = [{"ok": True, "size": "512", "face_median_mm": 1.0}, {"ok": True, "size": "512", "face_median_mm": 3.0},
            {"ok": False, "size": "512", "failure": "no_face"}]
    s = summarize(rows)
    assert (s["images"], s["ok"], s["failed"], s["failures"]) == (3, 2, 1, {"no_face": 1})
    assert s["face_median_mm"]["median"] == 2.0 and s["face_median_mm"]["mean"] == 2.0


def test_camera_convention_without_blender():
    rot = FACING @ euler_to_matrix(0, 0, 0)
    intr = intrinsics(50, 512, 512)
    t = np.array([0.0, 0.0, 60.0])
    pts = project_points(np.array([[-3.0, 0, 0], [3.0, 0, 0], [0, 3.0, 0], [0, 0, 0]]), rot, t, intr)
    assert pts[3] == pytest.approx([256, 256])
    assert pts[1, 0] > pts[0, 0]  # the subject's left (+X) appears on the image's right
    assert pts[2, 1] < pts[3, 1]  # up (+Y) is up in the image (smaller row)
    assert intr["fx"] == pytest.approx(50 / 36 * 512)
    names = [f"k{i}" for i in range(50)] + ["eyeBlink_L", "eyeBlink_R", "jawOpen"]
    w = sample_expression(names, np.random.default_rng(0), neutral_probability=0.0)
    assert 1 <= (w > 0).sum() <= 4 and w.max() <= 1.0 and w.min() >= 0.0


@pytest.mark.blender
def test_tiny_cycles_render_matches_projection(tmp_path):
    pytest.importorskip("bpy")
    from PIL import Image

    from backend.headmodel import ict_source

    if ict_source.find_local_source() is None and not (ict_source.cache_dir() / ict_source.ASSET_FILE).is_file():
        pytest.skip("ICT-FaceKit is not available locally")
    from bench.synthetic import BlenderRenderer, nose_tip_vertex, sample_spec

    asset = ict_source.load_ict(progress=False)
    texture = tmp_path / "skin.png"
    Image.new("RGB", (64, 32), (200, 150, 120)).save(texture)
    spec = sample_spec(asset, seed=3, index=0, textures=[str(texture)])
    verts = asset.vertices(spec.identity, spec.expression)
    renderer = BlenderRenderer(asset, samples=2, denoise=False)
    renderer.set_sample(spec, verts)
    size = 128
    rgba = renderer.render(size, size, tmp_path / "tiny.png")
    assert rgba.shape == (size, size, 4)
    alpha = rgba[..., 3] > 127
    intr = intrinsics(spec.lens_mm, size, size)
    nose = project_points(verts[[nose_tip_vertex(asset)]], spec.rotation, spec.translation, intr)[0]
    col, row = np.floor(nose).astype(int)
    assert alpha[row, col], f"projected nose tip {nose} is on background"
    # The rendered silhouette and the projected head (all skin vertices) share one bounding box.
    skin = asset.part_mask("face", "head_neck")
    uv = project_points(verts[skin], spec.rotation, spec.translation, intr)
    rows, cols = np.nonzero(alpha)
    box_render = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], float)
    box_proj = np.array([*np.clip(uv.min(0), 0, size), *np.clip(uv.max(0), 0, size)])
    assert np.abs(box_render - box_proj).max() < 3.0, (box_render, box_proj)


@pytest.mark.blender
def test_blender_pixel_convention(tmp_path):
    """A quad spanning u in [10, 30], v in [20, 40] (continuous pixels, image = [0, W] x [0, H],
    v down) covers exactly columns 10-29 and rows 20-39 of a camera set up like the renderer's."""
    bpy = pytest.importorskip("bpy")
    from PIL import Image

    from bench.synthetic import SENSOR_WIDTH_MM

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.use_denoising, scene.cycles.filter_width = 4, False, 0.01
    scene.render.film_transparent = True
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 48, 100
    cam = bpy.data.cameras.new("cam")
    cam.sensor_fit, cam.sensor_width, cam.lens = "HORIZONTAL", SENSOR_WIDTH_MM, 50.0
    scene.camera = bpy.data.objects.new("cam", cam)
    scene.collection.objects.link(scene.camera)
    intr = intrinsics(50.0, 64, 48)
    corners_px = [(10, 20), (30, 20), (30, 40), (10, 40)]
    cv = [((u - intr["cx"]) / intr["fx"], (v - intr["cy"]) / intr["fy"], 1.0) for u, v in corners_px]
    mesh = bpy.data.meshes.new("quad")
    mesh.from_pydata([(x, -y, -z) for x, y, z in cv], [], [(0, 1, 2, 3)])  # OpenCV -> Blender camera axes
    scene.collection.objects.link(bpy.data.objects.new("quad", mesh))
    scene.render.filepath = str(tmp_path / "quad.png")
    scene.render.image_settings.color_mode = "RGBA"
    bpy.ops.render.render(write_still=True)
    alpha = np.asarray(Image.open(scene.render.filepath))[..., 3] > 127
    cols, rows = np.nonzero(alpha.any(0))[0], np.nonzero(alpha.any(1))[0]
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (10, 29, 20, 39)
