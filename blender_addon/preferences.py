"""Add-on preferences: where the backend is, CURVE keys, timeouts, and how to start a local backend."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import bpy
from bpy.props import FloatProperty, IntProperty, StringProperty

from .worker import is_loopback

ADDON_ID = __package__
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
ONLINE_OFF = ("Blender's online access is off; allow it in Preferences > System > Network, "
              "or use a local backend")


class HEADRIG_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    server_address: StringProperty(name="Server", default=DEFAULT_ADDRESS,
                                   description="ZeroMQ address of `headrig serve` (tcp://host:port)")
    keys_dir: StringProperty(name="CURVE keys", subtype="DIR_PATH", default="",
                             description="Folder made by `headrig keys generate` (needed for any non-loopback server)")
    timeout_s: FloatProperty(name="Timeout (s)", default=10.0, min=0.1, max=600.0,
                             description="Seconds without a reply before a request is retried")
    retries: IntProperty(name="Retries", default=3, min=1, max=20)
    python_path: StringProperty(name="Backend Python", subtype="FILE_PATH", default="",
                                description="Python of the HeadRig backend's environment (e.g. .venv/bin/python)")
    data_dir: StringProperty(name="Data folder", subtype="DIR_PATH", default="",
                             description="Where the local backend keeps its jobs (default: a folder in the user cache)")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "server_address")
        col.prop(self, "keys_dir")
        row = col.row()
        row.prop(self, "timeout_s")
        row.prop(self, "retries")
        box = layout.box()
        box.label(text="Start local backend")
        box.prop(self, "python_path")
        box.prop(self, "data_dir")
        box.operator("headrig.start_backend", icon="PLAY")
        box.operator("headrig.stop_backend", icon="CANCEL")


class _Defaults:
    """The preferences' defaults, when the add-on is registered without Blender's add-on manager."""

    server_address = DEFAULT_ADDRESS
    keys_dir = ""
    timeout_s = 10.0
    retries = 3
    python_path = ""
    data_dir = ""


_FALLBACK = _Defaults()


def get_prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is not None and addon.preferences is not None:
        return addon.preferences
    return _FALLBACK


def client_settings(context=None) -> dict:
    """address, keys_dir, timeout_s, retries from the preferences (stripped, absolute key folder)."""
    p = get_prefs(context)
    keys = bpy.path.abspath(p.keys_dir).strip() if p.keys_dir else ""
    return {"address": p.server_address.strip() or DEFAULT_ADDRESS, "keys_dir": keys or None,
            "timeout_s": float(p.timeout_s), "retries": int(p.retries)}


def network_refusal(address: str) -> str | None:
    """The line to report when Blender may not reach this address, else None."""
    if not is_loopback(address) and not getattr(bpy.app, "online_access", True):
        return ONLINE_OFF
    return None


def resolve_python(path: str) -> str | None:
    """An executable python: the preference, else None (we never guess Blender's own python)."""
    path = bpy.path.abspath(path).strip() if path else ""
    if not path:
        return None
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    found = shutil.which(path)
    return found


def default_data_dir() -> Path:
    base = bpy.utils.user_resource("CACHE", path="headrig", create=True) if hasattr(bpy.utils, "user_resource") else ""
    return Path(base or Path.home() / ".cache" / "headrig") / "serve"


def backend_command(python: str, address: str, data_dir: str) -> list[str]:
    return [python, "-m", "backend", "serve", "--bind", address, "--data-dir", data_dir]
