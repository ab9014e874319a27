"""Import a head bundle folder into the scene, organised for animation.

``import_bundle(context, bundle_dir, replace=True)`` validates the folder with ``read_bundle`` (an
``ImportFailed`` with one line naming the file on any problem; never a traceback), imports
``head.glb`` with Blender's glTF importer and organises the result:

* a collection ``HeadRig <name>`` (``<name>``: the first input photo's stem, else the job id),
  linked to the scene's master collection;
* an EMPTY ``<name>_root`` that carries the head's transform (move/rotate/scale the head with it);
* the mesh object ``<name>_head`` parented to it, with its 53 ARKit shape keys (checked against
  ``head.json``: ``["Basis"] + manifest.shape_keys`` in order) and the glTF materials, skin texture
  included;
* custom properties on the object (and the collection): ``headrig_job_id``, ``headrig_model``,
  ``headrig_landmark_rmse_px``, ``headrig_bundle`` (the folder);
* the eye rig ``<name>_eyes`` (``eyes.ensure_rig``): bones ``eye_L`` / ``eye_R`` that turn the
  eyeballs, at rest looking straight ahead, whether or not the bundle has an animation.

A bundle built from a video also lists ``animation.json`` (role "animation"). Its ``head.glb``
carries the same motion as a glTF animation, which Blender 4.5's importer turns into one Action per
glTF animation (slots ``OB<node>`` and ``KE<node>``), stashes on muted NLA tracks of the object and
its shape keys, assigns, and evaluates into the object's transform and shape-key values. That is all
removed (the head rests neutral and at its root), and ``animation.json`` is applied instead with
``animation.apply_animation``: one shape-key Action ``<name>`` and one Action ``<name> (head)`` on
the root, the scene's fps and frame range set from the clip.

Re-importing the same head -- same job id, or else the same bundle folder -- with ``replace=True``
(the default) deletes the old collection, its objects, and the meshes, materials and images that only
they used, then imports afresh: one collection per head, never ``.001`` duplicates. With
``replace=False`` a second copy is made beside it (Blender adds ``.001`` to the names).
"""

from __future__ import annotations

import re
from pathlib import Path

import bpy

from .animation import AnimationFailed, apply_animation
from .eyes import ensure_rig
from .gaussians import GaussianImportFailed, import_bundle_gaussians
from .headrig_shared.animation import read_animation
from .headrig_shared.bundle import BundleError, read_bundle
from .heads import COLLECTION_PREFIX, MESH_SUFFIX, PROP_BUNDLE, PROP_JOB, PROP_MODEL, PROP_RMSE, ROOT_SUFFIX
from .turntable import remove_turntable


class ImportFailed(Exception):
    """One line for the artist."""


def head_name(manifest, bundle_dir: Path) -> str:
    if manifest.inputs:
        stem = Path(manifest.inputs[0].file).stem
    elif manifest.job_id:
        stem = manifest.job_id[:8]
    else:
        stem = bundle_dir.name
    stem = re.sub(r"[^\w\-. ]+", "_", stem).strip() or "head"
    return stem[:40]


def _rmse(manifest) -> float:
    q = manifest.quality or {}
    value = q.get("landmark_rmse_px")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    fits = [f.landmark_rmse_px for f in manifest.fits]
    return float(sum(fits) / len(fits)) if fits else -1.0


def find_heads(job_id: str | None, bundle: str):
    """Collections imported earlier from this job id or bundle folder."""
    out = []
    for coll in bpy.data.collections:
        if PROP_BUNDLE not in coll:
            continue
        same_job = bool(job_id) and coll.get(PROP_JOB) == job_id
        if same_job or coll.get(PROP_BUNDLE) == bundle:
            out.append(coll)
    return out


def _actions_of(id_data) -> set:
    anim = getattr(id_data, "animation_data", None)
    if anim is None:
        return set()
    found = {anim.action} | {s.action for t in anim.nla_tracks for s in t.strips}
    return {a for a in found if a is not None}


def _animated(obj) -> list:
    """The object and its shape keys: the datablocks a head's Actions play on."""
    key = obj.data.shape_keys if obj.type == "MESH" and obj.data is not None else None
    return [obj] + ([key] if key is not None else [])


def _remove_unused(actions) -> None:
    for action in actions:
        try:
            if action.users == 0:
                bpy.data.actions.remove(action)
        except ReferenceError:
            pass


def strip_gltf_animation(objects, actions_before) -> None:
    """Remove what the glTF importer made of the glb's animation: Actions, NLA tracks, and the
    evaluated pose it left in the object's transform and shape-key values (see the module docstring)."""
    made, tracks = set(), set()
    for obj in objects:
        for data in _animated(obj):
            found = _actions_of(data)
            if found and data is obj:
                obj.location, obj.rotation_quaternion, obj.rotation_euler = (0, 0, 0), (1, 0, 0, 0), (0, 0, 0)
            made |= found
            if data.animation_data is not None:
                tracks |= {t.name for t in data.animation_data.nla_tracks}
                data.animation_data_clear()
        if obj.type == "MESH" and obj.data.shape_keys is not None:
            for kb in obj.data.shape_keys.key_blocks:
                kb.value = 0.0
    _remove_unused(made - set(actions_before))
    _forget_gltf_tracks(tracks)


def _forget_gltf_tracks(names) -> None:
    """Drop the glTF add-on's animation list entries (its optional "Animation UI", on the first
    scene) that name the removed tracks, unless another object still has a track of that name."""
    listed = getattr(bpy.data.scenes[0], "gltf2_animation_tracks", None) if bpy.data.scenes else None
    if not listed or not names:
        return
    used = {t.name for block in (*bpy.data.objects, *bpy.data.shape_keys)
            if getattr(block, "animation_data", None) is not None for t in block.animation_data.nla_tracks}
    for i in reversed(range(len(listed))):
        if listed[i].name in names and listed[i].name not in used:
            listed.remove(i)


def remove_head(coll) -> None:
    """Delete a head collection, its turntable scene, its objects and the data blocks only they used
    (Actions too)."""
    remove_turntable(coll)
    meshes, materials, images, actions, armatures = set(), set(), set(), set(), set()
    for obj in list(coll.all_objects):
        for data in _animated(obj):
            actions |= _actions_of(data)
        if obj.type == "ARMATURE" and obj.data is not None:
            armatures.add(obj.data)
        if obj.type == "MESH" and obj.data is not None:
            meshes.add(obj.data)
            for mat in obj.data.materials:
                if mat is not None:
                    materials.add(mat)
                    if mat.node_tree is not None:
                        for node in mat.node_tree.nodes:
                            if node.type == "TEX_IMAGE" and node.image is not None:
                                images.add(node.image)
        bpy.data.objects.remove(obj, do_unlink=True)
    for child in list(coll.children):
        remove_head(child)
    bpy.data.collections.remove(coll)
    for block, store in [(m, bpy.data.meshes) for m in meshes] + [(m, bpy.data.materials) for m in materials] + \
                        [(i, bpy.data.images) for i in images] + [(a, bpy.data.armatures) for a in armatures]:
        try:
            if block.users == 0:
                store.remove(block)
        except ReferenceError:
            pass
    _remove_unused(actions)  # an Action with a fake user (an artist's, a "(previous)" one) stays


def import_bundle(context, bundle_dir, replace: bool = True):
    """Import a bundle folder; returns the head's mesh object. Raises ImportFailed (one line)."""
    bundle_dir = Path(bpy.path.abspath(str(bundle_dir))).resolve()
    try:
        manifest = read_bundle(bundle_dir)
    except BundleError as exc:
        raise ImportFailed(f"Not a usable head bundle: {exc}") from None
    except OSError as exc:
        raise ImportFailed(f"{bundle_dir}: cannot read ({exc.strerror or exc})") from None
    glb = bundle_dir / "head.glb"
    if not glb.is_file():
        raise ImportFailed(f"{glb}: missing; the bundle has no mesh")
    name = head_name(manifest, bundle_dir)
    clip = _bundle_animation(bundle_dir, manifest)  # checked before anything changes in the scene
    if replace:
        for coll in find_heads(manifest.job_id, str(bundle_dir)):
            remove_head(coll)

    scene = context.scene
    before, actions_before = set(bpy.data.objects), set(bpy.data.actions)
    try:
        result = bpy.ops.import_scene.gltf(filepath=str(glb))
    except RuntimeError as exc:
        new = [o for o in bpy.data.objects if o not in before]
        strip_gltf_animation(new, actions_before)
        for obj in new:
            bpy.data.objects.remove(obj, do_unlink=True)
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImportFailed(f"{glb.name}: Blender's glTF importer failed ({first[:200]})") from None
    new = [o for o in bpy.data.objects if o not in before]
    strip_gltf_animation(new, actions_before)
    meshes = [o for o in new if o.type == "MESH"]
    if "FINISHED" not in result or len(meshes) != 1:
        for obj in new:
            bpy.data.objects.remove(obj, do_unlink=True)
        raise ImportFailed(f"{glb}: expected one head mesh, the importer made {len(meshes)}")
    head = meshes[0]

    keys = [kb.name for kb in head.data.shape_keys.key_blocks] if head.data.shape_keys else []
    expected = ["Basis"] + list(manifest.shape_keys)
    if keys != expected:
        for obj in new:
            bpy.data.objects.remove(obj, do_unlink=True)
        diff = next((f"#{i}: {a!r} vs head.json {b!r}" for i, (a, b) in enumerate(zip(keys, expected)) if a != b),
                    f"{len(keys)} keys vs {len(expected)} in head.json")
        raise ImportFailed(f"{glb.name}: shape keys do not match head.json ({diff}); re-export the bundle")

    coll = bpy.data.collections.new(f"{COLLECTION_PREFIX}{name}")
    scene.collection.children.link(coll)
    for obj in new:
        for c in list(obj.users_collection):
            c.objects.unlink(obj)
        coll.objects.link(obj)
    root = bpy.data.objects.new(f"{name}{ROOT_SUFFIX}", None)
    root.empty_display_type = "PLAIN_AXES"
    root.empty_display_size = 0.15
    coll.objects.link(root)
    for obj in new:
        if obj.parent is None:
            obj.parent = root
    head.name = f"{name}{MESH_SUFFIX}"
    head.data.name = head.name

    values = {PROP_JOB: manifest.job_id or "", PROP_MODEL: manifest.head_model, PROP_RMSE: _rmse(manifest),
              PROP_BUNDLE: str(bundle_dir)}
    for target in (head, coll, root):
        for key, value in values.items():
            target[key] = value
    ensure_rig(context, head)
    if clip is not None:
        try:
            apply_animation(context, head, clip, name, source=str(clip.source.get("file", "")))
        except AnimationFailed as exc:
            raise ImportFailed(str(exc)) from None
    try:
        import_bundle_gaussians(context, head, bundle_dir)
    except GaussianImportFailed as exc:  # the head stays in the scene; the artist reads why it has no Gaussians
        raise ImportFailed(f"{head.name} imported without its Gaussians: {exc}") from None
    for obj in context.view_layer.objects:
        obj.select_set(False)
    head.select_set(True)
    context.view_layer.objects.active = head
    return head


def _bundle_animation(bundle_dir: Path, manifest):
    """The bundle's AnimationClip (a head built from a video), or None; ImportFailed if it is bad."""
    name = next((n for n, info in manifest.files.items() if info.get("role") == "animation"), None)
    if name is None:
        return None
    try:
        return read_animation(bundle_dir / name)
    except BundleError as exc:
        raise ImportFailed(f"Not a usable animation: {exc}") from None
