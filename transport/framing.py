"""Frames on one QUIC stream: sans-IO encoder and decoder.

Every frame is a 5-byte prefix, then its payload::

    +--------+----------------------+-----------------------------+
    | type:1 | length: uint32 (BE)  | payload: `length` bytes     |
    +--------+----------------------+-----------------------------+

    HEADER 0x01  msgpack map (the call's method/id/header, or the reply's status/header)
    BODY   0x02  raw bytes, never msgpack-wrapped: shard bytes are not re-encoded
    END    0x03  empty; the message is complete
    ERROR  0x04  msgpack map {"k": kind, "m": message}; the message is aborted

A request is ``HEADER BODY* END``; a reply is ``HEADER BODY* END`` or, when the handler
fails after its header went out, ``HEADER BODY* ERROR``. A fixed 4-byte length (rather
than a varint) keeps the prefix a single `struct` call; a body chunk is at most 4 GiB - 1,
far above the 1 MiB chunks the endpoint sends.

Memory bound: the decoder never reassembles a BODY frame. It hands body bytes on as
`Body` pieces the moment they arrive, split wherever the network split them, so it holds
at most one partial prefix (4 bytes) or one partial HEADER/ERROR payload, which is capped
by `max_header_size` (1 MiB by default). Consumers must treat the body as a byte stream:
chunk boundaries are not preserved.

>>> dec = FrameDecoder()
>>> wire = encode_header({"m": "ping"}) + body_prefix(3) + b"abc" + encode_end()
>>> dec.feed(wire[:7]) + dec.feed(wire[7:])
[Header(fields={'m': 'ping'}), Body(data=b'abc'), End()]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from shardfleet.transport.errors import ProtocolError

HEADER = 0x01
BODY = 0x02
END = 0x03
ERROR = 0x04

PREFIX = struct.Struct(">BI")
PREFIX_SIZE = PREFIX.size
MAX_HEADER_SIZE = 1 << 20
MAX_FRAME_PAYLOAD = (1 << 32) - 1

_END_FRAME = PREFIX.pack(END, 0)


class FramingError(ProtocolError):
    """The byte stream is not a valid sequence of frames."""


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded HEADER frame: the msgpack map it carried."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Body:
    """A piece of body bytes (a whole BODY frame or any part of one)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class End:
    """The END frame: the message is complete."""


@dataclass(frozen=True, slots=True)
class Error:
    """An ERROR frame: the message is aborted with a typed error."""

    kind: str
    message: str


Frame = Header | Body | End | Error


def _pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"header is not msgpack-serialisable: {exc}") from exc


def encode_header(fields: dict[str, Any], *, max_size: int = MAX_HEADER_SIZE) -> bytes:
    """A HEADER frame. Raises ValueError if the packed map exceeds `max_size`."""
    payload = _pack(fields)
    if len(payload) > max_size:
        raise ValueError(f"header of {len(payload)} bytes exceeds the {max_size}-byte limit")
    return PREFIX.pack(HEADER, len(payload)) + payload


def body_prefix(length: int) -> bytes:
    """The 5-byte prefix of a BODY frame; the caller sends the payload bytes after it.

    Kept apart from the payload so a 512 KiB shard chunk is never copied into a new
    buffer just to put 5 bytes in front of it.
    """
    if not 0 < length <= MAX_FRAME_PAYLOAD:
        raise ValueError(f"body frame length {length} out of range")
    return PREFIX.pack(BODY, length)


def encode_body(data: bytes) -> bytes:
    """A whole BODY frame in one buffer (tests and small bodies)."""
    return body_prefix(len(data)) + data


def encode_end() -> bytes:
    return _END_FRAME


def encode_error(kind: str, message: str) -> bytes:
    payload = _pack({"k": kind, "m": message[:4096]})
    return PREFIX.pack(ERROR, len(payload)) + payload


class FrameDecoder:
    """Turns stream bytes, split anywhere, into frames.

    `feed()` returns the frames completed by the new bytes; body bytes come out as soon
    as they are fed. Raises `FramingError` on an unknown type, a HEADER or ERROR payload
    over `max_header_size`, a payload that is not a msgpack map, or data after a
    previous error (a decoder that failed stays failed).
    """

    def __init__(self, *, max_header_size: int = MAX_HEADER_SIZE) -> None:
        self._max_header_size = max_header_size
        self._buf = bytearray()
        self._pending: tuple[int, int] | None = None  # (type, length) of a partial payload
        self._body_left = 0
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (prefix or HEADER/ERROR payload)."""
        return len(self._buf)

    @property
    def at_boundary(self) -> bool:
        """True when the bytes fed so far end exactly at a frame boundary."""
        return not self._buf and self._pending is None and self._body_left == 0

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed:
            raise FramingError("decoder already failed")
        try:
            return self._feed(data)
        except FramingError:
            self._failed = True
            raise

    def _feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        pos = 0
        size = len(data)
        while pos < size:
            if self._body_left:
                take = min(self._body_left, size - pos)
                piece = data if (pos == 0 and take == size) else bytes(data[pos : pos + take])
                out.append(Body(piece))
                self._body_left -= take
                pos += take
            elif self._pending is None:
                need = PREFIX_SIZE - len(self._buf)
                if not self._buf and size - pos >= PREFIX_SIZE:
                    ftype, length = PREFIX.unpack_from(data, pos)
                    pos += PREFIX_SIZE
                else:
                    self._buf += data[pos : pos + need]
                    pos += min(need, size - pos)
                    if len(self._buf) < PREFIX_SIZE:
                        break
                    ftype, length = PREFIX.unpack(self._buf)
                    self._buf.clear()
                self._start_frame(ftype, length, out)
            else:
                ftype, length = self._pending
                need = length - len(self._buf)
                self._buf += data[pos : pos + need]
                pos += min(need, size - pos)
                if len(self._buf) == length:
                    payload = bytes(self._buf)
                    self._buf.clear()
                    self._pending = None
                    out.append(self._decode_payload(ftype, payload))
        return out

    def _start_frame(self, ftype: int, length: int, out: list[Frame]) -> None:
        if ftype == BODY:
            self._body_left = length  # an empty BODY frame is legal and yields nothing
        elif ftype == END:
            if length:
                raise FramingError(f"END frame with a {length}-byte payload")
            out.append(End())
        elif ftype in (HEADER, ERROR):
            if length > self._max_header_size:
                raise FramingError(
                    f"frame payload of {length} bytes exceeds the {self._max_header_size}-byte limit"
                )
            if length == 0:
                raise FramingError("empty HEADER/ERROR frame")
            self._pending = (ftype, length)
        else:
            raise FramingError(f"unknown frame type 0x{ftype:02x}")

    @staticmethod
    def _decode_payload(ftype: int, payload: bytes) -> Frame:
        try:
            fields = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise FramingError(f"bad msgpack payload: {exc}") from exc
        if not isinstance(fields, dict):
            raise FramingError("frame payload is not a map")
        if ftype == HEADER:
            return Header(fields)
        kind, message = fields.get("k"), fields.get("m", "")
        if not isinstance(kind, str) or not isinstance(message, str):
            raise FramingError("ERROR frame needs a string kind and message")
        return Error(kind, message)
