"""Operators: check the connection, manage the inputs, build / cancel, import a bundle.

A head is built from photos of one person or from exactly one video (the server fits the head and
tracks the performance; the bundle then carries an ``animation.json``). Retarget and Live Link
import are in ``operators_animation.py``; starting and stopping a local backend in
``operators_backend.py``.

Every failure is ``self.report({'ERROR'}, one line)`` naming the file or the server; nothing raises
into Blender. Long work runs in ``worker.py`` threads; the ``drain.drain`` timer brings results in.
When invoked from the UI, Build and Check stay modal until their answer arrives (so they can report
it; ESC cancels a build); called from Python (``execute``) they return at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.props import CollectionProperty, StringProperty

from . import jobs, preferences
from .importer import ImportFailed, import_bundle
from .jobs import registry_or_report, settings_or_report
from .props import NO_AVATAR

PHOTO_EXTS = (".jpg", ".jpeg", ".png")
VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")  # what the backend decodes (backend/video)
MEDIA_EXTS = PHOTO_EXTS + VIDEO_EXTS
_NOT_MEDIA = "not a photo (JPEG, PNG) or video (MP4, MOV, M4V, MKV, WebM, AVI)"


def file_glob(exts) -> str:
    """``*.mp4;*.MP4;...``: the file browser's filter matches case-sensitively on Linux."""
    return ";".join(f"*{e}" for e in exts) + ";" + ";".join(f"*{e.upper()}" for e in exts)


class HEADRIG_OT_check_connection(bpy.types.Operator):
    """Say hello to the HeadRig server: name, device, protocol version"""

    bl_idname = "headrig.check_connection"
    bl_label = "Check connection"
    bl_options = {"REGISTER"}

    _timer = None

    def execute(self, context):
        reg = registry_or_report(self)
        settings = reg and settings_or_report(self, context)
        if not settings:
            return {"CANCELLED"}
        props = context.window_manager.headrig
        props.connection_checked = False
        props.connection_message = f"Checking {settings['address']}..."
        reg.check_connection(settings)
        return {"FINISHED"}

    def invoke(self, context, event):
        if self.execute(context) != {"FINISHED"}:
            return {"CANCELLED"}
        if context.window is None:
            return {"FINISHED"}
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        props = context.window_manager.headrig
        if event.type != "TIMER" or not props.connection_checked:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        if props.connection_ok:
            self.report({"INFO"}, f"Connected to {props.server_name} (protocol {props.server_version}, {props.server_device})")
        else:
            self.report({"ERROR"}, props.connection_message)
        return {"FINISHED"}


class HEADRIG_OT_add_photos(bpy.types.Operator):
    """Add JPEG or PNG photos of one person, or one video of them (MP4, MOV, MKV, WebM, AVI)"""

    bl_idname = "headrig.add_photos"
    bl_label = "Add photos or video"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default=file_glob(MEDIA_EXTS), options={"HIDDEN"})
    directory: StringProperty(subtype="DIR_PATH")
    files: CollectionProperty(type=bpy.types.OperatorFileListElement)
    filepath: StringProperty(subtype="FILE_PATH")

    def execute(self, context):
        names = [f.name for f in self.files if f.name] if self.files else []
        paths = [os.path.join(self.directory, n) for n in names] if names else ([self.filepath] if self.filepath else [])
        settings = context.scene.headrig
        have = {p.filepath for p in settings.photos}
        added, bad = 0, []
        for raw in paths:
            path = bpy.path.abspath(raw)
            if not path.lower().endswith(MEDIA_EXTS):
                bad.append(f"{os.path.basename(path)}: {_NOT_MEDIA}")
                continue
            if not os.path.isfile(path):
                bad.append(f"{os.path.basename(path)}: no such file ({path})")
                continue
            if path in have:
                continue
            item = settings.photos.add()
            item.filepath, item.name = path, os.path.basename(path)
            have.add(path)
            added += 1
        settings.photo_index = max(0, len(settings.photos) - 1)
        if bad:
            self.report({"ERROR"}, "; ".join(bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""))
            return {"FINISHED"} if added else {"CANCELLED"}
        return {"FINISHED"}

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


class HEADRIG_OT_remove_photo(bpy.types.Operator):
    """Remove the selected photo from the list"""

    bl_idname = "headrig.remove_photo"
    bl_label = "Remove photo"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return len(context.scene.headrig.photos) > 0

    def execute(self, context):
        s = context.scene.headrig
        if 0 <= s.photo_index < len(s.photos):
            s.photos.remove(s.photo_index)
            s.photo_index = min(s.photo_index, len(s.photos) - 1)
        return {"FINISHED"}


class HEADRIG_OT_clear_photos(bpy.types.Operator):
    """Remove every photo from the list"""

    bl_idname = "headrig.clear_photos"
    bl_label = "Clear photos"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.headrig.photos.clear()
        context.scene.headrig.photo_index = 0
        return {"FINISHED"}


class HEADRIG_OT_build_head(bpy.types.Operator):
    """Send the photos or the video to the HeadRig server, build a head and import it when it is done"""

    bl_idname = "headrig.build_head"
    bl_label = "Build head"
    bl_options = {"REGISTER"}

    kind: StringProperty(default="reconstruct", options={"HIDDEN", "SKIP_SAVE"},
                         description="Job kind (reconstruct; probe for a connection test)")
    params_seconds: bpy.props.FloatProperty(default=0.0, min=0.0, options={"HIDDEN", "SKIP_SAVE"},
                                            description="probe only: how long the job runs")
    _timer = None
    _local_id = ""

    def _start(self, context):
        reg = registry_or_report(self)
        settings = reg and settings_or_report(self, context)
        if not settings:
            return None
        photos = [bpy.path.abspath(p.filepath) for p in context.scene.headrig.photos]
        if not photos:
            self.report({"ERROR"}, "No photos: add JPEG or PNG photos of one person, or one video, first "
                                   "(Add photos or video)")
            return None
        for path in photos:
            name = os.path.basename(path)
            if not os.path.isfile(path):
                self.report({"ERROR"}, f"{name}: no such file ({path}); remove it from the list or fix the path")
                return None
            if self.kind == "reconstruct" and not path.lower().endswith(MEDIA_EXTS):
                self.report({"ERROR"}, f"{name}: {_NOT_MEDIA}")
                return None
            if os.path.getsize(path) == 0:
                self.report({"ERROR"}, f"{name}: the file is empty")
                return None
        videos = [os.path.basename(p) for p in photos if p.lower().endswith(VIDEO_EXTS)]
        if self.kind == "reconstruct" and videos and len(photos) > 1:
            self.report({"ERROR"}, f"{videos[0]}: a video must be the only input (one video per head); "
                                   f"remove the other {len(photos) - 1} file(s) from the list")
            return None
        names = [os.path.basename(p) for p in photos]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            self.report({"ERROR"}, f"Two photos are named {dupes[0]}: photos are sent by name, rename one")
            return None
        label = Path(photos[0]).stem + (f" +{len(photos) - 1}" if len(photos) > 1 else "")
        params = {"seconds": self.params_seconds} if self.kind == "probe" and self.params_seconds else {}
        if self.kind == "reconstruct":
            avatar, problem = avatar_param(context.scene.headrig.avatar, photos, videos)
            if problem:
                self.report({"ERROR"}, problem)
                return None
            params.update(avatar)
        try:
            out_dir = jobs.results_dir()
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot create the results folder: {exc}")
            return None
        entry = reg.start_job(label, photos, settings, out_dir, kind=self.kind, params=params)
        self._local_id = entry.local_id
        context.window_manager.headrig.active_job = entry.local_id
        context.window_manager.headrig.busy = True
        return entry

    def execute(self, context):
        entry = self._start(context)
        if entry is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"Building {entry.label} on {preferences.client_settings(context)['address']}")
        return {"FINISHED"}

    def invoke(self, context, event):
        entry = self._start(context)
        if entry is None:
            return {"CANCELLED"}
        if context.window is None:
            return {"FINISHED"}
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        reg = jobs.registry()
        entry = reg.jobs.get(self._local_id) if reg else None
        if entry is None:
            return self._finish(context, {"CANCELLED"})
        if event.type == "ESC" and event.value == "PRESS":
            reg.cancel(self._local_id)
            self.report({"WARNING"}, f"{entry.label}: cancelling")
            return {"RUNNING_MODAL"}
        if event.type != "TIMER" or entry.active:
            return {"PASS_THROUGH"}
        if entry.state == "done":
            self.report({"INFO"}, entry.message)
            return self._finish(context, {"FINISHED"})
        self.report({"WARNING"} if entry.state == "cancelled" else {"ERROR"}, entry.message)
        return self._finish(context, {"CANCELLED"})

    def _finish(self, context, result):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        return result


class HEADRIG_OT_cancel_job(bpy.types.Operator):
    """Cancel a running HeadRig job (the server stops it within about a second)"""

    bl_idname = "headrig.cancel_job"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    local_id: StringProperty(default="", description="Job to cancel; empty: the newest running one")

    def execute(self, context):
        reg = registry_or_report(self)
        if reg is None:
            return {"CANCELLED"}
        key = self.local_id or next((k for k, e in reversed(list(reg.jobs.items())) if e.active), "")
        if not key or not reg.cancel(key):
            self.report({"WARNING"}, "No running HeadRig job to cancel")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{reg.jobs[key].label}: cancelling")
        return {"FINISHED"}


class HEADRIG_OT_clear_jobs(bpy.types.Operator):
    """Forget finished, failed and cancelled jobs (their files stay on disk)"""

    bl_idname = "headrig.clear_jobs"
    bl_label = "Clear finished"
    bl_options = {"REGISTER"}

    def execute(self, context):
        reg = registry_or_report(self)
        if reg is None:
            return {"CANCELLED"}
        reg.clear_finished()
        return {"FINISHED"}


def avatar_param(choice: str, inputs: list[str], videos: list[str]) -> tuple[dict, str]:
    """(reconstruct params for the Avatar setting ``choice``, "" or why it cannot be sent)."""
    if choice == NO_AVATAR:
        return {}, ""
    if not videos:
        first = os.path.basename(inputs[0]) if inputs else "the list"
        return {}, (f"{first}: the {choice} avatar is trained from a video; add one clip instead of photos, "
                    "or set Avatar to No avatar")
    return {"avatar": choice}, ""


class HEADRIG_OT_import_bundle(bpy.types.Operator):
    """Import a HeadRig head bundle folder (head.json + head.glb); works offline"""

    bl_idname = "headrig.import_bundle"
    bl_label = "Import head bundle"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(subtype="DIR_PATH", description="The bundle folder")
    replace: bpy.props.BoolProperty(name="Replace", default=True,
                                    description="Replace an earlier import of the same head (same job or folder)")

    def execute(self, context):
        folder = bpy.path.abspath(self.directory).rstrip("/\\") if self.directory else ""
        if not folder:
            self.report({"ERROR"}, "Choose a head bundle folder (the one with head.json)")
            return {"CANCELLED"}
        try:
            obj = import_bundle(context, folder, replace=self.replace)
        except ImportFailed as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # never a traceback for the artist
            self.report({"ERROR"}, f"{folder}: import failed ({type(exc).__name__}: {exc})")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {obj.name} ({len(obj.data.vertices):,} vertices, "
                              f"{len(obj.data.shape_keys.key_blocks) - 1} shape keys)")
        return {"FINISHED"}

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


CLASSES = (HEADRIG_OT_check_connection, HEADRIG_OT_add_photos, HEADRIG_OT_remove_photo, HEADRIG_OT_clear_photos,
           HEADRIG_OT_build_head, HEADRIG_OT_cancel_job, HEADRIG_OT_clear_jobs, HEADRIG_OT_import_bundle)
