"""Properties: the photo list and build options on the Scene, connection/progress state on the WindowManager."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from .headrig_shared.protocol import AVATAR_PRESETS

NO_AVATAR = "NONE"


class HEADRIG_PG_photo(bpy.types.PropertyGroup):
    filepath: StringProperty(name="Photo", subtype="FILE_PATH")


class HEADRIG_PG_scene(bpy.types.PropertyGroup):
    photos: CollectionProperty(type=HEADRIG_PG_photo)
    photo_index: IntProperty(default=0)
    avatar: EnumProperty(
        name="Avatar", default=NO_AVATAR,
        description="Also train a Gaussian avatar bound to the head (from a video); the head arrives with it",
        items=[(NO_AVATAR, "No avatar", "The mesh, shape keys and animation only")]
        + [(name, name.capitalize(), what) for name, what in AVATAR_PRESETS.items()])


class HEADRIG_PG_wm(bpy.types.PropertyGroup):
    connection_checked: BoolProperty(default=False)
    connection_ok: BoolProperty(default=False)
    connection_message: StringProperty(default="")
    server_name: StringProperty(default="")
    server_device: StringProperty(default="")
    server_version: StringProperty(default="")
    busy: BoolProperty(default=False)
    active_job: StringProperty(default="")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    progress_text: StringProperty(default="")
    last_message: StringProperty(default="")


CLASSES = (HEADRIG_PG_photo, HEADRIG_PG_scene, HEADRIG_PG_wm)


def attach() -> None:
    bpy.types.Scene.headrig = PointerProperty(type=HEADRIG_PG_scene)
    bpy.types.WindowManager.headrig = PointerProperty(type=HEADRIG_PG_wm)


def detach() -> None:
    for owner in (bpy.types.WindowManager, bpy.types.Scene):
        if hasattr(owner, "headrig"):
            del owner.headrig
