"""Operators that start and stop a local ``python -m backend serve`` (loopback only)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import bpy

from . import jobs, preferences
from .jobs import registry_or_report


class HEADRIG_OT_start_backend(bpy.types.Operator):
    """Start `python -m backend serve` on this machine, at the server address in the preferences"""

    bl_idname = "headrig.start_backend"
    bl_label = "Start local backend"
    bl_options = {"REGISTER"}

    def execute(self, context):
        reg = registry_or_report(self)
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
        reg = registry_or_report(self)
        if reg is None or not jobs.stop_backend(reg):
            self.report({"WARNING"}, "No local backend started by this Blender is running")
            return {"CANCELLED"}
        self.report({"INFO"}, "Stopped the local backend")
        return {"FINISHED"}


CLASSES = (HEADRIG_OT_start_backend, HEADRIG_OT_stop_backend)
