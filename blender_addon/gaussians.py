"""Import a bundle's ``gaussians.ply`` as Gaussians that ride on the imported head mesh.

The PLY (``backend/avatar/ply.py``) binds every Gaussian to a triangle of the head MODEL (``tri``,
``bary_0..2``, ``offset_0..2``, ``lrot_0..3``, ``lscale_0..2``) and gives its rest mean ``x y z``
in head.glb's glTF frame. Blender's glTF importer splits vertices along uv seams and material
borders, so model vertex ids mean nothing in Blender; triangles are another matter: head.glb
writes one primitive per material with the model's triangles in order and corner order kept, the
model's triangles are sorted by material, and the importer keeps both orders, so Blender triangle
``tri`` is the model's triangle ``tri`` (checked on a real bundle: identical corners).

That is trusted only where it is confirmed: each Gaussian's mean is rebuilt from the candidate
triangle's Basis positions with the binding formulas and compared with the PLY's mean. Gaussians
that disagree (a mesh re-ordered by an edit, another exporter) are searched among the triangles
nearest their mean (``mathutils.kdtree``), in all three corner rotations. The three Blender vertex
ids found are stored per point (``v0 v1 v2``) with the binding, colour and opacity, on a mesh of
loose vertices "<name>_gaussians" that ``gaussian_nodes`` turns into oriented discs.

Axes: the PLY's means are in the axes its header names (``shared/splat_axes``: OpenCV axes, as splat
tools expect; glTF in older files), turned to glTF first; glTF (x, y, z) is Blender (x, -z, y). Both
are proper rotations, so triangle-local data (offset, local rotation, log scale) needs no
conversion; only the rest means do.

Expression detail: a ``gaussians_expr.bin`` beside the PLY, made for it (its sha256), adds the
avatar's baked MLP per shape key (``gaussian_expressions``: attributes and a driven modifier).
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from mathutils import kdtree

from . import gaussian_expressions, gaussian_nodes
from .headrig_shared.gaussian_expressions import ExpressionFileError
from .headrig_shared.splat_axes import gltf_from_ply
from .heads import GAUSSIANS_SUFFIX, PROP_BUNDLE, PROP_GAUSSIANS, PROP_JOB, PROP_MODEL, find_head, head_label

SH_C0 = 0.28209479177387814  # the degree-0 spherical harmonic: colour = 0.5 + SH_C0 * f_dc
SEARCH_K = 16  # triangles tried per Gaussian whose own triangle disagrees
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_BINDING = ["tri"] + [f"{g}_{i}" for g, w in (("bary", 3), ("offset", 3), ("lrot", 4), ("lscale", 3))
                      for i in range(w)]
_REQUIRED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"] + _BINDING


class GaussianImportFailed(Exception):
    """One line for the artist, naming the file."""


# ---- the PLY --------------------------------------------------------------------------------------

def _header(fh, name: str, comments: list | None = None) -> tuple[str, list]:
    """(format, [(element, count, [(property, dtype)])]) from an open PLY; raises on anything odd.
    The header's comment lines are appended to ``comments`` (they name the PLY's axes)."""
    if fh.readline().strip() != b"ply":
        raise GaussianImportFailed(f"{name}: not a PLY file")
    fmt, elements = "", []
    for _ in range(10000):  # a header is a few hundred lines; a missing end_header is an error, not a hang
        words = fh.readline().decode("ascii", "replace").split()
        if words and words[0] == "comment" and comments is not None:
            comments.append(" ".join(words[1:]))
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            return fmt, elements
        if words[0] == "format" and len(words) == 3:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and len(words) == 3 and elements and words[1] in _PLY_TYPES:
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        elif words[0] == "property" and words[1:2] == ["list"]:
            raise GaussianImportFailed(f"{name}: list properties are not supported ({' '.join(words)})")
        else:
            raise GaussianImportFailed(f"{name}: bad header line {' '.join(words)[:80]!r}")
    raise GaussianImportFailed(f"{name}: the header has no end_header")


def read_ply(path, comments: list | None = None) -> np.ndarray:
    """The ``vertex`` rows of a binary little-endian PLY as a numpy structured array (header
    comments appended to ``comments``)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            fmt, elements = _header(fh, path.name, comments)
            data = fh.read()
    except OSError as exc:
        raise GaussianImportFailed(f"{path}: cannot read ({exc.strerror or exc})") from None
    if fmt != "binary_little_endian":
        raise GaussianImportFailed(f"{path.name}: format {fmt or 'missing'}; HeadRig reads binary_little_endian")
    start = 0
    for element, count, props in elements:
        dtype = np.dtype([(p, "<" + t) for p, t in props])
        if len(data) - start < count * dtype.itemsize:
            raise GaussianImportFailed(f"{path.name}: truncated (element {element!r} needs "
                                       f"{count * dtype.itemsize} bytes, {len(data) - start} left)")
        if element == "vertex":
            return np.frombuffer(data, dtype, count, start).copy()
        start += count * dtype.itemsize
    raise GaussianImportFailed(f"{path.name}: no 'vertex' element")


def _columns(rows: np.ndarray, names: list[str], name: str) -> np.ndarray:
    """[N, len(names)] float64, every column present and finite."""
    missing = [n for n in names if n not in (rows.dtype.names or ())]
    if set(missing) & set(_BINDING):
        raise GaussianImportFailed(f"{name}: has no binding to the mesh (missing {', '.join(missing[:6])}); "
                                   "export it from HeadRig")
    if missing:
        raise GaussianImportFailed(f"{name}: not a 3DGS file (missing {', '.join(missing[:6])})")
    out = np.stack([rows[n].astype(np.float64) for n in names], axis=1)
    if not np.isfinite(out).all():
        raise GaussianImportFailed(f"{name}: non-finite values in {names}")
    return out


def load_binding(path) -> dict:
    """The PLY as the arrays the importer needs (Blender axes for the means)."""
    path = Path(path)
    comments: list[str] = []
    rows = read_ply(path, comments)
    col = lambda *names: _columns(rows, list(names), path.name)
    if len(rows) == 0:
        raise GaussianImportFailed(f"{path.name}: holds no Gaussians")
    col(*_REQUIRED)
    tri = rows["tri"]
    if not np.issubdtype(tri.dtype, np.integer) or (tri < 0).any():
        raise GaussianImportFailed(f"{path.name}: 'tri' must hold non-negative integer triangle indices")
    # The PLY's axes (OpenCV since HeadRig stores splat-tool axes, glTF in older files) -> glTF.
    x, y, z = (col("x", "y", "z") @ np.array(gltf_from_ply(comments)).T).T
    lrot = col("lrot_0", "lrot_1", "lrot_2", "lrot_3")
    lrot /= np.maximum(np.linalg.norm(lrot, axis=1, keepdims=True), 1e-12)
    dc = 0.5 + SH_C0 * col("f_dc_0", "f_dc_1", "f_dc_2")  # unclipped: expression colour changes add here
    srgb = np.clip(dc, 0.0, 1.0)
    # 3DGS trains on sRGB-encoded pixels; Blender attributes and Emission are scene-linear.
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return {"tri": tri.astype(np.int64), "mean": np.stack([x, -z, y], axis=1),
            "bary": col("bary_0", "bary_1", "bary_2"), "offset": col("offset_0", "offset_1", "offset_2"),
            "lrot": lrot, "lscale": col("lscale_0", "lscale_1", "lscale_2"),
            "color": np.concatenate([linear, np.ones((len(rows), 1))], axis=1),
            "opacity": 1.0 / (1.0 + np.exp(-col("opacity")[:, 0])), "dc": dc}


# ---- triangles --------------------------------------------------------------------------------------

def _rest_mesh(head) -> tuple[np.ndarray, np.ndarray]:
    """(Basis positions [V, 3], triangles [T, 3] Blender vertex ids in corner order)."""
    mesh = head.data
    keys = mesh.shape_keys
    source = keys.reference_key.data if keys is not None else mesh.vertices
    co = np.empty(len(source) * 3)
    source.foreach_get("co", co)
    mesh.calc_loop_triangles()  # for a triangle mesh: polygon order, loop (corner) order
    tris = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
    mesh.loop_triangles.foreach_get("vertices", tris)
    return co.reshape(-1, 3), tris.reshape(-1, 3)


def rebuild_means(corners: np.ndarray, bary: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """binding.deform's means for corner positions [..., 3, 3] (numpy, float64)."""
    v0, v1, v2 = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    edge1 = v1 - v0
    cross = np.cross(edge1, v2 - v0)
    area2 = np.maximum(np.linalg.norm(cross, axis=-1, keepdims=True), 1e-12)
    n = cross / area2
    e1 = edge1 / np.maximum(np.linalg.norm(edge1, axis=-1, keepdims=True), 1e-12)
    e2 = np.cross(n, e1)
    origin = (corners * bary[..., None]).sum(-2)
    local = e1 * offset[..., :1] + e2 * offset[..., 1:2] + n * offset[..., 2:]
    return origin + np.sqrt(area2 / 2) * local


def _tolerance(corners: np.ndarray) -> np.ndarray:
    """0.1 mm plus 5 % of the triangle's size: float32 noise passes, a neighbouring triangle does not."""
    cross = np.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :])
    return 1e-4 + 0.05 * np.sqrt(np.linalg.norm(cross, axis=-1) / 2)


def _search(co, tris, g: dict, todo: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For Gaussians ``todo``: (best corner ids [M, 3], error [M]) over the SEARCH_K nearest triangles."""
    centres = co[tris].mean(axis=1)
    tree = kdtree.KDTree(len(centres))
    for i, c in enumerate(centres):
        tree.insert(c, i)
    tree.balance()
    k = min(SEARCH_K, len(tris))
    found = np.array([[hit[1] for hit in tree.find_n(g["mean"][i], k)] for i in todo], dtype=np.int64)
    rotations = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    best_ids, best_err = np.zeros((len(todo), 3), np.int64), np.full(len(todo), np.inf)
    for s in range(0, len(todo), chunk):
        idx = todo[s:s + chunk]
        cand = tris[found[s:s + chunk]][:, :, rotations]  # [m, k, 3 rotations, 3 corners]
        means = rebuild_means(co[cand], g["bary"][idx, None, None], g["offset"][idx, None, None])
        err = np.linalg.norm(means - g["mean"][idx, None, None], axis=-1).reshape(len(idx), -1)
        pick = err.argmin(axis=1)
        best_ids[s:s + chunk] = cand.reshape(len(idx), -1, 3)[np.arange(len(idx)), pick]
        best_err[s:s + chunk] = err[np.arange(len(idx)), pick]
    return best_ids, best_err


def resolve_corners(head, g: dict) -> tuple[np.ndarray, dict]:
    """Blender vertex ids [N, 3] of each Gaussian's triangle, and counts: direct, searched, off."""
    co, tris = _rest_mesh(head)
    n = len(g["tri"])
    ids = np.zeros((n, 3), np.int64)
    inside = g["tri"] < len(tris)
    ids[inside] = tris[g["tri"][inside]]
    err = np.full(n, np.inf)
    err[inside] = np.linalg.norm(rebuild_means(co[ids[inside]], g["bary"][inside], g["offset"][inside])
                                 - g["mean"][inside], axis=1)
    ok = err <= _tolerance(co[ids])
    todo = np.nonzero(~ok)[0]
    if len(todo):
        found, found_err = _search(co, tris, g, todo)
        better = found_err < err[todo]
        ids[todo[better]], err[todo[better]] = found[better], found_err[better]
    off = ~(err <= _tolerance(co[ids]))
    stats = {"direct": int(ok.sum()), "searched": int(len(todo) - off.sum()), "off": int(off.sum()),
             "worst_mm": float(1000 * err[off].max()) if off.any() else 0.0}
    return ids, stats


# ---- the object -----------------------------------------------------------------------------------

def _set(mesh, name: str, kind: str, values: np.ndarray) -> None:
    field = {"FLOAT_VECTOR": "vector", "FLOAT_COLOR": "color"}.get(kind, "value")
    attr = mesh.attributes.new(name, kind, "POINT")
    dtype = np.int32 if kind == "INT" else np.float32
    attr.data.foreach_set(field, np.ascontiguousarray(values, dtype=dtype).ravel())


def _points_mesh(name: str, g: dict, ids: np.ndarray):
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(ids))
    mesh.vertices.foreach_set("co", g["mean"].astype(np.float32).ravel())  # rest means: a fallback view
    for i in range(3):
        _set(mesh, f"v{i}", "INT", ids[:, i])
    for key in ("bary", "offset", "lscale"):
        _set(mesh, key, "FLOAT_VECTOR", g[key])
    _set(mesh, "lrot", "QUATERNION", g["lrot"])
    _set(mesh, "color", "FLOAT_COLOR", g["color"])
    _set(mesh, "opacity", "FLOAT", g["opacity"])
    mesh.update()
    return mesh


def _remove_old(name: str) -> None:
    old = bpy.data.objects.get(name)
    if old is not None and old.type == "MESH":
        mesh = old.data
        bpy.data.objects.remove(old, do_unlink=True)
        if mesh.users == 0:
            bpy.data.meshes.remove(mesh)


def import_gaussians(context, head_obj, ply_path, footprint: float = 2.0, ellipsoids: bool = False):
    """Create "<name>_gaussians" beside ``head_obj`` (same collections, parent and transform), with
    the expression detail of a ``gaussians_expr.bin`` made for this PLY beside it (``gaussian_expressions``).

    Raises GaussianImportFailed (one line) when the file is unusable or its Gaussians do not sit on
    this head (more than 1 % off their triangles: a PLY made for another head)."""
    path = Path(bpy.path.abspath(str(ply_path)))
    if head_obj is None or head_obj.type != "MESH":
        raise GaussianImportFailed("Gaussians need a head mesh to ride on")
    g = load_binding(path)
    try:
        expr, why = gaussian_expressions.find_expressions(path)
    except ExpressionFileError as exc:
        raise GaussianImportFailed(str(exc)) from None
    if expr is not None and expr.n != len(g["tri"]):
        raise GaussianImportFailed(f"{path.name}: {len(g['tri'])} Gaussians, its expression bake {expr.n}")
    ids, stats = resolve_corners(head_obj, g)
    if stats["off"] > 0.01 * len(ids):
        raise GaussianImportFailed(f"{path.name}: {stats['off']} of {len(ids)} Gaussians are off {head_obj.name}'s "
                                   f"surface (up to {stats['worst_mm']:.1f} mm); it was made for another head")
    name = f"{head_label(head_obj)}{GAUSSIANS_SUFFIX}"
    _remove_old(name)
    obj = bpy.data.objects.new(name, _points_mesh(name, g, ids))
    for coll in head_obj.users_collection or [context.scene.collection]:
        coll.objects.link(obj)
    obj.parent = head_obj.parent
    obj.matrix_parent_inverse = head_obj.matrix_parent_inverse.copy()
    obj.matrix_basis = head_obj.matrix_basis.copy()
    obj.visible_shadow = False  # Gaussians carry their lighting; they should not darken the mesh
    for key in (PROP_JOB, PROP_MODEL, PROP_BUNDLE):
        if key in head_obj:
            obj[key] = head_obj[key]
    obj[PROP_GAUSSIANS] = str(path)
    obj["headrig_gaussians_stats"] = stats
    if expr is not None:
        done = gaussian_expressions.attach(obj, head_obj, expr, g["dc"])
        obj["headrig_expression_keys"] = done["keys"]
        why = f"no shape key for {', '.join(done['missing'])}" if done["missing"] else ""
    obj["headrig_expression_note"] = why
    gaussian_nodes.add_modifier(obj, head_obj, footprint, ellipsoids)
    return obj


def import_bundle_gaussians(context, head_obj, bundle_dir):
    """After a bundle import: its gaussians.ply on the head, or None when the bundle has none."""
    ply = Path(bundle_dir) / "gaussians.ply"
    return import_gaussians(context, head_obj, ply) if ply.is_file() else None


class HEADRIG_OT_import_gaussians(bpy.types.Operator):
    """Bind the Gaussians of a gaussians.ply to the active HeadRig head (they follow its shape keys)"""

    bl_idname = "headrig.import_gaussians"
    bl_label = "Import Gaussians"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_glob: bpy.props.StringProperty(default="*.ply;*.PLY", options={"HIDDEN"})
    ellipsoids: bpy.props.BoolProperty(name="Ellipsoids", description="Solid ellipsoids instead of flat discs")

    @classmethod
    def poll(cls, context):
        if find_head(context.active_object) is None:
            cls.poll_message_set("Select a HeadRig head (its mesh or root) first")
            return False
        return True

    def invoke(self, context, event):
        bundle = find_head(context.active_object).get(PROP_BUNDLE, "")
        self.filepath = str(Path(bundle) / "gaussians.ply") if bundle else ""
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        head = find_head(context.active_object)
        try:
            obj = import_gaussians(context, head, self.filepath, ellipsoids=self.ellipsoids)
        except GaussianImportFailed as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        stats = obj["headrig_gaussians_stats"]
        keys = obj.get("headrig_expression_keys")
        detail = obj.get("headrig_expression_note") or (f"expression detail on {keys} shape keys" if keys
                                                         else "no expression bake")
        self.report({"INFO"}, f"{obj.name}: {len(obj.data.vertices):,} Gaussians on {head.name} "
                              f"({stats['searched']} re-bound by position, {stats['off']} off the surface; {detail})")
        return {"FINISHED"}


CLASSES = (HEADRIG_OT_import_gaussians,)
