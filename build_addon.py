"""Build the Blender extension zip: ``python build_addon.py`` -> ``dist/headrig-<version>.zip``.

The zip holds ``blender_addon/`` with the project's ``shared/`` vendored inside it as
``headrig_shared`` (the add-on imports it relatively, so it never clashes with another add-on's
``shared``). Wheels for pyzmq and msgpack are added with the add-on issue.
"""

from __future__ import annotations

import argparse
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
ADDON = REPO / "blender_addon"
SHARED = REPO / "shared"
VENDORED = "headrig_shared"


def _files(folder: Path):
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def build(out_dir: Path = REPO / "dist") -> Path:
    manifest = tomllib.loads((ADDON / "blender_manifest.toml").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _files(ADDON):
            zf.write(path, path.relative_to(ADDON).as_posix())
        for path in _files(SHARED):
            zf.write(path, f"{VENDORED}/{path.relative_to(SHARED).as_posix()}")
    tmp.replace(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
