"""Video end to end through the add-on's operators: real bpy, a real `headrig serve` on loopback.

Build a head from one video (``d3.mp4``): the imported head plays the tracked performance (one
shape-key Action over every frame, one head-motion Action on the root, the scene at the clip's fps
and length). Then "Retarget video" drives that head with another actor's video (``d6.mp4``): a new
Action is applied and the first one is kept. With the Avatar setting, a head from ``d0.mp4``
arrives with its Gaussian avatar bound to it. As in ``test_addon_e2e.py`` the tests call the add-on's
timer function (``drain.drain``) themselves, since headless bpy has no event loop. Each test stands
alone: the head built from the video is a module fixture both use.
"""

from __future__ import annotations

import importlib
import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import build_addon
from bench.serverproc import ServerProcess
from shared.animation import read_animation
from tests.conftest import MEDIA, require_shared

bpy = pytest.importorskip("bpy")

pytestmark = [pytest.mark.blender, pytest.mark.slow]

VIDEOS = MEDIA / "video"
BUILD_VIDEO, DRIVING_VIDEO = VIDEOS / "d3.mp4", VIDEOS / "d6.mp4"
AVATAR_VIDEO = VIDEOS / "d0.mp4"  # the shortest clip: the avatar trains for minutes on a CPU


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    require_shared()
    assert BUILD_VIDEO.is_file() and DRIVING_VIDEO.is_file(), f"sample media missing: {BUILD_VIDEO}, {DRIVING_VIDEO}"
    srv = ServerProcess(tmp_path_factory.mktemp("serve") / "data")
    request.addfinalizer(lambda: srv.kill(signal.SIGTERM))  # also when start() fails half way
    return srv.start()


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    """The built extension, registered; fetched results go to a temporary folder. The heads it made
    are cleared afterwards (other add-on tests count the heads in the scene)."""
    root = tmp_path_factory.mktemp("addon")
    with build_addon.imported(root, register=True) as mod:
        importlib.import_module("headrig.jobs").registry().results_dir = root / "results"
        yield mod
    bpy.ops.wm.read_factory_settings(use_empty=True)


def _jobs():
    return importlib.import_module("headrig.jobs")


def _run(entry, deadline_s: float) -> None:
    """Call the timer as Blender would until the job ends (or fail after ``deadline_s``)."""
    drain = importlib.import_module("headrig.drain").drain
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert drain() > 0
        if not entry.active:
            return
        time.sleep(0.1)
    raise AssertionError(f"{entry.label} not done within {deadline_s} s: {vars(entry)}")


def _new_entry(operator, **kwargs):
    reg = _jobs().registry()
    before = set(reg.jobs)
    assert operator(**kwargs) == {"FINISHED"}
    (key,) = set(reg.jobs) - before
    return reg.jobs[key]


def _keyed_frames(action) -> set[float]:
    """Frames keyed on any F-curve: a slotted Action's channelbags (4.4+), else its flat list."""
    if hasattr(action, "layers"):
        curves = [c for layer in action.layers for strip in layer.strips for bag in strip.channelbags
                  for c in bag.fcurves]
    else:
        curves = list(action.fcurves)
    return {k.co[0] for curve in curves for k in curve.keyframe_points}


@pytest.fixture(scope="module")
def video_head(addon, server):
    """A head built from BUILD_VIDEO through the operators and imported by the timer: its job entry and
    the scene as the import left it (read here, so a later retarget cannot change what is checked)."""
    prefs = importlib.import_module("headrig.preferences").get_prefs(bpy.context)
    prefs.server_address, prefs.timeout_s = server.address, 10.0
    bpy.ops.headrig.clear_photos()
    assert bpy.ops.headrig.add_photos(filepath=str(BUILD_VIDEO)) == {"FINISHED"}
    entry = _new_entry(bpy.ops.headrig.build_head)
    _run(entry, 1100)
    assert entry.state == "done", entry.message
    head, scene = bpy.data.objects[entry.object_name], bpy.context.scene
    shapes, motion = head.data.shape_keys.animation_data.action, head.parent.animation_data.action
    return SimpleNamespace(
        entry=entry, head=head.name, root=head.parent.name, fps=scene.render.fps / scene.render.fps_base,
        frame_start=scene.frame_start, frame_end=scene.frame_end, actions=(shapes.name, motion.name),
        keyed=_keyed_frames(shapes), all_actions=sorted(a.name for a in bpy.data.actions),
        mesh_action=head.animation_data.action if head.animation_data else None)


def test_build_head_from_video(addon, video_head):
    built = video_head
    assert built.head == "d3_head" and built.root == "d3_root"
    clip = read_animation(built.entry.bundle_path)
    assert built.fps == pytest.approx(clip.fps) and round(clip.fps) == 30
    last = built.frame_start + round(clip.times[-1] * clip.fps)
    assert built.frame_end == last
    assert built.actions == ("d3", "d3 (head)")
    assert len(built.keyed) == clip.frame_count
    assert min(built.keyed) == built.frame_start and max(built.keyed) == pytest.approx(last, abs=0.5)
    assert built.all_actions == ["d3", "d3 (eyes)", "d3 (head)"]  # nothing left of the glTF import
    assert built.mesh_action is None


def test_retarget_video_onto_the_head(addon, server, video_head):
    head = bpy.data.objects[video_head.head]
    bpy.context.view_layer.objects.active = head
    entry = _new_entry(bpy.ops.headrig.retarget_video, filepath=str(DRIVING_VIDEO))
    assert entry.kind == "retarget" and entry.apply["target"] == "d3_head"
    _run(entry, 1100)
    assert entry.state == "done", entry.message
    keys = head.data.shape_keys
    assert keys.animation_data.action.name == "d3 retarget d6"
    assert head.parent.animation_data.action.name == "d3 retarget d6 (head)"
    assert bpy.data.actions["d3"].use_fake_user and bpy.data.actions["d3 (head)"].use_fake_user  # the first take
    clip = read_animation(entry.bundle_path)
    assert clip.calibration, "a retarget result records its calibration"
    assert (_jobs().results_dir() / entry.job_id / "livelink.csv").is_file()
    assert len(_keyed_frames(keys.animation_data.action)) == clip.frame_count
    scene = bpy.context.scene
    assert scene.frame_end == scene.frame_start + round(clip.times[-1] * clip.fps)
    values = []
    for frame in range(scene.frame_start, scene.frame_end + 1, 5):
        scene.frame_set(frame)
        values.append(keys.key_blocks["jawOpen"].value)
    assert max(values) - min(values) > 0.05, "the jaw never moves in a talking clip"


def test_build_head_with_an_avatar_from_the_panel(addon, server):
    """The Build head box's Avatar setting reaches the server: the head arrives with its Gaussians
    (and their expression bake) bound to it, and the avatar beats the textured mesh held out."""
    prefs = importlib.import_module("headrig.preferences").get_prefs(bpy.context)
    prefs.server_address, prefs.timeout_s = server.address, 10.0
    bpy.ops.headrig.clear_photos()
    assert bpy.ops.headrig.add_photos(filepath=str(AVATAR_VIDEO)) == {"FINISHED"}
    bpy.context.scene.headrig.avatar = "fast"
    try:
        entry = _new_entry(bpy.ops.headrig.build_head)
        _run(entry, 1100)
    finally:
        bpy.context.scene.headrig.avatar = "NONE"
    assert entry.state == "done", entry.message
    report = json.loads((Path(entry.bundle_path) / "avatar.json").read_text())
    assert report["preset"] == "fast"
    gaussians = bpy.data.objects[f"{AVATAR_VIDEO.stem}_gaussians"]
    assert gaussians.parent == bpy.data.objects[entry.object_name].parent
    assert len(gaussians.data.vertices) == report["training"]["gaussians"]
    assert gaussians["headrig_expression_keys"] == 53
    held_out = report["heldout"]["mean"]
    assert held_out["psnr"] > held_out["mesh_psnr"] + 3.0
