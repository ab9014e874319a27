"""Turntables: a camera orbiting a HeadRig head once, rendered here or by the backend.

``setup_turntable`` builds a small rig in a child collection "<head collection> turntable" (so
re-importing or removing the head removes it too, and a second setup replaces it): an empty at the
centre of the head's meshes, turning 360 degrees about Z over the frame range with LINEAR keys,
carrying the camera (in front of the face: glTF +Z forward is Blender -Y) and three area lights,
so the lighting stays fixed relative to the camera as on a real turntable. Render settings: Eevee
when the build has it, else Cycles on the CPU with few samples; Standard view transform (the
Gaussians' colours are display colours); an MPEG-4/H.264 movie as output.

``HEADRIG_OT_backend_turntable`` sends a bundle's head.json + gaussians.ply (+ animation.json) as a
"turntable" job; the backend's splatting renderer writes ``turntable.mp4``, which
``load_result`` opens as a movie clip once ``jobs`` has fetched it.
"""

from __future__ import annotations

import math
from pathlib import Path

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty
from mathutils import Vector

from .importer import PROP_BUNDLE

LENS_MM = 50.0
SENSOR_MM = 36.0
MARGIN = 1.3  # the head's horizontal extent fills 1/MARGIN of the frame
CYCLES_SAMPLES = 16
# (name, energy W, size m, position in the pivot's frame in units of the orbit radius)
LIGHTS = (("key", 60.0, 0.4, (-0.6, -0.8, 0.5)), ("fill", 20.0, 0.6, (0.8, -0.6, 0.1)),
          ("rim", 40.0, 0.3, (0.3, 0.9, 0.6)))


def head_collection_of(obj):
    """The "HeadRig <name>" collection ``obj`` (head, root, Gaussians) belongs to, else None."""
    if obj is None:
        return None
    return next((c for c in obj.users_collection if PROP_BUNDLE in c), None)


def _bounds(collection) -> tuple[Vector, Vector]:
    """(centre, size) of the evaluated meshes of the collection, world space."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    corners = [o.evaluated_get(depsgraph).matrix_world @ Vector(c) for o in collection.all_objects
               if o.type == "MESH" for c in o.evaluated_get(depsgraph).bound_box]
    if not corners:
        raise ValueError(f"{collection.name} has no mesh to frame")
    lo = Vector([min(c[i] for c in corners) for i in range(3)])
    hi = Vector([max(c[i] for c in corners) for i in range(3)])
    return (lo + hi) / 2, hi - lo


def _rig_collection(head_collection):
    """An empty child collection for the rig, after removing what a previous setup left."""
    name = f"{head_collection.name} turntable"
    old = head_collection.children.get(name)
    if old is not None:
        for obj in list(old.objects):
            data = obj.data
            bpy.data.objects.remove(obj, do_unlink=True)
            if data is not None and data.users == 0:
                (bpy.data.cameras if isinstance(data, bpy.types.Camera) else bpy.data.lights).remove(data)
        bpy.data.collections.remove(old)
    coll = bpy.data.collections.new(name)
    head_collection.children.link(coll)
    return coll


def _fcurves(id_data):
    """Every F-curve of the id's Action: 4.4+ slotted channelbags, else the legacy list."""
    anim = id_data.animation_data
    action = anim.action if anim is not None else None
    if action is None:
        return []
    slot = getattr(anim, "action_slot", None)
    if slot is not None and getattr(action, "layers", None):
        return [c for layer in action.layers for strip in layer.strips
                for c in (strip.channelbag(slot).fcurves if strip.channelbag(slot) else [])]
    return list(action.fcurves)


def _spin(pivot, start: int, end: int) -> None:
    """0 at ``start``, one full turn at ``end``: the last frame repeats the first view."""
    for frame, angle in ((start, 0.0), (end, 2 * math.pi)):
        pivot.rotation_euler = (0.0, 0.0, angle)
        pivot.keyframe_insert("rotation_euler", index=2, frame=frame)
    for curve in _fcurves(pivot):
        for point in curve.keyframe_points:
            point.interpolation = "LINEAR"
    pivot.rotation_euler = (0.0, 0.0, 0.0)


def _lights(coll, pivot, label: str, radius: float) -> None:
    for name, energy, size, (x, y, z) in LIGHTS:
        data = bpy.data.lights.new(f"{label}_{name}", "AREA")
        data.energy, data.size = energy * radius * radius / 0.36, size * radius  # same look at any radius
        light = bpy.data.objects.new(f"{label}_{name}", data)
        coll.objects.link(light)
        light.parent = pivot
        light.location = Vector((x, y, z)) * radius
        light.rotation_euler = (-light.location).to_track_quat("-Z", "Y").to_euler()


def pick_engine() -> str:
    """Eevee (named BLENDER_EEVEE_NEXT in 4.2-4.5 builds, BLENDER_EEVEE elsewhere), else Cycles."""
    engines = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items.keys()
    return next((e for e in ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE") if e in engines), "CYCLES")


def _render_settings(scene, engine: str, resolution: int) -> None:
    render = scene.render
    render.engine = engine
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = CYCLES_SAMPLES
        scene.cycles.use_denoising = False
        scene.cycles.transparent_max_bounces = 64  # overlapping Gaussian discs, each a transparent hit
    elif hasattr(scene, "eevee"):
        scene.eevee.taa_render_samples = CYCLES_SAMPLES
    render.resolution_x = render.resolution_y = int(resolution)
    render.resolution_percentage = 100
    render.film_transparent = False  # H.264 has no alpha
    scene.view_settings.view_transform = "Standard"
    render.image_settings.file_format = "FFMPEG"
    render.ffmpeg.format = "MPEG4"
    render.ffmpeg.codec = "H264"
    render.ffmpeg.constant_rate_factor = "HIGH"
    render.ffmpeg.audio_codec = "NONE"
    if scene.world is None:
        scene.world = bpy.data.worlds.new("HeadRig turntable")
        scene.world.color = (0.02, 0.02, 0.025)


def setup_turntable(context, head_collection, frames: int = 120, radius: float | None = None,
                    resolution: int = 512, engine: str | None = None):
    """Build (or rebuild) the turntable rig of a head collection; returns the camera object."""
    scene = context.scene
    frames = max(2, int(frames))
    centre, size = _bounds(head_collection)
    half_fov = math.atan(SENSOR_MM / 2 / LENS_MM)
    if radius is None:
        radius = MARGIN * max(size.x, size.y, size.z) / 2 / math.tan(half_fov) + max(size.x, size.y) / 2
    label = head_collection.name.removeprefix("HeadRig ").strip() or "head"
    coll = _rig_collection(head_collection)
    pivot = bpy.data.objects.new(f"{label}_turntable", None)
    pivot.empty_display_type, pivot.empty_display_size = "CIRCLE", radius * 0.25
    pivot.location = centre
    coll.objects.link(pivot)
    cam_data = bpy.data.cameras.new(f"{label}_camera")
    cam_data.lens, cam_data.sensor_width, cam_data.sensor_fit = LENS_MM, SENSOR_MM, "AUTO"
    cam_data.clip_start, cam_data.clip_end = radius * 0.01, radius * 10
    camera = bpy.data.objects.new(f"{label}_camera", cam_data)
    coll.objects.link(camera)
    camera.parent = pivot
    camera.location = (0.0, -radius, 0.0)
    camera.rotation_euler = (math.pi / 2, 0.0, 0.0)  # looks along +Y at the face, Z up
    _lights(coll, pivot, label, radius)
    start = scene.frame_start
    scene.frame_end = start + frames - 1
    _spin(pivot, start, scene.frame_end)
    _render_settings(scene, engine or pick_engine(), resolution)
    scene.render.filepath = f"//{label}_turntable.mp4"
    scene.camera = camera
    return camera


def render_turntable(context, filepath) -> Path:
    """Render the scene's frame range to an MP4 at ``filepath`` (".mp4" added when missing)."""
    scene = context.scene
    path = Path(bpy.path.abspath(str(filepath)))
    if path.suffix.lower() != ".mp4":
        path = path.with_name(path.name + ".mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.render.image_settings.file_format = "FFMPEG"
    scene.render.filepath = str(path)  # with the extension given, Blender writes exactly this file
    bpy.ops.render.render(animation=True, scene=scene.name)
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"{path}: the render wrote no movie")
    return path


def load_result(context, folder, label: str = ""):
    """A finished "turntable" job's folder -> (movie clip, one line). For ``jobs`` after the fetch."""
    movie = Path(folder) / "turntable.mp4"
    if not movie.is_file() or movie.stat().st_size == 0:
        raise RuntimeError(f"{movie}: the turntable job returned no movie")
    clip = bpy.data.movieclips.load(str(movie), check_existing=True)
    clip.name = label or f"{Path(folder).name[:8]} turntable"
    return clip, f"Loaded the turntable {clip.name} ({clip.frame_duration} frames): Movie Clip Editor"


class HEADRIG_OT_turntable(bpy.types.Operator):
    """Put a camera and three lights on a turntable around the active HeadRig head, optionally render it"""

    bl_idname = "headrig.turntable"
    bl_label = "Turntable"
    bl_options = {"REGISTER", "UNDO"}

    frames: IntProperty(name="Frames", default=120, min=2, max=2000)
    resolution: IntProperty(name="Resolution", default=512, min=16, max=4096)
    render: BoolProperty(name="Render", default=False, description="Render the movie now (blocks Blender)")
    filepath: StringProperty(name="Movie", default="//turntable.mp4", subtype="FILE_PATH")

    @classmethod
    def poll(cls, context):
        if head_collection_of(context.active_object) is None:
            cls.poll_message_set("Select a HeadRig head (its mesh, root or Gaussians) first")
            return False
        return True

    def execute(self, context):
        coll = head_collection_of(context.active_object)
        try:
            camera = setup_turntable(context, coll, self.frames, resolution=self.resolution)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if not self.render:
            self.report({"INFO"}, f"{camera.name}: {self.frames} frames around {coll.name}")
            return {"FINISHED"}
        try:
            path = render_turntable(context, self.filepath)
        except (RuntimeError, OSError) as exc:
            self.report({"ERROR"}, f"Turntable render failed: {str(exc).strip().splitlines()[-1][:200]}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Rendered {path}")
        return {"FINISHED"}


class HEADRIG_OT_backend_turntable(bpy.types.Operator):
    """Render the Gaussian avatar of a bundle on the HeadRig server and load the movie as a clip"""

    bl_idname = "headrig.backend_turntable"
    bl_label = "Backend turntable"
    bl_options = {"REGISTER"}

    directory: StringProperty(name="Bundle", subtype="DIR_PATH",
                              description="A bundle folder with gaussians.ply (empty: the active head's)")
    frames: IntProperty(name="Frames", default=120, min=1, max=1200)
    size: IntProperty(name="Size", default=512, min=16, max=2048)

    def _inputs(self, context) -> tuple[Path, list[Path]] | str:
        obj = context.active_object
        raw = self.directory or (obj.get(PROP_BUNDLE, "") if obj is not None else "")
        if not raw:
            return "Choose a bundle folder, or select a HeadRig head"
        folder = Path(bpy.path.abspath(raw))
        missing = [n for n in ("head.json", "gaussians.ply") if not (folder / n).is_file()]
        if missing:
            return f"{folder}: no {' or '.join(missing)} (build the head with an avatar first)"
        extra = [folder / "animation.json"] if (folder / "animation.json").is_file() else []
        return folder, [folder / "head.json", folder / "gaussians.ply", *extra]

    def execute(self, context):
        from . import (
            jobs,  # here, not at the top: jobs imports this module for load_result
        )
        from .operators import registry_or_report, settings_or_report

        found = self._inputs(context)
        if isinstance(found, str):
            self.report({"ERROR"}, found)
            return {"CANCELLED"}
        folder, files = found
        reg = registry_or_report(self)
        settings = reg and settings_or_report(self, context)
        if not settings:
            return {"CANCELLED"}
        params = {"frames": int(self.frames), "size": int(self.size)}
        try:  # results_dir() creates the folder results are fetched into
            entry = reg.start_job(f"{folder.name} turntable", files, settings, jobs.results_dir(), kind="turntable",
                                  params=params)
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot create the results folder: {exc}")
            return {"CANCELLED"}
        context.window_manager.headrig.active_job = entry.local_id
        context.window_manager.headrig.busy = True
        self.report({"INFO"}, f"Rendering a turntable of {folder.name} on {settings['address']}")
        return {"FINISHED"}


CLASSES = (HEADRIG_OT_turntable, HEADRIG_OT_backend_turntable)
