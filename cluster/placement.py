"""Where a key's shards go: which set, and which shard index each set position holds.

Pure functions. The hash is keyed by the cluster id so that keys chosen by a client cannot
pile onto one drive's parity slot. The number of sets in a pool is fixed when the pool is
formed, so `hash mod sets` never changes for an existing pool.
"""

from __future__ import annotations

import hashlib


def key_hash(cluster_id: str, bucket: str, key: str) -> int:
    digest = hashlib.blake2b(
        f"{bucket}/{key}".encode(), digest_size=8, key=cluster_id.encode()[:64]
    ).digest()
    return int.from_bytes(digest, "big")


def set_index(cluster_id: str, bucket: str, key: str, sets: int) -> int:
    return key_hash(cluster_id, bucket, key) % sets


def distribution(cluster_id: str, bucket: str, key: str, n: int) -> list[int]:
    """dist[position] = shard index; a rotation that spreads data and parity over drives.

    >>> distribution("c", "b", "k", 4) in ([0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1], [1, 2, 3, 0])
    True
    """
    start = (key_hash(cluster_id, bucket, key) >> 16) % n
    return [(pos - start) % n for pos in range(n)]
