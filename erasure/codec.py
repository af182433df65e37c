"""Reed-Solomon over zfec: parity only on encode, any k of n on decode.

The k data shards of a stripe are memoryview slices of the stripe itself (no copy);
only the last, short stripe is padded, which copies that one stripe. zfec's outputs may
alias its inputs, so callers must not reuse a buffer they handed in until they are done
with the outputs. zfec's table set-up is not thread-safe: the constructor builds the
encoder and decoder, so build a Codec before handing it to a thread pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import zfec

from shardfleet.erasure.errors import BadShardSize, NotEnoughShards
from shardfleet.erasure.params import ErasureParams

Buffer = bytes | bytearray | memoryview


class Codec:
    def __init__(self, params: ErasureParams) -> None:
        self.params = params
        self.k = params.k
        self.n = params.n
        self._parity_ids = list(range(self.k, self.n))
        self._encoder = zfec.Encoder(self.k, self.n)
        self._decoder = zfec.Decoder(self.k, self.n)

    def split(self, stripe: Buffer) -> tuple[list[memoryview], int]:
        """Stripe bytes -> (k data blocks, block_len); pads only a short last stripe."""
        view = memoryview(stripe)
        size = len(view)
        block_len = -(-size // self.k)
        if block_len * self.k != size:
            padded = bytearray(block_len * self.k)
            padded[:size] = view
            view = memoryview(padded).toreadonly()  # fresh and never written again
        return [view[i * block_len : (i + 1) * block_len] for i in range(self.k)], block_len

    def encode(self, data_blocks: Sequence[Buffer]) -> list[bytes]:
        """The m parity blocks for k equal-length data blocks."""
        if not self._parity_ids:
            return []
        if len(data_blocks) != self.k:
            raise BadShardSize(f"need {self.k} data blocks, got {len(data_blocks)}")
        return self._encoder.encode(list(data_blocks), self._parity_ids)

    def encode_stripe(self, stripe: Buffer) -> tuple[list[Buffer], int]:
        """All n blocks of one stripe, and their length."""
        data, block_len = self.split(stripe)
        return [*data, *self.encode(data)], block_len

    def decode(self, blocks: Mapping[int, Buffer]) -> list[Buffer]:
        """k data blocks from any k of the n shard blocks (keyed by shard index)."""
        if len(blocks) < self.k:
            raise NotEnoughShards(self.k, len(blocks))
        if all(i in blocks for i in range(self.k)):
            return [blocks[i] for i in range(self.k)]
        ids = sorted(blocks)[: self.k]
        chosen = [blocks[i] for i in ids]
        if len({len(b) for b in chosen}) != 1:
            raise BadShardSize("shard blocks of a stripe differ in length")
        return self._decoder.decode(chosen, ids)

    def rebuild(self, blocks: Mapping[int, Buffer], wanted: Sequence[int]) -> dict[int, Buffer]:
        """The blocks of shard indices `wanted` from any k blocks of one stripe: a healer's
        work, decode (skipped when the k data blocks are there) and re-encode. The data
        blocks come back as given or decoded, parity blocks freshly encoded."""
        data = self.decode(blocks)
        out: dict[int, Buffer] = {}
        parity: list[bytes] | None = None
        for index in wanted:
            if not 0 <= index < self.n:
                raise BadShardSize(f"shard index {index} outside 0..{self.n - 1}")
            if index < self.k:
                out[index] = data[index]
            else:
                if parity is None:
                    parity = self.encode(data)
                out[index] = parity[index - self.k]
        return out

    def join(self, data_blocks: Sequence[Buffer], data_len: int) -> bytes:
        """Data blocks back into the stripe's object bytes (padding dropped)."""
        return b"".join(data_blocks)[:data_len]
