"""The VIEW3D sidebar tab "HeadRig": connection, build, jobs, performance (retarget, Live Link), import."""

from __future__ import annotations

import bpy

from . import jobs, preferences
from .operators import VIDEO_EXTS
from .operators_animation import draw_performance

_STATE_ICON = {"done": "CHECKMARK", "failed": "ERROR", "error": "ERROR", "cancelled": "CANCEL"}


class HEADRIG_UL_photos(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        video = item.filepath.lower().endswith(VIDEO_EXTS)
        layout.label(text=item.name or item.filepath, icon="FILE_MOVIE" if video else "IMAGE_DATA")


def _progress(layout, factor: float, text: str) -> None:
    if hasattr(layout, "progress"):  # UILayout.progress exists since Blender 4.0
        layout.progress(factor=factor, type="BAR", text=text)
    else:
        layout.label(text=f"{text} ({round(100 * factor)}%)")


def _job_rows(box, entries) -> None:
    for entry in reversed(entries[-8:]):
        col = box.column(align=True)
        if entry.active:
            _progress(col, entry.fraction, f"{entry.label}: {entry.stage or entry.state}")
            op = col.operator("headrig.cancel_job", text="Cancel", icon="CANCEL")
            op.local_id = entry.local_id
        else:
            col.label(text=f"{entry.label}: {entry.state}", icon=_STATE_ICON.get(entry.state, "DOT"))
        if entry.message:
            col.label(text=entry.message)


class HEADRIG_PT_main(bpy.types.Panel):
    bl_idname = "HEADRIG_PT_main"
    bl_label = "HeadRig"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "HeadRig"

    def draw(self, context):
        layout = self.layout
        wm = context.window_manager.headrig
        scene = context.scene.headrig
        reg = jobs.registry()

        box = layout.box()
        box.label(text="Connection", icon="URL")
        box.label(text=f"Server: {preferences.client_settings(context)['address']}")
        if wm.connection_checked and wm.connection_ok:
            box.label(text=f"{wm.server_name} · {wm.server_device} · protocol {wm.server_version}", icon="CHECKMARK")
        elif wm.connection_message:
            box.label(text=wm.connection_message, icon="ERROR" if wm.connection_checked else "TIME")
        row = box.row(align=True)
        row.operator("headrig.check_connection", icon="FILE_REFRESH")
        row.operator("headrig.start_backend", text="Start local backend", icon="PLAY")

        box = layout.box()
        box.label(text="Build head (photos or one video)", icon="USER")
        row = box.row()
        row.template_list("HEADRIG_UL_photos", "", scene, "photos", scene, "photo_index", rows=3)
        col = row.column(align=True)
        col.operator("headrig.add_photos", text="", icon="ADD")
        col.operator("headrig.remove_photo", text="", icon="REMOVE")
        col.operator("headrig.clear_photos", text="", icon="X")
        box.prop(scene, "avatar")
        row = box.row(align=True)
        row.enabled = len(scene.photos) > 0
        row.operator("headrig.build_head", icon="PLAY")
        if wm.busy:
            _progress(box, wm.progress, wm.progress_text)
            box.operator("headrig.cancel_job", icon="CANCEL")

        entries = list(reg.jobs.values()) if reg else []
        builds = [e for e in entries if e.kind != "retarget"]
        box = layout.box()
        box.label(text="Jobs", icon="SORTTIME")
        if not builds:
            box.label(text="No jobs yet")
        _job_rows(box, builds)
        if any(not e.active for e in entries):
            box.operator("headrig.clear_jobs", icon="TRASH")

        _job_rows(draw_performance(layout, context), [e for e in entries if e.kind == "retarget"])

        layout.operator("headrig.import_bundle", icon="IMPORT")
        box = layout.box()
        box.label(text="Avatar", icon="OUTLINER_OB_POINTCLOUD")
        box.operator("headrig.import_gaussians", icon="IMPORT")
        row = box.row(align=True)
        row.operator("headrig.turntable", icon="CAMERA_DATA")
        row.operator("headrig.backend_turntable", icon="RENDER_ANIMATION")


CLASSES = (HEADRIG_UL_photos, HEADRIG_PT_main)
