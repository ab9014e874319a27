"""Build the Blender extension zip: ``python build_addon.py`` -> ``dist/headrig-<version>.zip``.

The zip holds ``blender_addon/`` with the project's ``shared/`` vendored inside it as
``headrig_shared`` (the add-on imports it relatively, so it never clashes with another add-on's
``shared``), plus the pyzmq and msgpack wheels for Blender's Python 3.11 on every platform in
``PLATFORMS`` under ``wheels/``. The wheels are downloaded from PyPI once (``pip download``) into
``build/wheels/<platform>/`` and reused; the zipped ``blender_manifest.toml`` gets the generated
``wheels = [...]`` list (the repository's manifest carries no list, so it never goes stale).
``--no-wheels`` builds offline without them (the add-on then needs pyzmq/msgpack from elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
ADDON = REPO / "blender_addon"
SHARED = REPO / "shared"
VENDORED = "headrig_shared"
WHEEL_CACHE = REPO / "build" / "wheels"
MANIFEST = "blender_manifest.toml"

PYTHON_VERSION = "3.11"  # Blender 4.2-4.5 ship CPython 3.11
# Pinned: both have cp311 wheels for all four platforms on PyPI (checked with pip download).
# pyzmq's macOS wheel is one universal2 file that serves both macOS platforms.
PINNED = {"pyzmq": "27.3.0", "msgpack": "1.2.4"}
# Blender platform -> the newest pip platform tag Blender's minimum OS for that platform satisfies
# (pip also accepts older tags: manylinux_2_28 takes manylinux2014, macosx_11_0 takes 10_9/universal2).
# Blender 4.2+ needs glibc 2.28 on Linux and macOS 11.2 on Mac.
PLATFORMS = {
    "linux-x64": "manylinux_2_28_x86_64",
    "windows-x64": "win_amd64",
    "macos-x64": "macosx_11_0_x86_64",
    "macos-arm64": "macosx_11_0_arm64",
}


def _files(folder: Path):
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def _cached(folder: Path, project: str, version: str) -> Path | None:
    """The cached cp311 wheel of ``project==version`` in ``folder``, if there is exactly one."""
    hits = [p for p in folder.glob(f"{project}-{version}-*.whl") if re.search(r"-(cp311|cp3\d*-abi3)-", p.name)]
    return hits[0] if len(hits) == 1 else None


def fetch_wheels(cache: Path = WHEEL_CACHE, *, offline: bool = False) -> dict[str, list[Path]]:
    """{blender platform: [wheel paths]}, downloading missing ones from PyPI into ``cache``.

    Raises RuntimeError naming the platform and pip's message when a download fails, or when
    ``offline`` and the cache lacks a wheel.
    """
    found: dict[str, list[Path]] = {}
    for platform, tag in PLATFORMS.items():
        folder = cache / platform
        wheels = [_cached(folder, name, ver) for name, ver in PINNED.items()]
        if None in wheels:
            if offline:
                raise RuntimeError(f"wheels for {platform} not cached in {folder} (run without --offline)")
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                       "--only-binary=:all:", "--no-deps", "--python-version", PYTHON_VERSION,
                       "--implementation", "cp", "--platform", tag, "-d", tmp,
                       *(f"{name}=={ver}" for name, ver in PINNED.items())]
                run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
                if run.returncode:
                    lines = [ln for ln in (run.stderr or run.stdout).splitlines() if "WARNING" not in ln]
                    raise RuntimeError(f"pip download for {platform} ({tag}) failed: " + " | ".join(lines[-3:]))
                for path in Path(tmp).glob("*.whl"):
                    os.replace(path, folder / path.name)  # atomic: a half download never looks cached
            wheels = [_cached(folder, name, ver) for name, ver in PINNED.items()]
            if None in wheels:
                raise RuntimeError(f"pip download for {platform} ({tag}) gave no cp311 wheel for all of {PINNED}")
        found[platform] = wheels
    return found


def manifest_for_zip(text: str, wheel_names: list[str]) -> str:
    """The repository manifest with a generated top-level ``wheels`` list (before the first table)."""
    if not wheel_names:
        return text
    block = "wheels = [\n" + "".join(f'  "./wheels/{name}",\n' for name in wheel_names) + "]\n\n"
    lines = text.splitlines(keepends=True)
    first_table = next((i for i, ln in enumerate(lines) if ln.startswith("[")), len(lines))
    out = "".join(lines[:first_table]) + block + "".join(lines[first_table:])
    assert tomllib.loads(out)["wheels"] == [f"./wheels/{n}" for n in wheel_names]
    return out


def build(out_dir: Path = REPO / "dist", *, wheels: bool = True, wheel_cache: Path = WHEEL_CACHE,
          offline: bool = False) -> Path:
    """Write the extension zip and return its path. ``wheels`` adds the pinned pyzmq/msgpack wheels."""
    manifest_text = (ADDON / MANIFEST).read_text()
    manifest = tomllib.loads(manifest_text)
    wheel_paths: dict[str, Path] = {}
    if wheels:
        for paths in fetch_wheels(wheel_cache, offline=offline).values():
            for path in paths:
                wheel_paths.setdefault(path.name, path)  # the universal2 pyzmq wheel serves both Macs
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _files(ADDON):
            if path.relative_to(ADDON).as_posix() != MANIFEST:
                zf.write(path, path.relative_to(ADDON).as_posix())
        zf.writestr(MANIFEST, manifest_for_zip(manifest_text, sorted(wheel_paths)))
        for path in _files(SHARED):
            zf.write(path, f"{VENDORED}/{path.relative_to(SHARED).as_posix()}")
        for name, path in sorted(wheel_paths.items()):
            zf.write(path, f"wheels/{name}", compress_type=zipfile.ZIP_STORED)  # wheels are zips already
    tmp.replace(target)
    return target


@contextlib.contextmanager
def imported(root: Path, *, wheels: bool = False, register: bool = False):
    """Build the zip into ``root``, extract it as package ``headrig`` and import it, so that a Python
    with bpy (tests, tools) runs the add-on exactly as zipped (vendored ``headrig_shared`` and all).
    ``register``: also ``register()`` it, and ``unregister()`` on the way out. On exit the package is
    forgotten (``sys.path``, ``sys.modules``), so the next ``imported`` loads its own copy."""
    with zipfile.ZipFile(build(root / "dist", wheels=wheels)) as zf:
        zf.extractall(root / "headrig")
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("headrig")
        if register:
            module.register()
        try:
            yield module
        finally:
            if register:
                module.unregister()
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "headrig" or m.startswith("headrig.")]:
            del sys.modules[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--no-wheels", action="store_true", help="leave out the pyzmq/msgpack wheels (offline)")
    parser.add_argument("--offline", action="store_true", help="use only wheels already in the cache")
    parser.add_argument("--wheel-cache", type=Path, default=WHEEL_CACHE)
    args = parser.parse_args()
    try:
        path = build(args.out, wheels=not args.no_wheels, wheel_cache=args.wheel_cache, offline=args.offline)
    except RuntimeError as exc:
        sys.exit(f"build_addon: {exc}\n(use --no-wheels to build without them)")
    print(path)


if __name__ == "__main__":
    main()
