"""Properties: the photo list on the Scene, connection/progress state on the WindowManager."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)


class HEADRIG_PG_photo(bpy.types.PropertyGroup):
    filepath: StringProperty(name="Photo", subtype="FILE_PATH")


class HEADRIG_PG_scene(bpy.types.PropertyGroup):
    photos: CollectionProperty(type=HEADRIG_PG_photo)
    photo_index: IntProperty(default=0)


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
