"""The Blender Cycles scene of the synthetic benchmark and the compositing of its renders.

``BlenderRenderer`` builds one scene with the ICT mesh, its materials (atlas-textured skin, eyes,
mouth), a camera, key and fill area lights and a world, and re-poses, re-lights and re-textures
it per sample; ``composite`` puts a transparent render over the sample's background.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from backend.headmodel.asset import HeadModelAsset
from backend.texture_layout import ATLAS_TILES, SKIN_MATERIALS
from bench.synthetic_sampling import SENSOR_WIDTH_MM, SampleSpec, intrinsics

HIDDEN_MATERIALS = ("M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion", "M_EyeLashes")
# UV radius (from the tile centre) of the eye parts, measured on ICT's eyeball UVs: the iris
# shell's pupil cap ends near 0.10 and its iris ring near 0.36; the outer (sclera) shell is clear
# cornea out to about 0.105 (the same 21 degrees from the eye axis).
PUPIL_UV_RADIUS = 0.10
IRIS_UV_RADIUS = 0.36
CORNEA_UV_RADIUS = 0.106


# ----------------------------------------------------------------------------- Blender


@contextlib.contextmanager
def _quiet_stdout():
    """Silence Cycles' progress lines (written by C code straight to file descriptor 1)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


class BlenderRenderer:
    """One Cycles scene with the ICT mesh; ``render`` re-poses, re-lights and re-textures it.

    The camera sits at the world origin looking down -Z (Blender's camera axes), so a point in
    OpenCV camera coordinates (cm) goes to world metres as diag(1, -1, -1) * 0.01.
    """

    def __init__(self, asset: HeadModelAsset, samples: int = 24, denoise: bool = True, threads: int = 0):
        import bpy

        self.bpy = bpy
        self.asset = asset
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        self.scene = scene
        scene.render.engine = "CYCLES"
        cyc = scene.cycles
        cyc.device = "CPU"
        cyc.samples = samples
        cyc.use_adaptive_sampling = True
        cyc.adaptive_threshold = 0.02
        cyc.use_denoising = denoise
        if denoise:  # OIDN with albedo and normal guides; the "accurate" prefilter doubles the time
            cyc.denoiser = "OPENIMAGEDENOISE"
            cyc.denoising_input_passes = "RGB_ALBEDO_NORMAL"
            cyc.denoising_prefilter = "FAST"
        cyc.max_bounces = 4
        cyc.diffuse_bounces = 2
        cyc.glossy_bounces = 2
        cyc.transmission_bounces = 4
        cyc.transparent_max_bounces = 8
        cyc.caustics_reflective = cyc.caustics_refractive = False
        cyc.sample_clamp_indirect = 10.0
        if threads:
            scene.render.threads_mode = "FIXED"
            scene.render.threads = threads
        scene.render.film_transparent = True
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGBA"
        scene.render.image_settings.color_depth = "8"
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.view_settings.exposure = 0.0
        scene.render.use_persistent_data = True

        cam_data = bpy.data.cameras.new("camera")
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.sensor_width = SENSOR_WIDTH_MM
        cam_data.shift_x = cam_data.shift_y = 0.0
        cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
        self.camera = bpy.data.objects.new("camera", cam_data)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera

        self.key = self._area_light("key")
        self.fill = self._area_light("fill")
        world = bpy.data.worlds.new("world")
        world.use_nodes = True
        scene.world = world
        self.world_bg = world.node_tree.nodes["Background"]

        self._build_mesh()
        self._build_materials()
        self._texture_images: dict[str, object] = {}

    def _area_light(self, name: str):
        light = self.bpy.data.lights.new(name, "AREA")
        light.shape = "DISK"
        obj = self.bpy.data.objects.new(name, light)
        self.scene.collection.objects.link(obj)
        return obj

    def _build_mesh(self) -> None:
        bpy, asset = self.bpy, self.asset
        names = asset.material_names
        hidden = {names.index(n) for n in HIDDEN_MATERIALS if n in names}
        sizes = asset.face_sizes.astype(int)
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        keep = np.array([m not in hidden for m in asset.face_material])
        # Sockets are back-head material in ICT but should not carry the (skin or hair) texture.
        mouth = asset.part_mask("mouth_socket")
        eyes = asset.part_mask("eye_sockets")
        slots = list(names) + ["X_MouthInside", "X_EyeSocket"]
        polys, loop_uv, mat_idx = [], [], []
        for f in np.nonzero(keep)[0]:
            corners = asset.face_vertices[starts[f] : starts[f] + sizes[f]]
            polys.append(corners.tolist())
            loop_uv.append(asset.face_uvs[starts[f] : starts[f] + sizes[f]])
            m = int(asset.face_material[f])
            if names[m] == "M_BackHead" and mouth[corners].all():
                m = len(names)
            elif names[m] == "M_BackHead" and eyes[corners].all():
                m = len(names) + 1
            mat_idx.append(m)
        mesh = bpy.data.meshes.new("head")
        mesh.from_pydata(asset.neutral.astype(float).tolist(), [], polys)
        loop_uv = np.concatenate(loop_uv)
        uv = asset.uvs[loop_uv].astype(np.float64)
        raw = mesh.uv_layers.new(name="UVMap")
        raw.uv.foreach_set("vector", (uv - np.floor(uv)).astype(np.float32).ravel())
        atlas = uv.copy()
        loop_mat = np.repeat(np.array(mat_idx), [len(p) for p in polys])
        skin = np.isin(loop_mat, [names.index(n) for n in SKIN_MATERIALS])
        atlas[skin, 0] = uv[skin, 0] / ATLAS_TILES
        atlas[~skin] = uv[~skin] - np.floor(uv[~skin])
        at = mesh.uv_layers.new(name="atlas")
        at.uv.foreach_set("vector", atlas.astype(np.float32).ravel())
        mesh.polygons.foreach_set("material_index", np.array(mat_idx, np.int32))
        mesh.polygons.foreach_set("use_smooth", np.ones(len(polys), bool))
        mesh.update()
        self.mesh = mesh
        self.slots = slots
        self.obj = bpy.data.objects.new("head", mesh)
        self.scene.collection.objects.link(self.obj)

    def _principled(self, name: str, colour, roughness: float, specular: float = 0.5):
        mat = self.bpy.data.materials.new(name)
        mat.use_nodes = True
        bsdf = mat.node_tree.nodes["Principled BSDF"]
        bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
        bsdf.inputs["Roughness"].default_value = roughness
        bsdf.inputs["Specular IOR Level"].default_value = specular
        return mat, bsdf

    def _uv_radius(self, tree):
        nodes, links = tree.nodes, tree.links
        uvnode = nodes.new("ShaderNodeUVMap")
        uvnode.uv_map = "UVMap"
        sub = nodes.new("ShaderNodeVectorMath")
        sub.operation = "SUBTRACT"
        sub.inputs[1].default_value = (0.5, 0.5, 0.0)
        length = nodes.new("ShaderNodeVectorMath")
        length.operation = "LENGTH"
        links.new(uvnode.outputs["UV"], sub.inputs[0])
        links.new(sub.outputs["Vector"], length.inputs[0])
        return length.outputs["Value"]

    def _build_materials(self) -> None:
        bpy = self.bpy
        mats = {}
        # Skin: the atlas texture (set per sample) through the "atlas" uv map.
        skin, bsdf = self._principled("skin", (0.8, 0.6, 0.5), 0.5)
        tree = skin.node_tree
        uvnode = tree.nodes.new("ShaderNodeUVMap")
        uvnode.uv_map = "atlas"
        tex = tree.nodes.new("ShaderNodeTexImage")
        tex.interpolation = "Linear"
        tree.links.new(uvnode.outputs["UV"], tex.inputs["Vector"])
        tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        bsdf.inputs["Subsurface Radius"].default_value = (1.0, 0.35, 0.2)
        bsdf.inputs["Subsurface Scale"].default_value = 0.002  # metres
        self.skin_tex, self.skin_bsdf = tex, bsdf
        mats["M_Face"] = mats["M_BackHead"] = skin
        mats["M_GumsTongue"] = self._principled("gums", (0.55, 0.18, 0.18), 0.45)[0]
        mats["M_Teeth"] = self._principled("teeth", (0.80, 0.76, 0.66), 0.35)[0]
        mats["X_MouthInside"] = self._principled("mouth_inside", (0.22, 0.05, 0.05), 0.6)[0]
        mats["X_EyeSocket"] = self._principled("eye_socket", (0.25, 0.12, 0.10), 0.6)[0]

        # Outer eyeball shell: clear cornea in the middle, sclera around it.
        sclera = bpy.data.materials.new("sclera")
        sclera.use_nodes = True
        tree = sclera.node_tree
        out = tree.nodes["Material Output"]
        white = tree.nodes["Principled BSDF"]
        white.inputs["Base Color"].default_value = (0.78, 0.74, 0.70, 1.0)
        white.inputs["Roughness"].default_value = 0.25
        cornea = tree.nodes.new("ShaderNodeBsdfTransparent")
        gloss = tree.nodes.new("ShaderNodeBsdfGlossy")
        gloss.inputs["Roughness"].default_value = 0.05
        glass = tree.nodes.new("ShaderNodeMixShader")
        glass.inputs["Fac"].default_value = 0.06
        tree.links.new(cornea.outputs[0], glass.inputs[1])
        tree.links.new(gloss.outputs[0], glass.inputs[2])
        ramp = tree.nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].position = CORNEA_UV_RADIUS - 0.006
        ramp.color_ramp.elements[0].color = (0, 0, 0, 1)
        ramp.color_ramp.elements[1].position = CORNEA_UV_RADIUS + 0.008
        ramp.color_ramp.elements[1].color = (1, 1, 1, 1)
        tree.links.new(self._uv_radius(tree), ramp.inputs["Fac"])
        mix = tree.nodes.new("ShaderNodeMixShader")
        tree.links.new(ramp.outputs["Color"], mix.inputs["Fac"])
        tree.links.new(glass.outputs[0], mix.inputs[1])
        tree.links.new(white.outputs[0], mix.inputs[2])
        tree.links.new(mix.outputs[0], out.inputs["Surface"])
        mats["M_ScleraLeft"] = mats["M_ScleraRight"] = sclera

        # Inner eyeball shell: pupil, iris (colour set per sample) and a dark limbal ring.
        iris = bpy.data.materials.new("iris")
        iris.use_nodes = True
        tree = iris.node_tree
        bsdf = tree.nodes["Principled BSDF"]
        bsdf.inputs["Roughness"].default_value = 0.4
        ramp = tree.nodes.new("ShaderNodeValToRGB")
        el = ramp.color_ramp.elements
        el[0].position, el[0].color = 0.0, (0.01, 0.01, 0.01, 1)
        el[1].position = 1.0
        el[1].color = (0.75, 0.72, 0.68, 1)
        for _ in range(4):
            el.new(0.5)
        radius = self._uv_radius(tree)
        streaks = tree.nodes.new("ShaderNodeTexNoise")
        streaks.inputs["Scale"].default_value = 40.0
        mul = tree.nodes.new("ShaderNodeMixRGB")
        mul.blend_type = "MULTIPLY"
        mul.inputs["Fac"].default_value = 0.35
        tree.links.new(radius, ramp.inputs["Fac"])
        tree.links.new(ramp.outputs["Color"], mul.inputs[1])
        tree.links.new(streaks.outputs["Color"], mul.inputs[2])
        tree.links.new(mul.outputs["Color"], bsdf.inputs["Base Color"])
        self.iris_ramp = ramp
        mats["M_IrisLeft"] = mats["M_IrisRight"] = iris
        for name in HIDDEN_MATERIALS:
            mats[name] = self._principled(f"hidden_{name}", (0, 0, 0), 1.0)[0]
        for slot in self.slots:
            self.obj.data.materials.append(mats[slot])

    def _texture(self, path: str):
        if path not in self._texture_images:
            img = self.bpy.data.images.load(path, check_existing=True)
            img.colorspace_settings.name = "sRGB"
            self._texture_images[path] = img
        return self._texture_images[path]

    def set_sample(self, spec: SampleSpec, vertices_model: np.ndarray) -> None:
        """Pose the mesh (model cm -> world m), set texture, eyes, lights and world."""
        cam = vertices_model.astype(np.float64) @ spec.rotation.T + spec.translation
        world = cam * np.array([0.01, -0.01, -0.01])
        self.mesh.vertices.foreach_set("co", world.astype(np.float32).ravel())
        self.mesh.update()
        self.camera.data.lens = spec.lens_mm
        look = spec.look
        self.skin_tex.image = self._texture(spec.texture)
        self.skin_bsdf.inputs["Roughness"].default_value = look["skin"]["roughness"]
        self.skin_bsdf.inputs["Specular IOR Level"].default_value = look["skin"]["specular"]
        self.skin_bsdf.inputs["Subsurface Weight"].default_value = look["skin"]["subsurface"]
        iris = look["iris"]
        el = self.iris_ramp.color_ramp.elements
        c = np.array(iris["colour"]) ** 2.2  # sRGB-ish to linear
        stops = [(0.0, (0.005,) * 3), (iris["pupil"], (0.005,) * 3), (iris["pupil"] + 0.02, tuple(c * 0.7)),
                 (IRIS_UV_RADIUS - 0.07, tuple(c)), (IRIS_UV_RADIUS - 0.01, tuple(c * 0.35)),
                 (IRIS_UV_RADIUS + 0.01, (0.75, 0.72, 0.68))]
        for e, (pos, col) in zip(el, stops):
            e.position = pos
            e.color = (*col, 1.0)

        centre = world[slice(*self._face_range())].mean(0)
        for obj, params, energy_scale in ((self.key, look["key"], 1.0), (self.fill, look["fill"], look["fill"]["ratio"])):
            az, el_ = math.radians(params["azimuth_deg"]), math.radians(params["elevation_deg"])
            direction = np.array([math.sin(az) * math.cos(el_), math.sin(el_), math.cos(az) * math.cos(el_)])
            obj.location = tuple(centre + params["distance_m"] * direction)
            from mathutils import Vector

            obj.rotation_euler = Vector(tuple(-direction)).to_track_quat("-Z", "Y").to_euler()
            obj.data.size = params["size_m"]
            strength = look["key"]["strength"] * energy_scale
            # Irradiance at the head ~ power / distance^2: keep the exposure about constant.
            obj.data.energy = 30.0 * strength * params["distance_m"] ** 2
            obj.data.color = tuple(look["key"]["colour"]) if obj is self.key else (1.0, 1.0, 1.0)
        self.world_bg.inputs["Color"].default_value = (*look["world"]["colour"], 1.0)
        self.world_bg.inputs["Strength"].default_value = look["world"]["strength"]
        self.scene.view_settings.exposure = self._auto_exposure(spec, cam, look["exposure_target"])

    def _auto_exposure(self, spec: SampleSpec, cam_points: np.ndarray, target_srgb: float, size: int = 96) -> float:
        """Exposure (stops) that puts the median face pixel at ``target_srgb``, from a tiny preview."""
        scene, cyc = self.scene, self.scene.cycles
        first, last = self._face_range()
        intr = intrinsics(spec.lens_mm, size, size)
        face = cam_points[first:last]
        uv = np.c_[intr["fx"] * face[:, 0] / face[:, 2] + intr["cx"], intr["fy"] * face[:, 1] / face[:, 2] + intr["cy"]]
        lo, hi = np.clip(np.floor(uv.min(0)).astype(int), 0, size), np.clip(np.ceil(uv.max(0)).astype(int), 0, size)
        settings = scene.render.image_settings
        saved = (cyc.samples, cyc.use_denoising, settings.file_format, settings.color_depth)
        cyc.samples, cyc.use_denoising = 4, False
        settings.file_format, settings.color_depth = "OPEN_EXR", "16"  # linear scene values
        scene.render.resolution_x = scene.render.resolution_y = size
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            scene.render.filepath = str(Path(tmp) / "preview.exr")
            with _quiet_stdout():
                self.bpy.ops.render.render(write_still=True)
            img = self.bpy.data.images.load(scene.render.filepath)
            pixels = np.empty(size * size * 4, np.float32)
            img.pixels.foreach_get(pixels)
            self.bpy.data.images.remove(img)
        cyc.samples, cyc.use_denoising, settings.file_format, settings.color_depth = saved
        rgba = pixels.reshape(size, size, 4)[::-1].astype(np.float64)  # Blender's rows run bottom-up
        lin = rgba[..., :3]
        lum = lin @ np.array([0.2126, 0.7152, 0.0722])
        mask = np.zeros(lum.shape, bool)
        mask[lo[1] : hi[1], lo[0] : hi[0]] = True
        mask &= rgba[..., 3] > 0.99
        if mask.sum() < 10:
            return 0.0
        median = max(float(np.median(lum[mask])), 1e-6)
        target = ((target_srgb + 0.055) / 1.055) ** 2.4
        return float(np.clip(np.log2(target / median), -6, 6))

    def _face_range(self) -> tuple[int, int]:
        first, last = self.asset.parts["narrow_face"]
        return first, last + 1

    def render(self, width: int, height: int, path: Path) -> np.ndarray:
        """Render the current sample; returns [H, W, 4] uint8 RGBA (straight alpha)."""
        scene = self.scene
        scene.render.resolution_x, scene.render.resolution_y = int(width), int(height)
        tmp = path.with_name(path.stem + ".rgba.png")
        scene.render.filepath = str(tmp)
        with _quiet_stdout():
            self.bpy.ops.render.render(write_still=True)
        rgba = np.asarray(Image.open(tmp).convert("RGBA"))
        tmp.unlink()
        return rgba


def background_image(look: dict, width: int, height: int) -> np.ndarray:
    """[H, W, 3] float in [0, 1]: a plain colour or a linear gradient."""
    bg = look["background"]
    a, b = np.array(bg["a"]), np.array(bg["b"])
    if bg["kind"] == "plain":
        return np.broadcast_to(a, (height, width, 3)).copy()
    ang = math.radians(bg["angle_deg"])
    yy, xx = np.mgrid[0:height, 0:width]
    t = ((xx / max(width - 1, 1) - 0.5) * math.cos(ang) + (yy / max(height - 1, 1) - 0.5) * math.sin(ang)) / math.sqrt(0.5) + 0.5
    t = np.clip(t, 0, 1)[..., None]
    return a * (1 - t) + b * t


def composite(rgba: np.ndarray, look: dict) -> np.ndarray:
    h, w = rgba.shape[:2]
    alpha = rgba[..., 3:4].astype(np.float64) / 255.0
    out = rgba[..., :3] / 255.0 * alpha + background_image(look, w, h) * (1 - alpha)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
