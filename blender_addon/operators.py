"""Operators: check the connection, manage photos, build / cancel, import a bundle, start the backend.

Every failure is ``self.report({'ERROR'}, one line)`` naming the file or the server; nothing raises
into Blender. Long work runs in ``worker.py`` threads; the ``jobs.drain`` timer brings results in.
When invoked from the UI, Build and Check stay modal until their answer arrives (so they can report
it; ESC cancels a build); called from Python (``execute``) they return at once.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import bpy
from bpy.props import CollectionProperty, StringProperty

from . import jobs, preferences
from .importer import ImportFailed, import_bundle

PHOTO_EXTS = (".jpg", ".jpeg", ".png")


def _registry(op):
    reg = jobs.registry()
    if reg is None:
        op.report({"ERROR"}, "HeadRig is not registered; re-enable the add-on")
    return reg


def _settings_or_report(op, context):
    settings = preferences.client_settings(context)
    refusal = preferences.network_refusal(settings["address"])
    if refusal:
        op.report({"ERROR"}, refusal)
        return None
    keys = settings["keys_dir"]
    if keys and not os.path.isdir(keys):
        op.report({"ERROR"}, f"CURVE key folder {keys} does not exist; fix it in the HeadRig preferences")
        return None
    return settings


class HEADRIG_OT_check_connection(bpy.types.Operator):
    """Say hello to the HeadRig server: name, device, protocol version"""

    bl_idname = "headrig.check_connection"
    bl_label = "Check connection"
    bl_options = {"REGISTER"}

    _timer = None

    def execute(self, context):
        reg = _registry(self)
        settings = reg and _settings_or_report(self, context)
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
    """Add JPEG or PNG photos of one person"""

    bl_idname = "headrig.add_photos"
    bl_label = "Add photos"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default="*.jpg;*.jpeg;*.png;*.JPG;*.JPEG;*.PNG", options={"HIDDEN"})
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
            if not path.lower().endswith(PHOTO_EXTS):
                bad.append(f"{os.path.basename(path)}: not a JPEG or PNG")
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
    """Send the photos to the HeadRig server, build a head and import it when it is done"""

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
        reg = _registry(self)
        settings = reg and _settings_or_report(self, context)
        if not settings:
            return None
        photos = [bpy.path.abspath(p.filepath) for p in context.scene.headrig.photos]
        if not photos:
            self.report({"ERROR"}, "No photos: add JPEG or PNG photos of one person first (Add photos)")
            return None
        for path in photos:
            name = os.path.basename(path)
            if not os.path.isfile(path):
                self.report({"ERROR"}, f"{name}: no such file ({path}); remove it from the list or fix the path")
                return None
            if self.kind == "reconstruct" and not path.lower().endswith(PHOTO_EXTS):
                self.report({"ERROR"}, f"{name}: not a JPEG or PNG photo")
                return None
            if os.path.getsize(path) == 0:
                self.report({"ERROR"}, f"{name}: the file is empty")
                return None
        names = [os.path.basename(p) for p in photos]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            self.report({"ERROR"}, f"Two photos are named {dupes[0]}: photos are sent by name, rename one")
            return None
        label = Path(photos[0]).stem + (f" +{len(photos) - 1}" if len(photos) > 1 else "")
        params = {"seconds": self.params_seconds} if self.kind == "probe" and self.params_seconds else {}
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
        reg = _registry(self)
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
        reg = _registry(self)
        if reg is None:
            return {"CANCELLED"}
        reg.clear_finished()
        return {"FINISHED"}


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


class HEADRIG_OT_start_backend(bpy.types.Operator):
    """Start `python -m backend serve` on this machine, at the server address in the preferences"""

    bl_idname = "headrig.start_backend"
    bl_label = "Start local backend"
    bl_options = {"REGISTER"}

    def execute(self, context):
        reg = _registry(self)
        if reg is None:
            return {"CANCELLED"}
        prefs = preferences.get_prefs(context)
        address = prefs.server_address.strip() or preferences.DEFAULT_ADDRESS
        if reg.backend is not None and reg.backend.poll() is None:
            self.report({"WARNING"}, f"A local backend is already running (pid {reg.backend.pid}) on {reg.backend_address}")
            return {"CANCELLED"}
        if not address.startswith("tcp://") or not preferences.is_loopback(address):
            self.report({"ERROR"}, f"A local backend listens on loopback only; set the server to tcp://127.0.0.1:PORT, not {address}")
            return {"CANCELLED"}
        if not prefs.python_path.strip():
            self.report({"ERROR"}, "Set the backend's Python in the HeadRig preferences (e.g. /path/to/headrig/.venv/bin/python)")
            return {"CANCELLED"}
        python = preferences.resolve_python(prefs.python_path)
        if python is None:
            self.report({"ERROR"}, f"Python not found: {prefs.python_path} is not an executable file; fix it in the HeadRig preferences")
            return {"CANCELLED"}
        data_dir = bpy.path.abspath(prefs.data_dir).strip() if prefs.data_dir else str(preferences.default_data_dir())
        try:
            os.makedirs(data_dir, exist_ok=True)
            cmd = preferences.backend_command(python, address, data_dir)
            # cwd: the repository when the python lives in its .venv (so `-m backend` resolves either way)
            venv_root = Path(python).resolve().parent.parent.parent
            cwd = str(venv_root) if (venv_root / "backend").is_dir() else None
            reg.backend = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True)
            reg.backend_address = address
        except OSError as exc:
            self.report({"ERROR"}, f"Could not start {python}: {exc.strerror or exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Started the backend (pid {reg.backend.pid}) on {address}; check the connection in a few seconds")
        return {"FINISHED"}


class HEADRIG_OT_stop_backend(bpy.types.Operator):
    """Stop the local backend this Blender started"""

    bl_idname = "headrig.stop_backend"
    bl_label = "Stop local backend"
    bl_options = {"REGISTER"}

    def execute(self, context):
        reg = _registry(self)
        if reg is None or not jobs.stop_backend(reg):
            self.report({"WARNING"}, "No local backend started by this Blender is running")
            return {"CANCELLED"}
        self.report({"INFO"}, "Stopped the local backend")
        return {"FINISHED"}


CLASSES = (HEADRIG_OT_check_connection, HEADRIG_OT_add_photos, HEADRIG_OT_remove_photo, HEADRIG_OT_clear_photos,
           HEADRIG_OT_build_head, HEADRIG_OT_cancel_job, HEADRIG_OT_clear_jobs, HEADRIG_OT_import_bundle,
           HEADRIG_OT_start_backend, HEADRIG_OT_stop_backend)
