"""Frames and message order, sans-IO: bytes in, frames out, split anywhere."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardfleet.transport.errors import ProtocolError
from shardfleet.transport.framing import (
    MAX_HEADER_SIZE,
    PREFIX,
    Body,
    End,
    Error,
    FrameDecoder,
    FramingError,
    Header,
    body_prefix,
    encode_body,
    encode_end,
    encode_error,
    encode_header,
)
from shardfleet.transport.rpc_state import MessageReader, RequestHead, ResponseHead

pytestmark = pytest.mark.timeout(60)

header_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)  # fmt: skip
frames = st.one_of(
    st.dictionaries(st.text(max_size=10), header_values, max_size=5).map(Header),
    st.binary(min_size=0, max_size=3000).map(Body),
    st.just(End()),
    st.tuples(st.text(max_size=10), st.text(max_size=30)).map(lambda km: Error(*km)),
)


def encode(frame) -> bytes:
    if isinstance(frame, Header):
        return encode_header(frame.fields)
    if isinstance(frame, Body):
        return encode_body(frame.data) if frame.data else PREFIX.pack(0x02, 0)
    if isinstance(frame, End):
        return encode_end()
    return encode_error(frame.kind, frame.message)


def merge_bodies(out: list) -> list:
    """Body pieces are a byte stream: merge neighbours and drop empties to compare."""
    merged: list = []
    for frame in out:
        if isinstance(frame, Body):
            if not frame.data:
                continue
            if merged and isinstance(merged[-1], Body) and merged[-1].data is not None:
                merged[-1] = Body(merged[-1].data + frame.data)
                continue
        merged.append(frame)
    return merged


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=12), st.lists(st.integers(min_value=0), max_size=30))
def test_random_splits_decode_to_the_same_frames(sequence, cuts):
    wire = b"".join(encode(f) for f in sequence)
    dec = FrameDecoder()
    out = []
    for piece in split(wire, cuts):
        out.extend(dec.feed(piece))
    assert merge_bodies(out) == merge_bodies(list(sequence))
    assert dec.at_boundary and dec.buffered == 0


@given(st.binary(min_size=1, max_size=100_000), st.integers(1, 70_000))
@settings(max_examples=50, deadline=None)
def test_body_is_streamed_not_reassembled(payload, piece_size):
    """A big BODY frame comes out piece by piece; the decoder holds no body bytes."""
    wire = encode_body(payload)
    dec = FrameDecoder()
    got = b""
    for i in range(0, len(wire), piece_size):
        for frame in dec.feed(wire[i : i + piece_size]):
            assert isinstance(frame, Body)
            got += frame.data
        assert dec.buffered <= 4  # at most a partial prefix, never body bytes
    assert got == payload


def test_whole_chunk_body_is_not_copied():
    payload = b"x" * 1000
    dec = FrameDecoder()
    dec.feed(body_prefix(2000))
    (frame,) = dec.feed(payload)
    assert frame.data is payload


def test_header_limit_is_checked_at_the_prefix():
    dec = FrameDecoder()
    with pytest.raises(FramingError, match="exceeds"):
        dec.feed(PREFIX.pack(0x01, MAX_HEADER_SIZE + 1))
    assert dec.buffered == 0
    with pytest.raises(FramingError, match="already failed"):
        dec.feed(encode_end())


def test_header_at_the_limit_is_accepted_and_smaller_limits_apply():
    fields = {"b": b"x" * (MAX_HEADER_SIZE - 20)}
    frame = encode_header(fields)
    assert len(frame) - 5 <= MAX_HEADER_SIZE
    assert FrameDecoder().feed(frame) == [Header(fields)]
    with pytest.raises(FramingError):
        FrameDecoder(max_header_size=1000).feed(frame)
    with pytest.raises(ValueError, match="exceeds"):
        encode_header({"b": b"x" * MAX_HEADER_SIZE})


@pytest.mark.parametrize(
    "wire, match",
    [
        (PREFIX.pack(0x09, 0), "unknown frame type"),
        (PREFIX.pack(0x03, 1) + b"x", "END frame"),
        (PREFIX.pack(0x01, 0), "empty"),
        (PREFIX.pack(0x01, 3) + b"\xc1\xc1\xc1", "bad msgpack"),
        (PREFIX.pack(0x01, 2) + msgpack.packb([1]), "not a map"),
        (PREFIX.pack(0x04, 4) + msgpack.packb({"k": 1}), "string kind"),
    ],
)
def test_malformed_frames(wire, match):
    with pytest.raises(FramingError, match=match):
        FrameDecoder().feed(wire)


def test_framing_error_is_a_protocol_error():
    assert issubclass(FramingError, ProtocolError)


def test_body_prefix_range():
    with pytest.raises(ValueError):
        body_prefix(0)
    with pytest.raises(ValueError):
        body_prefix(1 << 32)
    assert len(body_prefix((1 << 32) - 1)) == 5


def test_header_must_be_serialisable():
    with pytest.raises(ValueError, match="msgpack"):
        encode_header({"x": object()})


# -- message order -------------------------------------------------------------------------
def test_request_message_order():
    reader = MessageReader(response=False)
    head = reader.on_frame(Header({"m": "drive.info", "i": 7, "h": {"d": "x"}, "f": 0}))
    assert head == RequestHead("drive.info", 7, {"d": "x"}, 0)
    assert reader.on_frame(Body(b"ab")) == Body(b"ab")
    assert reader.on_frame(End()) == End()
    assert reader.done
    with pytest.raises(ProtocolError, match="after the end"):
        reader.on_frame(Body(b"late"))


def test_response_heads():
    ok = MessageReader(response=True).on_frame(Header(ResponseHead.ok({"a": 1}).to_fields()))
    assert ok == ResponseHead("ok", {"a": 1})
    err = MessageReader(response=True).on_frame(
        Header(ResponseHead.error("DriveFull", "no space").to_fields())
    )
    assert (err.status, err.kind, err.message) == ("error", "DriveFull", "no space")


@pytest.mark.parametrize(
    "frames, response",
    [
        ([Body(b"x")], False),
        ([End()], True),
        ([Header({"m": "a"}), Header({"m": "b"})], False),
        ([Header({"i": 1})], False),
        ([Header({"m": ""})], False),
        ([Header({"m": "a", "h": [1]})], False),
        ([Header({"s": "maybe"})], True),
        ([Header({"s": "error", "k": 5})], True),
    ],
)
def test_out_of_order_or_invalid_messages(frames, response):
    reader = MessageReader(response=response)
    with pytest.raises(ProtocolError):
        for frame in frames:
            reader.on_frame(frame)


def test_error_frame_ends_a_message_at_any_point():
    reader = MessageReader(response=True)
    reader.on_frame(Header({"s": "ok", "h": {}}))
    reader.on_frame(Body(b"partial"))
    assert reader.on_frame(Error("internal", "disk")) == Error("internal", "disk")
    assert reader.done
