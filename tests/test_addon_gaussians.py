"""The add-on's Gaussians and turntable in real bpy, against ``backend.avatar.binding``.

A real photo bundle (``headrig reconstruct d8.jpg``, the render test's fixture) is imported with the
built add-on; a ``gaussians.ply`` of 300 Gaussians bound to random face triangles is written with the
backend's writer, its means from ``binding.deform`` at the bundle's neutral; the add-on imports it
and its geometry nodes must put every Gaussian where the backend does: at rest, and with jawOpen = 1
(shape keys evaluated by Blender). glTF (x, y, z) is Blender (x, -z, y): means map through C, and a
Gaussian's rotation is C R (its own local axes are not converted).
"""

from __future__ import annotations

import importlib
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


bpy = pytest.importorskip("bpy")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.blender

N = 300
C = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # glTF -> Blender axes
TOL_M = 1e-4


def _module(name: str):
    return importlib.import_module(f"headrig.{name}")


@pytest.fixture(scope="module")
def case(asset, bundle_dir, tmp_path_factory):
    """The binding, the model's neutral and jawOpen vertices (metres, glTF) and the written PLY."""
    from backend.avatar.binding import GaussianBinding, deform
    from backend.avatar.ply import write_gaussians_ply
    from shared.bundle import read_bundle

    identity = np.asarray(read_bundle(bundle_dir).identity)
    jaw = np.zeros(len(asset.expression_names))
    jaw[list(asset.expression_names).index("jawOpen")] = 1.0
    verts = {k: torch.tensor(asset.vertices(identity, e) / 100.0, dtype=torch.float32)
             for k, e in (("rest", None), ("jaw", jaw))}
    rng = np.random.default_rng(7)
    face = np.nonzero(asset.triangle_material() == asset.material_names.index("M_Face"))[0]
    quats = rng.normal(size=(N, 4))
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)
    binding = GaussianBinding(torch.tensor(rng.choice(face, N)), f32(rng.dirichlet([2, 2, 2], N)),
                              f32(rng.normal(0, 0.3, (N, 3))), f32(quats / np.linalg.norm(quats, axis=1)[:, None]),
                              f32(rng.uniform(-0.5, 0.5, (N, 3))), f32(rng.normal(0, 1, N)),
                              f32(rng.normal(0, 1, (N, 4, 3))))
    triangles = torch.tensor(asset.triangles, dtype=torch.long)
    means, quats, scales = deform(binding, verts["rest"], triangles)
    ply = write_gaussians_ply(tmp_path_factory.mktemp("ply") / "gaussians.ply", means, quats, scales,
                              torch.sigmoid(binding.opacity_logit), binding.sh, binding=binding)
    return {"binding": binding, "verts": verts, "triangles": triangles, "ply": ply}


@pytest.fixture(scope="module")
def scene(addon, bundle_dir, case):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    head = _module("importer").import_bundle(bpy.context, bundle_dir, replace=True)
    obj = _module("gaussians").import_gaussians(bpy.context, head, case["ply"])
    return {"head": head, "obj": obj}


def _instances(obj) -> np.ndarray:
    """[N, 4, 4] world matrices of the evaluated instances, in point order. Read from the depsgraph's
    instance list (``persistent_id[1]`` is the instance's index), which every Blender 4.2+ has;
    ``Object.evaluated_geometry()`` only exists from 4.3."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    found = {inst.persistent_id[1]: np.array(inst.matrix_world, dtype=np.float64)
             for inst in depsgraph.object_instances
             if inst.is_instance and inst.parent is not None and inst.parent.original == obj}
    assert sorted(found) == list(range(len(found))), "instances missing from the depsgraph"
    return np.stack([found[i] for i in range(len(found))])


def _expected(case, pose: str):
    from backend.avatar.binding import deform, quaternion_to_matrix

    means, quats, scales = deform(case["binding"], case["verts"][pose], case["triangles"])
    return means.numpy() @ C.T, C @ quaternion_to_matrix(quats).numpy(), scales.numpy()


def _check_pose(obj, case, pose: str) -> float:
    mats = _instances(obj)
    means, rotations, scales = _expected(case, pose)
    assert mats.shape == (N, 4, 4)
    pos_err = np.abs(mats[:, :3, 3] - means).max()
    assert pos_err < TOL_M, pos_err
    got_scale = np.linalg.norm(mats[:, :3, :3], axis=1)  # columns of R diag(s)
    assert np.abs(got_scale - scales).max() < 1e-6 + 1e-3 * scales.max()
    assert np.abs(mats[:, :3, :3] / got_scale[:, None, :] - rotations).max() < 1e-3
    return pos_err


def test_rest_pose_matches_the_ply(scene, case):
    from backend.avatar.ply import read_gaussians_ply

    obj = scene["obj"]
    assert obj.name == "d8_gaussians" and obj.parent == scene["head"].parent
    assert set(obj.users_collection) == set(scene["head"].users_collection)
    assert dict(obj["headrig_gaussians_stats"]) == {"direct": N, "searched": 0, "off": 0, "worst_mm": 0.0}
    stored = read_gaussians_ply(case["ply"]).means @ C.T  # the file's x, y, z in Blender axes
    assert np.abs(_instances(obj)[:, :3, 3] - stored).max() < TOL_M
    _check_pose(obj, case, "rest")


def test_jaw_open_moves_gaussians_with_the_mesh(scene, case):
    key = scene["head"].data.shape_keys.key_blocks["jawOpen"]
    key.value = 1.0
    try:
        err = _check_pose(scene["obj"], case, "jaw")
    finally:
        key.value = 0.0
    moved = np.abs(_expected(case, "jaw")[0] - _expected(case, "rest")[0]).max()
    assert moved > 0.01 and err < TOL_M, (moved, err)


def test_attributes_and_material(scene, case):
    mesh = scene["obj"].data
    attrs = {a.name: (a.data_type, a.domain) for a in mesh.attributes}
    for name, kind in [("v0", "INT"), ("v1", "INT"), ("v2", "INT"), ("bary", "FLOAT_VECTOR"), ("offset", "FLOAT_VECTOR"),
                       ("lrot", "QUATERNION"), ("lscale", "FLOAT_VECTOR"), ("color", "FLOAT_COLOR"), ("opacity", "FLOAT")]:
        assert attrs.get(name) == (kind, "POINT"), name
    colour = np.zeros(N * 4)
    mesh.attributes["color"].data.foreach_get("color", colour)
    srgb = np.clip(0.5 + 0.28209479 * case["binding"].sh[:, 0].numpy(), 0, 1)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    assert np.abs(colour.reshape(N, 4)[:, :3] - linear).max() < 1e-5
    opacity = np.zeros(N)
    mesh.attributes["opacity"].data.foreach_get("value", opacity)
    assert np.abs(opacity - torch.sigmoid(case["binding"].opacity_logit).numpy()).max() < 1e-5
    tree = scene["obj"].modifiers["HeadRig Gaussians"].node_group
    kinds = [n.bl_idname for n in tree.nodes]
    assert tree.name == "HeadRig Gaussians" and kinds.count("GeometryNodeSampleIndex") == 3
    assert {"FunctionNodeAxesToRotation", "GeometryNodeInstanceOnPoints", "GeometryNodeObjectInfo"} <= set(kinds)
    mat = bpy.data.materials["HeadRig Gaussians"]
    reads = {(n.attribute_type, n.attribute_name) for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeAttribute"
             and n.outputs["Color" if n.attribute_name == "color" else "Fac"].is_linked}
    assert {("INSTANCER", "color"), ("INSTANCER", "opacity")} <= reads


def test_wrong_triangles_are_found_and_foreign_files_refused(scene, case, tmp_path):
    from backend.avatar.ply import write_gaussians_ply

    gaussians, head = _module("gaussians"), scene["head"]
    means, _, scales = _expected(case, "rest")
    wrong = case["binding"].detach()
    wrong.tri[::3] += 1  # a mesh whose triangle order differs for a third of the Gaussians
    args = (torch.tensor(means @ C, dtype=torch.float32), torch.zeros(N, 4) + torch.tensor([1.0, 0, 0, 0]),
            torch.tensor(scales), torch.sigmoid(wrong.opacity_logit), wrong.sh)
    try:
        obj = gaussians.import_gaussians(bpy.context, head, write_gaussians_ply(tmp_path / "w.ply", *args, binding=wrong))
        assert obj["headrig_gaussians_stats"]["searched"] == len(range(0, N, 3))
        assert np.abs(_instances(obj)[:, :3, 3] - means).max() < TOL_M
        shifted = (args[0] + torch.tensor([0.0, 0.05, 0.0]),) + args[1:]
        with pytest.raises(gaussians.GaussianImportFailed, match="made for another head"):
            gaussians.import_gaussians(bpy.context, head, write_gaussians_ply(tmp_path / "f.ply", *shifted, binding=wrong))
        (tmp_path / "a.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
        with pytest.raises(gaussians.GaussianImportFailed, match="binary_little_endian"):
            gaussians.import_gaussians(bpy.context, head, tmp_path / "a.ply")
        plain = write_gaussians_ply(tmp_path / "p.ply", *args)  # a 3DGS file without the binding
        with pytest.raises(gaussians.GaussianImportFailed, match="has no binding to the mesh"):
            gaussians.import_gaussians(bpy.context, head, plain)
    finally:
        scene["obj"] = gaussians.import_gaussians(bpy.context, head, case["ply"])


def _coverage(path) -> float:
    from PIL import Image

    alpha = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32)[..., 3] / 255.0
    return float((alpha > 0.05).mean())


def _settings(scene) -> dict:
    """Every plain value of the scene and its render, output, colour-management, Cycles and Eevee
    settings (read through RNA, so a setting added in a later Blender is covered too), plus its
    camera, world and objects."""
    structs = {"scene": scene, "render": scene.render, "image": scene.render.image_settings,
               "ffmpeg": scene.render.ffmpeg, "view": scene.view_settings, "display": scene.display_settings,
               "cycles": getattr(scene, "cycles", None), "eevee": getattr(scene, "eevee", None)}
    out = {"camera": scene.camera, "world": scene.world, "objects": sorted(o.name for o in scene.objects)}
    for label, struct in structs.items():
        for prop in struct.bl_rna.properties if struct is not None else ():
            if prop.identifier == "rna_type" or prop.type in ("POINTER", "COLLECTION") or \
                    getattr(prop, "is_deprecated", False):  # 5.0 warns on reading those (Scene.use_nodes)
                continue
            value = getattr(struct, prop.identifier)
            out[f"{label}.{prop.identifier}"] = (sorted(value) if isinstance(value, set) else
                                                 tuple(value) if hasattr(value, "__len__") and not isinstance(value, str)
                                                 else value)
    return out


def _artist_scene(tmp_path):
    """The artist's own choices, none of them what a turntable uses."""
    sc = bpy.context.scene
    sc.render.engine = "BLENDER_WORKBENCH"
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = 640, 360, 50
    sc.render.film_transparent = True
    sc.render.fps, sc.render.fps_base = 24, 1.0
    sc.frame_start, sc.frame_end, sc.frame_current = 1, 250, 7
    sc.view_settings.view_transform = "AgX"  # Blender 4.x/5.x's default, not the turntable's Standard
    sc.view_settings.exposure = 0.5
    sc.render.image_settings.file_format = "PNG"
    sc.render.filepath = str(tmp_path / "artist_")
    sc.world = bpy.data.worlds.new("artist world")
    camera = bpy.data.objects.new("artist camera", bpy.data.cameras.new("artist camera"))
    sc.collection.objects.link(camera)
    sc.camera = camera
    return sc


def test_turntable_loops_renders_and_leaves_the_artists_scene_alone(scene, tmp_path):
    turntable = _module("turntable")
    artist = _artist_scene(tmp_path)
    before = _settings(artist)
    coll = _module("heads").head_collection_of(scene["head"])
    tt = turntable.setup_turntable(bpy.context, coll, frames=8, resolution=64, engine="CYCLES")
    sc = tt.scene
    assert sc != artist and sc.name == "HeadRig d8 turntable" and turntable.turntable_scene(coll) == sc
    assert sc.camera == tt.camera and (sc.frame_start, sc.frame_end) == (1, 8) and sc.render.fps == 24
    assert sc.render.engine == "CYCLES" and sc.view_settings.view_transform == "Standard"
    assert coll.name in sc.collection.children and sc.world == artist.world  # the same head, the artist's world
    seen = {}
    depsgraph = sc.view_layers[0].depsgraph  # not the window's scene: read its own evaluation
    for frame in (1, 5, 8):
        sc.frame_set(frame)
        seen[frame] = np.array(tt.camera.evaluated_get(depsgraph).matrix_world)
    assert np.abs(seen[1] - seen[8]).max() < 1e-5
    assert math.dist(seen[1][:3, 3], seen[5][:3, 3]) > 0.2  # half a turn later: behind the head
    sc.frame_set(1)
    sc.cycles.samples = 1
    sc.render.film_transparent = True
    if hasattr(sc.render.image_settings, "media_type"):  # Blender 5.0: stills are media type IMAGE
        sc.render.image_settings.media_type = "IMAGE"
    sc.render.image_settings.file_format = "PNG"
    sc.render.image_settings.color_mode = "RGBA"  # the movie format left RGB behind
    covered = {}
    for label, hide_head in (("all", False), ("gaussians", True)):
        scene["head"].hide_render = hide_head
        sc.render.filepath = str(tmp_path / f"{label}.png")
        bpy.ops.render.render(write_still=True, scene=sc.name)
        covered[label] = _coverage(tmp_path / f"{label}.png")
    scene["head"].hide_render = False
    assert covered["all"] > 0.1 and 0.0 < covered["gaussians"] < covered["all"], covered
    sc.frame_end = 2
    movie = turntable.render_turntable(sc, tmp_path / "turntable")
    assert movie.name == "turntable.mp4" and movie.stat().st_size > 0
    clip, message = turntable.load_result(bpy.context, tmp_path, "d8 turntable")  # what a backend job returns
    assert clip.name == "d8 turntable" and clip.frame_duration == 2 and "2 frames" in message
    # a second setup rebuilds the rig in the same scene: one camera, one spin Action
    again = turntable.setup_turntable(bpy.context, coll, frames=4, resolution=32, engine="CYCLES")
    assert again.scene == sc and sc.frame_end == 4 and sc.camera == again.camera
    assert len([o for o in bpy.data.objects if o.type == "CAMERA" and o.name.startswith("d8_camera")]) == 1
    assert len([a for a in bpy.data.actions if a.name.startswith("d8_turntable spin")]) == 1
    after = _settings(artist)
    assert after == before, {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert bpy.context.scene == artist


def test_operators(addon, scene, case, monkeypatch, tmp_path):
    """Turntable sets up its own scene (the artist's stays as it was); Backend turntable refuses a
    bundle without Gaussians and sends the right job; Import Gaussians works from the Gaussians too."""
    jobs = _module("jobs")
    addon.register()
    try:
        artist = _artist_scene(tmp_path)
        before = _settings(artist)
        bpy.context.view_layer.objects.active = scene["head"]
        assert bpy.ops.headrig.turntable(frames=4, resolution=32) == {"FINISHED"}
        heads = _module("heads")
        name = heads.head_label(scene["head"])
        made = _module("turntable").turntable_scene(heads.head_collection_of(scene["head"]))
        assert made.camera.name == f"{name}_camera" and made.frame_end == 4 and made.render.resolution_x == 32
        assert _settings(artist) == before and bpy.context.scene == artist
        with pytest.raises(RuntimeError, match="no gaussians.ply"):
            bpy.ops.headrig.backend_turntable()  # the active head's bundle has none
        folder = case["ply"].parent
        shutil.copy(scene["head"]["headrig_bundle"] + "/head.json", folder)
        sent = []
        monkeypatch.setattr(jobs.registry(), "start_job",
                            lambda *args, **kw: sent.append((args, kw)) or SimpleNamespace(local_id="j9"))
        assert bpy.ops.headrig.backend_turntable(directory=str(folder), frames=12, size=128) == {"FINISHED"}
        (label, files, _settings_, _out), kw = sent[0]
        assert label == f"{folder.name} turntable" and [Path(f).name for f in files] == ["head.json", "gaussians.ply"]
        assert kw == {"kind": "turntable", "params": {"frames": 12, "size": 128}}
        bpy.context.view_layer.objects.active = scene["obj"]  # the Gaussians lead to their head too
        assert bpy.ops.headrig.import_gaussians(filepath=str(case["ply"]), ellipsoids=True) == {"FINISHED"}
        scene["obj"] = bpy.data.objects[f"{name}_gaussians"]
        _check_pose(scene["obj"], case, "rest")  # ellipsoids: same transforms, other instance
    finally:
        addon.unregister()


def test_bundle_import_brings_the_gaussians(scene, case, bundle_dir, tmp_path):
    """A bundle with gaussians.ply imports with its Gaussians; importing it again replaces the head
    and removes its turntable scene. The copy is removed afterwards: the module's head stays as it was."""
    importer, turntable = _module("importer"), _module("turntable")
    folder = shutil.copytree(bundle_dir, tmp_path / "d8")
    shutil.copy(case["ply"], folder / "gaussians.ply")
    head = importer.import_bundle(bpy.context, folder, replace=True)
    try:
        # A copied folder is another head (another path): it arrives beside the module's one.
        assert head != scene["head"] and scene["head"].name in bpy.data.objects
        found = [o for o in head.users_collection[0].objects if o.name.endswith("_gaussians")]
        assert len(found) == 1
        assert found[0].modifiers["HeadRig Gaussians"].node_group.name == "HeadRig Gaussians"
        _check_pose(found[0], case, "rest")
        made = turntable.setup_turntable(bpy.context, head.users_collection[0], frames=4, resolution=32,
                                         engine="CYCLES").scene.name
        cameras = len(bpy.data.cameras)
        head = importer.import_bundle(bpy.context, folder, replace=True)
        assert made not in bpy.data.scenes and len(bpy.data.cameras) == cameras - 1
        _check_pose(bpy.data.objects[_module("heads").head_label(head) + "_gaussians"], case, "rest")
    finally:
        importer.remove_head(head.users_collection[0])
