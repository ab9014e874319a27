"""Output folders written whole: fill a hidden temp folder, sync it, swap it in (pure Python, vendored
into the Blender add-on).

The one home of the folder-swap rule used by ``write_bundle``, job results, the turntable, retarget
output and the client's downloads: a reader sees the old folder, the new one, or none, never a mix.
And the one home of the rule for ``--force``: only a folder HeadRig wrote may be replaced, so a
mistyped ``-o ~/Pictures`` can never delete someone's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

FETCH_MARKER = ".headrig-fetched"       # written by the client into every folder it downloads
# Folders the local CLI writes carry one of these, with a "format" of "headrig.*".
_OWN_MANIFESTS = ("head.json", "animation.json")


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable (POSIX; Windows cannot open folders and needs no such step)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_folder(out_dir: Path):
    """Yield a hidden temp folder beside ``out_dir`` to fill; when the block succeeds it is synced
    and swapped in (an existing ``out_dir`` is moved aside, then deleted), else it is deleted. The
    caller decides whether an existing ``out_dir`` may be replaced (``replace_refusal``)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        fsync_dir(tmp)
        swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_in(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing one is moved aside first and deleted only after.
    Raises OSError if the rename fails (the previous folder is put back first)."""
    old = None
    try:
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rmdir(old)  # only the unique name is wanted; rename needs it free
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
    except BaseException:
        if old is not None and old.exists() and not out_dir.exists():
            os.rename(old, out_dir)  # put the previous folder back, even on Ctrl-C
        raise
    fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def replace_refusal(out_dir: Path) -> str | None:
    """Why ``out_dir`` must not be replaced by ``--force``, or None when it may be: it is missing, empty,
    a folder the client downloaded (``FETCH_MARKER``), or a HeadRig bundle or animation folder (its
    head.json/animation.json says ``"format": "headrig.…"``). Anything else was not written by HeadRig."""
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return None
    if out_dir.is_symlink() or not out_dir.is_dir():
        return "exists and is not a plain folder; refusing to replace it"
    if not any(out_dir.iterdir()) or (out_dir / FETCH_MARKER).is_file():
        return None
    for name in _OWN_MANIFESTS:
        try:
            data = json.loads((out_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and str(data.get("format", "")).startswith("headrig."):
            return None
    return ("exists and is not a folder HeadRig wrote (no head.json or animation.json of HeadRig's, no "
            f"{FETCH_MARKER}); refusing to replace it: choose another output folder or remove it yourself")
