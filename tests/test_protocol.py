"""The wire protocol: valid messages round-trip; anything else is a ProtocolError with a stable code."""

from __future__ import annotations

import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.protocol import CHUNK_BYTES, MAX_BLOB_BYTES, Code, ProtocolError, decode, encode, rid_of

SHA = "0" * 64
FUZZ_EXAMPLES = int(os.environ.get("HEADRIG_FUZZ_EXAMPLES", "2000"))


def test_round_trip_with_blob():
    frames = encode("upload", rid="r7", blobs=(b"x" * CHUNK_BYTES,), job="j1", name="a.jpg", offset=0)
    msg = decode(frames)
    assert (msg.type, msg.rid, msg.fields["name"], len(msg.blobs[0])) == ("upload", "r7", "a.jpg", CHUNK_BYTES)
    server = decode(encode("progress", rid="r1", job="j", stage="fit", fraction=0.5, message="fitting", from_server=True),
                    from_client=False)
    assert server.fields["fraction"] == 0.5
    # "status" is a request (job id) and a reply (job record): each direction has its own schema.
    reply = decode(encode("status", rid="r2", job={"job_id": "j", "state": "done"}, from_server=True), from_client=False)
    assert reply.fields["job"]["state"] == "done"
    assert decode(encode("status", rid="r3", job="j")).fields["job"] == "j"


@pytest.mark.parametrize("frames, code", [
    ([], Code.BAD_FRAME),
    ([b"\xc1"], Code.BAD_FRAME),  # never-used msgpack byte
    ([msgpack.packb([1, 2])], Code.BAD_MESSAGE),
    ([msgpack.packb({"type": "nope", "rid": ""})], Code.UNKNOWN_TYPE),
    ([msgpack.packb({"type": "welcome", "rid": "", "version": 1, "server": "s", "capabilities": {}})], Code.UNKNOWN_TYPE),
    ([msgpack.packb({"type": "ping", "rid": "", "extra": 1})], Code.BAD_MESSAGE),
    ([msgpack.packb({"type": "ping", "rid": "x" * 300})], Code.BAD_MESSAGE),
    ([msgpack.packb({"type": "cancel", "rid": ""})], Code.BAD_MESSAGE),
    ([msgpack.packb({"type": "upload", "rid": "", "job": "j", "name": "n", "offset": 0})], Code.BAD_MESSAGE),
    ([msgpack.packb({"type": "fetch", "rid": "", "job": "j", "name": "n", "offset": -1, "length": 1})], Code.BAD_MESSAGE),
    ([msgpack.packb({"type": "submit", "rid": "", "kind": "probe", "params": {}, "key": None,
                     "inputs": [{"name": "a", "size": 1, "sha256": "XYZ"}]})], Code.BAD_MESSAGE),
    ([msgpack.packb({"type": "ping", "rid": ""}), b"\0" * (MAX_BLOB_BYTES + 1)], Code.TOO_LARGE),
    ([msgpack.packb({"type": "ping", "rid": "", "pad": b"x" * 70000}, use_bin_type=True)], Code.TOO_LARGE),
])
def test_invalid_messages_have_stable_codes(frames, code):
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    assert err.value.code == code


def test_rid_survives_for_error_replies():
    assert rid_of([msgpack.packb({"type": "cancel", "rid": "abc"})]) == "abc"
    assert rid_of([b"\xc1"]) == ""


def test_encode_refuses_what_decode_would():
    with pytest.raises(ProtocolError):
        encode("submit", rid="", kind="probe", params={}, inputs=[{"name": "a", "size": -1, "sha256": SHA}], key=None)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=True) | st.text(max_size=30) | st.binary(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_types = st.sampled_from(["hello", "ping", "submit", "upload", "cancel", "list", "status", "fetch", "bogus", ""])


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(type_=_types, fields=st.dictionaries(st.sampled_from(["rid", "job", "name", "offset", "length", "kind", "params",
                                                               "inputs", "key", "versions", "client", "x"]), _values, max_size=6),
       blobs=st.lists(st.binary(max_size=64), max_size=2), raw=st.binary(max_size=64), use_raw=st.booleans())
def test_decoder_never_fails_other_than_protocol_error(type_, fields, blobs, raw, use_raw):
    head = raw if use_raw else msgpack.packb({"type": type_, **fields}, use_bin_type=True)
    try:
        msg = decode([head, *blobs])
    except ProtocolError as exc:
        assert exc.code in vars(Code).values()
    else:
        assert msg.type in ("hello", "ping", "submit", "upload", "cancel", "list", "status", "fetch")
