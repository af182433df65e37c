"""Erasure parameters and the quorum numbers derived from them."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_STRIPE = 1 << 20
_SPEC = re.compile(r"^\s*(\d+)\s*\+\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class ErasureParams:
    """k data + m parity shards; each stripe holds `stripe_size` object bytes.

    `stripe_size` is rounded up to a multiple of k so every full stripe splits into k
    equal blocks without padding; only the last stripe of an object is padded.
    """

    k: int
    m: int
    stripe_size: int = DEFAULT_STRIPE

    def __post_init__(self) -> None:
        if self.k < 1 or self.m < 0:
            raise ValueError(f"erasure {self.k}+{self.m}: need k >= 1 and m >= 0")
        if self.k + self.m > 256:
            raise ValueError(f"erasure {self.k}+{self.m}: at most 256 shards")
        if self.stripe_size < 1:
            raise ValueError("stripe size must be positive")
        rounded = -(-self.stripe_size // self.k) * self.k
        object.__setattr__(self, "stripe_size", rounded)

    @classmethod
    def parse(cls, spec: str, stripe_size: int = DEFAULT_STRIPE) -> ErasureParams:
        """'2+2' -> ErasureParams(2, 2)."""
        match = _SPEC.match(spec)
        if not match:
            raise ValueError(f"erasure spec {spec!r} is not of the form K+M, e.g. 2+2")
        return cls(int(match[1]), int(match[2]), stripe_size)

    @property
    def n(self) -> int:
        return self.k + self.m

    @property
    def block_size(self) -> int:
        """Bytes of one shard block in a full stripe."""
        return self.stripe_size // self.k

    @property
    def read_quorum(self) -> int:
        return self.k

    @property
    def default_write_quorum(self) -> int:
        """k+1 (capped at n): an acknowledged object survives one more loss before healing."""
        return min(self.k + 1, self.n)

    @property
    def min_write_quorum(self) -> int:
        """The smallest W that is decodable (>= k) and overlaps every read quorum (W + k > n)."""
        return min(max(self.k, self.m + 1), self.n)

    def check_write_quorum(self, w: int) -> int:
        if not self.min_write_quorum <= w <= self.n:
            raise ValueError(
                f"write quorum {w} for {self}: must be between {self.min_write_quorum} and {self.n}"
            )
        return w

    def __str__(self) -> str:
        return f"{self.k}+{self.m}"
