"""The evaluation's baseline renderer (textured mesh, CPU z-buffer), turntable cameras and video/sheet output."""

from __future__ import annotations

import numpy as np
import pytest

from backend.avatar.cameras import (
    camera_centres,
    focal_from_fov,
    gl_pose_to_opencv,
    look_at,
    opencv_to_gl_pose,
    orbit_cameras,
    transform_points,
)
from backend.avatar.mesh_render import (
    TexturedMesh,
    ict_textured_mesh,
    rasterize_mesh,
    render_mesh,
    render_textured_mesh,
)
from backend.avatar.video_out import contact_sheet, error_image, write_mp4

H, W = 48, 64
K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
QUAD_TRIS = np.array([[0, 2, 1], [0, 3, 2]])  # counter-clockwise seen from the camera (normal toward -z)


def quadrant_texture() -> np.ndarray:
    """[8, 8, 3] uint8: top-left red, top-right green, bottom-left blue, bottom-right white."""
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4, :4] = (255, 0, 0)
    tex[:4, 4:] = (0, 255, 0)
    tex[4:, :4] = (0, 0, 255)
    tex[4:, 4:] = 255
    return tex


def quad_mesh(verts: np.ndarray) -> tuple[np.ndarray, TexturedMesh]:
    """verts [4, 3]: top-left, top-right, bottom-right, bottom-left (image orientation); uv v up."""
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float64)
    return verts, TexturedMesh.single(QUAD_TRIS, uv[QUAD_TRIS], quadrant_texture())


def project(p: np.ndarray) -> np.ndarray:
    q = p @ K.T
    return q[..., :2] / q[..., 2:]


def test_textured_quad_pixels():
    verts, mesh = quad_mesh(np.array([[-0.5, -0.4, 2], [0.5, -0.4, 2], [0.5, 0.4, 2], [-0.5, 0.4, 2]]))
    out = render_mesh(verts, K, mesh, H, W)
    # The quad spans x in [17, 47), y in [12, 36) in pixels (60 * 0.5 / 2 = 15 around the centre).
    assert out.mask.sum() == 30 * 24
    assert out.mask[12:36, 17:47].all()
    expected = {(18, 14): (1, 0, 0), (45, 14): (0, 1, 0), (18, 34): (0, 0, 1), (45, 34): (1, 1, 1)}
    for (x, y), rgb in expected.items():
        np.testing.assert_allclose(out.image[y, x], rgb, atol=1e-6)
    assert (out.image[~out.mask] == 0).all()
    np.testing.assert_allclose(out.raster.depth[out.mask], 2.0)
    image, mask = render_textured_mesh(verts, K, mesh.triangles, mesh.uvs, mesh.textures[0], H, W)
    np.testing.assert_array_equal(image, out.image)
    np.testing.assert_array_equal(mask, out.mask)


def test_perspective_correct_uvs():
    # Tilted in depth: the texture's middle (u = 0.5) must land where the quad's 3D midpoint
    # projects, not at the screen-space midpoint (which affine interpolation would give).
    verts, mesh = quad_mesh(np.array([[-0.5, -0.4, 1.0], [0.5, -0.4, 4.0], [0.5, 0.4, 4.0], [-0.5, 0.4, 1.0]]))
    out = render_mesh(verts, K, mesh, H, W)
    row = out.image[28]  # a row in the lower half (3D y > 0): blue left, white right
    covered = np.nonzero(out.mask[28])[0]
    white = covered[row[covered, 0] > 0.5]
    edge_px = white.min()  # first white pixel centre at edge_px + 0.5
    mid_x = project(np.array([0.0, 0.0, 2.5]))[0]
    affine_mid = (project(verts[0])[0] + project(verts[1])[0]) / 2
    assert abs(mid_x - affine_mid) > 10  # the test can tell the two apart
    assert edge_px - 0.5 <= mid_x <= edge_px + 0.5


def test_occlusion_order_and_culling():
    near = np.array([[-0.5, -0.5, 2.0], [0.5, -0.5, 2.0], [0.0, 0.5, 2.0]])
    far = near * [4, 4, 1] + [0, 0, 2.0]  # behind, and twice as big on screen
    verts = np.concatenate([near, far])
    for order in ([[0, 2, 1], [3, 5, 4]], [[3, 5, 4], [0, 2, 1]]):
        tris = np.array(order)
        red_first = order[0][0] == 0  # the near triangle is red
        colour = np.array([[1, 0, 0], [0, 1, 0]] if red_first else [[0, 1, 0], [1, 0, 0]], np.float32)
        mesh = TexturedMesh(tris, np.zeros((2, 3, 2)), [], np.array([-1, -1]), colour)
        out = render_mesh(verts, K, mesh, H, W)
        np.testing.assert_allclose(out.image[24, 32], [1, 0, 0])  # the near one, in either order
        np.testing.assert_allclose(out.raster.depth[24, 32], 2.0)
        assert (out.image[out.mask] == [0, 1, 0]).all(1).any()  # the far one shows around it
    # Wound the other way the triangle faces away: culled unless culling is off.
    assert not rasterize_mesh(near, K, np.array([[0, 1, 2]]), H, W).mask.any()
    assert rasterize_mesh(near, K, np.array([[0, 1, 2]]), H, W, cull_backfaces=False).mask.any()


def test_ict_head_nose_tip_where_projection_says(asset):
    width, height = 2048, 1024
    yy, xx = np.mgrid[0:height, 0:width]
    # Checker in red (for looking at it); green and blue encode the atlas uv so the test can read it back.
    checker = ((xx // 64 + yy // 64) % 2) * 200 + 30
    atlas = np.stack([checker, xx * 255 // (width - 1), 255 - yy * 255 // (height - 1)], -1)
    mesh = ict_textured_mesh(asset, atlas.astype(np.uint8))
    verts = asset.vertices() * 0.01  # glTF metres
    viewmats, Kh = orbit_cameras(8, radius_m=0.6, elevation_deg=0.0, fov_deg=30, size=256)
    cam = transform_points(viewmats[0], verts)
    out = render_mesh(cam, Kh, mesh, 256, 256)
    nose = int(asset.landmarks68[30])
    x, y = project_with(Kh, cam[nose])
    px, py = int(x), int(y)
    assert out.mask[py, px]
    # The surface seen there is the nose tip (within a pixel's footprint at 0.6 m: ~1.6 mm).
    tri = mesh.triangles[out.raster.tri[py, px]]
    seen = (cam[tri] * out.raster.bary[py, px][:, None]).sum(0)
    assert np.linalg.norm(seen - cam[nose]) < 0.004
    # The colour is the atlas at the nose tip's uv (tile 0, left half of the atlas).
    k = np.nonzero((asset.triangles == nose).any(1))[0][0]
    u, v = asset.uvs[asset.triangle_uvs[k][list(asset.triangles[k]).index(nose)]]
    g, b = out.image[py, px, 1], out.image[py, px, 2]
    assert abs(g - u / 2) < 0.01 and abs(b - v) < 0.01
    # Upright and facing the camera: the forehead above the chin, the subject's left (+X) on the right.
    brow, chin = (project_with(Kh, cam[int(asset.landmarks68[i])]) for i in (27, 8))
    assert brow[1] < y < chin[1]
    assert project_with(Kh, cam[int(asset.landmarks68[45])])[0] > x  # landmark 45 is the subject's left eye corner
    assert 0.2 < out.mask.mean() < 0.8


def project_with(Km: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = Km @ p
    return q[:2] / q[2]


def test_orbit_cameras():
    viewmats, Ko = orbit_cameras(12, radius_m=0.8, elevation_deg=15, target=(0, 0.05, 0), fov_deg=40, size=(320, 240))
    centres = camera_centres(viewmats)
    rot = viewmats[:, :3, :3]
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
    # Frame 0 from the front (+Z, a little above), looking at the target with +Y up in the image.
    c0 = centres[0]
    assert c0[2] > 0.7 and abs(c0[0]) < 1e-12 and c0[1] > 0.05
    target_cam = transform_points(viewmats[0], np.array([0, 0.05, 0]))
    np.testing.assert_allclose(target_cam[:2], 0, atol=1e-12)
    assert target_cam[2] == pytest.approx(0.8)
    above = transform_points(viewmats[0], np.array([0, 0.2, 0]))
    assert above[1] < 0  # OpenCV y points down
    left = transform_points(viewmats[0], np.array([0.1, 0.05, 0]))
    assert left[0] > 0  # +X (the subject's left) appears on the image's right
    # Closed: the step from the last frame back to frame 0 is the same as every other step.
    step = np.radians(360 / 12)
    assert np.allclose(np.linalg.norm(centres - [0, 0.05, 0], axis=1), 0.8)
    ring = np.arctan2(centres[:, 0], centres[:, 2])
    np.testing.assert_allclose(np.diff(np.unwrap(np.append(ring, ring[0] + 2 * np.pi))), step, atol=1e-12)
    assert Ko[0, 0] == pytest.approx(focal_from_fov(40, 320)) and tuple(Ko[:2, 2]) == (160, 120)


def test_opengl_conversion_round_trip():
    view = look_at([0.3, 0.2, 0.9], [0, 0, 0])
    gl = opencv_to_gl_pose(view)
    np.testing.assert_allclose(gl[:3, 3], [0.3, 0.2, 0.9], atol=1e-12)  # the camera centre
    forward_gl = -gl[:3, 2]  # OpenGL cameras look down their -Z
    np.testing.assert_allclose(forward_gl, view[2, :3], atol=1e-12)
    assert gl[:3, 1] @ [0, 1, 0] > 0  # the GL camera's +Y is world-up-ish
    np.testing.assert_allclose(gl_pose_to_opencv(gl), view, atol=1e-12)


def test_write_mp4_odd_size_and_contact_sheet(tmp_path):
    import av

    frames = [np.full((31, 45, 3), 40 * i, np.uint8) for i in range(5)]
    path = tmp_path / "clip.mp4"
    assert write_mp4(path, iter(frames), fps=24) == 5
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 46, 32)
    assert len(decoded) == 5 and abs(int(decoded[3][10, 10, 0]) - 120) <= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temporaries left
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "empty.mp4", [], fps=24)
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "mixed.mp4", [frames[0], frames[0][:30]], fps=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]

    a = np.zeros((20, 30, 3), np.uint8)
    b = np.ones((10, 30), np.float32)
    sheet = contact_sheet([[a, b, error_image(a, np.full_like(a, 255))], [b, None]], ["input", "render", "error"])
    assert sheet.dtype == np.uint8 and sheet.shape == (18 + 20 + 4 + 10, 3 * 30 + 2 * 4, 3)
    assert (sheet[18 + 24 + 2, 5] == 255).all()  # b (white) placed in row 1, column 0
    assert sheet[:18].max() > 200  # labels drawn
