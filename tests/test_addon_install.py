"""The extension zip installs, enables, disables and re-enables with Blender's own machinery.

Runs headless Blender (bpy 4.5 as a module) in a subprocess with ``BLENDER_USER_EXTENSIONS`` and
``BLENDER_USER_CONFIG`` pointed at a temporary folder, so the user's real Blender is never touched and
this test process's bpy keeps no add-on state. Inside it installs the zip exactly as
*Preferences > Get Extensions > Install from Disk* does::

    bpy.ops.extensions.package_install_files(filepath=ZIP, repo="user_default", enable_on_install=True)

then toggles it with ``addon_utils.disable/enable("bl_ext.user_default.headrig", default_set=True)``.
The zip is also checked by Blender's own validator (``blender --command extension validate`` is
``bl_pkg/cli/blender_ext.py validate``, which runs on any Python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import build_addon

pytestmark = pytest.mark.blender

MODULE = "bl_ext.user_default.headrig"

# Runs in a fresh interpreter: argv[1] = zip, prints one JSON line prefixed with RESULT.
_SCRIPT = r'''
import importlib, json, os, subprocess, sys, inspect
import bpy, addon_utils

MODULE = "bl_ext.user_default.headrig"
out = {"errors": []}
zip_path = sys.argv[1]
repo = next(r for r in bpy.context.preferences.extensions.repos if r.module == "user_default")
out["repo_dir"] = repo.directory
out["install"] = sorted(bpy.ops.extensions.package_install_files(
    filepath=zip_path, repo="user_default", enable_on_install=True))
out["installed_files"] = sorted(
    os.path.relpath(os.path.join(root, f), repo.directory)
    for root, _, files in os.walk(os.path.join(repo.directory, "headrig")) for f in files
    if "__pycache__" not in root)
site = os.path.join(os.path.dirname(repo.directory), ".local", "lib",
                    "python%d.%d" % sys.version_info[:2], "site-packages")
out["site_packages"] = site

def site_files():
    """Files Blender extracted from the wheels (it keeps them only while the add-on is enabled)."""
    if not os.path.isdir(site):
        return None
    return sorted(os.path.relpath(os.path.join(root, f), site) for root, _, files in os.walk(site)
                  for f in files if "__pycache__" not in root)

out["site_files_after_install"] = site_files()
# the extracted wheels (not the venv's copies) load and work: a zmq round trip of a msgpack message
probe = subprocess.run([sys.executable, "-c", (
    "import sys; sys.path.insert(0, %r); import zmq, msgpack; "
    "assert zmq.__file__.startswith(%r) and msgpack.__file__.startswith(%r), (zmq.__file__, msgpack.__file__); "
    "ctx = zmq.Context(); a = ctx.socket(zmq.PAIR); b = ctx.socket(zmq.PAIR); a.bind('inproc://x'); "
    "b.connect('inproc://x'); a.send(msgpack.packb({'ok': 1})); "
    "print('PROBE', zmq.__version__, zmq.zmq_version(), msgpack.unpackb(b.recv()))") % (site, site, site)],
    capture_output=True, text=True, timeout=60)
out["wheel_probe"] = (probe.stdout + probe.stderr).strip().splitlines()[-1:] if os.path.isdir(site) else None

def bpy_classes():
    """bpy classes (panels, operators, preferences, ...) defined in the installed add-on's modules."""
    found = {}
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == MODULE or name.startswith(MODULE + ".")):
            continue
        for attr in vars(mod).values():
            if (inspect.isclass(attr) and issubclass(attr, bpy.types.bpy_struct)
                    and attr.__module__.startswith(MODULE) and hasattr(attr, "bl_idname")):
                found[attr.__module__ + "." + attr.__qualname__] = attr
    return found

def registered(classes):
    # register_class gives the class its own bl_rna; unregister_class takes it away
    return {name: "bl_rna" in vars(cls) for name, cls in classes.items()}

def panels():
    return sorted(n for n in dir(bpy.types) if "HEADRIG" in n.upper())

out["after_install"] = {"check": list(addon_utils.check(MODULE)), "types": panels()}
classes = bpy_classes()
out["classes"] = sorted(classes)
out["registered_after_install"] = registered(classes)
addon_utils.disable(MODULE, default_set=True)
out["after_disable"] = {"check": list(addon_utils.check(MODULE)), "types": panels(),
                        "registered": registered(classes), "site_files": site_files()}
mod = addon_utils.enable(MODULE, default_set=True)
out["reenable_module"] = getattr(mod, "__name__", None)
classes = bpy_classes()
out["after_reenable"] = {"check": list(addon_utils.check(MODULE)), "types": panels(),
                         "registered": registered(classes), "site_files": site_files()}
out["addon_prefs"] = MODULE in bpy.context.preferences.addons
client = importlib.import_module(MODULE + ".headrig_shared.client")
out["client_file"] = client.__file__
out["client_has"] = hasattr(client, "HeadRigClient")
bundle = importlib.import_module(MODULE).bundle_format()
out["bundle_format"] = bundle.FORMAT_NAME
try:
    import zmq, msgpack
    out["zmq"] = [zmq.__version__, zmq.__file__]
    out["msgpack"] = [".".join(map(str, msgpack.version)), msgpack.__file__]
except Exception as exc:
    out["errors"].append("import zmq/msgpack: %r" % exc)
addon_utils.disable(MODULE, default_set=True)
out["final_disable"] = list(addon_utils.check(MODULE))
print("RESULT " + json.dumps(out))
'''


def _bpy_scripts() -> Path:
    bpy_spec = __import__("importlib.util").util.find_spec("bpy")
    if bpy_spec is None:
        pytest.skip("bpy (Blender as a Python module) not installed")
    root = Path(bpy_spec.origin).parent
    found = sorted(root.glob("[0-9].[0-9]*/scripts"))
    if not found:
        pytest.skip(f"no scripts folder under {root}")
    return found[-1]


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory):
    """(zip path, wheels_included). Wheels come from build/wheels/ or PyPI; skipped if neither."""
    out = tmp_path_factory.mktemp("dist")
    try:
        return build_addon.build(out, wheels=True), True
    except RuntimeError as exc:
        return build_addon.build(out, wheels=False), f"{exc}"


@pytest.fixture(scope="module")
def installed(addon_zip, tmp_path_factory):
    _bpy_scripts()
    home = tmp_path_factory.mktemp("blender_user")
    env = {**os.environ,
           "BLENDER_USER_EXTENSIONS": str(home / "extensions"),
           "BLENDER_USER_CONFIG": str(home / "config"),
           "BLENDER_USER_SCRIPTS": str(home / "scripts"),
           "BLENDER_USER_DATAFILES": str(home / "datafiles")}
    script = home / "install_check.py"
    script.write_text(_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(addon_zip[0])], env=env, capture_output=True,
                         text=True, timeout=300, cwd=home)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert run.returncode == 0 and lines, f"rc={run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    result["stdout"] = run.stdout
    result["home"] = str(home)
    return result


def test_zip_passes_blenders_validator(addon_zip):
    scripts = _bpy_scripts()
    cli = scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    tags = scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    run = subprocess.run([sys.executable, str(cli), "validate", "--valid-tags", str(tags), str(addon_zip[0])],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "Success" in run.stdout, run.stdout + run.stderr


def test_manifest_schema(addon_zip):
    """The fields of Blender's manifest schema 1.0.0, checked by hand too (the validator is lenient)."""
    path, wheels = addon_zip
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert manifest["schema_version"] == "1.0.0"
    assert manifest["id"] == "headrig" and manifest["type"] == "add-on"
    for key in ("version", "name", "tagline", "maintainer", "license", "blender_version_min"):
        assert isinstance(manifest[key], (str, list)) and manifest[key], key
    tagline = manifest["tagline"]
    assert len(tagline) <= 64 and tagline[-1].isalnum(), tagline
    assert manifest["license"] == ["SPDX:MIT"]
    assert tuple(map(int, manifest["blender_version_min"].split("."))) >= (4, 2, 0)
    assert set(manifest["permissions"]) == {"files", "network"}
    for reason in manifest["permissions"].values():
        assert reason and len(reason) <= 64 and "\n" not in reason and reason[-1] not in ".!?,;:", reason
    assert manifest["platforms"] == ["linux-x64", "windows-x64", "macos-x64", "macos-arm64"]
    if wheels is not True:
        pytest.skip(f"wheels not checked, PyPI unreachable and no cache: {wheels}")
    listed = manifest["wheels"]
    assert all(w.startswith("./wheels/") for w in listed)
    assert {w[2:] for w in listed} == {n for n in names if n.startswith("wheels/")}
    # every platform gets a cp311 pyzmq and msgpack wheel of the pinned versions
    tags = {"linux-x64": "manylinux", "windows-x64": "win_amd64", "macos-x64": ("x86_64", "universal2"),
            "macos-arm64": ("arm64", "universal2")}
    for platform, marks in tags.items():
        marks = (marks,) if isinstance(marks, str) else marks
        for project, version in build_addon.PINNED.items():
            hits = [w for w in listed if f"/{project}-{version}-cp311-" in w and any(m in w for m in marks)
                    and ("macosx" in w) == platform.startswith("macos")]
            assert hits, (platform, project, listed)


def test_install_enable_disable_reenable(installed, addon_zip):
    r = installed
    assert r["errors"] == [], r["errors"]
    assert r["install"] == ["FINISHED"], r["stdout"][-2000:]
    assert r["repo_dir"].startswith(r["home"])  # never the user's real Blender
    files = set(r["installed_files"])
    assert {"headrig/__init__.py", "headrig/blender_manifest.toml", "headrig/headrig_shared/client.py"} <= files
    # enable_on_install enabled it; disable unregisters every bpy class, re-enable registers them again
    assert r["after_install"]["check"] == [True, True]
    assert r["after_disable"]["check"] == [False, False]
    assert r["after_reenable"]["check"] == [True, True]
    assert r["reenable_module"] == MODULE
    assert r["addon_prefs"]
    registers = "register_class" in (Path(build_addon.ADDON) / "__init__.py").read_text()
    assert bool(r["classes"]) == registers, (registers, r["classes"])  # the add-on's own bpy classes were found
    assert all(r["registered_after_install"].values()), r["registered_after_install"]
    assert not any(r["after_disable"]["registered"].values()), r["after_disable"]
    assert all(r["after_reenable"]["registered"].values()), r["after_reenable"]
    assert r["after_reenable"]["registered"].keys() == r["registered_after_install"].keys()
    # panels/operators: present in bpy.types when enabled, gone when disabled
    assert r["after_disable"]["types"] == []
    assert r["after_install"]["types"] == r["after_reenable"]["types"]
    if any(".panel" in c.lower() or "PT_" in c for c in r["classes"]):
        assert any("_PT_" in t for t in r["after_reenable"]["types"]), r["after_reenable"]["types"]
    # the vendored client imports inside the installed extension
    assert r["client_has"] and r["client_file"].startswith(r["repo_dir"])
    assert r["bundle_format"] == "headrig.head"
    assert r["final_disable"] == [False, False]


def test_wheels_installed_for_this_platform_only(installed, addon_zip):
    """Blender extracts only this platform's wheels, while the add-on is enabled."""
    if addon_zip[1] is not True:
        pytest.skip(f"zip built without wheels (PyPI unreachable, no cache): {addon_zip[1]}")
    files = installed["site_files_after_install"]
    assert files, f"Blender extracted no wheels into {installed['site_packages']}"
    tops = {f.split("/")[0] for f in files}
    assert {"zmq", "msgpack"} <= tops, tops
    dist_infos = sorted(t for t in tops if t.endswith(".dist-info"))
    assert dist_infos == [f"msgpack-{build_addon.PINNED['msgpack']}.dist-info",
                          f"pyzmq-{build_addon.PINNED['pyzmq']}.dist-info"], dist_infos
    assert not [f for f in files if f.endswith((".pyd", ".dylib"))]  # no Windows/Mac binaries
    assert [f for f in files if f.startswith("zmq/") and ".cpython-311-x86_64-linux-gnu.so" in f], files
    assert [f for f in files if f.startswith("msgpack/") and f.endswith(".so")], files
    assert installed["after_disable"]["site_files"] == []  # Blender removes them with the add-on
    assert installed["after_reenable"]["site_files"] == files
    probe = installed["wheel_probe"]
    assert probe and probe[0].startswith(f"PROBE {build_addon.PINNED['pyzmq']} ") and "{'ok': 1}" in probe[0], probe
