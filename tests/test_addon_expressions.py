"""The expression bake in real bpy: a bundle with ``gaussians_expr.bin`` imports with a driven
modifier, and with the head's shape keys set (a smile, a blink, a little jawOpen) the evaluated
Gaussians sit where, and have the colour that, the backend's linearised model gives for the same
weights; without the file (an old bundle) they follow the mesh as before.

The avatar is the smallest real one: the bundle's identity (``headrig reconstruct d8.jpg``), a few
hundred Gaussians placed by ``initial_avatar``, its MLP's last layer drawn at random (training
would take minutes; conftest ``expressive_avatar``), written by the pipeline's own functions.
Positions are also compared as the bake's displacement (with bake minus without, same weights),
where the mesh's own float noise cancels. The difference to the full MLP is printed (``-s``).
"""

from __future__ import annotations

import importlib
from dataclasses import replace

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.blender

C = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # glTF -> Blender axes
WEIGHTS = {"mouthSmile_L": 0.8, "mouthSmile_R": 0.7, "eyeBlink_L": 1.0, "eyeBlink_R": 0.9, "jawOpen": 0.3}
N = 500


def _module(name: str):
    return importlib.import_module(f"headrig.{name}")


@pytest.fixture(scope="module")
def case(asset, bundle_dir, expressive_avatar, tmp_path_factory):
    """Two bundles of the same avatar, with and without the bake, and the backend's side."""
    from backend.avatar.expression_bake import neutral_binding
    from backend.avatar.pipeline import avatar_ply_bytes, expression_bake_bytes
    from shared.bundle import read_bundle, write_bundle
    from shared.gaussian_expressions import EXPRESSIONS_FILE, parse_expressions

    manifest = read_bundle(bundle_dir)
    avatar = expressive_avatar(manifest.identity, n=N)
    verts = torch.as_tensor(asset.vertices(np.asarray(manifest.identity)) / 100.0, dtype=torch.float32)
    ply = avatar_ply_bytes(avatar, verts)
    bake = expression_bake_bytes(avatar, ply)
    files = {name: bundle_dir / name for name in manifest.files}
    root = tmp_path_factory.mktemp("expr")
    written = {}
    for label, extra in (("bake", {"gaussians.ply": ply, EXPRESSIONS_FILE: bake}), ("plain", {"gaussians.ply": ply})):
        # no job id: two heads of one job would replace each other on import
        written[label] = write_bundle(root / label, replace(manifest, files={}, job_id=None), {**files, **extra})
    return {"avatar": avatar, "binding": neutral_binding(avatar), "identity": np.asarray(manifest.identity),
            "expr": parse_expressions(bake), "root": root, "manifest": written["bake"]}


@pytest.fixture(scope="module")
def scene(addon, case):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    importer = _module("importer")
    heads = {label: importer.import_bundle(bpy.context, case["root"] / label) for label in ("bake", "plain")}
    found = {label: [o for o in head.users_collection[0].objects if o.name.endswith("_gaussians")]
             for label, head in heads.items()}
    assert all(len(f) == 1 for f in found.values()), found
    return {"heads": heads, "gaussians": {label: f[0] for label, f in found.items()}}


def _set_weights(heads, weights: dict) -> None:
    for head in heads.values():
        for kb in head.data.shape_keys.key_blocks[1:]:
            kb.value = weights.get(kb.name, 0.0)


def _evaluated(obj) -> tuple[np.ndarray, np.ndarray]:
    """(instance positions [N, 3] world, colours [N, 3] scene-linear) of the evaluated Gaussians.
    Positions from the depsgraph's instance list (``persistent_id[1]``: the instance's index; every
    Blender 4.2+). Colours from the points the expression modifier hands to the instancing one
    (muted for the read), whose Instance on Points gives them to the instances the material reads
    (test_addon_gaussians checks that part). Not ``Object.evaluated_geometry``: 4.3+ only, and bpy
    4.5 reports its GeometrySet as unfreed memory at exit."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    found = {inst.persistent_id[1]: np.array(inst.matrix_world, dtype=np.float64)[:3, 3]
             for inst in depsgraph.object_instances
             if inst.is_instance and inst.parent is not None and inst.parent.original == obj}
    assert sorted(found) == list(range(N)), "instances missing from the depsgraph"
    pos = np.stack([found[i] for i in range(N)])
    colour = np.zeros(N * 4, np.float32)
    instancing = obj.modifiers["HeadRig Gaussians"]
    instancing.show_viewport = False
    try:
        mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
        mesh.attributes["color"].data.foreach_get("color", colour)
    finally:
        instancing.show_viewport = True
    return pos, colour.reshape(N, 4)[:, :3]


def _linear(srgb: np.ndarray) -> np.ndarray:
    s = np.clip(srgb, 0.0, 1.0)
    return np.where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4)


def _backend(asset, case, weights: dict):
    """(means [N, 3] Blender axes, linear colour [N, 3]) of the linearised model from the file,
    the same without expression detail, and the full MLP's, for ``weights``."""
    from backend.avatar.binding import deform
    from backend.avatar.expression_bake import baked_gaussians
    from backend.avatar.model import SH_C0

    names = list(asset.expression_names)
    w = np.array([weights.get(k, 0.0) for k in names])
    verts = torch.as_tensor(asset.vertices(case["identity"], w) / 100.0, dtype=torch.float32)
    triangles = torch.as_tensor(asset.triangles, dtype=torch.long)
    expr = case["expr"]
    wt = torch.as_tensor(w, dtype=torch.float32)
    baked = baked_gaussians(case["binding"], verts, triangles, torch.as_tensor(expr.offset),
                            torch.as_tensor(expr.colour), wt)
    plain, _, _ = deform(case["binding"], verts, triangles)
    with torch.no_grad():
        full = case["avatar"].gaussians(verts, wt)
    dc = 0.5 + SH_C0 * case["binding"].sh[:, 0].numpy()
    return {"baked": (baked["means"].numpy() @ C.T, _linear(baked["colour"].numpy())),
            "plain": (plain.numpy() @ C.T, _linear(dc)),
            "full": (full["means"].detach().numpy() @ C.T, _linear(0.5 + SH_C0 * full["sh"][:, 0].numpy()))}


def test_bundle_lists_the_bake_and_the_import_drives_it(scene, case):
    assert case["manifest"].files["gaussians_expr.bin"]["role"] == "gaussian_expressions"
    obj, plain = scene["gaussians"]["bake"], scene["gaussians"]["plain"]
    assert [m.name for m in obj.modifiers] == ["HeadRig Gaussian Expressions", "HeadRig Gaussians"]
    assert [m.name for m in plain.modifiers] == ["HeadRig Gaussians"]  # an old bundle: as before
    assert obj["headrig_expression_keys"] == 53 and obj["headrig_expression_note"] == ""
    drivers = obj.animation_data.drivers
    assert len(drivers) == 53
    head_keys = scene["heads"]["bake"].data.shape_keys
    targets = {d.driver.variables[0].targets[0].data_path for d in drivers}
    assert all(d.driver.variables[0].targets[0].id == head_keys for d in drivers)
    assert all(d.driver.is_simple_expression and d.driver.is_valid for d in drivers)  # no Python needed
    assert targets == {f'key_blocks["{k}"].value' for k in case["expr"].keys}
    names = set(obj.data.attributes.keys())
    assert {"xo_jawOpen", "xc_jawOpen", "xo_eyeBlink_L", "color_srgb"} <= names
    stored = np.zeros(N * 3, np.float32)
    obj.data.attributes["xo_eyeBlink_L"].data.foreach_get("vector", stored)
    assert np.array_equal(stored.reshape(N, 3), case["expr"].offset[case["expr"].keys.index("eyeBlink_L")])


def test_neutral_is_the_same_with_and_without_the_bake(asset, scene, case):
    _set_weights(scene["heads"], {})
    (pos, colour), (pos0, colour0) = (_evaluated(scene["gaussians"][k]) for k in ("bake", "plain"))
    assert np.abs(pos - pos0).max() < 1e-7 and np.abs(colour - colour0).max() < 1e-6
    means, linear = _backend(asset, case, {})["baked"]
    assert np.abs(pos - means).max() < 1e-4 and np.abs(colour - linear).max() < 1e-5


def test_smile_and_blink_move_the_gaussians_as_the_backend_bake(asset, scene, case):
    _set_weights(scene["heads"], WEIGHTS)
    try:
        (pos, colour), (pos0, colour0) = (_evaluated(scene["gaussians"][k]) for k in ("bake", "plain"))
    finally:
        _set_weights(scene["heads"], {})
    want = _backend(asset, case, WEIGHTS)
    moved, want_moved = pos - pos0, want["baked"][0] - want["plain"][0]
    err_move = np.abs(moved - want_moved).max()
    err_pos = np.abs(pos - want["baked"][0]).max()
    err_colour = np.abs(colour - want["baked"][1]).max()
    full_pos = 1000 * np.linalg.norm(pos - want["full"][0], axis=1)
    full_colour = 255 * np.abs(colour - want["full"][1]).max(axis=1)
    detail_mm = 1000 * np.linalg.norm(want_moved, axis=1)
    detail_levels = 255 * np.abs(colour - colour0).max(axis=1)
    print(f"\nBlender vs linearised: displacement {1e6 * err_move:.3f} um, position {1e6 * err_pos:.2f} um, "
          f"colour {err_colour:.2e}; the detail moves Gaussians {detail_mm.mean():.4f} mm (max {detail_mm.max():.4f}), "
          f"colour {detail_levels.mean():.2f} levels; vs the full MLP: {full_pos.mean():.4f} mm "
          f"(max {full_pos.max():.4f}), colour {full_colour.mean():.2f} levels (max {full_colour.max():.2f}, linear 8-bit)")
    # the bake moves Gaussians, in the direction the backend's linear model does
    assert np.linalg.norm(moved, axis=1).max() > 1e-5
    norms = np.linalg.norm(moved, axis=1) * np.linalg.norm(want_moved, axis=1)
    cos = (moved * want_moved).sum(1) / np.maximum(norms, 1e-20)
    assert np.median(cos) > 0.999
    assert err_move < 1e-3 * np.abs(want_moved).max() + 1e-8, err_move  # float precision
    assert err_pos < 1e-4 and err_colour < 1e-5, (err_pos, err_colour)
    assert np.abs(colour - colour0).max() > 0.01  # colour detail reaches the material's attribute
    # the linear model is closer to the full MLP than having no expression detail at all
    assert np.abs(pos - want["full"][0]).mean() < np.abs(pos0 - want["full"][0]).mean()
    assert np.abs(colour - want["full"][1]).mean() < np.abs(colour0 - want["full"][1]).mean()


def test_drivers_follow_an_animated_shape_key(asset, scene, case):
    """An Action on the head's shape keys (what a bundle's animation is) drives the bake frame by frame."""
    head = scene["heads"]["bake"]
    key = head.data.shape_keys.key_blocks["jawOpen"]
    sc = bpy.context.scene
    key.value = 0.0
    key.keyframe_insert("value", frame=1)
    key.value = 1.0
    key.keyframe_insert("value", frame=11)
    try:
        sc.frame_set(11)
        pos, _ = _evaluated(scene["gaussians"]["bake"])
        want = _backend(asset, case, {"jawOpen": 1.0})["baked"][0]
        assert np.abs(pos - want).max() < 1e-4
        mod = scene["gaussians"]["bake"].modifiers["HeadRig Gaussian Expressions"]
        socket = next(i.identifier for i in mod.node_group.interface.items_tree if getattr(i, "name", "") == "jawOpen")
        assert mod[socket] == pytest.approx(1.0)
        sc.frame_set(6)
        assert mod[socket] == pytest.approx(key.value) and 0.2 < key.value < 0.8
        key.mute = True  # the mesh ignores a muted key; so does the bake
        bpy.context.evaluated_depsgraph_get()
        assert mod[socket] == 0.0
        key.mute = False
    finally:
        head.data.shape_keys.animation_data_clear()
        key.value, key.mute = 0.0, False
        sc.frame_set(1)



def test_a_bake_for_another_ply_is_ignored_and_a_damaged_one_refused(scene, case, tmp_path):
    """The bake is found beside the PLY and used only for the PLY its sha256 names."""
    import shutil

    gaussians = _module("gaussians")
    head, folder = scene["heads"]["plain"], case["root"] / "bake"
    shutil.copy(folder / "gaussians.ply", tmp_path / "gaussians.ply")
    data = (folder / "gaussians_expr.bin").read_bytes()
    other = data.replace(case["expr"].ply_sha256.encode(), b"0" * 64)
    (tmp_path / "gaussians_expr.bin").write_bytes(other)
    try:
        obj = gaussians.import_gaussians(bpy.context, head, tmp_path / "gaussians.ply")
        assert [m.name for m in obj.modifiers] == ["HeadRig Gaussians"]
        assert "belongs to another gaussians.ply" in obj["headrig_expression_note"]
        (tmp_path / "gaussians_expr.bin").write_bytes(data[:-64])
        with pytest.raises(gaussians.GaussianImportFailed, match="past the end"):
            gaussians.import_gaussians(bpy.context, head, tmp_path / "gaussians.ply")
    finally:
        scene["gaussians"]["plain"] = gaussians.import_gaussians(bpy.context, head, case["root"] / "plain" / "gaussians.ply")
