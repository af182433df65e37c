"""One erasure set: k+m drives by position, the codec and the quorum numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shardfleet.cluster.drive import Drive
from shardfleet.erasure import Codec, ErasureParams


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines for drive calls (a drive may be a peer across the network)."""

    meta: float = 10.0  # metadata reads, commits, deletes
    shard: float = 60.0  # one shard read or write call (at most a few MiB)
    # Once a quorum answered, how long the rest may still take. A drive slower than that
    # is left behind (a write's missed drive goes to the MRF queue and is healed), so a
    # frozen peer costs a client this much once, not a drive timeout per request.
    meta_grace: float = 1.5
    shard_grace: float = 2.0
    #: a GET's metadata read from the nearest drives, before it asks every drive
    meta_hedge: float = 0.5
    #: a GET's shard read from the chosen drives, before it reads around the slow ones
    read_hedge: float = 2.5


@dataclass(slots=True)
class ErasureSet:
    cluster_id: str
    pool: int
    index: int
    params: ErasureParams
    drives: Sequence[Drive]
    write_quorum: int = 0
    timeouts: Timeouts = field(default_factory=Timeouts)
    codec: Codec = field(init=False)

    def __post_init__(self) -> None:
        if len(self.drives) != self.params.n:
            raise ValueError(f"set {self.index}: {len(self.drives)} drives for {self.params}")
        self.write_quorum = self.params.check_write_quorum(
            self.write_quorum or self.params.default_write_quorum
        )
        self.codec = Codec(self.params)  # built here, before any thread uses it

    @property
    def read_quorum(self) -> int:
        return self.params.k

    def online_positions(self) -> list[int]:
        return [i for i, d in enumerate(self.drives) if d.online]
