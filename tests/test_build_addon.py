"""build_addon.py makes an extension zip with the bundle format vendored and no compute inside."""

from __future__ import annotations

import ast
import importlib
import sys
import tomllib
import zipfile

import pytest

import build_addon


def test_zip_vendors_shared_and_imports_without_backend(tmp_path):
    path = build_addon.build(tmp_path, wheels=False)
    assert path.name == "headrig-0.1.0.zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "headrig")
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert "wheels" not in manifest and not any(n.startswith("wheels/") for n in names)
    assert manifest["platforms"] == list(build_addon.PLATFORMS)
    assert {"__init__.py", "blender_manifest.toml", "headrig_shared/bundle.py", "headrig_shared/bundle_fields.py"} <= names
    assert not any(n.startswith(("backend/", "torch")) for n in names)
    sys.path.insert(0, str(tmp_path))
    try:
        addon = importlib.import_module("headrig")
        bundle = addon.bundle_format()
        assert bundle.FORMAT_NAME == "headrig.head"
        imported = set()
        for n in names:
            if n.endswith(".py"):
                for node in ast.walk(ast.parse((tmp_path / "headrig" / n).read_text())):
                    if isinstance(node, ast.Import):
                        imported |= {a.name.split(".")[0] for a in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        imported.add(node.module.split(".")[0])
        # numpy ships with Blender (the Gaussian PLY reader uses it); compute libraries do not.
        assert not imported & {"torch", "backend", "mediapipe", "cv2", "scipy"}, imported
    finally:
        sys.path.remove(str(tmp_path))
        for mod in [m for m in sys.modules if m == "headrig" or m.startswith("headrig.")]:
            del sys.modules[mod]


def _fake_cache(root):
    """A wheel cache laid out as build_addon.fetch_wheels leaves it, without the network."""
    names = {
        "linux-x64": ["msgpack-{m}-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                      "pyzmq-{z}-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl"],
        "windows-x64": ["msgpack-{m}-cp311-cp311-win_amd64.whl", "pyzmq-{z}-cp311-cp311-win_amd64.whl"],
        "macos-x64": ["msgpack-{m}-cp311-cp311-macosx_10_9_x86_64.whl", "pyzmq-{z}-cp311-cp311-macosx_10_15_universal2.whl"],
        "macos-arm64": ["msgpack-{m}-cp311-cp311-macosx_11_0_arm64.whl", "pyzmq-{z}-cp311-cp311-macosx_10_15_universal2.whl"],
    }
    for platform, files in names.items():
        (root / platform).mkdir(parents=True)
        for name in files:
            name = name.format(m=build_addon.PINNED["msgpack"], z=build_addon.PINNED["pyzmq"])
            with zipfile.ZipFile(root / platform / name, "w") as zf:
                zf.writestr("x", platform)
    return root


def test_zip_with_cached_wheels_lists_them_in_the_zipped_manifest(tmp_path):
    cache = _fake_cache(tmp_path / "cache")
    path = build_addon.build(tmp_path / "dist", wheels=True, wheel_cache=cache, offline=True)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    wheels = sorted(n for n in names if n.startswith("wheels/"))
    assert len(wheels) == 7  # 2 packages x 4 platforms, the universal2 pyzmq wheel shared by both Macs
    assert sorted(manifest["wheels"]) == [f"./{n}" for n in wheels]
    assert manifest["permissions"]["network"]  # the list went in before [permissions], not inside it
    assert "wheels" not in tomllib.loads((build_addon.ADDON / "blender_manifest.toml").read_text())


def test_offline_build_names_the_missing_platform(tmp_path):
    with pytest.raises(RuntimeError, match="linux-x64"):
        build_addon.build(tmp_path, wheels=True, wheel_cache=tmp_path / "empty", offline=True)
