"""The HeadRig wire protocol: ZeroMQ multipart messages, a msgpack header and raw binary frames.

Pure Python + msgpack (vendored into the Blender add-on). Never pickle. Every message is

    [header: msgpack map] [blob]*          (a ROUTER socket adds the peer identity in front)

The header always has ``type`` and ``rid`` (the client's request id, echoed in every reply to that
request, so one request can have zero or more replies such as progress events). Each type has a
fixed schema: unknown types, unknown or missing fields, wrong types, over-long strings, too many or
too few blobs and oversized frames are ``ProtocolError``s with a stable ``code``, which the server
answers with an ``error`` message and never a crash.

Flow: hello/welcome (version negotiation, capabilities) -> submit (kind, params, input list) ->
accepted (job id, credit) -> upload chunks, each ``credit`` granting more (flow control keeps big
videos from flooding the server's high-water mark) -> queued/progress*/done|failed|cancelled ->
fetch chunks of result files. Plus cancel, list, status, ping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
CHUNK_BYTES = 1 << 20            # upload/download chunk size
MAX_BLOB_BYTES = 4 << 20         # a single binary frame
MAX_HEADER_BYTES = 64 << 10      # the msgpack header
MAX_MESSAGE_BYTES = MAX_BLOB_BYTES + MAX_HEADER_BYTES + 1024  # zmq MAXMSGSIZE per frame bound
MAX_NAME = 255                   # file names, job ids, kinds, stages
MAX_TEXT = 4096                  # messages
MAX_INPUTS = 64

# reconstruct's params.avatar: the Gaussian avatar presets by name, with what each is for (the CLI,
# the service and the Blender panel offer these; their settings are backend.avatar.train.PRESETS)
AVATAR_PRESETS = {
    "fast": "CPU, a quick look: 128² crops, 8k Gaussians, 300 steps (about 3 min for a 7-s clip on 2 cores)",
    "balanced": "CPU, fast with twice the steps: sharper (+0.3 to +0.8 dB held-out), about twice the time",
    "quality": "GPU: 512² crops, 100k Gaussians, 6000 steps",
}


class Code:
    """Stable error codes (strings on the wire)."""

    BAD_FRAME = "bad_frame"              # not decodable at all
    BAD_MESSAGE = "bad_message"          # decodable, but not a valid message
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    LIMIT = "limit"                      # too many uploads or jobs for this client
    BAD_STATE = "bad_state"              # e.g. upload to a finished job
    UNSAFE_PATH = "unsafe_path"
    BAD_INPUT = "bad_input"
    INTERNAL = "internal"


class ProtocolError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


# Field kinds: (python type(s), constraint) checked by _check.
STR, INT, FLOAT, BOOL, DICT, LIST, OPT_STR = "str", "int", "float", "bool", "dict", "list", "opt_str"
INPUT_ITEM = "input_item"
FILE_ITEM = "file_item"

# type -> (fields, number of blobs)
CLIENT_MESSAGES: dict[str, tuple[dict[str, str], int]] = {
    "hello": ({"versions": "int_list", "client": STR}, 0),
    "ping": ({}, 0),
    "submit": ({"kind": STR, "params": DICT, "inputs": INPUT_ITEM, "key": OPT_STR}, 0),
    "upload": ({"job": STR, "name": STR, "offset": INT}, 1),
    "cancel": ({"job": STR}, 0),
    "list": ({}, 0),
    "status": ({"job": STR}, 0),
    "fetch": ({"job": STR, "name": STR, "offset": INT, "length": INT}, 0),
}
SERVER_MESSAGES: dict[str, tuple[dict[str, str], int]] = {
    "welcome": ({"version": INT, "server": STR, "capabilities": DICT}, 0),
    "pong": ({}, 0),
    "accepted": ({"job": STR, "credit": INT, "missing": "str_list"}, 0),
    "credit": ({"job": STR, "credit": INT}, 0),
    "queued": ({"job": STR}, 0),
    "progress": ({"job": STR, "stage": STR, "fraction": FLOAT, "message": STR}, 0),
    "done": ({"job": STR, "files": FILE_ITEM}, 0),
    "failed": ({"job": STR, "code": STR, "message": STR}, 0),
    "cancelled": ({"job": STR}, 0),
    "jobs": ({"items": LIST}, 0),
    "status": ({"job": DICT}, 0),
    "chunk": ({"job": STR, "name": STR, "offset": INT, "final": BOOL}, 1),
    "error": ({"code": STR, "message": STR}, 0),
}


@dataclass
class Message:
    """A decoded, validated message. ``fields`` excludes ``type`` and ``rid``."""

    type: str
    rid: str
    fields: dict = field(default_factory=dict)
    blobs: list[bytes] = field(default_factory=list)


def encode(type_: str, rid: str = "", blobs: tuple[bytes, ...] = (), *, from_server: bool = False, **fields) -> list[bytes]:
    """Frames for one message, validated against the schema of its direction (``status`` is both a
    request and a reply, with different fields)."""
    header = {"type": type_, "rid": rid, **fields}
    frames = [msgpack.packb(header, use_bin_type=True), *blobs]
    schema = (SERVER_MESSAGES if from_server else CLIENT_MESSAGES).get(type_)
    if schema is None:
        raise ProtocolError(Code.UNKNOWN_TYPE, f"unknown message type {type_!r}")
    _validate(type_, header, len(blobs), schema)
    return frames


def decode(frames: list[bytes], from_client: bool = True) -> Message:
    """Validate and decode frames received from a client (or, with ``from_client=False``, a server)."""
    if not frames:
        raise ProtocolError(Code.BAD_FRAME, "empty message")
    head = frames[0]
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError(Code.TOO_LARGE, f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    for blob in frames[1:]:
        if len(blob) > MAX_BLOB_BYTES:
            raise ProtocolError(Code.TOO_LARGE, f"binary frame of {len(blob)} bytes exceeds {MAX_BLOB_BYTES}")
    try:
        header = msgpack.unpackb(bytes(head), raw=False, strict_map_key=True, use_list=True,
                                 max_str_len=MAX_TEXT * 4,
                                 max_bin_len=0, max_array_len=4096, max_map_len=256, max_ext_len=0)
    except Exception as exc:  # msgpack raises many types on garbage; all mean the same here
        raise ProtocolError(Code.BAD_FRAME, f"header is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError(Code.BAD_MESSAGE, "header must be a map")
    type_ = header.get("type")
    table = CLIENT_MESSAGES if from_client else SERVER_MESSAGES
    if not isinstance(type_, str) or type_ not in table:
        raise ProtocolError(Code.UNKNOWN_TYPE, f"unknown message type {str(type_)[:40]!r}")
    _validate(type_, header, len(frames) - 1, table[type_])
    fields = {k: v for k, v in header.items() if k not in ("type", "rid")}
    return Message(type_, header["rid"], fields, [bytes(b) for b in frames[1:]])


def rid_of(frames: list[bytes]) -> str:
    """Best-effort request id of an invalid message, so the error reply can still be matched."""
    try:
        header = msgpack.unpackb(bytes(frames[0]), raw=False, max_str_len=MAX_TEXT * 4, max_bin_len=0) if len(frames[0]) <= MAX_HEADER_BYTES else None
        rid = header.get("rid") if isinstance(header, dict) else None
        return rid if isinstance(rid, str) and len(rid) <= MAX_NAME else ""
    except Exception:
        return ""


def _validate(type_: str, header: dict, n_blobs: int, schema: tuple[dict[str, str], int]) -> None:
    fields, blobs = schema
    if n_blobs != blobs:
        raise ProtocolError(Code.BAD_MESSAGE, f"{type_}: expected {blobs} binary frame(s), got {n_blobs}")
    rid = header.get("rid")
    if not isinstance(rid, str) or len(rid) > MAX_NAME:
        raise ProtocolError(Code.BAD_MESSAGE, f"{type_}: 'rid' must be a string of at most {MAX_NAME} characters")
    extra = set(header) - set(fields) - {"type", "rid"}
    if extra:
        raise ProtocolError(Code.BAD_MESSAGE, f"{type_}: unknown field(s) {sorted(map(str, extra))[:5]}")
    for name, kind in fields.items():
        if name not in header:
            raise ProtocolError(Code.BAD_MESSAGE, f"{type_}: missing field {name!r}")
        _check(f"{type_}.{name}", header[name], kind)


def _check(where: str, value, kind: str) -> None:
    def fail(what: str) -> None:
        raise ProtocolError(Code.BAD_MESSAGE, f"{where} must be {what}")

    if kind in (STR, OPT_STR):
        if value is None and kind == OPT_STR:
            return
        if not isinstance(value, str) or len(value) > (MAX_TEXT if where.endswith(".message") else MAX_NAME) or "\x00" in value:
            fail("a string without NUL, not too long")
    elif kind == INT:
        if isinstance(value, bool) or not isinstance(value, int) or not (0 <= value < 1 << 53):
            fail("a non-negative integer")
    elif kind == FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
            fail("a number in [0, 1]")
    elif kind == BOOL:
        if not isinstance(value, bool):
            fail("true or false")
    elif kind == DICT:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            fail("a map with string keys")
    elif kind == LIST:
        if not isinstance(value, list):
            fail("a list")
    elif kind == "int_list":
        if not isinstance(value, list) or not value or len(value) > 16 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            fail("a non-empty list of integers")
    elif kind == "str_list":
        if not isinstance(value, list) or len(value) > MAX_INPUTS:
            fail(f"a list of at most {MAX_INPUTS} strings")
        for i, item in enumerate(value):
            _check(f"{where}[{i}]", item, STR)
    elif kind in (INPUT_ITEM, FILE_ITEM):
        if not isinstance(value, list) or len(value) > MAX_INPUTS:
            fail(f"a list of at most {MAX_INPUTS} file entries")
        for i, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != {"name", "size", "sha256"}:
                fail("a list of {name, size, sha256} maps")
            _check(f"{where}[{i}].name", item["name"], STR)
            _check(f"{where}[{i}].size", item["size"], INT)
            sha = item["sha256"]
            if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                fail("entries with a lowercase hex sha256")
    else:  # pragma: no cover - schema typo
        raise AssertionError(kind)
