"""Turntables: a camera orbiting a HeadRig head once, rendered here or by the backend.

``setup_turntable`` builds the turntable in a scene of its own, "<head collection> turntable", so
the artist's scene keeps its render engine, resolution, colour management, output, camera, world
and frame range: the head's collection is linked into that scene (the same objects, so shape keys
and Actions play there too), beside a rig collection holding an empty at the centre of the head's
meshes, turning 360 degrees about Z over the frame range with LINEAR keys, the camera (in front of
the face: glTF +Z forward is Blender -Y) and three area lights parented to it, so the lighting stays
fixed relative to the camera as on a real turntable. The turntable scene starts at the artist's
first frame and plays at the artist's fps (so an Action plays there as it does in the artist's
scene), renders with Eevee when the build has it, else Cycles on the CPU with few samples, with the
Standard view transform (the Gaussians' colours are display colours), to an MPEG-4/H.264 movie.
A second setup rebuilds the rig in the same scene; removing the head (``importer.remove_head``)
removes its turntable scene.

``HEADRIG_OT_backend_turntable`` sends a bundle's head.json + gaussians.ply (+ animation.json) as a
"turntable" job; the backend's splatting renderer writes ``turntable.mp4``, which
``load_result`` opens as a movie clip once ``drain`` has fetched it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty
from mathutils import Vector

from .animation import add_curve, assign_action, new_action
from .heads import COLLECTION_PREFIX, PROP_BUNDLE, PROP_TURNTABLE, head_collection_of
from .jobs import registry_or_report, results_dir, settings_or_report

LENS_MM = 50.0
SENSOR_MM = 36.0
MARGIN = 1.3  # the head's horizontal extent fills 1/MARGIN of the frame
CYCLES_SAMPLES = 16
WORLD_NAME = "HeadRig turntable"
# (name, energy W, size m, position in the pivot's frame in units of the orbit radius)
LIGHTS = (("key", 60.0, 0.4, (-0.6, -0.8, 0.5)), ("fill", 20.0, 0.6, (0.8, -0.6, 0.1)),
          ("rim", 40.0, 0.3, (0.3, 0.9, 0.6)))


@dataclass
class Turntable:
    scene: bpy.types.Scene   # the turntable's own scene (render it, or switch to it to look)
    camera: bpy.types.Object
    pivot: bpy.types.Object  # the turning empty that carries camera and lights


def turntable_scene(head_collection):
    """The turntable scene made for ``head_collection``, else None."""
    return next((s for s in bpy.data.scenes if s.get(PROP_TURNTABLE)
                 and head_collection.name in s.collection.children), None)


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


def _clear_rig(scene) -> None:
    """Remove the rig collection(s) of a turntable scene: objects, cameras, lights, the pivot's Action."""
    for coll in [c for c in scene.collection.children if c.get(PROP_TURNTABLE)]:
        for obj in list(coll.objects):
            data = obj.data
            action = obj.animation_data.action if obj.animation_data else None
            bpy.data.objects.remove(obj, do_unlink=True)
            if data is not None and data.users == 0:
                (bpy.data.cameras if isinstance(data, bpy.types.Camera) else bpy.data.lights).remove(data)
            if action is not None and action.users == 0:
                bpy.data.actions.remove(action)
        bpy.data.collections.remove(coll)


def remove_turntable(head_collection) -> None:
    """Delete the head's turntable scene, its rig and the world made for it (the head stays)."""
    scene = turntable_scene(head_collection)
    if scene is None:
        return
    _clear_rig(scene)
    world = scene.world if scene.world is not None and scene.world.name.startswith(WORLD_NAME) else None
    bpy.data.scenes.remove(scene)
    if world is not None and world.users == 0:
        bpy.data.worlds.remove(world)


def _scene_for(context, head_collection):
    """The head's turntable scene (new, or emptied of its old rig), timed and lit like the artist's scene."""
    scene = turntable_scene(head_collection)
    if scene is None:
        scene = bpy.data.scenes.new(f"{head_collection.name} turntable")
        scene[PROP_TURNTABLE] = head_collection.name
        scene.collection.children.link(head_collection)
    else:
        _clear_rig(scene)
    artist = context.scene
    if artist != scene:  # (run from the turntable scene itself, it keeps what it has)
        scene.frame_start = artist.frame_start
        scene.render.fps, scene.render.fps_base = artist.render.fps, artist.render.fps_base
        ours = scene.world if scene.world is not None and scene.world.name.startswith(WORLD_NAME) else None
        scene.world = artist.world or ours  # the artist's world lights it the same; shared, never changed
        if ours is not None and ours.users == 0:
            bpy.data.worlds.remove(ours)
    if scene.world is None:
        scene.world = bpy.data.worlds.new(WORLD_NAME)
        scene.world.color = (0.02, 0.02, 0.025)
    return scene


def _spin(pivot, start: int, end: int) -> None:
    """0 at ``start``, one full turn at ``end`` (LINEAR): the last frame repeats the first view."""
    action, slot, fcurves = new_action(f"{pivot.name} spin", "OBJECT", pivot.name)
    add_curve(fcurves, "rotation_euler", 2, [float(start), float(end)], [0.0, 2 * math.pi])
    assign_action(pivot, action, slot)


def pick_engine() -> str:
    """Eevee (named BLENDER_EEVEE_NEXT in 4.2-4.5 builds, BLENDER_EEVEE elsewhere), else Cycles."""
    engines = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items.keys()
    return next((e for e in ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE") if e in engines), "CYCLES")


def _lights(coll, pivot, label: str, radius: float) -> None:
    for name, energy, size, (x, y, z) in LIGHTS:
        data = bpy.data.lights.new(f"{label}_{name}", "AREA")
        data.energy, data.size = energy * radius * radius / 0.36, size * radius  # same look at any radius
        light = bpy.data.objects.new(f"{label}_{name}", data)
        coll.objects.link(light)
        light.parent = pivot
        light.location = Vector((x, y, z)) * radius
        light.rotation_euler = (-light.location).to_track_quat("-Z", "Y").to_euler()


def movie_output(render) -> None:
    """An MPEG-4/H.264 movie without sound as the output of ``render`` (a scene's RenderSettings).

    All of it every time: Blender 4.2 resets the container when the format comes back to FFMPEG from
    a still format, and then appends frame numbers and ".mkv" to a path ending in ".mp4". Blender 5.0
    lists FFMPEG under media_type VIDEO; 4.x has no media_type."""
    if hasattr(render.image_settings, "media_type"):
        render.image_settings.media_type = "VIDEO"
    render.image_settings.file_format = "FFMPEG"
    render.ffmpeg.format = "MPEG4"
    render.ffmpeg.codec = "H264"
    render.ffmpeg.constant_rate_factor = "HIGH"
    render.ffmpeg.audio_codec = "NONE"


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
    movie_output(render)


def setup_turntable(context, head_collection, frames: int = 120, radius: float | None = None,
                    resolution: int = 512, engine: str | None = None) -> Turntable:
    """Build (or rebuild) the turntable of a head collection in its own scene (see the module docstring)."""
    frames = max(2, int(frames))
    centre, size = _bounds(head_collection)
    half_fov = math.atan(SENSOR_MM / 2 / LENS_MM)
    if radius is None:
        radius = MARGIN * max(size.x, size.y, size.z) / 2 / math.tan(half_fov) + max(size.x, size.y) / 2
    label = head_collection.name.removeprefix(COLLECTION_PREFIX).strip() or "head"
    scene = _scene_for(context, head_collection)
    coll = bpy.data.collections.new(f"{label} turntable rig")
    coll[PROP_TURNTABLE] = head_collection.name
    scene.collection.children.link(coll)
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
    scene.frame_end = scene.frame_start + frames - 1
    _spin(pivot, scene.frame_start, scene.frame_end)
    _render_settings(scene, engine or pick_engine(), resolution)
    scene.render.filepath = f"//{label}_turntable.mp4"
    scene.camera = camera
    scene.frame_set(scene.frame_start)
    return Turntable(scene, camera, pivot)


def render_turntable(scene, filepath) -> Path:
    """Render a turntable scene's frame range to an MP4 at ``filepath`` (".mp4" added when missing)."""
    path = Path(bpy.path.abspath(str(filepath)))
    if path.suffix.lower() != ".mp4":
        path = path.with_name(path.name + ".mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    movie_output(scene.render)
    scene.render.filepath = str(path)  # with the extension given, Blender writes exactly this file
    bpy.ops.render.render(animation=True, scene=scene.name)
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"{path}: the render wrote no movie")
    return path


def load_result(context, folder, label: str = ""):
    """A finished "turntable" job's folder -> (movie clip, one line). For ``drain`` after the fetch."""
    movie = Path(folder) / "turntable.mp4"
    if not movie.is_file() or movie.stat().st_size == 0:
        raise RuntimeError(f"{movie}: the turntable job returned no movie")
    clip = bpy.data.movieclips.load(str(movie), check_existing=True)
    clip.name = label or f"{Path(folder).name[:8]} turntable"
    return clip, f"Loaded the turntable {clip.name} ({clip.frame_duration} frames): Movie Clip Editor"


class HEADRIG_OT_turntable(bpy.types.Operator):
    """Build a turntable scene around the active HeadRig head (camera, three lights), optionally render it"""

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
            turntable = setup_turntable(context, coll, self.frames, resolution=self.resolution)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if not self.render:
            self.report({"INFO"}, f"Scene {turntable.scene.name}: {self.frames} frames around {coll.name} "
                                  f"(pick it in the scene selector to look or render)")
            return {"FINISHED"}
        try:
            path = render_turntable(turntable.scene, self.filepath)
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
            entry = reg.start_job(f"{folder.name} turntable", files, settings, results_dir(), kind="turntable",
                                  params=params)
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot create the results folder: {exc}")
            return {"CANCELLED"}
        context.window_manager.headrig.active_job = entry.local_id
        context.window_manager.headrig.busy = True
        self.report({"INFO"}, f"Rendering a turntable of {folder.name} on {settings['address']}")
        return {"FINISHED"}


CLASSES = (HEADRIG_OT_turntable, HEADRIG_OT_backend_turntable)
