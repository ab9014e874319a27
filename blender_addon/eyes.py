"""Eyes that turn: an Armature with one bone per eyeball, pivoting at the eyeball's centre.

ICT-FaceKit's ``eyeLook*`` shape keys move only the lids; the eyeballs are rigid parts no shape key
moves. ``ensure_rig(context, head)`` gives a head the rig artists expect:

* an ARMATURE object ``<name>_eyes`` (``heads.RIG_SUFFIX``) parented to the head's root beside the
  mesh, with bones ``eye_L`` and ``eye_R`` ("L" is the subject's left, as in the shape keys'
  ``_L``). Each bone's head sits at its eyeball's centre and it points straight ahead along the
  head's forward axis (-Y, glTF's +Z), rolled so its local Z is the head's up: in pose mode,
  rotating about local Z turns the eye towards the subject's left, about local X tips it up.
* vertex groups ``eye_L`` / ``eye_R`` (weight 1) on the eyeball vertices and an Armature modifier
  ``HeadRig eyes`` first in the mesh's stack. Blender applies shape keys before any modifier, so
  expressions still act on the rest mesh and the eyeballs turn afterwards; the Gaussians sample the
  *evaluated* head (``gaussian_nodes``: Object Info), so the ones bound to an eyeball turn with it.

The eyeball vertices are found by material: head.glb has one primitive per ICT material and ICT's
eyeball parts are exactly its ``M_Sclera*`` and ``M_Iris*`` groups (the lid shells, tear film and
lashes are other materials, and stay with the lids). The glTF importer keeps those names (with a
``.001`` suffix on a second copy). The pivot is the mean of the eyeball's vertices, the centre the
video tracker turns the eyeball about when it solves the gaze from the iris
(``backend/video/gaze.py``, ``EyeModel.from_asset``): the angles in ``animation.json`` put the iris
where the video shows it only about that point. (ICT's sclera is a sphere whose centre lies ~5 mm
behind that mean, the cornea and iris pull the mean forward; turning about the sphere's centre
would keep the ball's surface in place but swing the iris ~1.5x further than the tracker saw. Move
both together if that ever changes.) The mean is taken over distinct positions, since the importer
splits vertices along uv seams and the copies would weigh the seam twice.

``gaze_quaternions(rig, bone, gaze)`` turns ``animation.json`` gaze, (yaw, pitch) degrees per frame
(yaw towards the subject's left, pitch up, in the head's frame, zero = straight ahead), into pose
quaternions for the bone: R = Rz(yaw) Rx(-pitch) in the head's axes (yaw about up, then pitch
about the lateral axis), expressed in the bone's rest frame. ``animation.apply_animation`` keys them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .heads import PROP_BUNDLE, PROP_JOB, PROP_MODEL, RIG_SUFFIX, head_label

MODIFIER_NAME = "HeadRig eyes"
FORWARD = Vector((0.0, -1.0, 0.0))  # the head looks along -Y in Blender (glTF +Z)
UP = Vector((0.0, 0.0, 1.0))
BONE_LENGTH = 1.5  # eyeball extents (centre to its farthest vertex): the bone pokes out in front, easy to pick


@dataclass(frozen=True)
class EyePart:
    """One eyeball: its bone (and vertex group) name and the head.glb materials it is made of."""

    bone: str
    sclera: str
    iris: str


LEFT = EyePart("eye_L", "M_ScleraLeft", "M_IrisLeft")  # ICT's "Left" parts sit at +X: the subject's left
RIGHT = EyePart("eye_R", "M_ScleraRight", "M_IrisRight")
EYES = (LEFT, RIGHT)


def _base_name(name: str) -> str:
    """"M_IrisLeft" for "M_IrisLeft.001" (a second import's copy of the material)."""
    return re.sub(r"\.\d{3,}$", "", name)


def eyeball_vertices(head) -> dict[str, list[int]]:
    """bone -> eyeball vertex ids (sclera and iris), from the polygons' materials; an eye whose
    materials are missing is left out (a mesh that is not ICT's)."""
    slots = {}
    for i, slot in enumerate(head.material_slots):
        if slot.material is not None:
            slots.setdefault(_base_name(slot.material.name), set()).add(i)
    n = len(head.data.polygons)
    material = np.zeros(n, dtype=np.int32)
    head.data.polygons.foreach_get("material_index", material)
    loop_total = np.zeros(n, dtype=np.int32)
    head.data.polygons.foreach_get("loop_total", loop_total)
    corners = np.zeros(len(head.data.loops), dtype=np.int32)
    head.data.loops.foreach_get("vertex_index", corners)
    corner_material = np.repeat(material, loop_total)  # polygons' loops are stored in polygon order

    def vertices(names) -> list[int]:
        wanted = [i for name in names for i in slots.get(name, ())]
        return np.unique(corners[np.isin(corner_material, wanted)]).tolist() if wanted else []

    found = {eye.bone: vertices([eye.sclera, eye.iris]) for eye in EYES}
    return {bone: ids for bone, ids in found.items() if ids}


def _basis_positions(head) -> np.ndarray:
    """[V, 3] rest positions (the Basis shape key: what the Armature modifier deforms at rest)."""
    points = head.data.shape_keys.key_blocks[0].data if head.data.shape_keys else head.data.vertices
    co = np.zeros(len(points) * 3)
    points.foreach_get("co", co)
    return co.reshape(-1, 3)


def eyeball_centre(points: np.ndarray) -> np.ndarray:
    """The mean of an eyeball's distinct rest positions [n, 3] (seam copies counted once)."""
    return np.unique(np.round(points, 7), axis=0).mean(axis=0)


def eyeball_radius(points: np.ndarray, centre: np.ndarray) -> float:
    return float(np.linalg.norm(points - centre, axis=1).max())


def rig_of(head):
    """The eye rig driving ``head`` (its ``HeadRig eyes`` modifier's armature), else None."""
    mod = head.modifiers.get(MODIFIER_NAME) if head is not None and head.type == "MESH" else None
    rig = mod.object if mod is not None and mod.type == "ARMATURE" else None
    return rig if rig is not None and all(e.bone in rig.data.bones for e in EYES) else None


def _add_bones(context, rig, centres: dict[str, tuple[np.ndarray, float]]) -> None:
    """Edit bones exist only in edit mode: enter it on the rig, add the bones, and leave."""
    view_layer = context.view_layer
    active = view_layer.objects.active
    if active is not None and active.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    try:
        view_layer.objects.active = rig
        bpy.ops.object.mode_set(mode="EDIT")
        for bone_name, (centre, radius) in centres.items():
            bone = rig.data.edit_bones.new(bone_name)
            bone.head = Vector(centre)
            bone.tail = Vector(centre) + FORWARD * (BONE_LENGTH * radius)
            bone.align_roll(UP)  # local Z = the head's up, so local X is the lateral (pitch) axis
            bone.use_deform = True
    finally:
        if rig.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = active


def ensure_rig(context, head):
    """The head's eye rig, made if it has none (see the module docstring); None when the mesh has
    no ICT eyeballs or Blender cannot enter edit mode on a new armature here (then nothing is left
    behind and the eyes simply do not turn). Idempotent: a head imported before the rig existed gets
    one on first use."""
    rig = rig_of(head)
    if rig is not None:
        return rig
    parts = eyeball_vertices(head)
    if len(parts) != len(EYES):
        return None
    rest = _basis_positions(head)
    centres = {}
    for bone, ids in parts.items():
        centre = eyeball_centre(rest[ids])
        centres[bone] = (centre, eyeball_radius(rest[ids], centre))

    data = bpy.data.armatures.new(f"{head_label(head)}{RIG_SUFFIX}")
    data.display_type = "OCTAHEDRAL"
    rig = bpy.data.objects.new(data.name, data)
    rig.show_in_front = True  # the bones sit inside the head; drawn in front so they can be picked
    for coll in head.users_collection:
        coll.objects.link(rig)
    rig.parent = head.parent
    rig.matrix_parent_inverse = head.matrix_parent_inverse.copy()
    rig.matrix_basis = head.matrix_basis.copy()  # the rig's space is the mesh's: bone centres fit
    for key in (PROP_BUNDLE, PROP_JOB, PROP_MODEL):  # PROP_BUNDLE: find_head(rig) finds the head
        if key in head:
            rig[key] = head[key]
    try:
        _add_bones(context, rig, centres)
    except (RuntimeError, ValueError):  # edit mode refused (the head's collection hidden from the view
        bpy.data.objects.remove(rig, do_unlink=True)  # layer...): the head stays usable, eyes fixed
        bpy.data.armatures.remove(data)
        return None
    for pose_bone in rig.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"

    for bone, vertices in parts.items():
        group = head.vertex_groups.get(bone) or head.vertex_groups.new(name=bone)
        group.add(vertices, 1.0, "REPLACE")
    mod = head.modifiers.new(MODIFIER_NAME, "ARMATURE")
    mod.object = rig
    mod.use_vertex_groups, mod.use_bone_envelopes = True, False
    head.modifiers.move(len(head.modifiers) - 1, 0)  # first: before anything that changes topology
    return rig


def gaze_matrix(yaw_deg: float, pitch_deg: float) -> Matrix:
    """The eyeball's rotation in the head's axes: Rz(yaw) Rx(-pitch). Looking along -Y, a positive
    yaw about +Z swings the gaze to +X (the subject's left); pitch up needs -pitch about +X."""
    return Matrix.Rotation(math.radians(yaw_deg), 3, "Z") @ Matrix.Rotation(-math.radians(pitch_deg), 3, "X")


def gaze_quaternions(rig, bone: str, gaze) -> list[tuple[float, float, float, float]]:
    """Pose-bone quaternions (w, x, y, z) for gaze [(yaw, pitch) degrees per frame]: the head-frame
    rotation seen from the bone's rest frame, R_rest^-1 R R_rest (pose rotations are local)."""
    rest = rig.data.bones[bone].matrix_local.to_3x3()
    to_rest = rest.inverted()
    out, previous = [], None
    for yaw, pitch in gaze:
        q = (to_rest @ gaze_matrix(yaw, pitch) @ rest).to_quaternion()
        if previous is not None and q.dot(previous) < 0:  # one hemisphere: LINEAR keys stay short
            q.negate()
        out.append((q.w, q.x, q.y, q.z))
        previous = q
    return out
