"""Validation helpers for the head-bundle manifest (``shared/bundle.py``), and its error type.

Pure standard-library Python, like ``shared/bundle.py``: it is vendored into the Blender add-on.
Each checker takes the value and its field path (``fits[0].camera.fx``) and returns the clean
value, or raises BundleError naming the field.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime
from pathlib import PurePosixPath

MANIFEST_FILE = "head.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BundleError(Exception):
    """A bundle cannot be read or written. ``path`` is the file, ``field`` the manifest field, if any."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None, field: str | None = None):
        self.reason, self.path, self.field = reason, None if path is None else str(path), field
        where = f"field '{field}': " if field else ""
        super().__init__(f"{self.path}: {where}{reason}" if self.path else f"{where}{reason}")


def read_json(path, missing: str):
    """The parsed JSON of a file, or BundleError naming it: ``missing`` when it does not exist,
    else unreadable or not JSON (with the line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise BundleError(f"missing: {missing}", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"unreadable ({exc})", path=path) from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"not valid JSON (line {exc.lineno}: {exc.msg})", path=path) from None


# ---- validation helpers: each takes the value and its field path, and returns the clean value ----

def _obj(value, where: str, keys: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise BundleError(f"must be an object, got {type(value).__name__}", field=where or "(top level)")
    missing = sorted(keys - optional - set(value))
    if missing:
        raise BundleError("missing", field=_join(where, missing[0]))
    unknown = sorted(set(value) - keys)
    if unknown:
        raise BundleError("unknown field (a newer HeadRig may have written it)", field=_join(where, unknown[0]))
    return value


def _join(where: str, key) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else str(key))


def _str(value, where: str) -> str:
    if not isinstance(value, str):
        raise BundleError(f"must be a string, got {type(value).__name__}", field=where)
    return value


def _int(value, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BundleError(f"must be an integer >= {low}, got {value!r}", field=where)
    return int(value)


def _float(value, where: str, low: float | None = None) -> float:
    # numpy scalars pass (they have __float__); bool and str do not count as numbers here.
    if isinstance(value, bool) or not hasattr(value, "__float__") or isinstance(value, str):
        raise BundleError(f"must be a number, got {type(value).__name__}", field=where)
    number = float(value)
    if not math.isfinite(number) or (low is not None and number < low):
        bound = "" if low is None else f" >= {low}"
        raise BundleError(f"must be a finite number{bound}, got {number}", field=where)
    return number


def _list(value, where: str, length: int | None = None) -> list:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise BundleError(f"must be a list, got {type(value).__name__}", field=where)
    items = list(value)
    if length is not None and len(items) != length:
        raise BundleError(f"must have {length} items, got {len(items)}", field=where)
    return items


def _floats(value, where: str, length: int | None = None) -> list[float]:
    return [_float(v, _join(where, i)) for i, v in enumerate(_list(value, where, length))]


def _plain(value):
    """JSON types: records via to_dict, numpy arrays and tuples as lists, numpy scalars via ``item``."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _dict(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise BundleError(f"must be an object, got {type(value).__name__}", field=where)
    return value


def _sha(value, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise BundleError("must be a sha256 hex digest (64 lowercase hex digits)", field=where)
    return value


def _file_name(value, where: str, nested: bool) -> str:
    name = _str(value, where)
    parts = PurePosixPath(name).parts
    bad = not parts or name.startswith("/") or "\\" in name or any(p in ("..", ".") for p in parts)
    if bad or (not nested and len(parts) != 1) or name == MANIFEST_FILE:
        kind = "a relative path inside the bundle" if nested else "a file name without folders"
        raise BundleError(f"must be {kind}, got {name!r}", field=where)
    return name


def _iso_time(value, where: str) -> str:
    try:
        datetime.fromisoformat(_str(value, where))
    except ValueError:
        raise BundleError(f"must be an ISO 8601 time, got {value!r}", field=where) from None
    return value


def _units(value, where: str) -> str:
    if value != "cm":  # the only unit HeadRig writes; another would silently mis-scale poses
        raise BundleError(f"must be 'cm', got {value!r}", field=where)
    return value


def _checked_list(check):
    """A checker for a list whose items each pass ``check(item, where)``."""
    return lambda value, where: [check(v, _join(where, i)) for i, v in enumerate(_list(value, where))]


def _weights(value, where: str) -> dict[str, float]:
    return {_str(k, where): _float(v, f"{where}.{k}") for k, v in _dict(value, where).items()}


def _quality(value, where: str) -> dict:
    for key, v in _dict(value, where).items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not (v is None or isinstance(v, (str, bool)) or (number and math.isfinite(v))):
            raise BundleError("must be a finite number, string, boolean or null", field=f"{where}.{key}")
    return dict(value)


def _files(value, where: str) -> dict[str, dict]:
    clean = {}
    for name, info in _dict(value, where).items():
        at = f"{where}.{name}"
        _file_name(name, at, nested=True)
        info = _obj(info, at, {"sha256", "bytes", "role"})
        clean[name] = {"sha256": _sha(info["sha256"], at + ".sha256"), "bytes": _int(info["bytes"], at + ".bytes"),
                       "role": _str(info["role"], at + ".role")}
    return clean
