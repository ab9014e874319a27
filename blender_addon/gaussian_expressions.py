"""Expression detail on imported Gaussians: the avatar's baked MLP (``gaussians_expr.bin``) applied
by geometry nodes, weighted by the head's live shape-key values.

The backend bakes, per shape key k, each Gaussian's triangle-local offset change and sRGB colour
change at full weight (``headrig_shared/gaussian_expressions``). Here:

* the deltas become point attributes of the Gaussian mesh: ``xo_<key>`` (offset) and ``xc_<key>``
  (colour), plus ``color_srgb``, the neutral DC colour before clipping (the backend adds colour
  changes there, before its sRGB -> linear step);
* a nodes modifier "HeadRig Gaussian Expressions", first on the object, runs a group with one float
  input per key and stores ``expr_offset`` = sum_k w_k xo_k (which "HeadRig Gaussians" adds to
  ``offset`` before the triangle frame turns it: the deltas move and turn with their triangle) and
  ``color`` = linear(clip(color_srgb + sum_k w_k xc_k)), what the material shows;
* each input is driven by the head's shape key of that name (``w * (1 - m)``: its value, 0 while
  muted; a simple expression, which Blender evaluates without Python, so it works with auto-run
  scripts off), so moving a slider, playing an Action or scrubbing updates the Gaussians with the
  mesh.

A bundle without the file (or a file made for another PLY: its ``ply_sha256`` differs) imports as
before: the Gaussians follow the mesh, with no expression detail.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import bpy
import numpy as np

from .gaussian_nodes import OFFSET_ATTR, Graph, ensure_interface
from .headrig_shared.gaussian_expressions import EXPRESSIONS_FILE, read_expressions

GROUP_NAME = "HeadRig Gaussian Expressions"
SRGB_ATTR = "color_srgb"


def offset_attr(key: str) -> str:
    return f"xo_{key}"


def colour_attr(key: str) -> str:
    return f"xc_{key}"


def find_expressions(ply_path: Path):
    """The bake beside ``ply_path`` made for that very PLY, or (None, why) -- why is "" when there
    is no file. Raises ExpressionFileError for a damaged file."""
    path = Path(ply_path).with_name(EXPRESSIONS_FILE)
    if not path.is_file():
        return None, ""
    expr = read_expressions(path)
    digest = hashlib.sha256()
    with open(ply_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    if digest.hexdigest() != expr.ply_sha256:
        return None, f"{EXPRESSIONS_FILE} belongs to another gaussians.ply; no expression detail"
    return expr, ""


def _set(mesh, name: str, kind: str, values: np.ndarray) -> None:
    attr = mesh.attributes.get(name) or mesh.attributes.new(name, kind, "POINT")
    attr.data.foreach_set("vector", np.ascontiguousarray(values, dtype=np.float32).ravel())


def _build_group(tree, keys: list[str]) -> None:
    """Inputs: Geometry, one float per key; output: Geometry with ``expr_offset`` and ``color``."""
    tree.nodes.clear()
    ensure_interface(tree, lambda t: _interface(t, keys))
    g = Graph(tree)
    group_in = g.node("NodeGroupInput").outputs
    offset = g.node("FunctionNodeInputVector", vector=(0.0, 0.0, 0.0)).outputs[0]
    colour = g.named(SRGB_ATTR, "FLOAT_VECTOR")
    for i, key in enumerate(keys):
        weight = group_in[i + 1]
        # Multiply Add: delta * w + running sum (the float weight broadcasts to a vector)
        offset = g.vmath("MULTIPLY_ADD", g.named(offset_attr(key), "FLOAT_VECTOR"), weight, offset)
        colour = g.vmath("MULTIPLY_ADD", g.named(colour_attr(key), "FLOAT_VECTOR"), weight, colour)
    geometry = g.node("GeometryNodeStoreNamedAttribute",
                      {"Geometry": group_in[0], "Name": OFFSET_ATTR, "Value": offset},
                      data_type="FLOAT_VECTOR", domain="POINT").outputs[0]
    geometry = g.node("GeometryNodeStoreNamedAttribute", {"Geometry": geometry, "Name": "color",
                                                          "Value": _srgb_to_linear(g, colour)},
                      data_type="FLOAT_COLOR", domain="POINT").outputs[0]
    tree.links.new(geometry, g.node("NodeGroupOutput").inputs[0])
    g.layout()


def _interface(tree, keys: list[str]) -> None:
    face = tree.interface
    face.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    panel = face.new_panel("Shape keys", default_closed=True)
    for key in keys:
        sock = face.new_socket(key, in_out="INPUT", socket_type="NodeSocketFloat", parent=panel)
        sock.description = f"Weight of {key}; driven by the head's shape key"
    face.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")


def _srgb_to_linear(g: Graph, srgb):
    """The importer's conversion per channel, after clipping to [0, 1]: c / 12.92 up to 0.04045,
    else ((c + 0.055) / 1.055) ^ 2.4 (Blender attributes and Emission are scene-linear)."""
    parts = g.node("ShaderNodeSeparateXYZ", {0: srgb}).outputs
    out = []
    for c in parts:
        c = g.node("ShaderNodeMath", {0: c, 1: 1.0}, operation="MINIMUM").outputs[0]
        c = g.math("MAXIMUM", c, 0.0)
        low = g.math("DIVIDE", c, 12.92)
        high = g.math("POWER", g.math("DIVIDE", g.math("ADD", c, 0.055), 1.055), 2.4)
        is_low = g.math("LESS_THAN", c, 0.04045)
        out.append(g.node("GeometryNodeSwitch", {"Switch": is_low, "False": high, "True": low},
                          input_type="FLOAT").outputs[0])
    return g.node("ShaderNodeCombineXYZ", dict(enumerate(out))).outputs[0]


def ensure_group(keys: list[str]):
    """The group for this key list (one per list: heads share it), its nodes rebuilt so an old or
    hand-edited copy cannot disagree. A group of another key list is left alone, since changing its
    inputs would reset the modifiers (and drivers) of the heads using it."""
    def inputs(tree) -> list[str]:
        return [i.name for i in tree.interface.items_tree if i.item_type == "SOCKET" and i.in_out == "INPUT"
                and i.socket_type == "NodeSocketFloat"]

    same = [t for t in bpy.data.node_groups if t.bl_idname == "GeometryNodeTree"
            and (t.name == GROUP_NAME or t.name.startswith(GROUP_NAME + ".")) and inputs(t) == list(keys)]
    tree = same[0] if same else bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    _build_group(tree, keys)
    return tree


def attach(obj, head, expr, dc_srgb: np.ndarray) -> dict:
    """Store the bake (``expr.n`` == the mesh's points, checked by the caller) on the Gaussian mesh
    of ``obj`` and add the driven modifier (first in the stack, before "HeadRig Gaussians").
    ``dc_srgb`` [N, 3]: the neutral DC colour, unclipped. Returns {"keys": driven, "missing": bake keys the head has no shape key for (left at 0)}."""
    mesh = obj.data
    shape_keys = head.data.shape_keys
    names = set(shape_keys.key_blocks.keys()) if shape_keys is not None else set()
    keys = [k for k in expr.keys if k in names]  # a key the head lacks stays at weight 0
    _set(mesh, SRGB_ATTR, "FLOAT_VECTOR", dc_srgb)
    for row, key in enumerate(expr.keys):
        _set(mesh, offset_attr(key), "FLOAT_VECTOR", expr.offset[row])
        _set(mesh, colour_attr(key), "FLOAT_VECTOR", expr.colour[row])
    mesh.update()
    tree = ensure_group(list(expr.keys))
    mod = obj.modifiers.get(GROUP_NAME) or obj.modifiers.new(GROUP_NAME, "NODES")
    mod.node_group = tree
    at = list(obj.modifiers).index(mod)
    if at != 0:
        obj.modifiers.move(at, 0)
    sockets = {item.name: item.identifier for item in tree.interface.items_tree
               if item.item_type == "SOCKET" and item.in_out == "INPUT" and item.socket_type == "NodeSocketFloat"}
    for key in keys:
        _drive(obj, mod, sockets[key], shape_keys, key)
    return {"keys": len(keys), "missing": sorted(set(expr.keys) - names)}


def _drive(obj, mod, identifier: str, shape_keys, key: str) -> None:
    """modifier input <- the head's shape-key value, 0 while the key is muted (the mesh ignores it
    then). ``w * (1 - m)`` is a simple expression: Blender evaluates it without Python."""
    curve = obj.driver_add(f'modifiers["{mod.name}"]["{identifier}"]')
    driver = curve.driver
    driver.type = "SCRIPTED"
    for name, prop in (("w", "value"), ("m", "mute")):
        var = driver.variables.new()
        var.name, var.type = name, "SINGLE_PROP"
        target = var.targets[0]
        target.id_type = "KEY"
        target.id = shape_keys
        target.data_path = f'key_blocks["{key}"].{prop}'
    driver.expression = "w * (1 - m)"
