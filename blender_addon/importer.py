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
  ``headrig_landmark_rmse_px``, ``headrig_bundle`` (the folder).

Re-importing the same head -- same job id, or else the same bundle folder -- with ``replace=True``
(the default) deletes the old collection, its objects, and the meshes, materials and images that only
they used, then imports afresh: one collection per head, never ``.001`` duplicates. With
``replace=False`` a second copy is made beside it (Blender adds ``.001`` to the names).
"""

from __future__ import annotations

import re
from pathlib import Path

import bpy

from .headrig_shared.bundle import BundleError, read_bundle

PROP_JOB, PROP_MODEL, PROP_RMSE, PROP_BUNDLE = "headrig_job_id", "headrig_model", "headrig_landmark_rmse_px", "headrig_bundle"


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


def remove_head(coll) -> None:
    """Delete a head collection, its objects and the data blocks only they used."""
    meshes, materials, images = set(), set(), set()
    for obj in list(coll.all_objects):
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
                        [(i, bpy.data.images) for i in images]:
        try:
            if block.users == 0:
                store.remove(block)
        except ReferenceError:
            pass


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
    if replace:
        for coll in find_heads(manifest.job_id, str(bundle_dir)):
            remove_head(coll)

    scene = context.scene
    before = set(bpy.data.objects)
    try:
        result = bpy.ops.import_scene.gltf(filepath=str(glb))
    except RuntimeError as exc:
        new = [o for o in bpy.data.objects if o not in before]
        for obj in new:
            bpy.data.objects.remove(obj, do_unlink=True)
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImportFailed(f"{glb.name}: Blender's glTF importer failed ({first[:200]})") from None
    new = [o for o in bpy.data.objects if o not in before]
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

    coll = bpy.data.collections.new(f"HeadRig {name}")
    scene.collection.children.link(coll)
    for obj in new:
        for c in list(obj.users_collection):
            c.objects.unlink(obj)
        coll.objects.link(obj)
    root = bpy.data.objects.new(f"{name}_root", None)
    root.empty_display_type = "PLAIN_AXES"
    root.empty_display_size = 0.15
    coll.objects.link(root)
    for obj in new:
        if obj.parent is None:
            obj.parent = root
    head.name = f"{name}_head"
    head.data.name = f"{name}_head"

    values = {PROP_JOB: manifest.job_id or "", PROP_MODEL: manifest.head_model, PROP_RMSE: _rmse(manifest),
              PROP_BUNDLE: str(bundle_dir)}
    for target in (head, coll, root):
        for key, value in values.items():
            target[key] = value
    for obj in context.view_layer.objects:
        obj.select_set(False)
    head.select_set(True)
    context.view_layer.objects.active = head
    return head
