"""A reconstructed head, imported with the add-on's ``import_bundle``, renders as a textured face.

End to end: ``headrig reconstruct d8.jpg`` -> bundle -> the built add-on's ``importer.import_bundle``
in headless Blender -> ``jawOpen`` = 1 -> one 512x512 Workbench frame (texture colours, Blender's
``paint.sl`` studio light)
from a camera in front of the face. With ``HEADRIG_WRITE_DOCS=1`` the frame is saved as the README
picture ``docs/images/head_render.png``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest


pytestmark = [pytest.mark.blender, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DOCS_IMAGE = REPO / "docs" / "images" / "head_render.png"
SIZE = 512
BACKGROUND = (0.93, 0.93, 0.95)  # light grey, linear; for the saved picture only


def _frame_camera(bpy, head, scene):
    """A camera straight in front of the face (glTF +Z = Blender -Y), framing the head's bounding box."""
    from mathutils import Vector

    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = head.evaluated_get(depsgraph)
    corners = [evaluated.matrix_world @ Vector(c) for c in evaluated.bound_box]
    lo = Vector([min(c[i] for c in corners) for i in range(3)])
    hi = Vector([max(c[i] for c in corners) for i in range(3)])
    centre, extent = (lo + hi) / 2, hi - lo
    cam_data = bpy.data.cameras.new("HeadRig camera")
    cam_data.lens = 85.0
    cam_data.sensor_fit = "VERTICAL"
    cam = bpy.data.objects.new("HeadRig camera", cam_data)
    scene.collection.objects.link(cam)
    # 85 mm on a 24 mm sensor: the head's height (plus 15 % margin) fills the frame
    distance = 1.15 * max(extent.z, extent.x) * cam_data.lens / cam_data.sensor_height + extent.y / 2
    cam.location = (centre.x, centre.y - distance, centre.z)
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)  # looks along +Y, Z up
    cam_data.clip_end = distance * 4
    scene.camera = cam
    return cam


def _render(bpy, scene, path: Path, light: str = "STUDIO") -> np.ndarray:
    """Render one Workbench frame to ``path`` (RGBA PNG, transparent background); [H, W, 4] floats."""
    from PIL import Image

    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light = light
    if light == "STUDIO" and "paint.sl" in bpy.context.preferences.studio_lights:
        shading.studio_light = "paint.sl"  # soft and bright; the default studio light leaves skin too dark
    shading.color_type = "TEXTURE"
    shading.show_specular_highlight = True
    shading.show_cavity = True
    shading.cavity_type = "SCREEN"
    shading.show_object_outline = False
    scene.display.render_aa = "16"
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def rendered(addon, bundle_dir, tmp_path_factory):
    bpy = pytest.importorskip("bpy")
    importer = importlib.import_module("headrig.importer")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        scene = bpy.context.scene
        head = importer.import_bundle(bpy.context, bundle_dir, replace=True)
        keys = head.data.shape_keys.key_blocks
        keys["jawOpen"].value = 1.0
        _frame_camera(bpy, head, scene)
        path = tmp_path_factory.mktemp("frame") / "head_render.png"
        pixels = _render(bpy, scene, path)
        return {"pixels": pixels, "path": path, "head": head.name,
                "images": [img.name for img in bpy.data.images if img.size[0] >= 1024]}
    finally:
        bpy.ops.wm.read_factory_settings(use_empty=True)


def test_head_fills_a_sensible_part_of_the_frame(rendered):
    alpha = rendered["pixels"][..., 3]
    covered = float((alpha > 0.5).mean())
    assert 0.10 <= covered <= 0.60, covered
    c = SIZE // 2
    assert alpha[c - 2:c + 3, c - 2:c + 3].min() > 0.99  # the centre of the frame is the face
    rows, cols = np.nonzero(alpha > 0.5)
    assert abs(cols.mean() - c) < 0.1 * SIZE  # roughly centred left-right
    assert rows.min() > 0 and rows.max() < SIZE - 1 or rows.max() - rows.min() > 0.7 * SIZE  # framed, not cropped tiny


def test_render_shows_the_photo_texture(rendered):
    """Skin colours from the photo, not Workbench's flat grey material colour."""
    rgb, alpha = rendered["pixels"][..., :3], rendered["pixels"][..., 3]
    face = rgb[alpha > 0.99]
    assert rendered["images"], "no texture image was imported"
    mean = face.mean(axis=0)
    assert mean[0] > mean[2] + 0.05, mean  # skin is redder than it is blue; grey would be equal
    assert face.std(axis=0).max() > 0.05  # texture detail and shading, not one flat colour


def test_write_docs_picture(rendered):
    if os.environ.get("HEADRIG_WRITE_DOCS") != "1":
        pytest.skip("set HEADRIG_WRITE_DOCS=1 to write docs/images/head_render.png")
    from PIL import Image

    rgba = rendered["pixels"]
    background = np.asarray(BACKGROUND, np.float32) ** (1 / 2.2)
    rgb = rgba[..., :3] * rgba[..., 3:] + background * (1 - rgba[..., 3:])
    DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgb * 255 + 0.5).clip(0, 255).astype(np.uint8)).save(DOCS_IMAGE, optimize=True)
    assert DOCS_IMAGE.stat().st_size > 10_000
