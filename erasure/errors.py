"""Errors of the erasure layer.

ErasureError
├── NotEnoughShards   fewer than k usable shards for a stripe
├── BadShardSize      shard blocks of unequal or unexpected length
└── BitrotError       a block's CRC32C does not match its bytes
"""


class ErasureError(Exception):
    pass


class NotEnoughShards(ErasureError):
    def __init__(self, need: int, got: int) -> None:
        super().__init__(f"need {need} shards to decode, have {got}")
        self.need = need
        self.got = got


class BadShardSize(ErasureError):
    pass


class BitrotError(ErasureError):
    pass
