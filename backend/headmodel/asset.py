"""The compact head-model asset: what a 3DMM needs at run time, in one verified file.

The asset is model-agnostic (a FLAME converter could write the same fields); the ICT-FaceKit
converter in ``ict_convert`` is the one that exists today. All geometry is in centimetres.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.bundle import sha256_file

ASSET_FORMAT = "headrig.headmodel"
ASSET_VERSION = 1


class AssetError(RuntimeError):
    """The cached head-model asset is missing, corrupt or from another format version."""


@dataclass
class HeadModelAsset:
    """A linear morphable head model with its mesh topology. Units: centimetres.

    Shapes (V vertices, F polygons, T triangles, C polygon corners, U uv coordinates):
        neutral: [V, 3] float32, the mean head.
        face_sizes: [F] int32, 3 or 4 corners per polygon (quads kept for Blender).
        face_vertices: [C] int32, vertex index per polygon corner.
        face_uvs: [C] int32, uv index per polygon corner.
        uvs: [U, 2] float32, UDIM-style: tile k spans u in [k, k+1).
        face_material: [F] int32, index into ``material_names``.
        triangles: [T, 3] int32, polygons split into triangles (for rendering and fitting).
        triangle_uvs: [T, 3] int32, uv index per triangle corner.
        triangle_face: [T] int32, the polygon each triangle came from.
        identity_basis: [I, V, 3] float32, per unit of identity weight (weights ~ N(0, 1)).
        expression_basis: [E, V, 3] float32, per unit of expression weight (weights in [0, 1]).
        extra_basis: [X, V, 3] float32, shapes outside the expression set (pupil dilation, ...).
        landmarks68: [68] int32, vertices of the iBUG 68-point markup, in that order.
        jawline_alternatives: [2, 8] int32, inner contour vertices (right 0-7, left 9-16).
        parts: name -> (first, last) vertex index, inclusive.
    """

    name: str
    neutral: np.ndarray
    face_sizes: np.ndarray
    face_vertices: np.ndarray
    face_uvs: np.ndarray
    uvs: np.ndarray
    face_material: np.ndarray
    material_names: list[str]
    triangles: np.ndarray
    triangle_uvs: np.ndarray
    triangle_face: np.ndarray
    identity_basis: np.ndarray
    expression_basis: np.ndarray
    expression_names: list[str]
    extra_basis: np.ndarray
    extra_names: list[str]
    landmarks68: np.ndarray
    jawline_alternatives: np.ndarray
    parts: dict[str, tuple[int, int]]
    source: dict = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return int(self.neutral.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def n_expressions(self) -> int:
        return int(self.expression_basis.shape[0])

    def part_mask(self, *names: str) -> np.ndarray:
        """[V] bool: vertices inside any of the named parts."""
        mask = np.zeros(self.n_vertices, dtype=bool)
        for name in names:
            first, last = self.parts[name]
            mask[first : last + 1] = True
        return mask

    def triangle_material(self) -> np.ndarray:
        """[T] int32 material index of every triangle."""
        return self.face_material[self.triangle_face]

    def vertices(self, identity: np.ndarray | None = None, expression: np.ndarray | None = None) -> np.ndarray:
        """[V, 3] float32 vertices in centimetres for identity [I] and expression [E] weights."""
        verts = self.neutral.astype(np.float32).copy()
        if identity is not None:
            verts += np.tensordot(np.asarray(identity, np.float32), self.identity_basis, axes=1)
        if expression is not None:
            verts += np.tensordot(np.asarray(expression, np.float32), self.expression_basis, axes=1)
        return verts


_ARRAYS = (
    "neutral", "face_sizes", "face_vertices", "face_uvs", "uvs", "face_material", "triangles",
    "triangle_uvs", "triangle_face", "identity_basis", "expression_basis", "extra_basis",
    "landmarks68", "jawline_alternatives",
)
# float16 bases: the largest ICT delta is 3.5 cm, so the rounding error stays under 0.02 mm
# while the file halves (about 25 MB instead of 50 MB) and still loads in tens of milliseconds.
_HALF = ("identity_basis", "expression_basis", "extra_basis")


def save_asset(asset: HeadModelAsset, path: Path) -> str:
    """Write ``asset`` to ``path`` (.npz) atomically with a sidecar checksum; returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": ASSET_FORMAT,
        "version": ASSET_VERSION,
        "name": asset.name,
        "material_names": asset.material_names,
        "expression_names": asset.expression_names,
        "extra_names": asset.extra_names,
        "parts": {k: list(v) for k, v in asset.parts.items()},
        "source": asset.source,
        "units": "cm",
    }
    arrays = {k: getattr(asset, k) for k in _ARRAYS}
    for k in _HALF:
        arrays[k] = arrays[k].astype(np.float16)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        digest = sha256_file(Path(tmp))
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _checksum_path(path).write_text(json.dumps({"sha256": digest, "format": ASSET_FORMAT, "version": ASSET_VERSION}))
    return digest


def checksum_ok(path: Path) -> bool:
    """Whether ``path`` matches the checksum recorded when it was saved (reads it once)."""
    expected = read_checksum(path)
    return expected is not None and Path(path).is_file() and expected == sha256_file(path)


def load_head_model(path: Path, verify: bool = True) -> HeadModelAsset:
    """Load an asset written by ``save_asset``; raises AssetError if it is corrupt or stale."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: head-model asset not found")
    if verify and not checksum_ok(path):
        raise AssetError(f"{path}: checksum mismatch; the cached asset is damaged and will be rebuilt")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if meta.get("format") != ASSET_FORMAT or meta.get("version") != ASSET_VERSION:
                raise AssetError(f"{path}: asset format {meta.get('format')} v{meta.get('version')} is not v{ASSET_VERSION}")
            arrays = {k: data[k] for k in _ARRAYS}
    except (OSError, ValueError, KeyError) as exc:
        raise AssetError(f"{path}: unreadable head-model asset ({exc})") from exc
    for k in _HALF:
        arrays[k] = arrays[k].astype(np.float32)
    return HeadModelAsset(
        name=meta["name"],
        material_names=meta["material_names"],
        expression_names=meta["expression_names"],
        extra_names=meta["extra_names"],
        parts={k: (int(v[0]), int(v[1])) for k, v in meta["parts"].items()},
        source=meta.get("source", {}),
        **arrays,
    )


def read_checksum(path: Path) -> str | None:
    try:
        info = json.loads(_checksum_path(path).read_text())
    except (OSError, ValueError):
        return None
    if info.get("version") != ASSET_VERSION:
        return None
    return info.get("sha256")


def _checksum_path(path: Path) -> Path:
    return Path(path).with_suffix(".sha256.json")
