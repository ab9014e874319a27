"""Find ICT-FaceKit, convert it once, and cache the compact asset.

Lookup order for the source data: ``HEADRIG_ICT_DIR``, ``../shared/ict-facekit`` beside the
repository (or the working directory), then the converted asset in the user cache; users with
none of these get the public repository archive (MIT) downloaded once and converted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from backend.headmodel.asset import HeadModelAsset, checksum_ok, load_head_model, save_asset
from backend.headmodel.ict_convert import SourceError, convert_ict

ICT_ARCHIVE_URL = "https://github.com/ICT-VGL/ICT-FaceKit/archive/refs/heads/master.zip"
ASSET_FILE = "ict-facekit.npz"
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The user cache: ``HEADRIG_CACHE_DIR``, else ``$XDG_CACHE_HOME/headrig``, else ``~/.cache/headrig``."""
    if os.environ.get("HEADRIG_CACHE_DIR"):
        return Path(os.environ["HEADRIG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "headrig"


def find_local_source() -> Path | None:
    """The first ICT-FaceKit source found on disk, in lookup order, or None."""
    candidates = []
    if os.environ.get("HEADRIG_ICT_DIR"):
        candidates.append(Path(os.environ["HEADRIG_ICT_DIR"]))
    candidates += [REPO_ROOT.parent / "shared" / "ict-facekit", Path.cwd().parent / "shared" / "ict-facekit"]
    for folder in candidates:
        for option in (folder / "FaceXModel", folder / "FaceXModel.tar.xz", folder):
            if option.is_dir() and (option / "generic_neutral_mesh.obj").is_file():
                return option
            if option.is_file():
                return option
        if folder.is_file():
            return folder
    return None


def source_fingerprint(source: Path) -> str:
    """Identifies a source cheaply (path, size, mtime), so a changed source is converted again."""
    stat = source.stat()
    return hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:16]


def download(url: str, dest: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically (a partial download never stays behind)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="Downloading ICT-FaceKit", disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        Path(tmp).replace(dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def ensure_ict_asset(progress: bool = True, url: str | None = None) -> Path:
    """Path of a verified converted ICT asset, converting or downloading on first use."""
    cache = cache_dir()
    asset_path = cache / ASSET_FILE
    meta_path = cache / "ict-facekit.source.json"
    source = find_local_source()
    wanted = source_fingerprint(source) if source else None
    recorded = _read_json(meta_path).get("fingerprint")
    if asset_path.is_file() and (wanted is None or wanted == recorded) and checksum_ok(asset_path):
        return asset_path  # otherwise missing, stale or damaged: rebuilt below
    if source is None:
        archive = cache / "ICT-FaceKit.zip"
        if not archive.is_file():
            try:
                download(url or os.environ.get("HEADRIG_ICT_URL", ICT_ARCHIVE_URL), archive, progress=progress)
            except OSError as exc:
                raise SourceError(
                    f"ICT-FaceKit not found locally and the download failed ({exc}); set HEADRIG_ICT_DIR "
                    "to a FaceXModel folder or its .tar.xz/.zip"
                ) from exc
        source = archive
        wanted = source_fingerprint(source)
    asset = convert_ict(source, progress=progress)
    save_asset(asset, asset_path)
    meta_path.write_text(json.dumps({"fingerprint": wanted, "source": str(source)}))
    return asset_path


def load_ict(progress: bool = True) -> HeadModelAsset:
    """The ICT-FaceKit head model, from the cache (converted on first use)."""
    # ensure_ict_asset has just verified (or written) the checksum: hashing 28 MB again is waste.
    return load_head_model(ensure_ict_asset(progress=progress), verify=False)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
