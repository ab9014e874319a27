"""The dense photometric stage (issue 10): its pieces, and a rendered case where it must beat the
landmark fit's identity.

The end-to-end case renders one off-model head (smooth bumps outside ICT's span) from four sides
with Blender's Cycles, runs the real MediaPipe landmarks and person mask, the landmark fit, then
the photometric refinement, and scores both identities with the NoW protocol against the
displaced ground truth.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from backend.fitting.shading import linear_to_srgb, sh_basis, sh_basis_np, srgb_to_linear


def test_constant_sh_lighting_is_uniform_irradiance():
    normals = torch.nn.functional.normalize(torch.randn(200, 3), dim=1)
    light = torch.zeros(9, 3)
    light[0] = 1.0 / 0.886227
    assert torch.allclose(sh_basis(normals) @ light, torch.ones(200, 3), atol=1e-5)


def test_first_order_sh_is_lambertian_clamped_cosine_on_average():
    # A distant light along +z: the first-order (linear) part of its irradiance is proportional to n.z.
    n = np.array([[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0]])
    basis = sh_basis_np(n)
    assert basis[0, 2] > 0 > basis[1, 2] and abs(basis[2, 2]) < 1e-9


def test_srgb_round_trip():
    x = np.linspace(0, 1, 101)
    assert np.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6)


def test_exif_focal_35mm_equivalent(tmp_path):
    from backend.image_input import focal_from_35mm, load_photo

    img = Image.new("RGB", (400, 300), (120, 100, 90))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50  # FocalLengthIn35mmFilm
    path = tmp_path / "lens.jpg"
    img.save(path, exif=exif)
    photo = load_photo(path)
    assert photo.focal_px == pytest.approx(50 * 500 / 43.2666, rel=1e-4)
    assert photo.focal_px == pytest.approx(focal_from_35mm(50, 400, 300))
    plain = tmp_path / "plain.jpg"
    img.save(plain)
    assert load_photo(plain).focal_px is None


def test_container_focal_keys():
    from backend.video.decode import container_focal_35mm

    assert container_focal_35mm({"com.apple.quicktime.camera.focal_length.35mm_equivalent": "26"}) == 26.0
    assert container_focal_35mm({"title": "x", "focal_length_35mm": "1e6"}) is None
    assert container_focal_35mm({}) is None


def test_off_model_bumps_are_outside_the_span_and_of_the_asked_size(asset):
    from bench.offmodel import draw_bumps, model_projection, off_model_displacement

    rng = np.random.default_rng(4)
    identity = rng.standard_normal(asset.n_identity)
    bumps = draw_bumps(asset, rng, rms_mm=2.0)
    disp = off_model_displacement(asset, bumps, identity)
    face = slice(0, asset.parts["face"][1] + 1)
    rms_mm = 10 * np.sqrt((disp[face] ** 2).sum(1).mean())
    assert 1.5 < rms_mm < 2.6
    eyes = slice(asset.parts["eyeball_left"][0], asset.parts["eyeball_right"][1] + 1)
    assert np.abs(disp[eyes]).max() == 0.0
    gt = asset.vertices(identity).astype(float)
    # In-model heads project onto themselves; the bumps leave a residual the model cannot fit.
    _, proj = model_projection(asset, gt)
    assert np.abs(proj[face] - gt[face]).max() < 1e-3
    _, proj_off = model_projection(asset, gt + disp)
    residual_mm = 10 * np.linalg.norm(proj_off[face] - (gt + disp)[face], axis=1)
    assert np.median(residual_mm) > 0.2


def test_now_metric_zero_on_itself_and_positive_on_the_mean_face(asset):
    from bench.now_metric import NowScorer
    from bench.synthetic_sampling import nose_tip_vertex

    scorer = NowScorer(asset, nose_tip_vertex(asset))
    identity = np.random.default_rng(1).standard_normal(asset.n_identity)
    gt = asset.vertices(identity).astype(float)
    # Any rigid move and scale of the prediction is undone by the protocol's alignment.
    rot = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    moved = 1.1 * gt @ rot.T + 3.0
    assert scorer.error(moved, gt).median_mm < 0.1
    assert scorer.error(asset.vertices(np.zeros(asset.n_identity)).astype(float), gt).median_mm > 0.5


def test_albedo_bake_removes_fitted_shading(reconstructor):
    """A grey head lit from one side: the shaded bake varies with the light, the albedo bake does not."""
    from backend.bundle.texture_bake import PhotoView, bake_texture
    from backend.bundle.gltf_writer import vertex_normals

    rec, asset = reconstructor, reconstructor.asset
    rot = np.diag([1.0, -1.0, -1.0])
    verts = asset.vertices(np.zeros(asset.n_identity)).astype(float) @ rot.T + np.array([0.0, 0.0, 60.0])
    normals = vertex_normals(verts, asset.triangles)
    light = np.zeros((9, 3))
    light[0] = 0.7 / 0.886227
    light[3] = 0.5 / 1.023328  # brighter towards camera +x
    h = w = 512
    focal = 1200.0
    # Render the shading per pixel from the mesh's own vertices (a splat of vertex colours).
    linear_albedo = 0.35
    shade = np.clip(sh_basis_np(normals) @ light, 0, None)
    colour = linear_to_srgb(linear_albedo * shade) * 255
    image = np.zeros((h, w, 3), np.float32)
    weight = np.zeros((h, w), np.float32)
    uv = verts[:, :2] / verts[:, 2:] * focal + [w / 2, h / 2]
    front = (normals * -verts / np.linalg.norm(verts, axis=1, keepdims=True)).sum(1) > 0.2
    face = np.zeros(len(verts), bool)
    face[: asset.parts["face"][1] + 1] = True
    sel = front & face & (uv[:, 0] > 0) & (uv[:, 0] < w) & (uv[:, 1] > 0) & (uv[:, 1] < h)
    for (x, y), c in zip(uv[sel].astype(int), colour[sel]):
        image[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3] += c
        weight[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3] += 1
    image = (image / np.maximum(weight, 1)[..., None]).astype(np.uint8)
    mask = (weight > 0).astype(np.float32)
    view = PhotoView(image, mask, verts, normals, focal, (w / 2, h / 2), light)
    baked = bake_texture(rec.texels, [view])
    seen = rec.texels.pixel[rec.skin_masks[1]]
    shaded = baked.shaded.reshape(-1, 3)[seen, 1].astype(float)
    albedo = baked.albedo.reshape(-1, 3)[seen, 1].astype(float)
    keep = shaded > 10

    def spread(x: np.ndarray) -> float:  # robust: splat gaps at the silhouette leave a few dark texels
        return float(np.median(np.abs(x - np.median(x))))

    assert spread(albedo[keep]) < 0.5 * spread(shaded[keep])
    expected = linear_to_srgb(np.array([linear_albedo]))[0] * 255
    assert abs(np.median(albedo[keep]) - expected) < 12


@pytest.fixture(scope="module")
def rendered_head(asset, tmp_path_factory):
    """One off-model head (seed 600, head 0 of the tuning range) from four sides at 384² by Cycles."""
    from bench.likeness_data import head_views
    from bench.offmodel import BUMP_TAG, draw_bumps, off_model_displacement
    from bench.synthetic_scene import BlenderRenderer, composite
    from bench.synthetic_textures import ensure_procedural_textures

    out = tmp_path_factory.mktemp("likeness")
    textures = ensure_procedural_textures(asset, out / "textures", 1, 600)
    specs = head_views(asset, 600, 0, textures)
    bumps = draw_bumps(asset, np.random.default_rng([600, 0, BUMP_TAG]), 2.0)
    disp = off_model_displacement(asset, bumps, specs[0].identity)
    renderer = BlenderRenderer(asset, samples=8)
    images = []
    for spec in specs:
        renderer.set_sample(spec, asset.vertices(spec.identity, spec.expression).astype(float) + disp)
        images.append(composite(renderer.render(384, 384, out / "view.png"), spec.look))
    return images, asset.vertices(specs[0].identity).astype(float) + disp


@pytest.mark.slow
@pytest.mark.blender
def test_photometric_identity_beats_landmark_identity(reconstructor, rendered_head):
    from bench.likeness import fit_photos
    from bench.now_metric import NowScorer
    from bench.synthetic_sampling import nose_tip_vertex

    images, truth = rendered_head
    rec = reconstructor
    fits = fit_photos(rec, images, "rendered head")
    scorer = NowScorer(rec.asset, nose_tip_vertex(rec.asset))
    scan = scorer.scan(truth)
    landmark = scorer.error(rec.asset.vertices(fits["landmarks"][0]).astype(float), truth, scan).median_mm
    photometric = scorer.error(rec.asset.vertices(fits["photometric"][0]).astype(float), truth, scan).median_mm
    mean_face = scorer.error(rec.asset.vertices(np.zeros(rec.asset.n_identity)).astype(float), truth, scan).median_mm
    assert photometric < 0.9 * landmark, (photometric, landmark)
    assert photometric < 0.9 * mean_face, (photometric, mean_face)
    # The refined fit still sits on the landmarks: the anchor held.
    assert fits["photometric"][2].landmark_rmse_iod < 0.08


def test_now_distances_match_trimesh_proximity(asset):
    """The metric's fast point-to-triangle search gives trimesh's exact closest-point distances."""
    import trimesh

    from backend.fitting.surface import closest_points_on_mesh
    from bench.now_metric import NowScorer
    from bench.synthetic_sampling import nose_tip_vertex

    scorer = NowScorer(asset, nose_tip_vertex(asset))
    mean = asset.vertices(np.zeros(asset.n_identity)).astype(float)
    other = asset.vertices(np.random.default_rng(2).standard_normal(asset.n_identity)).astype(float)
    scan = scorer.scan(other)[:500]
    _, _, ours = closest_points_on_mesh(scan, mean, scorer.skin_triangles)
    _, theirs, _ = trimesh.proximity.closest_point(trimesh.Trimesh(mean, scorer.skin_triangles, process=False), scan)
    assert np.allclose(ours, theirs, atol=1e-6)
