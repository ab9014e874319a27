"""``gaussians_expr.bin``: the expression MLP's detail baked per shape key, beside ``gaussians.ply``.

Python + numpy only (no torch, no bpy): vendored into the Blender add-on, which reads it; the
backend (``backend.avatar.expression_bake``) writes it.

What it holds. The avatar's expression MLP (GPHM) adds to every Gaussian a local offset and a
colour change that depend on the 53 expression weights w. Blender has no MLP, so the bundle carries
its linearisation around the neutral expression (w = 0), one delta per shape key k at full weight:

    offset(w) = offset_ply + sum_k w_k offset_k     (triangle-local, in triangle-size units: the
                                                     frame of the PLY's ``offset_0..2``, so the
                                                     deltas turn and scale with their triangle)
    colour(w) = colour_ply + sum_k w_k colour_k     (added to the DC colour before any clipping:
                                                     colour_ply = 0.5 + SH_C0 f_dc, sRGB-encoded,
                                                     as the backend renders it)

``gaussians.ply`` is the avatar at w = 0 (the MLP's neutral output folded in), so this file holds
changes only; without it the Gaussians still follow the mesh, with no expression detail.

Layout (all little-endian):

    magic      8 bytes  b"HRGXPR1\\n"
    length     uint32   H, the byte length of the header (space-padded so the data starts
                        16-byte aligned)
    header     H bytes  UTF-8 JSON, below
    data       the arrays, each at ``data start + offset`` bytes, C order

Header fields: ``format`` "headrig.gaussian_expressions"; ``version`` 1; ``gaussians`` N;
``keys``: the E shape-key names (rows of the arrays, the head's shape-key names); ``ply_sha256``:
the hex sha256 of the ``gaussians.ply`` it belongs to (a reader ignores the file for another
PLY); ``linearisation``: how the deltas were taken ("secant": MLP(e_k) - MLP(0); "tangent": the
derivative at 0); ``arrays``: {"offset": ..., "colour": ...}, each {"dtype": "<f2" or "<f4",
"shape": [E, N, 3], "offset": bytes from the data start}. Key-major, so one key's N deltas are
contiguous. No pickles: a damaged or hostile file is refused with ``ExpressionFileError``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import NAMED_ROLES

EXPRESSIONS_FILE = "gaussians_expr.bin"
ROLE = NAMED_ROLES[EXPRESSIONS_FILE]  # its role in head.json's ``files``
FORMAT_NAME = "headrig.gaussian_expressions"
FORMAT_VERSION = 1
MAGIC = b"HRGXPR1\n"
ARRAYS = ("offset", "colour")
_DTYPES = ("<f2", "<f4")
_ALIGN = 16


class ExpressionFileError(ValueError):
    """A ``gaussians_expr.bin`` that cannot be used; the message names the file and the problem."""


@dataclass
class GaussianExpressions:
    """E keys x N Gaussians. offset: [E, N, 3] triangle-local (triangle-size units); colour:
    [E, N, 3] added to the sRGB DC colour; both float32 in memory whatever the file stores."""

    keys: list[str]
    offset: np.ndarray
    colour: np.ndarray
    ply_sha256: str
    linearisation: str = "secant"

    @property
    def n(self) -> int:
        return int(self.offset.shape[1])

    def apply(self, weights) -> tuple[np.ndarray, np.ndarray]:
        """(offset change [N, 3], colour change [N, 3]) for weights [E] in ``keys`` order (float64)."""
        w = np.asarray(weights, np.float64)
        if w.shape != (len(self.keys),):
            raise ValueError(f"weights must be [{len(self.keys)}], got {list(w.shape)}")
        return (np.einsum("k,knc->nc", w, self.offset.astype(np.float64)),
                np.einsum("k,knc->nc", w, self.colour.astype(np.float64)))


def expressions_bytes(expr: GaussianExpressions, dtype: str = "<f2") -> bytes:
    """The file's bytes. float16 ("<f2", the default) halves the size; its rounding (relative
    5e-4 of each delta) is far below the linearisation's own error (BENCHMARKS.md)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    e, n = len(expr.keys), expr.n
    blobs, arrays, at = [], {}, 0
    for name in ARRAYS:
        values = np.asarray(getattr(expr, name))
        if values.shape != (e, n, 3):
            raise ValueError(f"{name} must be [{e}, {n}, 3] (keys x Gaussians x 3), got {list(values.shape)}")
        if not np.isfinite(values).all():
            raise ValueError(f"{name} has non-finite values")
        if dtype == "<f2" and np.abs(values).max(initial=0) > 6e4:
            raise ValueError(f"{name} exceeds float16's range; write it as '<f4'")
        blob = np.ascontiguousarray(values, dtype=dtype).tobytes()
        arrays[name] = {"dtype": dtype, "shape": [e, n, 3], "offset": at}
        blobs.append(blob + b"\0" * (-len(blob) % _ALIGN))
        at += len(blobs[-1])
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "gaussians": n, "keys": list(expr.keys),
              "ply_sha256": expr.ply_sha256, "linearisation": expr.linearisation, "arrays": arrays}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(len(MAGIC) + 4 + len(text)) % _ALIGN)
    return MAGIC + struct.pack("<I", len(text)) + text + b"".join(blobs)


def read_expressions(path) -> GaussianExpressions:
    """Read and check a file written by ``expressions_bytes``; raises ExpressionFileError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExpressionFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_expressions(data, path.name)


def parse_expressions(data: bytes, name: str = EXPRESSIONS_FILE) -> GaussianExpressions:
    """``read_expressions`` on bytes; ``name`` labels the errors."""
    def fail(why: str):
        return ExpressionFileError(f"{name}: {why}")

    if data[:len(MAGIC)] != MAGIC:
        raise fail("not a HeadRig Gaussian expression file (bad magic)")
    if len(data) < len(MAGIC) + 4:
        raise fail("truncated header")
    (size,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4 + size
    if start > len(data):
        raise fail(f"header says {size} bytes, the file is shorter")
    try:
        header = json.loads(data[len(MAGIC) + 4:start].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise fail(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise fail(f"format is {header.get('format') if isinstance(header, dict) else None!r}, not {FORMAT_NAME!r}")
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise fail(f"version {version!r}; this HeadRig reads up to {FORMAT_VERSION} (update HeadRig)")
    keys, n, sha = header.get("keys"), header.get("gaussians"), header.get("ply_sha256")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise fail("'keys' must be a list of distinct names")
    if not isinstance(n, int) or n < 0:
        raise fail("'gaussians' must be a non-negative integer")
    if not isinstance(sha, str) or len(sha) != 64:
        raise fail("'ply_sha256' must be a hex sha256")
    arrays = header.get("arrays")
    if not isinstance(arrays, dict) or set(arrays) != set(ARRAYS):
        raise fail(f"'arrays' must describe exactly {list(ARRAYS)}")
    out = {}
    for array in ARRAYS:
        spec = arrays[array]
        if not isinstance(spec, dict) or spec.get("dtype") not in _DTYPES or spec.get("shape") != [len(keys), n, 3]:
            raise fail(f"array {array!r} must be {list(_DTYPES)} of shape [{len(keys)}, {n}, 3], got {spec!r}")
        at, count = spec.get("offset"), len(keys) * n * 3
        if not isinstance(at, int) or at < 0 or start + at + count * int(spec["dtype"][-1]) > len(data):
            raise fail(f"array {array!r} runs past the end of the file (truncated?)")
        values = np.frombuffer(data, spec["dtype"], count, start + at).astype(np.float32).reshape(len(keys), n, 3)
        if not np.isfinite(values).all():
            raise fail(f"array {array!r} has non-finite values")
        out[array] = values
    return GaussianExpressions(keys, out["offset"], out["colour"], sha, str(header.get("linearisation", "")))
