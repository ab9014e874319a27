"""``animation.json``: per-frame shape-key weights and head motion of one clip.

Pure standard-library Python, vendored into the Blender add-on like ``shared/bundle.py``. A head
bundle built from a video holds one (role "animation"); a retarget result folder holds one whose
``target`` names the head it drives. Conventions:

* ``times`` are seconds from the clip's first decoded frame, one per frame, strictly increasing
  (variable frame rate clips keep their real times); ``fps`` is the nominal rate for keyframing.
* ``weights`` maps every name in ``shape_keys`` to one value per frame, in [0, 1].
* ``head.rotation`` is a unit quaternion (w, x, y, z) per frame in glTF axes (Y up, +Z towards the
  camera): the identity means the face looks straight into the camera. ``head.translation`` is
  metres in the same axes, relative to ``head.origin`` (the clip's median head position in the
  OpenCV camera frame, metres), so a still head stays at the origin.
* ``eyes.left`` / ``eyes.right`` are (yaw, pitch) per frame in degrees: yaw positive towards the
  subject's left, pitch positive up. "left" is the subject's left eye (ARKit's ``_L``).
* ``missing`` lists frames with no face (their values are interpolated); ``gaps`` lists runs of
  missing frames longer than the configured limit as [first, last] frame indices.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .bundle_fields import (
    BundleError, _checked_list, _dict, _file_name, _float, _floats, _int, _iso_time, _join, _list, _obj, _plain, _str,
    read_json,
)

FORMAT_NAME = "headrig.animation"
FORMAT_VERSION = 1
ANIMATION_FILE = "animation.json"


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _series(value, where: str, n: int, width: int = 0, low: float | None = None, high: float | None = None) -> list:
    """n numbers (width 0) or n lists of ``width`` numbers, finite and within [low, high]."""
    items = _list(value, where, n)
    out = []
    for i, v in enumerate(items):
        at = _join(where, i)
        row = [_float(v, at)] if width == 0 else _floats(v, at, width)
        for x in row:
            if (low is not None and x < low - 1e-6) or (high is not None and x > high + 1e-6):
                raise BundleError(f"must lie in [{low}, {high}], got {x}", field=at)
        out.append(row[0] if width == 0 else row)
    return out


@dataclass
class AnimationClip:
    """The contents of ``animation.json`` (see the module docstring for units and axes)."""

    fps: float
    times: list[float]
    shape_keys: list[str]
    weights: dict[str, list[float]]
    head_rotation: list[list[float]]      # [N][4] w, x, y, z
    head_translation: list[list[float]]   # [N][3] metres
    head_origin: list[float]              # [3] metres, OpenCV camera frame
    eye_left: list[list[float]]           # [N][2] yaw, pitch degrees
    eye_right: list[list[float]]
    landmark_rmse_px: list[float]         # [N] fit quality per frame (NaN never; missing frames 0)
    missing: list[int] = field(default_factory=list)
    gaps: list[list[int]] = field(default_factory=list)
    source: dict = field(default_factory=dict)       # file, sha256, width, height, duration, ...
    camera: dict = field(default_factory=dict)       # width, height, fx, fy, cx, cy (pixels)
    calibration: dict = field(default_factory=dict)  # retarget settings, when this is a retarget
    target: dict = field(default_factory=dict)       # the head a retarget drives
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=_now)
    generator: str = "headrig 0.1.0"
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    @property
    def frame_count(self) -> int:
        return len(self.times)

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last one."""
        return self.times[-1] + 1.0 / self.fps if self.times else 0.0

    def weight_rows(self) -> list[list[float]]:
        """[N][K] weights in ``shape_keys`` order."""
        columns = [self.weights[name] for name in self.shape_keys]
        return [list(row) for row in zip(*columns)] if columns else [[] for _ in self.times]

    def to_dict(self) -> dict:
        return {
            "format": self.format, "version": self.version, "created": self.created, "generator": self.generator,
            "fps": self.fps, "frame_count": self.frame_count, "times": self.times, "shape_keys": self.shape_keys,
            "weights": self.weights,
            "head": {"rotation": self.head_rotation, "translation": self.head_translation, "origin": self.head_origin},
            "eyes": {"left": self.eye_left, "right": self.eye_right},
            "quality": {"landmark_rmse_px": self.landmark_rmse_px},
            "missing": self.missing, "gaps": self.gaps, "source": self.source, "camera": self.camera,
            "calibration": self.calibration, "target": self.target, "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data) -> AnimationClip:
        """Validate and build; raises BundleError naming the field."""
        if not isinstance(data, dict):
            raise BundleError(f"must be an object, got {type(data).__name__}", field="(top level)")
        if data.get("format") != FORMAT_NAME:
            raise BundleError(f"is {data.get('format')!r}, not {FORMAT_NAME!r}: not a HeadRig animation", field="format")
        version = _int(data.get("version"), "version", 1)
        if version > FORMAT_VERSION:
            raise BundleError(f"animation format version {version} is newer than this HeadRig reads "
                              f"({FORMAT_VERSION}); update HeadRig to open it", field="version")
        keys = {"format", "version", "created", "generator", "fps", "frame_count", "times", "shape_keys", "weights",
                "head", "eyes", "quality", "missing", "gaps", "source", "camera", "calibration", "target", "notes"}
        d = _obj(data, "", keys, {"calibration", "target", "notes", "source", "camera"})
        n = _int(d["frame_count"], "frame_count", 1)
        times = _series(d["times"], "times", n, low=0.0)
        if any(b <= a for a, b in zip(times, times[1:])):
            raise BundleError("must be strictly increasing", field="times")
        names = [_str(v, _join("shape_keys", i)) for i, v in enumerate(_list(d["shape_keys"], "shape_keys"))]
        if len(set(names)) != len(names):
            raise BundleError("has duplicate names", field="shape_keys")
        weights = _dict(d["weights"], "weights")
        if set(weights) != set(names):
            odd = sorted(set(weights) ^ set(names))
            raise BundleError(f"must have a curve for exactly the shape keys; differs at {odd[:3]}", field="weights")
        head = _obj(d["head"], "head", {"rotation", "translation", "origin"})
        eyes = _obj(d["eyes"], "eyes", {"left", "right"})
        quality = _obj(d["quality"], "quality", {"landmark_rmse_px"})
        rotation = _series(head["rotation"], "head.rotation", n, 4, -1.0, 1.0)
        for i, q in enumerate(rotation):
            if abs(math.sqrt(sum(c * c for c in q)) - 1.0) > 1e-3:
                raise BundleError("must be a unit quaternion (w, x, y, z)", field=f"head.rotation[{i}]")
        missing = [_int(v, _join("missing", i)) for i, v in enumerate(_list(d["missing"], "missing"))]
        if any(m >= n for m in missing):
            raise BundleError(f"frame indices must be below frame_count {n}", field="missing")
        gaps = [_floats(g, _join("gaps", i), 2) for i, g in enumerate(_list(d["gaps"], "gaps"))]
        source = _dict(d.get("source", {}), "source")
        if "file" in source:
            _file_name(source["file"], "source.file", nested=False)
        return cls(
            fps=_float(d["fps"], "fps", 1e-3),
            times=times,
            shape_keys=names,
            weights={k: _series(weights[k], f"weights.{k}", n, low=0.0, high=1.0) for k in names},
            head_rotation=rotation,
            head_translation=_series(head["translation"], "head.translation", n, 3),
            head_origin=_floats(head["origin"], "head.origin", 3),
            eye_left=_series(eyes["left"], "eyes.left", n, 2, -90.0, 90.0),
            eye_right=_series(eyes["right"], "eyes.right", n, 2, -90.0, 90.0),
            landmark_rmse_px=_series(quality["landmark_rmse_px"], "quality.landmark_rmse_px", n, low=0.0),
            missing=missing,
            gaps=[[int(a), int(b)] for a, b in gaps],
            source=source,
            camera=_dict(d.get("camera", {}), "camera"),
            calibration=_dict(d.get("calibration", {}), "calibration"),
            target=_dict(d.get("target", {}), "target"),
            notes=_checked_list(_str)(d.get("notes", []), "notes"),
            created=_iso_time(d["created"], "created"),
            generator=_str(d["generator"], "generator"),
            version=version,
        )

    def validate(self) -> AnimationClip:
        """A clean copy (numpy values become Python numbers), or BundleError naming the bad field."""
        return AnimationClip.from_dict(json.loads(self.to_json()))

    def to_json(self) -> str:
        return json.dumps(_plain(self.to_dict()), allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n"


def read_animation(path) -> AnimationClip:
    """Read and validate an ``animation.json`` (or the folder holding one); BundleError names the file."""
    path = Path(path)
    if path.is_dir():
        path = path / ANIMATION_FILE
    data = read_json(path, "no HeadRig animation here")
    try:
        return AnimationClip.from_dict(data)
    except BundleError as exc:
        raise BundleError(exc.reason, path=path, field=exc.field) from None


def animation_bytes(clip: AnimationClip) -> bytes:
    """Validated JSON bytes, for ``write_bundle`` or a result folder."""
    return clip.validate().to_json().encode("utf-8")


# ---- quaternions (w, x, y, z), pure Python: the add-on applies these without numpy ----

def quaternion_to_euler_ypr(q: list[float]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in radians of a head rotation in glTF axes: yaw about +Y (positive turns
    the face towards the subject's left, i.e. the viewer's right), pitch about +X (positive tips the
    face down), roll about +Z; applied as R = Ry(yaw) Rx(pitch) Rz(roll)."""
    w, x, y, z = q
    # Rotation matrix entries needed for the Y-X-Z decomposition.
    r02 = 2 * (x * z + w * y)
    r12 = 2 * (y * z - w * x)
    r22 = 1 - 2 * (x * x + y * y)
    r10 = 2 * (x * y + w * z)
    r11 = 1 - 2 * (x * x + z * z)
    pitch = math.asin(max(-1.0, min(1.0, -r12)))
    yaw = math.atan2(r02, r22)
    roll = math.atan2(r10, r11)
    return yaw, pitch, roll


def euler_ypr_to_quaternion(yaw: float, pitch: float, roll: float) -> list[float]:
    """Inverse of ``quaternion_to_euler_ypr``."""
    def axis(angle: float, i: int) -> list[float]:
        q = [math.cos(angle / 2), 0.0, 0.0, 0.0]
        q[1 + i] = math.sin(angle / 2)
        return q

    return quaternion_multiply(quaternion_multiply(axis(yaw, 1), axis(pitch, 0)), axis(roll, 2))


def quaternion_multiply(a: list[float], b: list[float]) -> list[float]:
    """The Hamilton product a b of (w, x, y, z) quaternions: b's rotation, then a's. The project's one
    copy: the backend's retarget uses it, and so does Live Link import in the add-on (vendored)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return [aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw]
