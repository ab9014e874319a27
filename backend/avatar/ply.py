"""The bundle's Gaussians as a standard 3D Gaussian Splatting PLY, with the triangle binding riding along.

Layout (what the INRIA 3DGS code, SuperSplat and gsplat's exporter read and write): one binary
little-endian ``vertex`` element, one row per Gaussian, float32 properties in this order:

    x y z  nx ny nz  f_dc_0..2  f_rest_0..f_rest_{3(K-1)-1}  opacity  scale_0..2  rot_0..3

* ``nx ny nz`` are zeros (INRIA's writer keeps them; readers ignore them).
* ``f_dc_c`` = sh[:, 0, c]; ``f_rest`` is channel-major as in 3DGS: all red higher-order
  coefficients (bands 1.., in SH index order), then all green, then all blue, i.e.
  f_rest_{c (K-1) + (k-1)} = sh[:, k, c]. K = (degree + 1)^2.
* ``opacity`` is stored before the sigmoid (logit), ``scale_i`` as the natural log, ``rot``
  as (w, x, y, z), not normalised here (viewers normalise).

Units and axes: metres, in the 3DGS ecosystem's OpenCV axes (x right, y down, z forward), i.e.
head.glb's glTF frame turned 180 degrees about x (``shared.splat_axes`` says why and holds the
matrices). Splat viewers then show the head upright. The writer takes and the reader returns
glTF-frame data; the turn is applied to the means, the rotations (pre-multiplied) and the
view-dependent SH coefficients (sign flips, ``sh_axis_signs``), all exact in float32, so a file
reads back bit for bit. Header comments give the axes (``shared.splat_axes.AXES_COMMENT``) and
``sh_degree D``; files without the axes comment (older HeadRig files said ``units metres, Y up
(glTF axes)``) are read as stored.

The rigging (``backend.avatar.binding.GaussianBinding``) is appended to the same element as
extra properties that standard viewers skip: ``tri`` (int32), ``bary_0..2``, ``offset_0..2``,
``lrot_0..3`` (local rotation, w first), ``lscale_0..2`` (log scale relative to the triangle
size), flagged by the header comment ``headrig binding v1``. The binding's opacity logits and SH
are the standard ``opacity`` and ``f_*`` columns (one copy, so they cannot disagree).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyParseError

from backend.avatar.binding import GaussianBinding
from shared.splat_axes import AXES_COMMENT, GLTF_FROM_PLY, OPENCV, ply_axes

BINDING_COMMENT = "headrig binding v1"
# Opacities are clipped this far inside (0, 1) before the logit: float32 sigmoids round to
# exactly 1.0 from a logit of about 17, and a stored +inf would break every viewer.
OPACITY_EPS = 1e-7
_BINDING_GROUPS = (("tri", 1), ("bary", 3), ("offset", 3), ("lrot", 4), ("lscale", 3))
# The turn between the frames, diag(1, -1, -1); the quaternion and SH formulas below are this
# turn's (tests/test_avatar_ply.py checks them against the matrix).
_TURN = np.diag(GLTF_FROM_PLY[OPENCV]).astype(np.float32)


class PlyFormatError(ValueError):
    """A Gaussian PLY that cannot be read: not a PLY, missing or malformed properties, bad values."""


@dataclass
class GaussianCloud:
    """N Gaussians as read from a PLY (float32 numpy arrays, head.glb's glTF frame, metres).

    means: [N, 3]; quats: [N, 4] (w, x, y, z) as stored; scales: [N, 3] linear (exp of the
    stored logs); opacities: [N] in (0, 1) (sigmoid of the stored logits); sh: [N, K, 3] with the
    DC term first; binding: the triangle rigging, or None for a plain 3DGS file.
    """

    means: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    sh: np.ndarray
    binding: GaussianBinding | None

    @property
    def n(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return _sh_degree(self.sh.shape[1])  # the reader checked K is a square


def standard_property_names(sh_coeffs: int) -> list[str]:
    """The 3DGS property names, in file order, for K = ``sh_coeffs`` SH coefficients per channel."""
    return (["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(3)]
            + [f"f_rest_{i}" for i in range(3 * (sh_coeffs - 1))] + ["opacity"]
            + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])


def binding_property_names() -> list[str]:
    """The extra properties of a rigged file, in file order (after the standard ones)."""
    return [name if width == 1 else f"{name}_{i}" for name, width in _BINDING_GROUPS for i in range(width)]


def write_gaussians_ply(path: str | Path, means, quats, scales, opacities, sh,
                        binding: GaussianBinding | None = None) -> Path:
    """Write N Gaussians (numpy arrays or torch tensors) atomically; returns the path.

    Args:
        means: [N, 3] metres, glTF axes (stored in OpenCV axes); quats: [N, 4] (w, x, y, z), glTF
            frame; scales: [N, 3] linear, > 0;
        opacities: [N] in [0, 1] (clipped to OPACITY_EPS inside); sh: [N, K, 3], K a square;
        binding: the rigging of the same N Gaussians; its opacity_logit and sh are the values
            stored (they must agree with ``opacities`` and ``sh``), so a rigged file reproduces
            the binding bit for bit.
    """
    means, quats, scales, opacities, sh = (_array(a) for a in (means, quats, scales, opacities, sh))
    n = means.shape[0]
    expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
    for name, arr in zip(expected, (means, quats, scales, opacities)):
        if arr.shape != expected[name]:
            raise ValueError(f"{name} must be {list(expected[name])} (N = {n} from means), got {list(arr.shape)}")
    if sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3 or _sh_degree(sh.shape[1]) is None:
        raise ValueError(f"sh must be [{n}, (degree + 1)^2, 3], got {list(sh.shape)}")
    for name, arr in (("means", means), ("quats", quats), ("scales", scales), ("opacities", opacities), ("sh", sh)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} has non-finite values")
    if (scales <= 0).any():
        raise ValueError("scales must be > 0 (they are stored as logs)")
    if ((opacities < 0) | (opacities > 1)).any():
        raise ValueError("opacities must lie in [0, 1] (they are stored as logits)")
    p = np.clip(opacities.astype(np.float64), OPACITY_EPS, 1 - OPACITY_EPS)
    opacity_logit = np.log(p) - np.log1p(-p)
    if binding is not None:
        opacity_logit, sh = _check_binding(binding, n, opacity_logit, sh)
    k = sh.shape[1]
    means, quats, sh = opencv_from_gltf(means, quats, sh)
    # f_rest is channel-major: [N, K-1, 3] -> [N, 3, K-1] -> rows of R..., G..., B...
    rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1))
    values = np.concatenate([means, np.zeros((n, 3)), sh[:, 0, :], rest, opacity_logit[:, None],
                             np.log(scales.astype(np.float64)), quats], axis=1)
    names = standard_property_names(k)
    columns = {name: values[:, i] for i, name in enumerate(names)}
    dtype = [(name, "<f4") for name in names]
    comments = [f"sh_degree {_sh_degree(k)}", AXES_COMMENT]
    if binding is not None:
        b = {key: _array(t) for key, t in (("tri", binding.tri), ("bary", binding.bary), ("offset", binding.offset),
                                           ("lrot", binding.rot_local), ("lscale", binding.log_scale))}
        if b["tri"].min(initial=0) < 0 or b["tri"].max(initial=0) > np.iinfo(np.int32).max:
            raise ValueError("binding.tri must hold triangle indices that fit int32")
        for name, width in _BINDING_GROUPS:
            col = b[name].reshape(n, width)
            for i in range(width):
                prop = name if width == 1 else f"{name}_{i}"
                columns[prop] = col[:, i]
                dtype.append((prop, "<i4" if name == "tri" else "<f4"))
        comments.insert(0, BINDING_COMMENT)
    rows = np.empty(n, dtype=dtype)
    for prop, col in columns.items():
        rows[prop] = col
    data = PlyData([PlyElement.describe(rows, "vertex")], text=False, byte_order="<", comments=comments)
    return _write_atomic(Path(path), data)


def read_gaussians_ply(path: str | Path) -> GaussianCloud:
    """Read a 3DGS PLY (rigged by HeadRig or plain); raises PlyFormatError naming what is wrong."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            ply = PlyData.read(fh, mmap=False)
    except (PlyParseError, UnicodeDecodeError, ValueError) as exc:
        raise PlyFormatError(f"{path}: not a readable binary PLY ({exc})") from exc
    if "vertex" not in [e.name for e in ply.elements]:
        raise PlyFormatError(f"{path}: no 'vertex' element (has {[e.name for e in ply.elements]})")
    rows = ply["vertex"].data
    present = set(rows.dtype.names or ())
    n_rest = sum(1 for name in present if name.startswith("f_rest_"))
    k = 1 + n_rest // 3
    if n_rest % 3 or _sh_degree(k) is None:
        raise PlyFormatError(f"{path}: {n_rest} f_rest properties is not 3 ((degree + 1)^2 - 1) for any degree")
    n = len(rows)

    def stack(names: list[str]) -> np.ndarray:  # [n, len(names)] float32
        cols = [_column(rows, name, path, float).astype(np.float32) for name in names]
        return np.stack(cols, axis=1) if cols else np.zeros((n, 0), np.float32)

    means = stack(["x", "y", "z"])
    rest = stack([f"f_rest_{i}" for i in range(3 * (k - 1))]).reshape(n, 3, k - 1).transpose(0, 2, 1)
    sh = np.ascontiguousarray(np.concatenate([stack([f"f_dc_{i}" for i in range(3)])[:, None, :], rest], axis=1))
    opacity_logit = stack(["opacity"])[:, 0]
    log_scales = stack([f"scale_{i}" for i in range(3)])
    quats = stack([f"rot_{i}" for i in range(4)])
    degree = _comment_value(ply.comments, "sh_degree")
    if degree is not None and degree != str(_sh_degree(k)):
        raise PlyFormatError(f"{path}: header says sh_degree {degree} but the file has {k} coefficients")
    if ply_axes(ply.comments) == OPENCV:
        means, quats, sh = gltf_from_opencv(means, quats, sh)
    binding = _read_binding(rows, present, path, opacity_logit, sh)
    opacities = (1 / (1 + np.exp(-opacity_logit.astype(np.float64)))).astype(np.float32)
    return GaussianCloud(means, quats, np.exp(log_scales.astype(np.float64)).astype(np.float32), opacities, sh, binding)


def sh_axis_signs(k: int) -> np.ndarray:
    """[K] signs of the SH coefficients (3DGS order: degree l, then m = -l..l) under the turn
    (x, y, z) -> (x, -y, -z). Real Y_l^m goes to (-1)^(l + |m|) Y_l^m, times -1 for m < 0 (the
    sin(|m| phi) terms), as theta -> pi - theta and phi -> -phi."""
    signs = []
    for degree in range(_sh_degree(k) + 1):
        signs += [(-1.0) ** (degree + abs(m)) * (-1.0 if m < 0 else 1.0) for m in range(-degree, degree + 1)]
    return np.asarray(signs, np.float32)


def opencv_from_gltf(means: np.ndarray, quats: np.ndarray, sh: np.ndarray) -> tuple[np.ndarray, ...]:
    """glTF-frame means [N, 3], quats [N, 4] (w, x, y, z) and SH [N, K, 3] in the PLY's OpenCV axes.

    The quaternion is (0, 1, 0, 0) * q, the 180-degree turn about x applied after q; only sign
    flips and a permutation, so the inverse (``gltf_from_opencv``) restores the exact floats."""
    means, quats, sh = (np.asarray(a, np.float32) for a in (means, quats, sh))
    w, x, y, z = quats.T
    return (means * _TURN, np.stack([-x, w, -z, y], axis=1),
            sh * sh_axis_signs(sh.shape[1])[None, :, None])


def gltf_from_opencv(means: np.ndarray, quats: np.ndarray, sh: np.ndarray) -> tuple[np.ndarray, ...]:
    """The inverse of ``opencv_from_gltf``: (0, -1, 0, 0) * q."""
    means, quats, sh = (np.asarray(a, np.float32) for a in (means, quats, sh))
    w, x, y, z = quats.T
    return (means * _TURN, np.stack([x, -w, z, -y], axis=1),
            np.ascontiguousarray(sh * sh_axis_signs(sh.shape[1])[None, :, None]))


def _read_binding(rows: np.ndarray, present: set[str], path: Path, opacity_logit: np.ndarray,
                  sh: np.ndarray) -> GaussianBinding | None:
    names = binding_property_names()
    found = [name for name in names if name in present]
    if not found:
        return None
    missing = [name for name in names if name not in present]
    if missing:
        raise PlyFormatError(f"{path}: binding properties incomplete, missing {missing}")
    tri = _column(rows, "tri", path, int)
    if (tri < 0).any():
        raise PlyFormatError(f"{path}: property 'tri' has negative triangle indices")

    def group(name: str, width: int) -> torch.Tensor:
        cols = [_column(rows, f"{name}_{i}", path, float) for i in range(width)]
        return torch.from_numpy(np.stack(cols, axis=1).astype(np.float32))

    return GaussianBinding(torch.from_numpy(tri.astype(np.int64)), group("bary", 3), group("offset", 3),
                           group("lrot", 4), group("lscale", 3), torch.from_numpy(opacity_logit.copy()),
                           torch.from_numpy(sh.copy()))


def _column(rows: np.ndarray, name: str, path: Path, kind: type) -> np.ndarray:
    """One property, checked for presence, type (float32/64 or an integer) and finiteness."""
    if name not in (rows.dtype.names or ()):
        raise PlyFormatError(f"{path}: missing property '{name}' on element 'vertex'")
    col = rows[name]
    ok = np.issubdtype(col.dtype, np.floating) if kind is float else np.issubdtype(col.dtype, np.integer)
    if not ok:
        want = "float" if kind is float else "an integer type"
        raise PlyFormatError(f"{path}: property '{name}' is {col.dtype}, expected {want}")
    if kind is float and not np.isfinite(col).all():
        raise PlyFormatError(f"{path}: property '{name}' has non-finite values")
    return col


def _check_binding(binding: GaussianBinding, n: int, opacity_logit: np.ndarray, sh: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The binding's own opacity logits and SH (stored exactly), after checking they match the arguments."""
    if binding.n != n:
        raise ValueError(f"binding has {binding.n} Gaussians, the arrays {n}")
    b_logit, b_sh = _array(binding.opacity_logit).reshape(-1), _array(binding.sh)
    if b_sh.shape != sh.shape or not np.allclose(b_sh, sh, rtol=1e-5, atol=1e-6):
        raise ValueError("sh differs from binding.sh; the file stores one copy")
    b_p = 1 / (1 + np.exp(-b_logit.astype(np.float64)))
    if not np.allclose(b_p, 1 / (1 + np.exp(-opacity_logit)), rtol=1e-5, atol=1e-6):
        raise ValueError("opacities differ from sigmoid(binding.opacity_logit); the file stores one copy")
    return b_logit, b_sh


def _write_atomic(path: Path, data: PlyData) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            data.write(fh)
        os.replace(tmp, path)  # readers see the old file or the whole new one, never a partial one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _sh_degree(k: int) -> int | None:
    """The degree D with K = (D + 1)^2 coefficients, or None when K is not such a square."""
    d = math.isqrt(k) - 1 if k > 0 else -1
    return d if d >= 0 and (d + 1) ** 2 == k else None


def _comment_value(comments: list[str], key: str) -> str | None:
    for comment in comments:
        parts = comment.split()
        if len(parts) == 2 and parts[0] == key:
            return parts[1]
    return None
