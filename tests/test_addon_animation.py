"""The add-on's animation side in real bpy: ``animation.apply_animation`` on an imported head, a video
bundle's import (glTF animation replaced by ``animation.json``), and the Live Link CSV operator.

The head is a real photo bundle (d8.jpg through the backend's ``Reconstructor``); the clips are
synthetic, so every expected value is known: jawOpen ramps 0 -> 1 and the head turns 30 degrees
(yaw) over one second.
"""

from __future__ import annotations

import importlib
import math
import shutil
from pathlib import Path

import pytest

from shared.animation import AnimationClip, euler_ypr_to_quaternion
from tests.conftest import MEDIA, require_shared

bpy = pytest.importorskip("bpy")

pytestmark = pytest.mark.blender

FPS, N = 30.0, 31  # one second: frame 1 .. 31




def _module(name: str):
    return importlib.import_module(f"headrig.{name}")


def make_clip(keys=("jawOpen", "notAShapeKey"), n: int = N, fps: float = FPS, yaw_deg: float = 30.0,
              missing=(3,)) -> AnimationClip:
    ramp = [i / (n - 1) for i in range(n)]
    rotation = [euler_ypr_to_quaternion(math.radians(yaw_deg) * r, 0.0, 0.0) for r in ramp]
    return AnimationClip(
        fps=fps, times=[i / fps for i in range(n)], shape_keys=list(keys),
        weights={k: (ramp if k == "jawOpen" else [0.5] * n) for k in keys},
        head_rotation=rotation, head_translation=[[0.0, 0.02 * r, 0.0] for r in ramp], head_origin=[0.0, 0.0, 0.5],
        eye_left=[[0.0, 0.0]] * n, eye_right=[[0.0, 0.0]] * n, landmark_rmse_px=[1.0] * n, missing=list(missing),
        source={"file": "synthetic.mp4"}).validate()


def _fresh_head(d8_bundle):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return _module("importer").import_bundle(bpy.context, d8_bundle, replace=True)


def _chin(head) -> int:
    """The vertex jawOpen moves most (under the chin)."""
    keys = head.data.shape_keys.key_blocks
    basis, jaw = keys["Basis"].data, keys["jawOpen"].data
    return max(range(len(basis)), key=lambda i: (jaw[i].co - basis[i].co).length)


def _evaluated_co(head, index: int):
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = head.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = mesh.vertices[index].co.copy()
    evaluated.to_mesh_clear()
    return co


def test_apply_animation_drives_shape_keys_and_the_root(registered_addon, d8_bundle):
    animation = _module("animation")
    head = _fresh_head(d8_bundle)
    scene, keys, root = bpy.context.scene, head.data.shape_keys, head.parent
    assert root.name == "d8_root"
    # the artist's own take on the shape keys and the root, made the ordinary way
    keys.key_blocks["jawOpen"].keyframe_insert("value", frame=1)
    root.keyframe_insert("location", frame=1)
    take, root_take = keys.animation_data.action, root.animation_data.action
    take.name, root_take.name = "artist take", "artist root"
    chin = _chin(head)
    rest = _evaluated_co(head, chin)

    summary = animation.apply_animation(bpy.context, head, make_clip(), "d8 perf")
    assert summary["shape_action"] == "d8 perf" and summary["head_action"] == "d8 perf (head)"
    assert summary["previous_shape_action"] == "artist take" and summary["previous_head_action"] == "artist root"
    assert summary["keys_matched"] == ["jawOpen"] and summary["keys_missing"] == ["notAShapeKey"]
    assert summary["frames"] == N and summary["missing_frames"] == 1
    # scene: 30 fps, frame range = the clip
    assert scene.render.fps == 30 and scene.render.fps_base == 1.0
    assert (scene.frame_start, scene.frame_end) == (1, N)
    # the new Actions play; the previous ones survive with a fake user
    assert keys.animation_data.action.name == "d8 perf" and root.animation_data.action.name == "d8 perf (head)"
    assert bpy.data.actions["artist take"].use_fake_user and bpy.data.actions["artist root"].use_fake_user
    curves = _channel_curves(keys.animation_data)
    assert [c.data_path for c in curves] == ['key_blocks["jawOpen"].value']
    assert len(curves[0].keyframe_points) == N
    assert all(k.interpolation == "LINEAR" for k in curves[0].keyframe_points)
    # the keys drive the values: jawOpen 1 at the last frame, 0.5 half way, and the chin moved
    scene.frame_set(N)
    assert keys.key_blocks["jawOpen"].value == pytest.approx(1.0, abs=1e-4)
    moved = (_evaluated_co(head, chin) - rest).length
    assert moved > 0.01, moved
    yaw = root.matrix_world.to_euler("XYZ")
    assert yaw.z == pytest.approx(math.radians(30), abs=1e-4) and abs(yaw.x) < 1e-4 and abs(yaw.y) < 1e-4
    assert root.matrix_world.translation.z == pytest.approx(0.02, abs=1e-5)  # glTF +Y (up) is Blender +Z
    scene.frame_set(16)
    assert keys.key_blocks["jawOpen"].value == pytest.approx(0.5, abs=1e-4)
    assert root.matrix_world.to_euler("XYZ").z == pytest.approx(math.radians(15), abs=1e-3)
    assert head["headrig_animation_source"] == "synthetic.mp4" and head["headrig_animation_frames"] == N
    assert head["headrig_animation_fps"] == FPS and head["headrig_animation_missing_frames"] == 1
    assert head["headrig_animation_action"] == "d8 perf"


def _channel_curves(anim_data):
    """The F-curves of the slot a datablock plays (Blender 4.4+ slotted Actions; legacy before)."""
    action = anim_data.action
    if not hasattr(action, "slots"):
        return list(action.fcurves)
    for layer in action.layers:
        for strip in layer.strips:
            bag = strip.channelbag(anim_data.action_slot)
            if bag is not None:
                return list(bag.fcurves)
    return []


def test_same_name_again_keeps_the_first_as_previous(registered_addon, d8_bundle):
    animation = _module("animation")
    head = _fresh_head(d8_bundle)
    first = animation.apply_animation(bpy.context, head, make_clip(), "d8 perf")
    second = animation.apply_animation(bpy.context, head, make_clip(yaw_deg=-10), "d8 perf")
    assert second["shape_action"] == "d8 perf" and second["previous_shape_action"] == "d8 perf (previous)"
    assert first["shape_action"] == "d8 perf"
    old = bpy.data.actions["d8 perf (previous)"]
    assert old.use_fake_user and bpy.data.actions["d8 perf (head) (previous)"].use_fake_user
    assert head.data.shape_keys.animation_data.action.name == "d8 perf"
    bpy.context.scene.frame_set(N)
    assert head.parent.matrix_world.to_euler().z == pytest.approx(math.radians(-10), abs=1e-4)


def test_fractional_fps_and_quaternion_continuity(registered_addon, d8_bundle):
    animation = _module("animation")
    head = _fresh_head(d8_bundle)
    clip = make_clip(fps=30000 / 1001, n=10)
    # q and -q are the same rotation: flip every other one, as a tracker may emit them
    clip.head_rotation = [[-c for c in q] if i % 2 else q for i, q in enumerate(clip.head_rotation)]
    summary = animation.apply_animation(bpy.context, head, clip, "ntsc", transfer_head=True)
    scene = bpy.context.scene
    assert scene.render.fps == 30 and scene.render.fps / scene.render.fps_base == pytest.approx(30000 / 1001)
    assert summary["frame_end"] == scene.frame_start + 9 == scene.frame_end
    w = next(c for c in _channel_curves(head.parent.animation_data) if c.data_path == "rotation_quaternion")
    values = [k.co[1] for k in w.keyframe_points]
    assert all(v > 0.9 for v in values), values  # one hemisphere: no swing through 360 degrees
    # transfer_head=False leaves the root alone
    animation.apply_animation(bpy.context, head, make_clip(), "faces only", transfer_head=False)
    assert head.parent.animation_data.action.name == "ntsc (head)"
    with pytest.raises(animation.AnimationFailed, match="not a head with shape keys"):
        animation.apply_animation(bpy.context, head.parent, make_clip(), "x")


def _video_bundle(d8_bundle: Path, out: Path) -> Path:
    """The photo bundle made into what a video build returns: animation.json + an animated head.glb."""
    from shared.animation import animation_bytes
    from shared.bundle import read_bundle, write_bundle

    manifest = read_bundle(d8_bundle)
    clip = make_clip(keys=tuple(manifest.shape_keys), missing=())
    files = {name: d8_bundle / name for name in manifest.files}
    files["head.glb"] = _animated_glb(d8_bundle / "head.glb", clip)
    files["animation.json"] = animation_bytes(clip)
    manifest.files = {"animation.json": {"role": "animation"}}
    write_bundle(out, manifest, files)
    return out


def _animated_glb(path: Path, clip: AnimationClip) -> bytes:
    """head.glb plus a glTF animation of the head node (morph weights, rotation, translation)."""
    import numpy as np
    import pygltflib

    gltf = pygltflib.GLTF2.load(str(path))
    blob = bytearray(gltf.binary_blob())
    times = np.asarray(clip.times, np.float32)
    weights = np.asarray(clip.weight_rows(), np.float32).reshape(-1)
    rotation = np.asarray([[x, y, z, w] for w, x, y, z in clip.head_rotation], np.float32)  # glTF: xyzw
    translation = np.asarray(clip.head_translation, np.float32)

    def accessor(array, kind, bounds=False):
        while len(blob) % 4:
            blob.append(0)
        data = array.tobytes()
        gltf.bufferViews.append(pygltflib.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data)))
        blob.extend(data)
        gltf.accessors.append(pygltflib.Accessor(
            bufferView=len(gltf.bufferViews) - 1, componentType=pygltflib.FLOAT, count=len(array), type=kind,
            min=[float(array.min())] if bounds else None, max=[float(array.max())] if bounds else None))
        return len(gltf.accessors) - 1

    t = accessor(times, "SCALAR", bounds=True)
    outputs = [accessor(weights, "SCALAR"), accessor(rotation, "VEC4"), accessor(translation, "VEC3")]
    gltf.animations = [pygltflib.Animation(
        name="HeadRig performance", samplers=[pygltflib.AnimationSampler(input=t, output=o) for o in outputs],
        channels=[pygltflib.AnimationChannel(sampler=i, target=pygltflib.AnimationChannelTarget(node=0, path=p))
                  for i, p in enumerate(("weights", "rotation", "translation"))])]
    gltf.buffers[0].byteLength = len(blob)
    gltf.set_binary_blob(bytes(blob))
    return b"".join(gltf.save_to_bytes())


def test_video_bundle_import_replaces_the_gltf_animation(registered_addon, d8_bundle, tmp_path):
    video = _video_bundle(d8_bundle, tmp_path / "d8video")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    gltf_addon = bpy.context.preferences.addons.get("io_scene_gltf2")
    if gltf_addon is not None:  # its optional animation list, which the importer fills too
        gltf_addon.preferences.animation_ui = True
    scene = bpy.context.scene
    for _ in range(2):  # the second import replaces the first: still one of everything
        head = _module("importer").import_bundle(bpy.context, video, replace=True)
        assert sorted(a.name for a in bpy.data.actions) == ["d8", "d8 (eyes)", "d8 (head)"]
    root, keys = head.parent, head.data.shape_keys
    assert keys.animation_data.action.name == "d8" and root.animation_data.action.name == "d8 (head)"
    assert not keys.animation_data.nla_tracks and head.animation_data is None and not root.animation_data.nla_tracks
    assert len(_channel_curves(keys.animation_data)) == 53
    assert all(a.users == 1 and not a.use_fake_user for a in bpy.data.actions)
    assert scene.render.fps == 30 and (scene.frame_start, scene.frame_end) == (1, N)
    # the mesh rests at its root, neutral: the motion is the root's, the expression the Action's
    assert all(abs(head.matrix_basis[i][j] - (i == j)) < 1e-6 for i in range(4) for j in range(4))
    scene.frame_set(N)
    assert keys.key_blocks["jawOpen"].value == pytest.approx(1.0, abs=1e-4)
    assert root.matrix_world.to_euler().z == pytest.approx(math.radians(30), abs=1e-4)
    assert head.matrix_world.to_euler().z == pytest.approx(math.radians(30), abs=1e-4)  # not turned twice
    assert head["headrig_animation_frames"] == N
    if gltf_addon is not None:
        assert hasattr(scene, "gltf2_animation_tracks") and not list(scene.gltf2_animation_tracks)
        gltf_addon.preferences.animation_ui = False


def test_bad_animation_json_is_one_line_and_imports_nothing(registered_addon, d8_bundle, tmp_path):
    from shared.bundle import read_bundle, write_bundle

    manifest = read_bundle(d8_bundle)
    files = {name: d8_bundle / name for name in manifest.files}
    files["animation.json"] = b'{"format": "headrig.animation", "version": 1}'
    manifest.files = {"animation.json": {"role": "animation"}}
    write_bundle(tmp_path / "bad", manifest, files)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    importer = _module("importer")
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_bundle(bpy.context, tmp_path / "bad")
    assert "animation.json" in str(e.value) and "\n" not in str(e.value)
    assert not bpy.data.objects and not bpy.data.actions


LIVELINK_COLUMNS = (
    "EyeBlinkLeft EyeLookDownLeft EyeLookInLeft EyeLookOutLeft EyeLookUpLeft EyeSquintLeft EyeWideLeft "
    "EyeBlinkRight EyeLookDownRight EyeLookInRight EyeLookOutRight EyeLookUpRight EyeSquintRight EyeWideRight "
    "JawForward JawRight JawLeft JawOpen MouthClose MouthFunnel MouthPucker MouthRight MouthLeft MouthSmileLeft "
    "MouthSmileRight MouthFrownLeft MouthFrownRight MouthDimpleLeft MouthDimpleRight MouthStretchLeft "
    "MouthStretchRight MouthRollLower MouthRollUpper MouthShrugLower MouthShrugUpper MouthPressLeft MouthPressRight "
    "MouthLowerDownLeft MouthLowerDownRight MouthUpperUpLeft MouthUpperUpRight BrowDownLeft BrowDownRight "
    "BrowInnerUp BrowOuterUpLeft BrowOuterUpRight CheekPuff CheekSquintLeft CheekSquintRight NoseSneerLeft "
    "NoseSneerRight TongueOut HeadYaw HeadPitch HeadRoll LeftEyeYaw LeftEyePitch LeftEyeRoll RightEyeYaw "
    "RightEyePitch RightEyeRoll").split()


def _livelink_csv(path: Path, frames: int = 10) -> Path:
    """A Live Link Face recording as the iPhone app writes it: 30 fps timecodes, JawOpen 0 -> 1."""
    lines = ["Timecode,BlendShapeCount," + ",".join(LIVELINK_COLUMNS)]
    for f in range(frames):
        values = [0.0] * len(LIVELINK_COLUMNS)
        values[LIVELINK_COLUMNS.index("JawOpen")] = f / (frames - 1)
        lines.append(f"10:20:30:{f:02d}.000,{len(LIVELINK_COLUMNS)}," + ",".join(f"{v:.6f}" for v in values))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_import_livelink_csv_operator(registered_addon, d8_bundle, tmp_path):
    head = _fresh_head(d8_bundle)
    bpy.context.view_layer.objects.active = head.parent  # the root empty works as well as the mesh
    csv = _livelink_csv(tmp_path / "take1.csv")
    assert bpy.ops.headrig.import_livelink(filepath=str(csv)) == {"FINISHED"}
    keys = head.data.shape_keys
    assert keys.animation_data.action.name == "d8 livelink take1"
    scene = bpy.context.scene
    assert scene.frame_end - scene.frame_start == 9
    scene.frame_set(scene.frame_end)
    assert keys.key_blocks["jawOpen"].value == pytest.approx(1.0, abs=1e-3)
    broken = tmp_path / "broken.csv"
    broken.write_text("not,a,live,link\nfile\n")
    with pytest.raises(RuntimeError) as e:
        bpy.ops.headrig.import_livelink(filepath=str(broken))
    message = str(e.value)
    assert "broken.csv" in message and "Traceback" not in message
    assert keys.animation_data.action.name == "d8 livelink take1"  # a failed import changes nothing


def test_operators_need_a_head(registered_addon, d8_bundle, tmp_path):
    _fresh_head(d8_bundle)
    empty = bpy.data.objects.new("stranger", None)
    bpy.context.scene.collection.objects.link(empty)
    bpy.context.view_layer.objects.active = empty
    assert not bpy.ops.headrig.retarget_video.poll() and not bpy.ops.headrig.import_livelink.poll()
    bpy.context.view_layer.objects.active = bpy.data.objects["d8_head"]
    assert bpy.ops.headrig.retarget_video.poll() and bpy.ops.headrig.import_livelink.poll()
    photo = tmp_path / "still.jpg"
    shutil.copy(MEDIA / "images" / "d8.jpg", photo)
    with pytest.raises(RuntimeError) as e:
        bpy.ops.headrig.retarget_video(filepath=str(photo))
    assert "still.jpg: not a video" in str(e.value)


def test_build_refuses_a_video_with_other_inputs(registered_addon, tmp_path):
    require_shared()
    video = MEDIA / "video" / "d3.mp4"
    assert video.is_file(), f"sample media missing: {video}"
    bpy.ops.headrig.clear_photos()
    assert bpy.ops.headrig.add_photos(filepath=str(video)) == {"FINISHED"}
    assert bpy.ops.headrig.add_photos(filepath=str(MEDIA / "images" / "d8.jpg")) == {"FINISHED"}
    prefs = _module("preferences").get_prefs(bpy.context)
    prefs.server_address = "tcp://127.0.0.1:5555"
    with pytest.raises(RuntimeError) as e:
        bpy.ops.headrig.build_head()
    assert "d3.mp4: a video must be the only input" in str(e.value)
    assert not [e for e in _module("jobs").registry().jobs.values()]


def test_retarget_result_is_applied_by_the_timer(registered_addon, d8_bundle, tmp_path):
    """The drain's side of a retarget job: a fetched result folder becomes a new Action on its head."""
    from shared.animation import animation_bytes

    head = _fresh_head(d8_bundle)
    jobs, drain = _module("jobs"), _module("drain")
    reg = jobs.registry()
    clip = make_clip()
    clip.calibration = {"neutral_frame": 0, "smoothing": True}
    result = tmp_path / "job-1"
    result.mkdir()
    (result / "animation.json").write_bytes(animation_bytes(clip))
    entry = jobs.JobEntry("r1", "take -> d8", kind="retarget", state="fetching",
                          apply={"target": head.name, "action_name": "d8 retarget take", "transfer_head": True})
    reg.jobs[entry.local_id] = entry
    reg.events.put(("done", entry.local_id, str(result)))
    for _ in range(3):
        drain.drain()
    assert entry.state == "done", entry.message
    assert entry.message.startswith("Applied d8 retarget take to d8_head") and entry.object_name == "d8_head"
    assert head.data.shape_keys.animation_data.action.name == "d8 retarget take"
    # the head was deleted before the result came: one clear line, nothing applied
    gone = jobs.JobEntry("r2", "take -> ghost", kind="retarget", state="fetching",
                         apply={"target": "ghost_head", "action_name": "ghost", "transfer_head": True})
    reg.jobs[gone.local_id] = gone
    reg.events.put(("done", gone.local_id, str(result)))
    for _ in range(3):
        drain.drain()
    assert gone.state == "error" and "ghost_head: the head is no longer in the scene" in gone.message
    assert "ghost" not in bpy.data.actions
    reg.clear_finished()


def test_panel_draws_the_performance_box(registered_addon, d8_bundle):
    from types import SimpleNamespace
    from unittest.mock import MagicMock

    head = _fresh_head(d8_bundle)
    _module("animation").apply_animation(bpy.context, head, make_clip(), "d8 perf")
    panel = _module("panel").HEADRIG_PT_main
    layout = MagicMock()
    panel.draw(SimpleNamespace(layout=layout), bpy.context)
    texts = [c.kwargs.get("text", "") for c in layout.mock_calls if c[0].endswith("label")]
    assert "Performance" in texts and "d8_head: d8 perf" in texts and "Head motion: d8 perf (head)" in texts
    assert "Eyes: d8 perf (eyes)" in texts
    operators = [c.args[0] for c in layout.mock_calls if c[0].endswith("operator")]
    assert {"headrig.retarget_video", "headrig.import_livelink", "headrig.build_head"} <= set(operators)
