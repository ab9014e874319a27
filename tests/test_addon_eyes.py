"""Eyes that turn, in real bpy: the eye rig built on import (``eyes.py``), gaze from ``animation.json``
and from a Live Link CSV keyed onto its bones, and the eyeball-bound Gaussians turning with them.

The head is a real photo bundle (d8.jpg through the backend's ``Reconstructor``); the clips are
synthetic, so every expected angle is known. Gaze convention (``shared/animation.py``): yaw positive
towards the subject's left (Blender +X), pitch positive up (+Z); the head looks along -Y.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest

from shared.animation import AnimationClip

bpy = pytest.importorskip("bpy")

pytestmark = pytest.mark.blender

FPS, N = 30.0, 31  # frames 1 .. 31
YAW_FRAME, PITCH_FRAME = 11, 21  # Blender frames (clip index + 1)
# (yaw, pitch) degrees at YAW_FRAME and PITCH_FRAME, per eye; every other frame eases back to 0
GAZE = {"eye_L": ((20.0, 0.0), (0.0, 15.0)), "eye_R": ((-12.0, 0.0), (0.0, -8.0))}
TOL_DEG = 0.5




def _module(name: str):
    return importlib.import_module(f"headrig.{name}")


def _gaze_series(eye: str) -> list[list[float]]:
    """Zero except a bump to the eye's yaw at YAW_FRAME and pitch at PITCH_FRAME (2 frames each side)."""
    out = [[0.0, 0.0] for _ in range(N)]
    for frame, (yaw, pitch) in zip((YAW_FRAME, PITCH_FRAME), GAZE[eye]):
        for i in range(frame - 3, frame + 2):
            out[i] = [yaw, pitch]
    return out


def make_clip() -> AnimationClip:
    return AnimationClip(
        fps=FPS, times=[i / FPS for i in range(N)], shape_keys=["jawOpen"], weights={"jawOpen": [0.0] * N},
        head_rotation=[[1.0, 0.0, 0.0, 0.0]] * N, head_translation=[[0.0, 0.0, 0.0]] * N, head_origin=[0.0, 0.0, 0.5],
        eye_left=_gaze_series("eye_L"), eye_right=_gaze_series("eye_R"), landmark_rmse_px=[1.0] * N,
        source={"file": "gaze.mp4"}).validate()


def _fresh_head(d8_bundle):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return _module("importer").import_bundle(bpy.context, d8_bundle, replace=True)


def _evaluated(head) -> np.ndarray:
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = head.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.zeros(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    return co.reshape(-1, 3)


def _group(head, name: str) -> np.ndarray:
    index = head.vertex_groups[name].index
    return np.array([v.index for v in head.data.vertices
                     if any(g.group == index and g.weight == 1.0 for g in v.groups)])


def _gaze_matrix(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Rz(yaw) Rx(-pitch), written out independently of the add-on's mathutils version."""
    y, p = math.radians(yaw_deg), -math.radians(pitch_deg)
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    return rz @ rx


def test_import_builds_the_eye_rig(registered_addon, asset, d8_bundle):
    from shared.bundle import read_bundle

    eyes = _module("eyes")
    head = _fresh_head(d8_bundle)
    head = _module("importer").import_bundle(bpy.context, d8_bundle, replace=True)  # a re-import: no leftovers
    rig = eyes.rig_of(head)
    assert rig is not None and rig.name == "d8_eyes" and rig.type == "ARMATURE"
    assert len(bpy.data.armatures) == 1 and [o.name for o in bpy.data.objects if o.type == "ARMATURE"] == ["d8_eyes"]
    assert rig.parent == head.parent and set(rig.users_collection) == set(head.users_collection)
    assert _module("heads").find_head(rig) == head  # the rig is part of the head: operators work from it
    assert [b.name for b in rig.data.bones] == ["eye_L", "eye_R"]
    assert head.modifiers[0].name == "HeadRig eyes" and head.modifiers[0].object == rig
    assert rig.animation_data is None or rig.animation_data.action is None  # a photo head: rest, no Action
    rest = np.array([list(kb.co) for kb in head.data.shape_keys.key_blocks[0].data])
    slots = [s.material.name for s in head.material_slots]
    identity = np.asarray(read_bundle(d8_bundle).identity)
    for bone, side, part, materials in (("eye_L", 1, "eyeball_left", ("M_ScleraLeft", "M_IrisLeft")),
                                        ("eye_R", -1, "eyeball_right", ("M_ScleraRight", "M_IrisRight"))):
        members = _group(head, bone)
        wanted = {slots.index(m) for m in materials}
        expected = {v for p in head.data.polygons if p.material_index in wanted for v in p.vertices}
        assert set(members.tolist()) == expected and len(members) > 1000
        centre = np.array(rig.data.bones[bone].head_local)
        assert side * centre[0] > 0.02  # subject's left eye at +X
        # the pivot is the one the video tracker solves gaze about (backend/video/gaze.py): the mean
        # of the model's eyeball vertices, here from the model itself in Blender axes (x, -z, y)
        first, last = asset.parts[part]
        model = asset.vertices(identity)[first:last + 1].mean(axis=0) / 100.0
        assert np.abs(centre - [model[0], -model[2], model[1]]).max() < 1e-5
        tail = np.array(rig.data.bones[bone].tail_local)
        assert np.allclose((tail - centre) / np.linalg.norm(tail - centre), [0, -1, 0], atol=1e-6)  # straight ahead
        assert np.allclose(rig.data.bones[bone].z_axis, [0, 0, 1], atol=1e-6)  # local Z up
    assert np.abs(_evaluated(head) - rest).max() < 1e-7  # at rest the rig moves nothing


def _front_vertex(rest: np.ndarray, members: np.ndarray) -> int:
    """The eyeball vertex furthest forward (-Y): the front of the cornea, over the iris."""
    return int(members[np.argmin(rest[members, 1])])


def test_gaze_turns_the_eyeballs_by_the_clip_angles(registered_addon, d8_bundle):
    eyes = _module("eyes")
    head = _fresh_head(d8_bundle)
    summary = _module("animation").apply_animation(bpy.context, head, make_clip(), "d8 gaze")
    rig = eyes.rig_of(head)
    assert summary["eyes_action"] == "d8 gaze (eyes)" and rig.animation_data.action.name == "d8 gaze (eyes)"
    rest = np.array([list(kb.co) for kb in head.data.shape_keys.key_blocks[0].data])
    scene = bpy.context.scene
    scene.frame_set(1)
    assert np.abs(_evaluated(head) - rest).max() < 1e-6  # rest frames look straight ahead
    for frame, which in ((YAW_FRAME, 0), (PITCH_FRAME, 1)):
        scene.frame_set(frame)
        now = _evaluated(head)
        for bone in ("eye_L", "eye_R"):
            yaw, pitch = GAZE[bone][which]
            members = _group(head, bone)
            centre = np.array(rig.data.bones[bone].head_local)
            front = _front_vertex(rest, members)
            before, after = rest[front] - centre, now[front] - centre
            if which == 0:  # yaw: the iris swings about the up axis, towards +X for a positive yaw
                turned = math.atan2(after[0], -after[1]) - math.atan2(before[0], -before[1])
                assert math.degrees(turned) == pytest.approx(yaw, abs=TOL_DEG), bone
                assert np.sign(after[0] - before[0]) == np.sign(yaw)
                assert after[2] == pytest.approx(before[2], abs=1e-5)
            else:  # pitch: about the lateral axis, up (+Z) for a positive pitch
                turned = math.atan2(after[2], -after[1]) - math.atan2(before[2], -before[1])
                assert math.degrees(turned) == pytest.approx(pitch, abs=TOL_DEG), bone
                assert np.sign(after[2] - before[2]) == np.sign(pitch)
                assert after[0] == pytest.approx(before[0], abs=1e-5)
            # the whole eyeball turns rigidly about its centre; nothing else moves
            expected = centre + (rest[members] - centre) @ _gaze_matrix(yaw, pitch).T
            assert np.abs(now[members] - expected).max() < 1e-5
        others = np.setdiff1d(np.arange(len(rest)), np.concatenate([_group(head, b) for b in ("eye_L", "eye_R")]))
        assert np.abs(now[others] - rest[others]).max() < 1e-6
    scene.frame_set(N)
    assert np.abs(_evaluated(head) - rest).max() < 1e-6


def test_a_head_without_a_rig_gets_one_when_animated(registered_addon, d8_bundle):
    """A head imported before rigs existed (no modifier, no armature) is rigged on its first animation."""
    eyes = _module("eyes")
    head = _fresh_head(d8_bundle)
    rig = eyes.rig_of(head)
    head.modifiers.remove(head.modifiers["HeadRig eyes"])
    for name in ("eye_L", "eye_R"):
        head.vertex_groups.remove(head.vertex_groups[name])
    data = rig.data
    bpy.data.objects.remove(rig, do_unlink=True)
    bpy.data.armatures.remove(data)
    assert eyes.rig_of(head) is None
    # hidden from the view layer, no edit mode for a new armature: the animation still applies, and
    # no half-made rig is left behind
    layer_coll = bpy.context.view_layer.layer_collection.children[head.users_collection[0].name]
    layer_coll.exclude = True
    summary = _module("animation").apply_animation(bpy.context, head, make_clip(), "hidden")
    assert summary["shape_action"] == "hidden" and summary["eyes_action"] == ""
    assert eyes.rig_of(head) is None and not bpy.data.armatures and "HeadRig eyes" not in head.modifiers
    layer_coll.exclude = False
    _module("animation").apply_animation(bpy.context, head, make_clip(), "late")
    rig = eyes.rig_of(head)
    assert rig is not None and rig.animation_data.action.name == "late (eyes)"
    assert [m.name for m in head.modifiers].count("HeadRig eyes") == 1
    bpy.context.scene.frame_set(YAW_FRAME)
    bone = rig.pose.bones["eye_L"]
    forward = np.array(bone.matrix.to_3x3().col[1])  # the bone's Y: where the eye looks, armature space
    assert math.degrees(math.atan2(forward[0], -forward[1])) == pytest.approx(20.0, abs=1e-3)


def _instances(obj) -> np.ndarray:
    """[N, 3] world positions of the evaluated instances, in point order."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    found = {inst.persistent_id[1]: np.array(inst.matrix_world.translation)
             for inst in depsgraph.object_instances
             if inst.is_instance and inst.parent is not None and inst.parent.original == obj}
    assert sorted(found) == list(range(len(found))) and found, "instances missing from the depsgraph"
    return np.stack([found[i] for i in range(len(found))])


def test_eyeball_gaussians_turn_with_the_eyes(registered_addon, asset, d8_bundle, tmp_path):
    torch = pytest.importorskip("torch")
    from backend.avatar.binding import GaussianBinding, deform
    from backend.avatar.ply import write_gaussians_ply
    from shared.bundle import read_bundle

    n = 120
    identity = np.asarray(read_bundle(d8_bundle).identity)
    rest_verts = torch.tensor(asset.vertices(identity) / 100.0, dtype=torch.float32)
    names = asset.material_names
    side_of = {names.index(m): bone for bone, ms in (("eye_L", ("M_ScleraLeft", "M_IrisLeft")),
                                                      ("eye_R", ("M_ScleraRight", "M_IrisRight"))) for m in ms}
    tri_material = asset.triangle_material()
    eyeball = np.nonzero(np.isin(tri_material, list(side_of)))[0]
    face = np.nonzero(tri_material == names.index("M_Face"))[0]
    rng = np.random.default_rng(3)
    tri = np.concatenate([rng.choice(eyeball, n - 20), rng.choice(face, 20)])  # 20 on the skin: must stay
    quats = rng.normal(size=(n, 4))
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)
    binding = GaussianBinding(torch.tensor(tri), f32(rng.dirichlet([2, 2, 2], n)), f32(rng.normal(0, 0.3, (n, 3))),
                              f32(quats / np.linalg.norm(quats, axis=1)[:, None]), f32(rng.uniform(-0.5, 0.5, (n, 3))),
                              f32(rng.normal(0, 1, n)), f32(rng.normal(0, 1, (n, 4, 3))))
    means, rots, scales = deform(binding, rest_verts, torch.tensor(asset.triangles, dtype=torch.long))
    ply = write_gaussians_ply(tmp_path / "gaussians.ply", means, rots, scales, torch.sigmoid(binding.opacity_logit),
                              binding.sh, binding=binding)

    head = _fresh_head(d8_bundle)
    obj = _module("gaussians").import_gaussians(bpy.context, head, ply)
    _module("animation").apply_animation(bpy.context, head, make_clip(), "d8 gaze")
    rig = _module("eyes").rig_of(head)
    scene = bpy.context.scene
    scene.frame_set(1)
    rest = _instances(obj)
    for frame, which in ((YAW_FRAME, 0), (PITCH_FRAME, 1)):
        scene.frame_set(frame)
        now = _instances(obj)
        expected = rest.copy()
        for i, t in enumerate(tri):
            bone = side_of.get(int(tri_material[t]))
            if bone is not None:
                centre = np.array(rig.data.bones[bone].head_local)  # root and rig at identity: world = head space
                expected[i] = centre + _gaze_matrix(*GAZE[bone][which]) @ (rest[i] - centre)
        assert np.abs(now - expected).max() < 1e-4, np.abs(now - expected).max()
        moved = np.linalg.norm(now[: n - 20] - rest[: n - 20], axis=1)
        assert moved.min() > 1e-4 and np.median(moved) > 1e-3, (moved.min(), np.median(moved))  # all turned
        assert np.abs(now[n - 20:] - rest[n - 20:]).max() < 1e-6


LIVELINK_EYES = ("LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")


def _livelink_csv(path: Path, frames: int = 10) -> Path:
    """A Live Link Face take with eye angles in radians: Epic's signs, yaw > 0 looks to the subject's
    right and pitch > 0 looks down. The last frame looks 25 degrees to the subject's left, 10 up."""
    from shared.livelink import ARKIT_CURVES, HEAD_COLUMNS

    header = ["Timecode", "BlendShapeCount", *ARKIT_CURVES, *HEAD_COLUMNS, *LIVELINK_EYES]
    lines = [",".join(header)]
    for f in range(frames):
        r = f / (frames - 1)
        eye = [-math.radians(25.0) * r, -math.radians(10.0) * r, 0.0]
        values = [0.0] * (len(ARKIT_CURVES) + 3) + eye + eye
        lines.append(f"10:20:30:{f:02d}.000,{len(values)}," + ",".join(f"{v:.6f}" for v in values))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_livelink_eye_angles_drive_the_bones(registered_addon, d8_bundle, tmp_path):
    head = _fresh_head(d8_bundle)
    bpy.context.view_layer.objects.active = head
    csv = _livelink_csv(tmp_path / "look.csv")
    assert bpy.ops.headrig.import_livelink(filepath=str(csv)) == {"FINISHED"}
    rig = _module("eyes").rig_of(head)
    assert rig.animation_data.action.name == "d8 livelink look (eyes)"
    scene = bpy.context.scene
    for frame, r in ((scene.frame_start, 0.0), (scene.frame_end, 1.0)):
        scene.frame_set(frame)
        for bone in ("eye_L", "eye_R"):
            look = np.array(rig.pose.bones[bone].matrix.to_3x3().col[1])  # the bone's Y, armature space
            assert math.degrees(math.atan2(look[0], -look[1])) == pytest.approx(25.0 * r, abs=0.05)
            assert math.degrees(math.asin(look[2])) == pytest.approx(10.0 * r, abs=0.05)
