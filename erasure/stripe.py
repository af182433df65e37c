"""Stripe maths: where an object's bytes live inside its shard files.

An object of `size` bytes is cut into stripes of `stripe_size` bytes (the last one
shorter). Stripe s is split into k data blocks of `block_len` bytes (the last stripe's
blocks are ceil(tail / k) bytes, zero padded) and m parity blocks of the same length.
Shard file i is the concatenation, stripe after stripe, of a 4-byte CRC32C followed by
block i of that stripe. Every shard file of an object therefore has the same length and
the same block offsets.

Example, 2+2 with 8-byte stripes and a 21-byte object:

>>> from erasure.params import ErasureParams
>>> p = ErasureParams(2, 2, stripe_size=8)
>>> [(s.index, s.data_len, s.block_len, s.file_offset) for s in stripes_for_range(21, p, 0, 21)]
[(0, 8, 4, 0), (1, 8, 4, 8), (2, 5, 3, 16)]
>>> shard_file_size(21, p)
23
>>> [s.index for s in stripes_for_range(21, p, 9, 12)]
[1]
>>> data_blocks_for_range(stripes_for_range(21, p, 9, 12)[0], p, 9, 12)
range(0, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

from shardfleet.erasure.params import ErasureParams

CRC_LEN = 4


@dataclass(frozen=True, slots=True)
class StripeSpan:
    index: int
    object_offset: int  # object position of the stripe's first byte
    data_len: int  # object bytes in this stripe
    block_len: int  # bytes per shard block (unframed)
    file_offset: int  # offset of this stripe's framed block in every shard file

    @property
    def framed_len(self) -> int:
        return self.block_len + CRC_LEN


def stripe_count(size: int, params: ErasureParams) -> int:
    return -(-size // params.stripe_size)


def _span(size: int, params: ErasureParams, index: int) -> StripeSpan:
    start = index * params.stripe_size
    data_len = min(params.stripe_size, size - start)
    return StripeSpan(
        index=index,
        object_offset=start,
        data_len=data_len,
        block_len=-(-data_len // params.k),
        file_offset=index * (params.block_size + CRC_LEN),
    )


def shard_file_size(size: int, params: ErasureParams) -> int:
    count = stripe_count(size, params)
    if count == 0:
        return 0
    last = _span(size, params, count - 1)
    return last.file_offset + last.framed_len


def stripes_for_range(size: int, params: ErasureParams, start: int, end: int) -> list[StripeSpan]:
    """Stripes covering object bytes [start, end) (end exclusive, clipped to size)."""
    end = min(end, size)
    if start >= end:
        return []
    first = start // params.stripe_size
    last = (end - 1) // params.stripe_size
    return [_span(size, params, i) for i in range(first, last + 1)]


def data_blocks_for_range(span: StripeSpan, params: ErasureParams, start: int, end: int) -> range:
    """Indices of the data blocks of `span` that hold object bytes [start, end)."""
    lo = max(start, span.object_offset) - span.object_offset
    hi = min(end, span.object_offset + span.data_len) - span.object_offset
    if lo >= hi:
        return range(0)
    return range(lo // span.block_len, (hi - 1) // span.block_len + 1)
