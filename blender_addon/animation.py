"""Apply an ``AnimationClip`` (``animation.json``, a retarget result, a Live Link CSV) to a head.

``apply_animation(context, head, clip, action_name)`` makes NEW Actions and assigns them:

* ``<action_name>`` on the mesh's shape keys: one F-curve per clip shape key the mesh has
  (``key_blocks["jawOpen"].value``), LINEAR keys at ``frame_start + time * fps``;
* ``<action_name> (head)`` on the head's root object (the collection's empty, see ``importer.py``):
  ``rotation_quaternion`` and ``location``, converted from glTF axes (Y up, +Z towards the camera)
  to Blender's (Z up): (x, y, z) -> (x, -z, y). Quaternions are kept on one hemisphere (q and -q are
  the same rotation, but LINEAR interpolation between them swings the head through 360 degrees).
  The location is absolute (metres from the root's parent); to place the head elsewhere, parent
  the root to another empty.
* ``<action_name> (eyes)`` on the head's eye rig (``eyes.py``, made here for a head imported
  before rigs existed): ``pose.bones["eye_L"/"eye_R"].rotation_quaternion`` from the clip's gaze
  (``eyes.left`` / ``eyes.right``), on the same frames as the shape keys. Gaze is part of the face
  performance, so it is keyed whether or not the head's motion is transferred.

Earlier animation is never lost: the Action a datablock had keeps a fake user (it stays in the
file and in the Action menu), and an Action already called ``action_name`` is renamed
``"<name> (previous)"`` so the new one gets the name the artist expects.

Blender 4.4+ Actions are slotted: an Action holds layers -> keyframe strips -> one channelbag of
F-curves per slot, and a datablock plays the slot set in ``animation_data.action_slot``. Blender
4.4/4.5 have no ``anim_utils.action_ensure_channelbag_for_slot`` (added in 5.0), so the layer, strip
and channelbag are made here. Blender 4.2/4.3 (no slots) use the legacy ``Action.fcurves``.
"""

from __future__ import annotations

import math

import bpy

from . import eyes
from .headrig_shared.animation import read_animation
from .headrig_shared.bundle_fields import BundleError
from .heads import root_of

HEAD_SUFFIX, EYES_SUFFIX = " (head)", " (eyes)"
PREVIOUS_SUFFIX = " (previous)"
PROP_SOURCE, PROP_FPS, PROP_FRAMES = "headrig_animation_source", "headrig_animation_fps", "headrig_animation_frames"
PROP_MISSING, PROP_ACTION = "headrig_animation_missing_frames", "headrig_animation_action"
_SNAP = 1e-3  # a key this close to a whole frame goes on it (float seconds * fps is never exact)


class AnimationFailed(Exception):
    """One line for the artist."""


def scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def set_scene_fps(scene, fps: float) -> None:
    """Blender stores fps as an integer over a base: 29.97 is 30 / 1.001."""
    whole = max(1, round(fps))
    scene.render.fps, scene.render.fps_base = whole, whole / fps


def clip_frames(times, fps: float, start: float) -> list[float]:
    frames = []
    for t in times:
        f = start + t * fps
        frames.append(float(round(f)) if abs(f - round(f)) < _SNAP else f)
    return frames


def to_blender_vector(v) -> tuple[float, float, float]:
    """glTF (x, y, z) -> Blender (x, -z, y): a rotation of the axes (det +1), so it maps rotations too."""
    return float(v[0]), -float(v[2]), float(v[1])


def to_blender_quaternions(rotations) -> list[tuple[float, float, float, float]]:
    """glTF (w, x, y, z) per frame -> Blender, normalised, each on the previous one's hemisphere."""
    out, previous = [], None
    for w, *xyz in rotations:
        x, y, z = to_blender_vector(xyz)
        norm = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
        q = (w / norm, x / norm, y / norm, z / norm)
        if previous is not None and sum(a * b for a, b in zip(q, previous)) < 0:
            q = tuple(-c for c in q)
        out.append(q)
        previous = q
    return out


def _retire(name: str) -> str:
    """Rename an existing Action called ``name`` out of the way (kept, with a fake user)."""
    old = bpy.data.actions.get(name)
    if old is None:
        return ""
    old.use_fake_user = True
    old.name = name + PREVIOUS_SUFFIX
    return old.name


def new_action(name: str, id_type: str, slot_name: str):
    """(action, slot or None, the F-curve collection to fill)."""
    _retire(name)
    action = bpy.data.actions.new(name)
    if not hasattr(action, "slots"):  # Blender 4.2/4.3: one flat list of F-curves
        action.id_root = id_type
        return action, None, action.fcurves
    slot = action.slots.new(id_type=id_type, name=slot_name)
    strip = action.layers.new("Layer").strips.new(type="KEYFRAME")
    return action, slot, strip.channelbags.new(slot).fcurves


def assign_action(id_data, action, slot) -> str:
    """Play ``action`` on ``id_data``; the Action it had keeps a fake user. Returns that one's name."""
    anim = id_data.animation_data or id_data.animation_data_create()
    old = anim.action
    if old is not None and old != action:
        old.use_fake_user = True
    anim.action = action
    if slot is not None:
        anim.action_slot = slot
    return old.name if old is not None else ""


def add_curve(fcurves, data_path: str, index: int, frames: list[float], values) -> None:
    linear = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value  # foreach_set wants ints
    curve = fcurves.new(data_path, index=index)
    points = curve.keyframe_points
    points.add(len(frames))
    co = [0.0] * (2 * len(frames))
    co[0::2], co[1::2] = frames, [float(v) for v in values]
    points.foreach_set("co", co)
    points.foreach_set("interpolation", [linear] * len(frames))
    curve.update()  # sorts the keys and recomputes handles


def apply_animation(context, head_obj, clip, action_name: str, transfer_head: bool = True,
                    set_scene: bool = True, source: str = "") -> dict:
    """Key ``clip`` onto ``head_obj`` (a mesh with shape keys) as new Actions; returns a summary.

    ``set_scene``: the scene plays at the clip's fps and its frame range covers the clip; otherwise
    keys go at the scene's own fps (the clip keeps its real-time speed). Raises AnimationFailed.
    """
    key = head_obj.data.shape_keys if head_obj is not None and head_obj.type == "MESH" else None
    if key is None:
        raise AnimationFailed(f"{getattr(head_obj, 'name', 'nothing')}: not a head with shape keys; "
                              f"select a HeadRig head")
    if clip.frame_count == 0:
        raise AnimationFailed(f"{source or action_name}: the animation has no frames")
    scene = context.scene
    if set_scene:
        set_scene_fps(scene, clip.fps)
    frames = clip_frames(clip.times, scene_fps(scene), scene.frame_start)
    if set_scene:
        scene.frame_end = max(scene.frame_start, math.ceil(frames[-1] - _SNAP))

    names = {kb.name for kb in key.key_blocks[1:]}
    matched = [k for k in clip.shape_keys if k in names]
    missing = [k for k in clip.shape_keys if k not in names]
    summary = {"shape_action": "", "head_action": "", "previous_shape_action": "", "previous_head_action": "",
               "eyes_action": "", "previous_eyes_action": "",
               "frames": clip.frame_count, "frame_start": frames[0], "frame_end": frames[-1], "fps": clip.fps,
               "keys_matched": matched, "keys_missing": missing, "missing_frames": len(clip.missing)}

    action, slot, fcurves = new_action(action_name, "KEY", head_obj.name)
    for name in matched:
        add_curve(fcurves, f'key_blocks["{bpy.utils.escape_identifier(name)}"].value', 0, frames,
                   clip.weights[name])
    summary["previous_shape_action"] = assign_action(key, action, slot)
    summary["shape_action"] = action.name

    if transfer_head:
        root = root_of(head_obj)
        action, slot, fcurves = new_action(action_name + HEAD_SUFFIX, "OBJECT", root.name)
        quats = to_blender_quaternions(clip.head_rotation)
        for i in range(4):
            add_curve(fcurves, "rotation_quaternion", i, frames, [q[i] for q in quats])
        locations = [to_blender_vector(t) for t in clip.head_translation]
        for i in range(3):
            add_curve(fcurves, "location", i, frames, [v[i] for v in locations])
        root.rotation_mode = "QUATERNION"
        summary["previous_head_action"] = assign_action(root, action, slot)
        summary["head_action"] = action.name

    rig = eyes.ensure_rig(context, head_obj)
    if rig is not None:
        action, slot, fcurves = new_action(action_name + EYES_SUFFIX, "OBJECT", rig.name)
        for bone, gaze in ((eyes.LEFT.bone, clip.eye_left), (eyes.RIGHT.bone, clip.eye_right)):
            quats = eyes.gaze_quaternions(rig, bone, gaze)
            path = f'pose.bones["{bpy.utils.escape_identifier(bone)}"].rotation_quaternion'
            for i in range(4):
                add_curve(fcurves, path, i, frames, [q[i] for q in quats])
        summary["previous_eyes_action"] = assign_action(rig, action, slot)
        summary["eyes_action"] = action.name

    head_obj[PROP_SOURCE] = source or str(clip.source.get("file", ""))
    head_obj[PROP_FPS] = float(clip.fps)
    head_obj[PROP_FRAMES] = clip.frame_count
    head_obj[PROP_MISSING] = len(clip.missing)
    head_obj[PROP_ACTION] = summary["shape_action"]
    return summary


def current_actions(head_obj) -> tuple[str, str, str]:
    """(shape-key, root, eye-rig Action names), "" where none: for the panel."""
    key = head_obj.data.shape_keys if head_obj.type == "MESH" else None
    rig = eyes.rig_of(head_obj)

    def playing(id_data) -> str:
        action = id_data.animation_data.action if id_data is not None and id_data.animation_data else None
        return action.name if action is not None else ""

    return playing(key), playing(root_of(head_obj)), playing(rig)


def apply_result(context, folder, target: str, action_name: str, transfer_head: bool = True):
    """Apply a retarget result folder's ``animation.json`` to the object named ``target``.

    Returns (head object, summary); AnimationFailed (one line) when the head is gone or the file bad.
    """
    head = bpy.data.objects.get(target)
    if head is None:
        raise AnimationFailed(f"{target}: the head is no longer in the scene; the animation is kept in {folder}")
    try:
        clip = read_animation(folder)
    except BundleError as exc:
        raise AnimationFailed(str(exc)) from None
    return head, apply_animation(context, head, clip, action_name, transfer_head=transfer_head,
                                 source=str(clip.source.get("file", "")))
