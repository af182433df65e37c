"""CRC32C per shard block: the bitrot check verified on every read.

The hardware-accelerated `crc32c` package is used when present; `crcmod` (pure,
table-driven, ~30x slower) is the portable fallback and the test oracle.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

from erasure.errors import BitrotError


@functools.cache
def _crcmod_fun() -> Callable[[bytes], int]:
    # built on first use: only the fallback and the tests need it (saves ~3 ms of start-up)
    import crcmod.predefined

    return crcmod.predefined.mkCrcFun("crc-32c")


def crc32c_crcmod(data: bytes | memoryview) -> int:
    return _crcmod_fun()(bytes(data))


try:
    from crc32c import crc32c as _hw_crc32c

    def crc32c(data: bytes | memoryview) -> int:
        return _hw_crc32c(data)

except ImportError:  # pragma: no cover - depends on the platform's wheels
    crc32c = crc32c_crcmod

_HEADER = struct.Struct(">I")


def frame_header(block: bytes | memoryview) -> bytes:
    """The 4 bytes written in front of a shard block."""
    return _HEADER.pack(crc32c(block))


def verify_block(framed: bytes | memoryview, block_len: int) -> memoryview:
    """Checks one framed block and returns its payload; raises BitrotError."""
    view = memoryview(framed)
    if len(view) != block_len + 4:
        raise BitrotError(f"framed block is {len(view)} bytes, expected {block_len + 4}")
    (want,) = _HEADER.unpack_from(view)
    body = view[4:]
    if crc32c(body) != want:
        raise BitrotError("CRC32C mismatch")
    return body
