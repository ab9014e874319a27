"""build_addon.py makes an extension zip with the bundle format vendored and no compute inside."""

from __future__ import annotations

import ast
import importlib
import sys
import zipfile

import build_addon


def test_zip_vendors_shared_and_imports_without_backend(tmp_path):
    path = build_addon.build(tmp_path)
    assert path.name == "headrig-0.1.0.zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "headrig")
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
        assert not imported & {"torch", "backend", "mediapipe", "numpy"}, imported
    finally:
        sys.path.remove(str(tmp_path))
        for mod in [m for m in sys.modules if m == "headrig" or m.startswith("headrig.")]:
            del sys.modules[mod]
