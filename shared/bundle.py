"""The head bundle: a folder with ``head.json`` (this manifest), ``head.glb`` and its other files.

Pure standard-library Python: this module is vendored into the Blender add-on, so it may not
import torch or the backend. Format rules:

* ``format`` is "headrig.head" and ``version`` an integer; a change to the fields raises the
  version, and a reader refuses a newer one with a message to update HeadRig.
* Reading is strict: unknown or missing fields and wrong types are errors that name the file and
  the field (``fits[0].camera.fx``), so a damaged or hand-edited manifest never loads half-right.
* Units: model space is centimetres (``units``: "cm"); ``head.glb`` is in metres, as glTF wants.
  Poses map model space to an OpenCV camera (x right, y down, z forward): ``rotation`` is an
  axis-angle vector in radians, ``translation`` in cm.
* ``write_bundle`` is atomic: a reader sees the old bundle, the new one, or none, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from .bundle_fields import (  # noqa: F401  (BundleError and MANIFEST_FILE are part of this module's API)
    MANIFEST_FILE, BundleError, _checked_list, _file_name, _files, _float, _floats, _int, _iso_time, _join, _obj,
    _plain, _quality, _sha, _str, _units, _weights, read_json,
)
from .folders import fsync_dir, replace_refusal, staged_folder  # noqa: F401  (re-exported: one home, shared/folders.py)

FORMAT_NAME = "headrig.head"
FORMAT_VERSION = 1
GENERATOR = "headrig 0.1.0"
# Roles for files the caller did not describe in ``manifest.files``, by file-name ending.
_ROLES = {".glb": "mesh", ".png": "texture", ".jpg": "image", ".ply": "gaussians", ".json": "data", ".npz": "data"}
# Files whose name decides their role (the suffix alone says too little); ``shared.gaussian_expressions``.
NAMED_ROLES = {"gaussians_expr.bin": "gaussian_expressions"}


class _Record:
    """to_dict / from_dict for the manifest's dataclasses; ``_checks`` maps each field to its checker."""

    _checks: dict = {}
    _optional: frozenset = frozenset()

    def to_dict(self) -> dict:
        """Plain JSON types (numpy values converted), ready for ``json.dumps``."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data, where: str = ""):
        """Validate and build; raises BundleError naming the field (``read_bundle`` adds the file)."""
        d = _obj(data, where, {f.name for f in fields(cls)}, cls._optional)
        return cls(**{k: check(d[k], _join(where, k)) for k, check in cls._checks.items() if k in d})


@dataclass
class CameraIntrinsics(_Record):
    """Pinhole intrinsics of one input image, in pixels (OpenCV convention)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    _checks = {"width": lambda v, w: _int(v, w, 1), "height": lambda v, w: _int(v, w, 1),
               "fx": lambda v, w: _float(v, w, 1e-9), "fy": lambda v, w: _float(v, w, 1e-9),
               "cx": _float, "cy": _float}


@dataclass
class InputRecord(_Record):
    """One photo or video the head was built from: its file name (no folders), hash and size."""

    file: str
    sha256: str
    width: int
    height: int

    _checks = {"file": lambda v, w: _file_name(v, w, nested=False), "sha256": _sha,
               "width": lambda v, w: _int(v, w, 1), "height": lambda v, w: _int(v, w, 1)}


@dataclass
class InputFit(_Record):
    """The model's fit to one input: pose (model -> OpenCV camera), expression weights, error."""

    input_index: int
    rotation: list[float]  # [3] axis-angle, radians
    translation: list[float]  # [3] centimetres
    expression: dict[str, float]  # every shape-key name -> weight
    landmark_rmse_px: float
    landmark_rmse_iod: float  # RMSE as a fraction of the inter-ocular distance
    camera: CameraIntrinsics
    frame: int | None = None  # the frame number when the input is a video

    _optional = frozenset({"frame"})
    _checks = {"input_index": _int, "frame": lambda v, w: None if v is None else _int(v, w), "rotation": lambda v, w: _floats(v, w, 3),
               "translation": lambda v, w: _floats(v, w, 3), "expression": _weights,
               "landmark_rmse_px": lambda v, w: _float(v, w, 0.0),
               "landmark_rmse_iod": lambda v, w: _float(v, w, 0.0),
               "camera": CameraIntrinsics.from_dict}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class HeadManifest(_Record):
    """``head.json``. ``shape_keys`` is the glTF morph-target order; ``files`` is filled on write."""

    head_model: str
    vertex_count: int
    face_count: int
    shape_keys: list[str]
    identity: list[float]
    inputs: list[InputRecord] = field(default_factory=list)
    fits: list[InputFit] = field(default_factory=list)
    quality: dict = field(default_factory=dict)  # e.g. landmark_rmse_px, identity_prior, accepted
    files: dict[str, dict] = field(default_factory=dict)  # name -> {"sha256", "bytes", "role"}
    notes: list[str] = field(default_factory=list)
    job_id: str | None = None
    units: str = "cm"
    created: str = field(default_factory=_now)
    generator: str = GENERATOR
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    _optional = frozenset({"notes", "job_id"})
    _checks = {"head_model": _str, "vertex_count": _int, "face_count": _int,
               "shape_keys": _checked_list(_str), "identity": _floats,
               "inputs": _checked_list(InputRecord.from_dict), "fits": _checked_list(InputFit.from_dict),
               "quality": _quality, "files": _files, "notes": _checked_list(_str),
               "job_id": lambda v, w: None if v is None else _str(v, w), "units": _units, "created": _iso_time,
               "generator": _str, "format": _str, "version": _int}

    def to_dict(self) -> dict:
        """Plain JSON types, ``format`` and ``version`` first (readers check them before the rest)."""
        d = super().to_dict()
        return {k: d[k] for k in ("format", "version", "created", "generator", "head_model", "units")} | d

    @classmethod
    def from_dict(cls, data, where: str = "") -> HeadManifest:
        """Validate and build; raises BundleError (without a path; ``read_bundle`` adds it)."""
        if not isinstance(data, dict):
            raise BundleError(f"must be an object, got {type(data).__name__}", field="(top level)")
        if data.get("format") != FORMAT_NAME:
            raise BundleError(f"is {data.get('format')!r}, not {FORMAT_NAME!r}: not a HeadRig head bundle",
                              field="format")
        # The version comes before the other fields: a newer writer's fields must not hide it.
        version = _int(data.get("version"), "version", 1)
        if version > FORMAT_VERSION:
            raise BundleError(f"bundle format version {version} is newer than this HeadRig reads "
                              f"({FORMAT_VERSION}); update HeadRig to open it", field="version")
        manifest = super().from_dict(data)
        if len(set(manifest.shape_keys)) != len(manifest.shape_keys):
            raise BundleError("has duplicate names", field="shape_keys")
        for i, fit in enumerate(manifest.fits):
            if fit.input_index >= len(manifest.inputs):
                raise BundleError(f"is {fit.input_index} but there are {len(manifest.inputs)} inputs",
                                  field=f"fits[{i}].input_index")
            if set(fit.expression) != set(manifest.shape_keys):
                odd = sorted(set(fit.expression) ^ set(manifest.shape_keys))
                raise BundleError(f"must have a weight for exactly the shape keys; differs at {odd[:3]}",
                                  field=f"fits[{i}].expression")
        return manifest

    def validate(self) -> HeadManifest:
        """A clean copy (numpy values become Python numbers), or BundleError naming the bad field."""
        return HeadManifest.from_dict(self.to_dict())


# ---- reading and writing ----

def write_bundle(out_dir, manifest: HeadManifest, files: dict, force: bool = False) -> HeadManifest:
    """Write the bundle folder ``out_dir`` atomically; returns the manifest as written.

    ``files`` maps names inside the bundle to ``bytes`` or a ``Path`` to copy. ``manifest.files``
    is filled in (sha256, size, and the role the caller put in ``manifest.files[name]["role"]``,
    else one guessed from the name) once the bundle is in place; on failure it is left alone.
    Everything is written into a hidden sibling folder, synced to disk, ``head.json`` last, and
    then renamed into place. An existing ``out_dir`` is an error unless ``force``; with force it
    is replaced (moved aside, the new one renamed in, the old one deleted), but only if it is
    empty or a folder HeadRig wrote (``shared.folders.replace_refusal``), so a mistyped ``-o ~`` cannot
    delete a home folder.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_FILE
    roles = {name: info.get("role") for name, info in manifest.files.items() if isinstance(info, dict)}
    unknown = sorted(set(manifest.files) - set(files))
    if unknown:
        raise BundleError(f"lists {unknown[0]!r}, which is not among the files to write",
                          path=manifest_path, field="files")
    try:
        base = HeadManifest.validate(replace(manifest, files={}))
        for name in files:
            _file_name(name, f"files.{name}", nested=True)
    except BundleError as exc:
        raise BundleError(exc.reason, path=manifest_path, field=exc.field) from None
    if out_dir.exists() or out_dir.is_symlink():
        if not force:
            raise BundleError("already exists; choose another folder or allow replacing it (--force)", path=out_dir)
        if replace_refusal(out_dir) is not None:  # only a folder HeadRig wrote (a bundle, or empty) goes
            raise BundleError("exists and is not a HeadRig bundle (no head.json) or another folder HeadRig wrote; "
                              "refusing to replace it", path=out_dir)
    with staged_folder(out_dir) as tmp:
        described = {}
        for name, source in files.items():
            digest, size = _write_file(tmp / name, source, name)
            role = roles.get(name) or NAMED_ROLES.get(name) or _ROLES.get(PurePosixPath(name).suffix.lower(), "other")
            described[name] = {"sha256": digest, "bytes": size, "role": role}
        final = replace(base, files=described)
        text = json.dumps(final.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
        _write_file(tmp / MANIFEST_FILE, text.encode("utf-8"), MANIFEST_FILE)
    manifest.files = final.files
    return final


def _write_file(path: Path, source, name: str) -> tuple[str, int]:
    """Write ``source`` (bytes or a Path to copy) to ``path`` and sync it; returns (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as out:
        if isinstance(source, (bytes, bytearray, memoryview)):
            digest.update(source)
            size = out.write(source)
        elif isinstance(source, os.PathLike):
            try:
                src = open(source, "rb")
            except OSError as exc:
                raise BundleError(f"cannot read it for bundle file {name!r} ({exc.strerror})", path=source) from None
            with src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    size += out.write(chunk)
        else:
            raise BundleError(f"must be bytes or a Path, got {type(source).__name__}", field=f"files.{name}")
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def read_bundle(path, verify_hashes: bool = True) -> HeadManifest:
    """Read and validate a bundle folder (or its ``head.json``); checks every listed file's size,
    and its sha256 unless ``verify_hashes`` is False. Raises BundleError naming the file."""
    folder = Path(path)
    if folder.name == MANIFEST_FILE and folder.is_file():
        folder = folder.parent
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise BundleError("not found, or not a folder (a head bundle is a folder with head.json)", path=folder)
    data = read_json(manifest_path, "the folder is not a HeadRig head bundle")
    try:
        manifest = HeadManifest.from_dict(data)
    except BundleError as exc:
        raise BundleError(exc.reason, path=manifest_path, field=exc.field) from None
    for name, info in manifest.files.items():
        file = folder / name
        if not file.is_file():
            raise BundleError("listed in head.json but missing", path=file)
        if file.stat().st_size != info["bytes"]:
            raise BundleError(f"has {file.stat().st_size} bytes, head.json says {info['bytes']}; "
                              "the file was changed or cut short", path=file)
        if verify_hashes and sha256_file(file) != info["sha256"]:
            raise BundleError("sha256 differs from head.json; the file was modified or damaged", path=file)
    return manifest


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_summary(manifest: HeadManifest) -> str:
    """A few lines for people (``headrig info``): model, inputs, fit quality, files, notes."""
    m, q = manifest, dict(manifest.quality)
    lines = [f"HeadRig head bundle ({m.format} v{m.version}), created {m.created} by {m.generator}",
             f"  head model   {m.head_model}: {m.vertex_count:,} vertices, {m.face_count:,} faces, "
             f"{len(m.shape_keys)} shape keys, {len(m.identity)} identity coefficients",
             f"  inputs       {len(m.inputs)}"]
    lines += [f"    {i.file} ({i.width}x{i.height})" for i in m.inputs[:5]]
    lines += [f"    ... and {len(m.inputs) - 5} more"] if len(m.inputs) > 5 else []
    px, iod = q.pop("landmark_rmse_px", None), q.pop("landmark_rmse_iod", None)
    if isinstance(px, (int, float)) and isinstance(iod, (int, float)):
        lines.append(f"  landmarks    RMSE {px:.2f} px, {100 * iod:.1f}% of the eye distance")
    verdict = {True: ["accepted"], False: ["NOT accepted (see notes)"]}.get(q.pop("accepted", None), [])
    rest = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in q.items()]
    if verdict or rest:
        lines.append("  quality      " + "; ".join(verdict + rest))
    lines.append(f"  files        {len(m.files)}")
    lines += [f"    {name:<14} {_size(info['bytes']):>9}  {info['role']}" for name, info in m.files.items()]
    lines += [f"  note         {n}" for n in m.notes] + ([f"  job          {m.job_id}"] if m.job_id else [])
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n} B" if n < 1000 else f"{n / 1e3:.1f} KB" if n < 1e6 else f"{n / 1e6:.1f} MB"
