"""The Blender add-on end to end: real bpy, a real `headrig serve`, the extension as build_addon.py zips it.

Headless bpy has no event loop, so the tests call the add-on's timer function (``drain.drain``)
themselves until a job ends, exactly as ``bpy.app.timers`` would. The add-on is imported from the
built zip (extracted as package ``headrig``), so it sees ``headrig_shared`` as an installed extension
does. Order matters for speed: the reconstructs run first (one worker, warmed once); the cancel test
runs last because a cancel replaces the server's worker.
"""

from __future__ import annotations

import faulthandler
import importlib
import signal
import sys
import time
import zipfile
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

import build_addon  # noqa: E402
from shared.client import HeadRigClient
from bench.serverproc import ServerProcess, free_port  # noqa: E402
from tests.conftest import require_shared  # noqa: E402

pytestmark = pytest.mark.blender

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "media" / "images"
D8, CAT = IMAGES / "d8.jpg", IMAGES / "s40.jpg"
ARKIT_COUNT = 53


@pytest.fixture(autouse=True)
def _hard_timeout():
    faulthandler.dump_traceback_later(240, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_shared()
    assert D8.is_file() and CAT.is_file(), f"sample media missing: {D8}, {CAT}"
    srv = ServerProcess(tmp_path_factory.mktemp("serve") / "data").start()
    yield srv
    srv.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    """The built extension, extracted as package ``headrig`` and registered (then unregistered)."""
    root = tmp_path_factory.mktemp("addon")
    with zipfile.ZipFile(build_addon.build(root / "dist")) as zf:
        zf.extractall(root / "headrig")
    sys.path.insert(0, str(root))
    try:
        mod = importlib.import_module("headrig")
        # enable / disable / re-enable must work repeatedly
        for _ in range(2):
            mod.register()
            mod.unregister()
        mod.register()
        jobs, drain = importlib.import_module("headrig.jobs"), importlib.import_module("headrig.drain")
        jobs.registry().results_dir = root / "results"
        yield mod
        mod.unregister()
        assert jobs.registry() is None and not bpy.app.timers.is_registered(drain.drain)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "headrig" or m.startswith("headrig.")]:
            del sys.modules[name]


def _jobs():
    return importlib.import_module("headrig.jobs")


def _drain():
    return importlib.import_module("headrig.drain").drain


def _prefs():
    return importlib.import_module("headrig.preferences").get_prefs(bpy.context)


def _use(address: str, timeout_s: float = 10.0, retries: int = 3) -> None:
    p = _prefs()
    p.server_address, p.timeout_s, p.retries = address, timeout_s, retries


def _set_photos(*paths: Path) -> None:
    bpy.ops.headrig.clear_photos()
    for path in paths:
        assert bpy.ops.headrig.add_photos(filepath=str(path)) == {"FINISHED"}
    assert [p.filepath for p in bpy.context.scene.headrig.photos] == [str(p) for p in paths]


def _run(until, deadline_s: float):
    """Call the timer like Blender would until until() holds; returns the drain's last interval."""
    jobs, drain = _jobs(), _drain()
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        interval = drain()
        assert interval is not None and interval > 0
        if until():
            return interval
        time.sleep(0.05)
    raise AssertionError(f"not done within {deadline_s} s: {[vars(e) for e in jobs.registry().jobs.values()]}")


def _build(**kwargs):
    reg = _jobs().registry()
    before = set(reg.jobs)
    assert bpy.ops.headrig.build_head(**kwargs) == {"FINISHED"}
    (key,) = set(reg.jobs) - before
    return reg.jobs[key]


def _head_collections():
    return [c for c in bpy.data.collections if "headrig_bundle" in c]


def test_connection_check(addon, server):
    _use(server.address)
    wm = bpy.context.window_manager.headrig
    assert bpy.ops.headrig.check_connection() == {"FINISHED"}
    _run(lambda: wm.connection_checked, 15)
    assert wm.connection_ok and wm.server_name and wm.server_device and wm.server_version == "1", \
        wm.connection_message


@pytest.fixture(scope="module")
def built(addon, server):
    """The job entry of d8.jpg built on the server and imported by the timer."""
    _use(server.address)
    _set_photos(D8)
    entry = _build()
    _run(lambda: not entry.active, 180)
    assert entry.state == "done", entry.message
    return entry


def test_build_head_from_photo(addon, built):
    entry, reg = built, _jobs().registry()
    heads = _head_collections()
    assert len(heads) == 1 and heads[0].name == "HeadRig d8"
    obj = bpy.data.objects[entry.object_name]
    assert obj.name == "d8_head" and obj.type == "MESH" and obj.parent.name == "d8_root"
    assert obj.parent.type == "EMPTY" and {o.name for o in heads[0].objects} == {"d8_head", "d8_root", "d8_eyes"}
    bundle = bpy.path.abspath(entry.bundle_path)
    manifest = addon.bundle_format().read_bundle(bundle)
    keys = [kb.name for kb in obj.data.shape_keys.key_blocks]
    assert keys == ["Basis"] + manifest.shape_keys and len(manifest.shape_keys) == ARKIT_COUNT
    assert "jawOpen" in keys
    assert obj["headrig_job_id"] == entry.job_id == manifest.job_id
    assert obj["headrig_model"] == manifest.head_model
    assert obj["headrig_bundle"] == str(Path(bundle).resolve())
    assert obj["headrig_landmark_rmse_px"] > 0
    skin = obj.data.materials.get("M_Face")
    assert skin is not None and skin.node_tree is not None
    images = [n.image for n in skin.node_tree.nodes if n.type == "TEX_IMAGE" and n.image is not None]
    assert images and images[0].size[0] > 0
    # jawOpen moves vertices: the key's data against Basis (metres), a few cm at the chin at most
    basis = obj.data.shape_keys.key_blocks["Basis"].data
    jaw = obj.data.shape_keys.key_blocks["jawOpen"].data
    biggest = max((a.co - b.co).length for a, b in zip(basis, jaw))
    assert 0.01 < biggest < 0.06, biggest
    # and the evaluated mesh (what the viewport shows) follows the key's value
    obj.data.shape_keys.key_blocks["jawOpen"].value = 1.0
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph).to_mesh()
    shown = max((v.co - b.co).length for v, b in zip(evaluated.vertices, basis))
    obj.evaluated_get(depsgraph).to_mesh_clear()
    obj.data.shape_keys.key_blocks["jawOpen"].value = 0.0
    assert abs(shown - biggest) < 1e-4, (shown, biggest)
    print(f"\nimported {obj.name}: {len(obj.data.vertices):,} vertices, {len(keys) - 1} shape keys, "
          f"jawOpen moves up to {1000 * biggest:.1f} mm; longest timer callback {reg.longest_timer_ms:.1f} ms "
          f"(without import {reg.longest_drain_ms:.1f} ms; import {reg.longest_import_ms:.0f} ms; "
          f"{reg.timer_calls} calls)")
    assert reg.longest_drain_ms < 100


def test_import_bundle_twice_replaces(addon, built):
    folder = built.bundle_path
    for _ in range(2):
        assert bpy.ops.headrig.import_bundle(directory=folder) == {"FINISHED"}
    heads = _head_collections()
    assert [c.name for c in heads] == ["HeadRig d8"]
    assert len([o for o in bpy.data.objects if o.name.startswith("d8_head")]) == 1
    assert len([m for m in bpy.data.meshes if m.name.startswith("d8_head")]) == 1
    assert bpy.data.objects["d8_head"].parent.name == "d8_root"
    # a folder that is not a bundle: one clean line, no traceback, nothing imported
    with pytest.raises(RuntimeError) as e:
        bpy.ops.headrig.import_bundle(directory=str(REPO / "tests"))
    assert "head.json" in str(e.value) and "Traceback" not in str(e.value)


def test_cat_photo_fails_with_no_face(addon, server):
    _use(server.address)
    _set_photos(CAT)
    entry = _build()
    _run(lambda: not entry.active, 120)
    assert entry.state == "failed", (entry.state, entry.message)
    assert "s40.jpg" in entry.message and "no face" in entry.message.lower(), entry.message
    assert "\n" not in entry.message and "Traceback" not in entry.message


def test_server_down_says_did_not_answer(addon):
    address = f"tcp://127.0.0.1:{free_port()}"
    _use(address, timeout_s=0.3, retries=2)
    _set_photos(D8)
    start = time.monotonic()
    entry = _build()
    _run(lambda: not entry.active, 15)
    assert entry.state == "error"
    assert entry.message == (f"Server {address} did not answer: start the backend (HeadRig > Start local backend) "
                             f"or check the address")
    assert time.monotonic() - start < 5
    wm = bpy.context.window_manager.headrig
    bpy.ops.headrig.check_connection()
    _run(lambda: wm.connection_checked, 10)
    assert not wm.connection_ok and "did not answer" in wm.connection_message


def test_refusals_are_one_clear_line(addon, tmp_path):
    _use("tcp://studio-gpu.example:5555")
    _set_photos(D8)
    if not bpy.app.online_access:
        with pytest.raises(RuntimeError) as e:
            bpy.ops.headrig.build_head()
        assert "online access is off" in str(e.value)
    _use("tcp://127.0.0.1:5555")
    missing = tmp_path / "gone.jpg"
    missing.write_bytes(b"x")
    _set_photos(missing)
    missing.unlink()
    with pytest.raises(RuntimeError) as e:
        bpy.ops.headrig.build_head()
    assert "gone.jpg: no such file" in str(e.value)
    p = _prefs()
    p.python_path = str(tmp_path / "nope" / "python")
    with pytest.raises(RuntimeError) as e:
        bpy.ops.headrig.start_backend()
    assert "Python not found" in str(e.value)
    p.python_path = ""


def test_cancel_mid_job(addon, server, tmp_path):
    _use(server.address)
    probe = tmp_path / "probe.txt"
    probe.write_bytes(b"probe")
    bpy.context.scene.headrig.photos.clear()
    item = bpy.context.scene.headrig.photos.add()
    item.filepath, item.name = str(probe), probe.name
    entry = _build(kind="probe", params_seconds=30.0)
    _run(lambda: entry.state == "running" and entry.fraction > 0, 30)
    start = time.monotonic()
    assert bpy.ops.headrig.cancel_job(local_id=entry.local_id) == {"FINISHED"}
    _run(lambda: not entry.active, 15)
    assert entry.state == "cancelled" and entry.message.startswith("Cancelled"), (entry.state, entry.message)
    assert time.monotonic() - start < 5
    with HeadRigClient(server.address, client_name="headrig-blender") as c:  # jobs are per client name
        assert c.status(entry.job_id)["state"] == "cancelled"


def test_wrong_curve_key_is_a_clear_message(addon, tmp_path):
    """A CURVE server ignores unknown keys; the artist is told to check the key, not a traceback."""
    from backend.cli import main

    for folder, artist in (("keys", "ann"), ("stranger", "bob")):
        assert main(["keys", "generate", str(tmp_path / folder)]) == 0
        assert main(["keys", "add-client", artist, "--keys", str(tmp_path / folder)]) == 0
    server = ServerProcess(tmp_path / "data", keys_dir=tmp_path / "keys", client_keys=tmp_path / "keys" / "clients" / "ann").start()
    address = server.address
    try:
        _use(address, timeout_s=0.5, retries=2)
        _prefs().keys_dir = str(tmp_path / "stranger" / "clients" / "bob")
        _set_photos(D8)
        entry = _build()
        _run(lambda: not entry.active, 20)
        assert entry.state == "error"
        assert "CURVE keys" in entry.message and "authorized_clients" in entry.message, entry.message
    finally:
        _prefs().keys_dir = ""
        server.kill(signal.SIGTERM)
