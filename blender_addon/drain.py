"""The timer that brings worker news into Blender, and the results in.

Threads (``worker.py``) never touch bpy: they put small tuples on ``Registry.events``. ``drain`` runs
on ``bpy.app.timers`` in the main thread, applies those tuples to the registry's ``JobEntry`` list and
the WindowManager properties, tags the UI for redraw, and brings finished results in: a built head
is imported (``importer.import_bundle``), a retarget's ``animation.json`` is applied to the head it
was made for (``animation.apply_result``), a turntable movie is loaded (``turntable.load_result``).

Time per call: ``drain`` handles queue items within a budget (``BUDGET_MS``) and imports at most one
finished bundle per call. Importing a head (Blender's glTF importer, ~29k vertices, 53 shape keys,
a 2k texture) cannot be split or moved off the main thread, so a call that imports takes as long as
the import; ``longest_timer_ms`` is the longest call of any kind, ``longest_drain_ms`` the longest
that imported nothing and ``longest_import_ms`` the longest import.

``install``/``uninstall`` (the add-on's register/unregister) create the registry and the timer, and
drop both.
"""

from __future__ import annotations

import queue
import time

import bpy

from . import animation, importer, jobs, turntable
from .jobs import Registry

INTERVAL_S = 0.1
BUDGET_MS = 20.0


def install() -> Registry:
    uninstall()
    reg = jobs.create()
    if not bpy.app.timers.is_registered(drain):
        bpy.app.timers.register(drain, first_interval=INTERVAL_S, persistent=True)
    return reg


def uninstall() -> None:
    if bpy.app.timers.is_registered(drain):
        bpy.app.timers.unregister(drain)
    jobs.drop()


def _wm_props():
    wm = getattr(bpy.context, "window_manager", None)
    return getattr(wm, "headrig", None) if wm is not None else None


def _apply(reg: Registry, item: tuple, props) -> None:
    kind, key = item[0], item[1]
    if kind == "connection":
        ok, info = item[2], item[3]
        if props is not None:
            props.connection_ok = ok
            props.connection_checked = True
            props.connection_message = "" if ok else info.get("message", "")
            props.server_name = info.get("server", "") if ok else ""
            props.server_device = info.get("device", "") if ok else ""
            props.server_version = info.get("version", "") if ok else ""
        reg.checks = [c for c in reg.checks if c.token != key]
        return
    entry = reg.jobs.get(key)
    if entry is None:
        return
    if kind == "submitted":
        entry.job_id, entry.state, entry.message = item[2], "queued", "Queued on the server"
    elif kind == "progress":
        stage, fraction, message = item[2], item[3], item[4]
        entry.state = "queued" if stage == "queued" else "running"
        entry.stage, entry.fraction = stage, max(0.0, min(1.0, float(fraction)))
        entry.message = message or stage
    elif kind == "fetching":
        entry.state, entry.fraction, entry.message = "fetching", 1.0, jobs.FETCHING.get(entry.kind, "Downloading the head")
    elif kind == "done":
        entry.bundle_path = item[2]
        if entry.cancel_requested:
            entry.state, entry.message = "cancelled", "Cancelled (the result is kept on disk, not imported)"
        elif reg.auto_import:
            entry.state = "importing"
            entry.message = "Applying the animation" if entry.kind == "retarget" else "Importing into the scene"
            reg.to_import.append(key)
        else:
            entry.state, entry.message = "done", f"Downloaded to {entry.bundle_path}"
    elif kind == "failed":
        entry.state, entry.message = "failed", item[3]
    elif kind == "cancelled":
        entry.state, entry.message = "cancelled", item[2]
    elif kind == "error":
        entry.state, entry.message = "error", item[3]
    elif kind == "stopped":
        entry.state, entry.message = "error", "Stopped: the add-on was disabled"
    if not entry.active:
        reg.workers.pop(key, None)


def _import_one(reg: Registry) -> bool:
    while reg.to_import:
        key = reg.to_import.pop(0)
        entry = reg.jobs.get(key)
        if entry is None or entry.state != "importing":
            continue
        start = time.perf_counter()
        try:
            if entry.kind == "retarget":
                obj, summary = animation.apply_result(bpy.context, entry.bundle_path, **entry.apply)
                entry.message = (f"Applied {summary['shape_action']} to {obj.name} "
                                 f"({summary['frames']} frames at {summary['fps']:g} fps)")
            elif entry.kind == "turntable":
                obj, entry.message = turntable.load_result(bpy.context, entry.bundle_path, entry.label)
            else:
                obj = importer.import_bundle(bpy.context, entry.bundle_path, replace=True)
                entry.message = f"Imported {obj.name} ({len(obj.data.vertices):,} vertices)"
            entry.state, entry.object_name = "done", obj.name
            try:
                verb = "retarget" if entry.kind == "retarget" else "import"
                bpy.ops.ed.undo_push(message=f"HeadRig: {verb} {obj.name}")
            except Exception:
                pass
        except (importer.ImportFailed, animation.AnimationFailed) as exc:
            entry.state, entry.message = "error", str(exc)
        except Exception as exc:  # the artist gets one line, not a traceback
            entry.state, entry.message = "error", f"Import failed: {type(exc).__name__}: {exc}"
        reg.longest_import_ms = max(reg.longest_import_ms, 1000 * (time.perf_counter() - start))
        return True
    return False


def _update_progress(reg: Registry, props) -> None:
    if props is None:
        return
    active = [e for e in reg.jobs.values() if e.active]
    shown = active[-1] if active else (list(reg.jobs.values())[-1] if reg.jobs else None)
    props.busy = bool(active)
    if shown is None:
        return
    props.active_job = shown.local_id
    props.progress = shown.fraction if shown.state != "done" else 1.0
    props.progress_text = f"{shown.label}: {shown.stage or shown.state} {round(100 * props.progress)}%" \
        if shown.active else f"{shown.label}: {shown.state}"
    props.last_message = shown.message


def _tag_redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def drain():
    """bpy.app.timers callback: apply queued worker news; returns the next interval (never None)."""
    reg = jobs.registry()
    if reg is None:
        return None
    start = time.perf_counter()
    props = _wm_props()
    changed = False
    while (time.perf_counter() - start) * 1000 < BUDGET_MS:
        try:
            item = reg.events.get_nowait()
        except queue.Empty:
            break
        _apply(reg, item, props)
        changed = True
    imported = _import_one(reg)
    if changed or imported:
        _update_progress(reg, props)
        _tag_redraw()
    ms = 1000 * (time.perf_counter() - start)
    reg.timer_calls += 1
    reg.last_timer_ms = ms
    reg.longest_timer_ms = max(reg.longest_timer_ms, ms)
    if not imported:
        reg.longest_drain_ms = max(reg.longest_drain_ms, ms)
    return INTERVAL_S if (reg.busy() or reg.to_import) else 0.5
