"""Operators that animate a head: retarget a driving video (on the server), import a Live Link CSV.

Both act on the HeadRig head the active object belongs to (the head mesh or its root empty) and
apply the result with ``animation.apply_animation`` as new Actions, keeping the ones the head had.
A retarget runs like a build: a ``worker.py`` thread sends the video as a "retarget" job and fetches
the result folder (``animation.json`` + ``livelink.csv``) under the results folder, and the
``drain.drain`` timer applies it to the head in the main thread. The Live Link CSV is read and
applied at once (no network).
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, StringProperty

from . import animation, jobs
from .headrig_shared.bundle_fields import BundleError
from .headrig_shared.livelink import read_livelink_csv
from .heads import find_head, head_label
from .jobs import registry_or_report, settings_or_report
from .operators import VIDEO_EXTS, file_glob

_NO_HEAD = "Select a HeadRig head (its mesh or its root empty) first"


def _input_file(op, raw: str, exts, kind: str) -> str | None:
    """The absolute path of a chosen file, or None after reporting why it cannot be used."""
    path = bpy.path.abspath(raw) if raw else ""
    name = os.path.basename(path)
    if not path or os.path.isdir(path):
        op.report({"ERROR"}, f"Choose a {kind} file")
    elif not path.lower().endswith(exts):
        op.report({"ERROR"}, f"{name}: not a {kind} ({', '.join(e[1:].upper() for e in exts)})")
    elif not os.path.isfile(path):
        op.report({"ERROR"}, f"{name}: no such file ({path})")
    elif os.path.getsize(path) == 0:
        op.report({"ERROR"}, f"{name}: the file is empty")
    else:
        return path
    return None


class _HeadOperator:
    @classmethod
    def poll(cls, context):
        if find_head(context.active_object) is None:
            cls.poll_message_set(_NO_HEAD)
            return False
        return True

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


class HEADRIG_OT_retarget_video(_HeadOperator, bpy.types.Operator):
    """Track a driving video on the HeadRig server and animate the selected head with it (a new Action)"""

    bl_idname = "headrig.retarget_video"
    bl_label = "Retarget video"
    bl_options = {"REGISTER"}

    filepath: StringProperty(subtype="FILE_PATH", description="The driving video")
    filter_glob: StringProperty(default=file_glob(VIDEO_EXTS), options={"HIDDEN"})
    auto_neutral: BoolProperty(name="Auto neutral frame", default=True,
                               description="Let the server find the frame where the face is most at rest")
    neutral_frame: IntProperty(name="Neutral frame", default=0, min=0,
                               description="Frame of the video (0 = first) where the face is at rest; "
                                           "its expression is subtracted from every frame")
    smoothing: BoolProperty(name="Smoothing", default=True, description="Filter the jitter out of the curves")
    custom_filter: BoolProperty(name="Custom filter", default=False,
                                description="Set the One Euro filter yourself (off: the server's tuned defaults)")
    min_cutoff: FloatProperty(name="Min cutoff (Hz)", default=1.0, min=0.001, soft_max=10.0,
                              description="One Euro: lower removes more jitter from slow motion, adds lag")
    beta: FloatProperty(name="Beta", default=0.3, min=0.0, soft_max=10.0,
                        description="One Euro: higher follows fast motion more closely")
    head_rotation: BoolProperty(name="Transfer head rotation", default=True,
                                description="Turn the head's root with the actor's head")
    head_translation: BoolProperty(name="Transfer head position", default=False,
                                   description="Move the head's root with the actor's head")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "auto_neutral")
        row = layout.row()
        row.enabled = not self.auto_neutral
        row.prop(self, "neutral_frame")
        layout.prop(self, "smoothing")
        col = layout.column()
        col.enabled = self.smoothing
        col.prop(self, "custom_filter")
        sub = col.column()
        sub.enabled = self.custom_filter
        sub.prop(self, "min_cutoff")
        sub.prop(self, "beta")
        layout.prop(self, "head_rotation")
        layout.prop(self, "head_translation")

    def params(self) -> dict:
        params = {"neutral_frame": None if self.auto_neutral else int(self.neutral_frame),
                  "smoothing": bool(self.smoothing), "head_rotation": bool(self.head_rotation),
                  "head_translation": bool(self.head_translation)}
        if self.smoothing and self.custom_filter:
            params["one_euro"] = {"min_cutoff": float(self.min_cutoff), "beta": float(self.beta)}
        return params

    def execute(self, context):
        head = find_head(context.active_object)
        reg = registry_or_report(self)
        settings = reg and settings_or_report(self, context)
        if head is None or not settings:
            if head is None:
                self.report({"ERROR"}, _NO_HEAD)
            return {"CANCELLED"}
        path = _input_file(self, self.filepath, VIDEO_EXTS, "video")
        if path is None:
            return {"CANCELLED"}
        try:
            out_dir = jobs.results_dir()
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot create the results folder: {exc}")
            return {"CANCELLED"}
        stem = Path(path).stem
        apply = {"target": head.name, "action_name": f"{head_label(head)} retarget {stem}",
                 "transfer_head": bool(self.head_rotation or self.head_translation)}
        entry = reg.start_job(f"{stem} -> {head_label(head)}", [path], settings, out_dir, kind="retarget",
                              params=self.params(), apply=apply)
        context.window_manager.headrig.active_job = entry.local_id
        context.window_manager.headrig.busy = True
        self.report({"INFO"}, f"Retargeting {os.path.basename(path)} onto {head.name} on {settings['address']}")
        return {"FINISHED"}


class HEADRIG_OT_import_livelink(_HeadOperator, bpy.types.Operator):
    """Animate the selected head from a Live Link Face CSV recording (a new Action)"""

    bl_idname = "headrig.import_livelink"
    bl_label = "Import Live Link CSV"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH", description="The Live Link Face .csv file")
    filter_glob: StringProperty(default="*.csv;*.CSV", options={"HIDDEN"})
    fps: FloatProperty(name="Frame rate", default=0.0, min=0.0, soft_max=120.0,
                       description="Frames per second of the recording; 0: read it from the timecodes")
    transfer_head: BoolProperty(name="Transfer head rotation", default=True,
                                description="Turn the head's root with the recorded head rotation")

    def execute(self, context):
        head = find_head(context.active_object)
        if head is None:
            self.report({"ERROR"}, _NO_HEAD)
            return {"CANCELLED"}
        path = _input_file(self, self.filepath, (".csv",), "Live Link CSV")
        if path is None:
            return {"CANCELLED"}
        name = os.path.basename(path)
        keys = [kb.name for kb in head.data.shape_keys.key_blocks[1:]]
        try:
            clip = read_livelink_csv(path, keys, fps=self.fps or None)
            summary = animation.apply_animation(context, head, clip, f"{head_label(head)} livelink {Path(path).stem}",
                                                transfer_head=self.transfer_head, source=name)
        except (BundleError, animation.AnimationFailed, OSError, ValueError) as exc:
            message = " ".join(str(exc).split())
            self.report({"ERROR"}, message if name in message else f"{name}: {message}")
            return {"CANCELLED"}
        unmatched = f"; {len(summary['keys_missing'])} curves match no shape key" if summary["keys_missing"] else ""
        self.report({"INFO"}, f"Applied {summary['shape_action']} to {head.name}: {summary['frames']} frames "
                              f"at {summary['fps']:g} fps{unmatched}")
        return {"FINISHED"}


def draw_performance(layout, context):
    """The panel's Performance box (the head's Actions, the two buttons); returns the box."""
    box = layout.box()
    box.label(text="Performance", icon="ACTION")
    head = find_head(context.active_object)
    if head is None:
        box.label(text=_NO_HEAD, icon="INFO")
    else:
        shapes, motion, gaze = animation.current_actions(head)
        box.label(text=f"{head.name}: {shapes or 'no shape-key Action'}", icon="SHAPEKEY_DATA")
        if motion:
            box.label(text=f"Head motion: {motion}", icon="OBJECT_ORIGIN")
        if gaze:
            box.label(text=f"Eyes: {gaze}", icon="HIDE_OFF")
    row = box.row(align=True)
    row.operator("headrig.retarget_video", icon="FILE_MOVIE")
    row.operator("headrig.import_livelink", icon="IMPORT")
    return box


CLASSES = (HEADRIG_OT_retarget_video, HEADRIG_OT_import_livelink)
