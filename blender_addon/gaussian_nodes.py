"""The geometry-nodes group and the material that draw a head's Gaussians ("HeadRig Gaussians").

The group runs on the Gaussian object (one point per Gaussian, see ``gaussians.py``) and re-derives
every Gaussian from the head mesh as it is *evaluated* (shape keys, Actions, modifiers), with the
formulas of ``backend/avatar/binding.py``:

    p0, p1, p2 = head positions at the point's ``v0``, ``v1``, ``v2``   (Object Info + Sample Index)
    e1 = normalize(p1 - p0);  n = normalize((p1 - p0) x (p2 - p0));  e2 = n x e1;  s = sqrt(area)
    o = offset + expr_offset  (the baked expression detail, when a modifier before this one wrote it)
    mean = bary . (p0, p1, p2) + s (e1 o.x + e2 o.y + n o.z)
    R = R_tri R_local  (Axes to Rotation: Z = n, X = e1;  Rotate Rotation in LOCAL space by ``lrot``)
    scale = s exp(lscale)

and instances a flat disc (a surfel, in the instance's XY plane, the Gaussian's third axis as its
normal) or an icosphere per point. The disc's radius is ``Footprint`` sigmas and it carries
``hr_sigma`` (distance from its centre in sigmas) so the material fades it like a Gaussian.
The Object Info node works in RELATIVE space: the head's geometry is brought into the Gaussian
object's space, so both may be parented or moved independently and the points stay on the face.

The material reads the instance attributes ``color`` (scene-linear) and ``opacity`` (Attribute
node, type INSTANCER) and mixes Emission with Transparent: Gaussians carry their lighting baked
in, so they must not be shaded again. It works in Eevee (dithered) and Cycles.
"""

from __future__ import annotations

import bpy

GROUP_NAME = "HeadRig Gaussians"
MATERIAL_NAME = "HeadRig Gaussians"
SIGMA_ATTR = "hr_sigma"
# The expression detail's local offset change (``gaussian_expressions``: a modifier before this one
# writes it from the head's shape-key values); absent on Gaussians without a bake, where the Named
# Attribute node reads zero, so the no-expression path needs no switch.
OFFSET_ATTR = "expr_offset"
DISC_VERTICES = 12  # enough for a round footprint when a Gaussian covers a few pixels


class Graph:
    """Builds nodes and links in one tree; inputs are set by socket index or name, to a value or a socket."""

    def __init__(self, tree):
        self.tree = tree

    def node(self, kind: str, inputs: dict | None = None, **props):
        node = self.tree.nodes.new(kind)
        for key, value in props.items():
            setattr(node, key, value)
        for key, value in (inputs or {}).items():
            socket = node.inputs[key]
            if isinstance(value, bpy.types.NodeSocket):
                self.tree.links.new(value, socket)
            else:
                socket.default_value = value
        return node

    def vmath(self, op: str, *vectors, scale=None, out: int = 0):
        inputs = dict(enumerate(vectors))
        if scale is not None:
            inputs[3] = scale  # "Scale" is the fourth input of Vector Math
        return self.node("ShaderNodeVectorMath", inputs, operation=op).outputs[out]

    def math(self, op: str, *values):
        return self.node("ShaderNodeMath", dict(enumerate(values)), operation=op).outputs[0]

    def named(self, name: str, data_type: str):
        return self.node("GeometryNodeInputNamedAttribute", {"Name": name}, data_type=data_type).outputs["Attribute"]

    def layout(self) -> None:
        """Columns by link depth, so an artist opening the group sees it flow left to right."""
        depth = {n.name: 0 for n in self.tree.nodes}
        for _ in range(len(self.tree.nodes)):
            changed = False
            for link in self.tree.links:
                want = depth[link.from_node.name] + 1
                if depth[link.to_node.name] < want:
                    depth[link.to_node.name], changed = want, True
            if not changed:
                break
        rows: dict[int, int] = {}
        for node in self.tree.nodes:
            col = depth[node.name]
            node.location = (220.0 * col, -160.0 * rows.get(col, 0))
            rows[col] = rows.get(col, 0) + 1


def ensure_interface(tree, build) -> None:
    """Run ``build(tree)`` on a cleared interface unless the group already has the sockets it makes
    (names, directions, types, in order). Clearing an interface resets the inputs of every modifier
    using the group: re-importing one head's Gaussians would unbind every other head's."""
    def sockets(t) -> list:
        found = [(i.in_out, i.name, i.socket_type) for i in t.interface.items_tree if i.item_type == "SOCKET"]
        return sorted(found, key=lambda s: s[0])  # stable: inputs keep their order

    scratch = bpy.data.node_groups.new(".headrig interface check", tree.bl_idname)
    try:
        build(scratch)
        if sockets(scratch) == sockets(tree):
            return
    finally:
        bpy.data.node_groups.remove(scratch)
    tree.interface.clear()
    build(tree)


def _interface(tree) -> None:
    face = tree.interface
    face.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    head = face.new_socket("Head", in_out="INPUT", socket_type="NodeSocketObject")
    head.description = "The head mesh the Gaussians are bound to"
    foot = face.new_socket("Footprint", in_out="INPUT", socket_type="NodeSocketFloat")
    foot.default_value, foot.min_value, foot.max_value = 2.0, 0.1, 10.0
    foot.description = "Disc radius in standard deviations (2: the visible extent of a Gaussian)"
    ell = face.new_socket("Ellipsoids", in_out="INPUT", socket_type="NodeSocketBool")
    ell.description = "Draw solid ellipsoids (Footprint/2 sigmas) instead of flat discs"
    face.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")


def _corners(g: Graph, head_geometry):
    """Evaluated head positions at the point attributes v0, v1, v2."""
    position = g.node("GeometryNodeInputPosition").outputs[0]
    return [g.node("GeometryNodeSampleIndex", {"Geometry": head_geometry, "Value": position,
                                               "Index": g.named(f"v{i}", "INT")},
                   data_type="FLOAT_VECTOR", domain="POINT").outputs[0] for i in range(3)]


def _frame(g: Graph, p0, p1, p2):
    """(e1, e2, n, s) of the triangle, as binding.triangle_frames computes them."""
    edge1, edge2 = g.vmath("SUBTRACT", p1, p0), g.vmath("SUBTRACT", p2, p0)
    cross = g.vmath("CROSS_PRODUCT", edge1, edge2)
    n = g.vmath("NORMALIZE", cross)
    e1 = g.vmath("NORMALIZE", edge1)
    e2 = g.vmath("CROSS_PRODUCT", n, e1)
    area2 = g.vmath("LENGTH", cross, out=1)
    s = g.math("SQRT", g.math("MULTIPLY", area2, 0.5))
    return e1, e2, n, s


def _weighted(g: Graph, weights, vectors):
    """sum_i weights.i * vectors[i] for a vector field of weights (bary or offset)."""
    parts = g.node("ShaderNodeSeparateXYZ", {0: weights}).outputs
    total = None
    for weight, vector in zip(parts, vectors):
        term = g.vmath("SCALE", vector, scale=weight)
        total = term if total is None else g.vmath("ADD", total, term)
    return total


def _exp(g: Graph, vector):
    parts = g.node("ShaderNodeSeparateXYZ", {0: vector}).outputs
    return g.node("ShaderNodeCombineXYZ", {i: g.math("EXPONENT", parts[i]) for i in range(3)}).outputs[0]


def _shapes(g: Graph, footprint, ellipsoids, material):
    """The instance: a fan disc of radius Footprint (with hr_sigma), or an icosphere of radius Footprint/2."""
    disc = g.node("GeometryNodeMeshCircle", {"Vertices": DISC_VERTICES, "Radius": footprint},
                  fill_type="TRIANGLE_FAN").outputs[0]
    sigma = g.vmath("LENGTH", g.node("GeometryNodeInputPosition").outputs[0], out=1)
    disc = g.node("GeometryNodeStoreNamedAttribute", {"Geometry": disc, "Name": SIGMA_ATTR, "Value": sigma},
                  data_type="FLOAT", domain="POINT").outputs[0]
    ball = g.node("GeometryNodeMeshIcoSphere", {"Radius": g.math("MULTIPLY", footprint, 0.5),
                                                "Subdivisions": 2}).outputs[0]
    shape = g.node("GeometryNodeSwitch", {"Switch": ellipsoids, "False": disc, "True": ball},
                   input_type="GEOMETRY").outputs[0]
    return g.node("GeometryNodeSetMaterial", {"Geometry": shape, "Material": material}).outputs[0]


def build_group(tree, material) -> None:
    """(Re)build the group's nodes from scratch: the same graph every time (the interface only
    when it differs, ``ensure_interface``)."""
    tree.nodes.clear()
    ensure_interface(tree, _interface)
    g = Graph(tree)
    group_in = g.node("NodeGroupInput").outputs
    head = g.node("GeometryNodeObjectInfo", {"Object": group_in["Head"]}, transform_space="RELATIVE")
    p0, p1, p2 = _corners(g, head.outputs["Geometry"])
    e1, e2, n, s = _frame(g, p0, p1, p2)
    origin = _weighted(g, g.named("bary", "FLOAT_VECTOR"), (p0, p1, p2))
    offset = g.vmath("ADD", g.named("offset", "FLOAT_VECTOR"), g.named(OFFSET_ATTR, "FLOAT_VECTOR"))
    local = _weighted(g, offset, (e1, e2, n))
    mean = g.vmath("ADD", origin, g.vmath("SCALE", local, scale=s))
    tri_rot = g.node("FunctionNodeAxesToRotation", {"Primary Axis": n, "Secondary Axis": e1},
                     primary_axis="Z", secondary_axis="X").outputs[0]
    rotation = g.node("FunctionNodeRotateRotation", {"Rotation": tri_rot,
                                                     "Rotate By": g.named("lrot", "QUATERNION")},
                      rotation_space="LOCAL").outputs[0]
    scale = g.vmath("SCALE", _exp(g, g.named("lscale", "FLOAT_VECTOR")), scale=s)
    points = g.node("GeometryNodeSetPosition", {"Geometry": group_in["Geometry"], "Position": mean}).outputs[0]
    shape = _shapes(g, group_in["Footprint"], group_in["Ellipsoids"], material)
    instances = g.node("GeometryNodeInstanceOnPoints", {"Points": points, "Instance": shape,
                                                        "Rotation": rotation, "Scale": scale}).outputs[0]
    tree.links.new(instances, g.node("NodeGroupOutput").inputs[0])
    g.layout()


def build_material(mat) -> None:
    """Emission(colour) over Transparent, mixed by opacity * exp(-sigma^2 / 2)."""
    if bpy.app.version < (5, 0, 0):  # 5.0 materials always use nodes (the flag is deprecated)
        mat.use_nodes = True
    tree = mat.node_tree
    tree.nodes.clear()
    g = Graph(tree)
    colour = g.node("ShaderNodeAttribute", attribute_type="INSTANCER", attribute_name="color").outputs["Color"]
    opacity = g.node("ShaderNodeAttribute", attribute_type="INSTANCER", attribute_name="opacity").outputs["Fac"]
    sigma = g.node("ShaderNodeAttribute", attribute_type="GEOMETRY", attribute_name=SIGMA_ATTR).outputs["Fac"]
    falloff = g.math("EXPONENT", g.math("MULTIPLY", g.math("MULTIPLY", sigma, sigma), -0.5))
    alpha = g.math("MULTIPLY", opacity, falloff)
    emission = g.node("ShaderNodeEmission", {"Color": colour, "Strength": 1.0}).outputs[0]
    clear = g.node("ShaderNodeBsdfTransparent").outputs[0]
    mix = g.node("ShaderNodeMixShader", {0: alpha, 1: clear, 2: emission}).outputs[0]
    tree.links.new(mix, g.node("ShaderNodeOutputMaterial").inputs["Surface"])
    g.layout()
    mat.use_backface_culling = False
    if hasattr(mat, "surface_render_method"):  # Eevee Next (4.2+): dithered needs no sorting
        mat.surface_render_method = "DITHERED"
    mat.diffuse_color = (0.8, 0.6, 0.5, 1.0)  # what Workbench's material colour shows


def ensure_material():
    mat = bpy.data.materials.get(MATERIAL_NAME) or bpy.data.materials.new(MATERIAL_NAME)
    build_material(mat)
    return mat


def ensure_group():
    """The shared node group, rebuilt so an old or hand-edited copy cannot disagree with this code."""
    tree = bpy.data.node_groups.get(GROUP_NAME)
    if tree is None or tree.bl_idname != "GeometryNodeTree":
        tree = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    build_group(tree, ensure_material())
    return tree


def add_modifier(obj, head, footprint: float = 2.0, ellipsoids: bool = False):
    """A "HeadRig Gaussians" nodes modifier on ``obj`` bound to ``head``; returns it."""
    tree = ensure_group()
    mod = obj.modifiers.get(GROUP_NAME) or obj.modifiers.new(GROUP_NAME, "NODES")
    mod.node_group = tree
    ids = {item.name: item.identifier for item in tree.interface.items_tree if item.item_type == "SOCKET"
           and item.in_out == "INPUT"}
    mod[ids["Head"]] = head
    mod[ids["Footprint"]] = float(footprint)
    mod[ids["Ellipsoids"]] = bool(ellipsoids)
    return mod
