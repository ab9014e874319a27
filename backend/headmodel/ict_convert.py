"""Convert ICT-FaceKit's ``FaceXModel/`` (folder, .tar.xz or the repository zip) to a HeadModelAsset.

ICT-FaceKit ships every identity and expression as a full OBJ mesh; a mode is that mesh minus
the neutral one. The converter reads the archives as streams, so nothing is unpacked to disk.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend.headmodel.asset import HeadModelAsset

N_IDENTITY = 100
NEUTRAL_OBJ = "generic_neutral_mesh.obj"
INDICES_JSON = "vertex_indices.json"
EXTRA_SHAPES = ("PupilDilate_L", "PupilDilate_R", "cheekRaiser_L", "cheekRaiser_R")

# Vertex ranges of ICT-FaceKit's geometry parts (inclusive), from the model's documentation.
ICT_PARTS = {
    "face": (0, 9408),
    "narrow_face": (0, 6705),
    "head_neck": (9409, 11247),
    "mouth_socket": (11248, 13293),
    "eye_sockets": (13294, 14061),
    "gums_tongue": (14062, 17038),
    "teeth": (17039, 21450),
    "eyeball_left": (21451, 23020),
    "eyeball_right": (23021, 24590),
    "lacrimal_fluid": (24591, 24998),
    "eye_blend": (24999, 25046),
    "eye_occlusion": (25047, 25350),
    "eyelashes": (25351, 26718),
}
# Inner jawline vertices that replace contour landmarks 0-7 (right) and 9-16 (left) when the
# face turns and the visible outline slides towards the nose.
ICT_JAWLINE_ALTERNATIVES = (
    (1278, 1272, 12, 1834, 243, 781, 2199, 1447),
    (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496),
)


class SourceError(RuntimeError):
    """The ICT-FaceKit source is missing files or is not ICT-FaceKit at all."""


def iter_facexmodel_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (file name, bytes) for every file directly inside a ``FaceXModel/`` folder.

    ``source`` may be the folder itself, a folder that contains it, a .tar/.tar.xz archive or
    a .zip (the public repository's archive has it under ``ICT-FaceKit-<rev>/FaceXModel/``).
    """
    source = Path(source)
    if source.is_dir():
        folder = source if (source / NEUTRAL_OBJ).is_file() else source / "FaceXModel"
        if not (folder / NEUTRAL_OBJ).is_file():
            raise SourceError(f"{source}: no FaceXModel/{NEUTRAL_OBJ} inside")
        for path in sorted(folder.iterdir()):
            if path.is_file():
                yield path.name, path.read_bytes()
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                name = _facexmodel_name(info.filename)
                if name and not info.is_dir():
                    yield name, zf.read(info)
    elif source.is_file() and tarfile.is_tarfile(source):
        with tarfile.open(source, mode="r|*") as tf:
            for member in tf:
                name = _facexmodel_name(member.name)
                if name and member.isfile():
                    yield name, tf.extractfile(member).read()
    else:
        raise SourceError(f"{source}: not a FaceXModel folder, .tar.xz or .zip of ICT-FaceKit")


def _facexmodel_name(member: str) -> str | None:
    parts = member.strip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "FaceXModel":
        return parts[-1]
    return None


def parse_obj_vertices(data: bytes) -> np.ndarray:
    """[V, 3] float32 positions of an OBJ file's ``v`` lines."""
    lines = [line[2:] for line in data.split(b"\n") if line.startswith(b"v ")]
    return np.array(b" ".join(lines).split(), dtype=np.float32).reshape(-1, 3)


def parse_obj_topology(data: bytes) -> dict:
    """Polygons, per-corner uv indices, uvs and material groups of the neutral OBJ (0-based)."""
    uvs, sizes, corner_v, corner_t, face_mat, materials = [], [], [], [], [], []
    current = -1
    for line in data.split(b"\n"):
        if line.startswith(b"vt "):
            uvs.append(line.split()[1:3])
        elif line.startswith(b"usemtl "):
            name = line.split()[1].decode()
            if name not in materials:
                materials.append(name)
            current = materials.index(name)
        elif line.startswith(b"f "):
            corners = line.split()[1:]
            sizes.append(len(corners))
            for corner in corners:
                v, t = corner.split(b"/")[:2]
                corner_v.append(int(v) - 1)
                corner_t.append(int(t) - 1)
            face_mat.append(current)
    return {
        "uvs": np.array(uvs, dtype=np.float32),
        "face_sizes": np.array(sizes, dtype=np.int32),
        "face_vertices": np.array(corner_v, dtype=np.int32),
        "face_uvs": np.array(corner_t, dtype=np.int32),
        "face_material": np.array(face_mat, dtype=np.int32),
        "material_names": materials,
    }


def triangulate(face_sizes: np.ndarray, *corner_arrays: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fan-split polygons of 3 or 4 corners.

    Args:
        face_sizes: [F] corner counts.
        corner_arrays: each [C] per-corner values (vertex ids, uv ids).
    Returns:
        triangle_face: [T] source polygon of each triangle; and each corner array as [T, 3].
    """
    if not np.isin(face_sizes, (3, 4)).all():
        raise SourceError("ICT mesh has polygons with other than 3 or 4 corners")
    starts = np.concatenate([[0], np.cumsum(face_sizes)[:-1]])
    tri_face = [np.arange(len(face_sizes))]
    first = [starts]
    quads = np.nonzero(face_sizes == 4)[0]
    tri_face.append(quads)
    first.append(starts[quads])
    tri_face = np.concatenate(tri_face)
    # Triangle (0, 1, 2) of every polygon, then (0, 2, 3) of every quad.
    offsets = np.concatenate([np.tile([0, 1, 2], (len(face_sizes), 1)), np.tile([0, 2, 3], (len(quads), 1))])
    corner_idx = np.concatenate(first)[:, None] + offsets
    order = np.argsort(tri_face, kind="stable")
    return tri_face[order].astype(np.int32), [a[corner_idx[order]].astype(np.int32) for a in corner_arrays]


def convert_ict(source: Path, progress: bool = True) -> HeadModelAsset:
    """Read ICT-FaceKit from ``source`` (see ``iter_facexmodel_files``) into a HeadModelAsset."""
    files: dict[str, bytes] = {}
    stream = iter_facexmodel_files(source)
    for name, data in tqdm(stream, desc="Reading ICT-FaceKit", unit=" files", disable=not progress, total=160):
        if name.endswith(".obj") or name == INDICES_JSON:
            files[name] = data
    for required in (NEUTRAL_OBJ, INDICES_JSON):
        if required not in files:
            raise SourceError(f"{source}: FaceXModel/{required} is missing; is this ICT-FaceKit?")
    indices = json.loads(files[INDICES_JSON])
    expression_names = list(indices["expressions"])

    topology = parse_obj_topology(files[NEUTRAL_OBJ])
    neutral = parse_obj_vertices(files[NEUTRAL_OBJ])

    def deltas(names: list[str]) -> np.ndarray:
        out = np.empty((len(names), *neutral.shape), dtype=np.float32)
        for i, name in enumerate(names):
            key = f"{name}.obj"
            if key not in files:
                raise SourceError(f"{source}: FaceXModel/{key} is missing")
            shape = parse_obj_vertices(files.pop(key))
            if shape.shape != neutral.shape:
                raise SourceError(f"{source}: FaceXModel/{key} has {len(shape)} vertices, expected {len(neutral)}")
            out[i] = shape - neutral
        return out

    identity = deltas([f"identity{i:03d}" for i in range(N_IDENTITY)])
    expression = deltas(expression_names)
    extra_names = [n for n in EXTRA_SHAPES if f"{n}.obj" in files]
    extra = deltas(extra_names)

    tri_face, (triangles, triangle_uvs) = triangulate(topology["face_sizes"], topology["face_vertices"], topology["face_uvs"])
    return HeadModelAsset(
        name="ict-facekit",
        neutral=neutral,
        triangles=triangles,
        triangle_uvs=triangle_uvs,
        triangle_face=tri_face,
        identity_basis=identity,
        expression_basis=expression,
        expression_names=expression_names,
        extra_basis=extra,
        extra_names=extra_names,
        landmarks68=np.array(indices["idx_to_landmark_verts"], dtype=np.int32),
        jawline_alternatives=np.array(ICT_JAWLINE_ALTERNATIVES, dtype=np.int32),
        parts=dict(ICT_PARTS),
        source={"kind": "ICT-FaceKit FaceXModel", "license": "MIT", "path": str(source)},
        **topology,
    )
