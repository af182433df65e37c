"""Per-bucket configuration kept cluster-wide: the bucket's owner, its policy and its CORS
rules, stored as small objects of a system bucket.

Why objects: they get everything a PUT gets (write quorum, the MRF queue, the scanner,
tombstones on delete, a bucket that drives that were away catch up on), so a policy set
through one node holds on every node and survives what data survives, with no second
replication scheme. The system bucket's name, `SYSTEM_BUCKET`, has an upper-case letter and
an underscore, so no S3 client can create, name or list it (node/s3/names.py refuses such
names; ListBuckets leaves it out).

Each node caches what it read for `ttl` seconds (a request's authorization must not cost a
quorum read): a change made through one node applies there at once and on the others
within `ttl`. A bucket with no owner record (made before there were users) is the root's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from shardfleet.cluster.errors import BucketExists, NoSuchBucket, NoSuchKey
from shardfleet.cluster.objects import ObjectLayer
from shardfleet.cluster.put import PutRequest
from shardfleet.node.s3 import cors
from shardfleet.node.s3.cors import Rule
from shardfleet.node.s3.errors import S3Error
from shardfleet.node.s3.policy import Policy, parse

log = logging.getLogger(__name__)

SYSTEM_BUCKET = "SYS_shardfleet"
KINDS = ("owner", "policy", "cors")
MAX_CACHED = 10_000  # buckets whose configuration a node keeps in memory


@dataclass(frozen=True, slots=True)
class BucketConfig:
    owner: str | None = None  # canonical id; None: the root's
    policy: bytes | None = None  # the policy document as the owner sent it (JSON)
    cors: bytes | None = None  # the CORS configuration as stored (XML)
    compiled: Policy | None = field(default=None, compare=False)  # `policy`, parsed once
    cors_rules: tuple[Rule, ...] | None = field(default=None, compare=False)  # `cors`, parsed


class BucketConfigs:
    def __init__(self, layer: ObjectLayer, *, ttl: float = 2.0) -> None:
        self.layer = layer
        self.ttl = ttl
        self._cache: dict[str, tuple[float, BucketConfig]] = {}
        self._system_ready = False

    async def get(self, bucket: str) -> BucketConfig:
        hit = self._cache.get(bucket)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        values = await asyncio.gather(*(self._read(f"{kind}/{bucket}") for kind in KINDS))
        owner = values[0].decode() if values[0] is not None else None
        compiled = None
        if values[1] is not None:
            try:
                compiled = parse(values[1], bucket)
            except S3Error as exc:  # validated when it was put: only a newer node's syntax
                log.error("bucket %s: its stored policy does not parse (%s): it grants nothing",
                          bucket, exc)  # fmt: skip
        rules = None
        if values[2] is not None:
            try:
                rules = cors.parse(values[2])
            except S3Error as exc:  # as for the policy: it allows nothing
                log.error("bucket %s: its stored CORS rules do not parse (%s)", bucket, exc)
        conf = BucketConfig(owner, values[1], values[2], compiled, rules)
        cache = self._cache
        cache.pop(bucket, None)
        cache[bucket] = (now, conf)  # insertion order: oldest first
        if len(cache) > MAX_CACHED:  # requests naming random buckets must not grow it forever
            del cache[next(iter(cache))]
        return conf

    async def set(self, bucket: str, kind: str, value: bytes | None) -> None:
        """Stores (or, with None, deletes) one part of the bucket's configuration."""
        assert kind in KINDS
        key = f"{kind}/{bucket}"
        self._cache.pop(bucket, None)
        if value is None:
            await self.layer.delete_object(SYSTEM_BUCKET, key)
        else:
            await self._ensure_system_bucket()
            await self.layer.put_object(PutRequest(SYSTEM_BUCKET, key, len(value)), _one(value))
        self._cache.pop(bucket, None)

    async def claim(self, bucket: str, owner: str, taken: Exception) -> None:
        """Records `owner` as the bucket's owner unless a record exists (two users creating
        one name at once: the first record wins, the other gets `taken` raised)."""

        def unclaimed(current: object) -> None:
            if current is not None:
                raise taken

        key = f"owner/{bucket}"
        value = owner.encode()
        self._cache.pop(bucket, None)
        await self._ensure_system_bucket()
        await self.layer.put_object(
            PutRequest(SYSTEM_BUCKET, key, len(value), condition=unclaimed), _one(value)
        )
        self._cache.pop(bucket, None)

    async def forget(self, bucket: str) -> None:
        """A bucket was deleted: its configuration goes with it (a bucket of the same name
        made later starts clean)."""
        for kind in KINDS:
            await self.set(bucket, kind, None)

    async def _ensure_system_bucket(self) -> None:
        if self._system_ready:
            return
        if not await self.layer.bucket_exists(SYSTEM_BUCKET):
            with contextlib.suppress(BucketExists):
                await self.layer.make_bucket(SYSTEM_BUCKET)
        self._system_ready = True

    async def _read(self, key: str) -> bytes | None:
        try:
            handle = await self.layer.open_object(SYSTEM_BUCKET, key)
        except (NoSuchKey, NoSuchBucket):
            return None
        return b"".join(
            [bytes(c) async for c in self.layer.read_object(handle, 0, handle.meta.size)]
        )


async def _one(value: bytes) -> AsyncIterator[bytes]:
    yield value
