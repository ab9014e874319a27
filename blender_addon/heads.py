"""What makes an object part of a HeadRig head, and how to find the head from any of its parts.

An imported head (``importer.import_bundle``) is a collection "HeadRig <name>" holding an EMPTY
``<name>_root``, the mesh ``<name>_head`` (shape keys) parented to it, the eye rig ``<name>_eyes``
(an armature, see ``eyes.py``) beside it, and, with an avatar, the points ``<name>_gaussians``. The collection, the root and the mesh carry the custom properties
below; ``PROP_BUNDLE`` is the one every part has, so it is what marks a HeadRig head.

The home of these names and look-ups: every other module imports them from here, and this module
imports nothing of the add-on, so the add-on's imports stay one-way.
"""

from __future__ import annotations

PROP_JOB = "headrig_job_id"
PROP_MODEL = "headrig_model"
PROP_RMSE = "headrig_landmark_rmse_px"
PROP_BUNDLE = "headrig_bundle"  # the bundle folder; marks every part of a head (collection, root, mesh, rig, Gaussians)
PROP_GAUSSIANS = "headrig_gaussians"  # on the Gaussians object: its gaussians.ply
PROP_TURNTABLE = "headrig_turntable_of"  # on a turntable scene: the name of the head collection it shows
MESH_SUFFIX, ROOT_SUFFIX, GAUSSIANS_SUFFIX, RIG_SUFFIX = "_head", "_root", "_gaussians", "_eyes"
COLLECTION_PREFIX = "HeadRig "


def root_of(obj):
    """The top of the object's parent chain (a HeadRig head's ``<name>_root`` empty)."""
    while obj.parent is not None:
        obj = obj.parent
    return obj


def _is_head_mesh(obj) -> bool:
    return obj.type == "MESH" and obj.data is not None and obj.data.shape_keys is not None and PROP_BUNDLE in obj


def find_head(obj):
    """The head mesh of the HeadRig head ``obj`` (mesh, root or Gaussians) belongs to, else None."""
    if obj is None or PROP_BUNDLE not in obj:
        return None
    if _is_head_mesh(obj):
        return obj
    root = root_of(obj)
    return next((o for o in (root, *root.children_recursive) if _is_head_mesh(o)), None)


def head_label(head) -> str:
    """"d3" for the mesh "d3_head": the name Actions, Gaussians and turntables are called after."""
    return head.name.removesuffix(MESH_SUFFIX)


def head_collection_of(obj):
    """The "HeadRig <name>" collection ``obj`` (head, root, Gaussians) belongs to, else None."""
    if obj is None:
        return None
    return next((c for c in obj.users_collection if PROP_BUNDLE in c), None)
