"""Pure, synchronous erasure coding: parameters, stripe maths, codec, block checksums.

Imports nothing of ours; no I/O. Callers run the CPU-heavy parts in a thread pool
(zfec, hashlib and crc32c release the GIL).
"""

from shardfleet.erasure.checksum import crc32c, frame_header, verify_block
from shardfleet.erasure.codec import Codec
from shardfleet.erasure.errors import BitrotError, ErasureError, NotEnoughShards
from shardfleet.erasure.params import ErasureParams
from shardfleet.erasure.stripe import (
    CRC_LEN,
    StripeSpan,
    shard_file_size,
    stripe_count,
    stripes_for_range,
)

__all__ = [
    "CRC_LEN",
    "BitrotError",
    "Codec",
    "ErasureError",
    "ErasureParams",
    "NotEnoughShards",
    "StripeSpan",
    "crc32c",
    "frame_header",
    "shard_file_size",
    "stripe_count",
    "stripes_for_range",
    "verify_block",
]
