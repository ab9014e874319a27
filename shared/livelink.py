"""Live Link Face CSV (Epic's iPhone capture app) to and from ``animation.json`` clips.

Pure standard-library Python, vendored into the Blender add-on like ``shared/animation.py``.

Layout (the app's take export; Epic's LiveLinkFaceImporter reads the same file): a header row
``Timecode,BlendShapeCount,<52 ARKit curves>,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,
LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll`` then one row per captured frame.
``BlendShapeCount`` is 61 (52 curves + 9 angles). Older exports lack the 9 angle columns.

* ``Timecode`` is ``HH:MM:SS:FF.fff``: FF is the frame number at the timecode rate and ``.fff`` a
  sub-frame fraction, so a row's time is ``h*3600 + m*60 + s + FF.fff / rate``. The app's timecode
  is time of day, so it may cross midnight. The rate is not in the file (Epic's importer assumes
  60): the reader infers it from the largest FF (<=23: 24, 24: 25, <=29: 30, <=59: 60) unless told.
* Curves are in [0, 1]. "Left" is the subject's left (the model's ``_L``).
* Angles: **radians by default**. Epic's UE4 ARKit face-support source maps the rotator to -1..1
  (degrees / 180, ``angle_unit="half_turns"``) while the public importers we read (Diffeomorphic
  DAZ importer, MeFaMo, three.js receivers) treat the values as radians; pass ``angle_unit`` if
  a capture disagrees (a 90-degree head turn reads ~1.57 in radians, 0.5 in half-turns).
* Signs follow Epic's face-support conversion with unmirrored curve names: HeadYaw > 0 turns the
  face to the subject's right, HeadPitch > 0 tips it down, HeadRoll > 0 tilts it towards the
  subject's left shoulder; eye yaw > 0 looks to the subject's right, eye pitch > 0 looks down.
  In ``animation.json`` terms: HeadYaw = -yaw, HeadPitch = pitch, HeadRoll = -roll (see
  ``quaternion_to_euler_ypr``), EyeYaw = -eye yaw, EyePitch = -eye pitch. Eye roll is written as 0.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import os
import re
import statistics
import tempfile
from pathlib import Path
from types import MappingProxyType

from .animation import AnimationClip, euler_ypr_to_quaternion, quaternion_to_euler_ypr
from .bundle_fields import BundleError

ARKIT_CURVES: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel",
    "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight",
    "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight", "MouthRollLower", "MouthRollUpper",
    "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft",
    "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp",
    "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft",
    "NoseSneerRight", "TongueOut",
)
HEAD_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll")
LEFT_EYE_COLUMNS = ("LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll")
RIGHT_EYE_COLUMNS = ("RightEyeYaw", "RightEyePitch", "RightEyeRoll")
HEADER: tuple[str, ...] = (("Timecode", "BlendShapeCount") + ARKIT_CURVES + HEAD_COLUMNS + LEFT_EYE_COLUMNS
                           + RIGHT_EYE_COLUMNS)
BLEND_SHAPE_COUNT = 61
# Degrees per CSV unit for each accepted angle unit (read-only: no module state changes).
ANGLE_UNITS = MappingProxyType({"radians": 180.0 / math.pi, "half_turns": 180.0, "degrees": 1.0})
_STANDARD_RATES = (24, 25, 30, 60)
_ARKIT_SET = frozenset(ARKIT_CURVES)
_TIMECODE = re.compile(r"^(\d+):(\d\d):(\d\d)[:;](\d+(?:\.\d*)?)$")


# ---- shape-key mapping ----

def arkit_curve(shape_key: str) -> str | None:
    """The ARKit curve (Live Link column) of a model shape key, or None if it has none.

    ``eyeBlink_L`` -> ``EyeBlinkLeft``; ``jawOpen`` -> ``JawOpen``; ``browInnerUp_L`` and
    ``_R`` both -> ``BrowInnerUp`` (ARKit has one curve for both halves); ARKit-named keys
    (``eyeBlinkLeft``) map to themselves.
    """
    base, side = shape_key, ""
    if shape_key.endswith(("_L", "_R")):
        base, side = shape_key[:-2], "Left" if shape_key.endswith("_L") else "Right"
    name = base[:1].upper() + base[1:]
    if side and name + side in _ARKIT_SET:
        return name + side
    return name if name in _ARKIT_SET else None


def _frame_count(curves: dict[str, list[float]]) -> int:
    lengths = {len(v) for v in curves.values()}
    if len(lengths) > 1:
        raise ValueError(f"curves differ in length: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def model_to_arkit(weights: dict[str, list[float]]) -> dict[str, list[float]]:
    """All 52 ARKit curves, in Live Link order, from model weights {shape key: [N]}.

    Keys that share one ARKit curve (``browInnerUp_L/_R``, ``cheekPuff_L/_R``) are averaged;
    curves the model lacks (``TongueOut``) are zeros; keys with no ARKit curve are left out.
    """
    n = _frame_count(weights)
    groups: dict[str, list[list[float]]] = {}
    for key, values in weights.items():
        name = arkit_curve(key)
        if name is not None:
            groups.setdefault(name, []).append(values)
    return {name: [sum(col) / len(col) for col in zip(*groups[name])] if name in groups else [0.0] * n
            for name in ARKIT_CURVES}


def arkit_to_model(curves: dict[str, list[float]], shape_keys: list[str]) -> dict[str, list[float]]:
    """Model weights {shape key: [N]} for ``shape_keys`` from ARKit curves {name: [N]}.

    A shared ARKit curve goes to both halves; a key with no curve in ``curves`` gets zeros.
    """
    n = _frame_count(curves)
    out = {}
    for key in shape_keys:
        name = arkit_curve(key)
        out[key] = list(curves[name]) if name in curves else [0.0] * n
    return out


# ---- writing ----

def _timecode(seconds: float, rate: int) -> str:
    # Whole sub-frames first, so rounding can never print a frame number equal to the rate.
    frames, sub = divmod(round(seconds * rate * 1000), 1000)
    whole, ff = divmod(frames, rate)
    hours, rest = divmod(whole, 3600)
    return f"{hours % 24:02d}:{rest // 60:02d}:{rest % 60:02d}:{ff:02d}.{sub:03d}"


def _degrees_per_unit(angle_unit: str) -> float:
    if angle_unit not in ANGLE_UNITS:
        raise ValueError(f"angle_unit must be one of {sorted(ANGLE_UNITS)}, got {angle_unit!r}")
    return ANGLE_UNITS[angle_unit]


def write_livelink_csv(clip: AnimationClip, path, timecode_fps: float | None = None, start_seconds: float = 0.0,
                       *, angle_unit: str = "radians") -> None:
    """Write ``clip`` as a Live Link Face CSV, atomically (temp file + ``os.replace``).

    ``timecode_fps`` is the timecode rate (a whole number; default the standard rate nearest
    ``clip.fps``: 24, 25, 30 or 60); ``start_seconds`` the timecode of the first frame (time of
    day, wraps at 24 h). Shared ARKit curves get the mean of the two halves; TongueOut is 0.
    """
    clip = clip.validate()
    rate = min(_STANDARD_RATES, key=lambda r: abs(r - clip.fps)) if timecode_fps is None else timecode_fps
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not float(rate).is_integer() \
            or not 1 <= rate <= 1000:
        raise ValueError(f"timecode_fps must be a whole number of frames per second, got {timecode_fps!r}")
    if not (math.isfinite(start_seconds) and start_seconds >= 0):
        raise ValueError(f"start_seconds must be a finite number >= 0, got {start_seconds!r}")
    rate, per_unit = int(rate), _degrees_per_unit(angle_unit)
    curves = model_to_arkit(clip.weights)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for i, t in enumerate(clip.times):
        yaw, pitch, roll = (math.degrees(a) for a in quaternion_to_euler_ypr(clip.head_rotation[i]))
        angles = [-yaw, pitch, -roll]
        for eye_yaw, eye_pitch in (clip.eye_left[i], clip.eye_right[i]):
            angles += [-eye_yaw, -eye_pitch, 0.0]
        writer.writerow([_timecode(start_seconds + t, rate), BLEND_SHAPE_COUNT]
                        + [f"{curves[name][i]:.6f}" for name in ARKIT_CURVES]
                        + [f"{round(a / per_unit, 6) + 0.0:.6f}" for a in angles])  # + 0.0: no "-0.000000"
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(out.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a CSV for other tools should not be
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---- reading ----

def _columns(header: list[str], line: int, path: Path, notes: list[str]) -> dict[str, int]:
    """{canonical column name: index}; BundleError names a missing or repeated column."""
    canonical = {name.lower(): name for name in HEADER}
    index: dict[str, int] = {}
    ignored = []
    for i, raw in enumerate(header):
        name = canonical.get(raw.strip().lower())
        if name is None:
            ignored.append(raw.strip())
        elif name in index:
            raise BundleError(f"line {line}: column {name!r} appears twice", path=path)
        else:
            index[name] = i
    required = ("Timecode",) + tuple(n for n in ARKIT_CURVES if n != "TongueOut")
    for name in required:
        if name not in index:
            raise BundleError(f"line {line}: header lacks column {name!r}", path=path)
    for group in (HEAD_COLUMNS, LEFT_EYE_COLUMNS, RIGHT_EYE_COLUMNS):
        present = [n for n in group if n in index]
        if present and len(present) < len(group):
            missing = next(n for n in group if n not in index)
            raise BundleError(f"line {line}: header has {present[0]!r} but lacks column {missing!r}", path=path)
    if ignored:
        notes.append(f"ignored unknown columns: {', '.join(ignored)}")
    return index


def _number(text: str, line: int, column: str, path: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan  # reported below, with the non-finite values
    if not math.isfinite(value):
        raise BundleError(f"line {line}, column {column}: not a finite number: {text!r}", path=path)
    return value


def _rate_from_frames(max_frame: int) -> int | None:
    return next((rate for limit, rate in ((23, 24), (24, 25), (29, 30), (59, 60)) if max_frame <= limit), None)


def _timeline(stamps: list[tuple[int, int, float]], rate: float, path: Path) -> tuple[list[float], list[int]]:
    """Seconds from the first kept row and the indices of the kept rows, from (line, whole seconds,
    frame) stamps: midnight crossings unwrapped, rows that do not advance dropped."""
    times, kept, day = [], [], 0.0
    for i, (line, seconds, frame) in enumerate(stamps):
        t = seconds + frame / rate + day
        if times and t < times[-1] - 43200:  # time-of-day timecode crossed midnight
            day += 86400.0
            t += 86400.0
        if times and t <= times[-1]:
            if times[-1] - t > 1.0:
                raise BundleError(f"line {line}, column Timecode: time goes back {times[-1] - t:.3f} s", path=path)
            continue
        times.append(t)
        kept.append(i)
    return [t - times[0] for t in times], kept


def read_livelink_csv(path, shape_keys: list[str], fps: float | None = None, *,
                      angle_unit: str = "radians") -> AnimationClip:
    """A validated AnimationClip for ``shape_keys`` from a Live Link Face CSV.

    ``fps`` is the timecode rate (inferred from the frame numbers when None). Times are made
    relative to the first row; rows whose timecode repeats (or steps back at most 1 s) are dropped
    with a note, a bigger step back is an error. Weights are clamped to [0, 1]; TongueOut is
    ignored. BundleError names the file and the line/column of bad input.
    """
    path, per_unit = Path(path), _degrees_per_unit(angle_unit)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: drops a UTF-8 BOM; newlines: CRLF -> LF
    except FileNotFoundError:
        raise BundleError("missing: no Live Link Face CSV here", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"unreadable ({exc})", path=path) from None
    reader = csv.reader(io.StringIO(text))
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        raise BundleError("empty file: no Live Link Face header", path=path)
    notes = [f"imported from Live Link Face CSV {path.name}"]
    (header_line, header), data = rows[0], rows[1:]
    col = _columns(header, header_line, path, notes)
    if not data:
        raise BundleError(f"no data rows after the header on line {header_line}", path=path)

    stamps, values = [], []
    for line, row in data:
        if len(row) != len(header):
            raise BundleError(f"line {line}: {len(row)} columns, the header on line {header_line} has "
                              f"{len(header)}", path=path)
        match = _TIMECODE.match(row[col["Timecode"]].strip())
        if not match or int(match[2]) >= 60 or int(match[3]) >= 60:
            raise BundleError(f"line {line}, column Timecode: not HH:MM:SS:FF.fff: {row[col['Timecode']]!r}", path=path)
        stamps.append((line, int(match[1]) * 3600 + int(match[2]) * 60 + int(match[3]), float(match[4])))
        values.append({name: _number(row[i], line, name, path) for name, i in col.items() if name != "Timecode"})

    max_frame = max(int(frame) for _, _, frame in stamps)
    rate = fps if fps is not None else _rate_from_frames(max_frame)
    if rate is None:
        raise BundleError(f"frame numbers reach {max_frame}: pass the timecode rate (fps)", path=path)
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    for line, _, frame in stamps:
        if frame >= rate:
            raise BundleError(f"line {line}, column Timecode: frame {frame} is not below the rate {rate}", path=path)
    how = "given" if fps is not None else f"inferred from frame numbers up to {max_frame}; pass fps if wrong"
    notes.append(f"timecode rate {rate:g} fps ({how}); head and eye angles read as {angle_unit}")

    times, indices = _timeline(stamps, rate, path)
    if len(indices) < len(stamps):
        notes.append(f"dropped {len(stamps) - len(indices)} rows whose timecode did not advance")
    kept = [values[i] for i in indices]

    curves = {name: [row[name] for row in kept] for name in ARKIT_CURVES if name in col and name != "TongueOut"}
    clamped = sum(1 for v in curves.values() for x in v if not 0.0 <= x <= 1.0)
    curves = {name: [min(1.0, max(0.0, x)) for x in v] for name, v in curves.items()}
    if clamped:
        notes.append(f"clamped {clamped} curve values to [0, 1]")
    notes.append("TongueOut ignored: the model has no tongue shape")
    unmapped = [key for key in shape_keys if arkit_curve(key) is None]
    if unmapped:
        notes.append(f"no ARKit curve for {', '.join(unmapped)}: set to 0")

    def angles(group: tuple[str, ...], row: dict) -> list[float]:
        return [row[name] * per_unit for name in group] if group[0] in col else [0.0, 0.0, 0.0]

    rotation, eye_left, eye_right = [], [], []
    for row in kept:
        yaw, pitch, roll = angles(HEAD_COLUMNS, row)
        rotation.append(euler_ypr_to_quaternion(math.radians(-yaw), math.radians(pitch), math.radians(-roll)))
        for group, eyes in ((LEFT_EYE_COLUMNS, eye_left), (RIGHT_EYE_COLUMNS, eye_right)):
            eye_yaw, eye_pitch, _ = angles(group, row)
            eyes.append([max(-90.0, min(90.0, -eye_yaw)), max(-90.0, min(90.0, -eye_pitch))])
    if HEAD_COLUMNS[0] not in col:
        notes.append("no head rotation columns (older export): the head faces forward")

    # Nominal rate: the timecode rate unless the rows are clearly spaced otherwise (a 60 fps capture
    # under 30 fps timecode); the median step ignores dropped frames, 10% slack ignores jitter.
    steps = [b - a for a, b in itertools.pairwise(times)]
    clip_fps = float(rate)
    if steps and abs(1.0 / statistics.median(steps) - rate) > 0.1 * rate:
        clip_fps = round(1.0 / statistics.median(steps), 3)
    n = len(times)
    clip = AnimationClip(
        fps=clip_fps, times=times, shape_keys=list(shape_keys), weights=arkit_to_model(curves, list(shape_keys)),
        head_rotation=rotation, head_translation=[[0.0, 0.0, 0.0] for _ in range(n)], head_origin=[0.0, 0.0, 0.0],
        eye_left=eye_left, eye_right=eye_right, landmark_rmse_px=[0.0] * n, source={"file": path.name}, notes=notes)
    try:
        return clip.validate()
    except BundleError as exc:
        raise BundleError(exc.reason, path=path, field=exc.field) from None
