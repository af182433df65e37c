"""Bucket catch-up: every drive of every set ends up with the buckets a quorum agrees on.

Buckets live on all drives. A drive that was offline while a bucket was created misses
it, and would then refuse every write into that bucket; one that was offline during a
delete keeps a stale bucket. Each pass lists the buckets of every drive of a set and, when
enough drives answered to decide (the write quorum), creates the buckets that at least k
drives hold on the drives that lack them, and drops from a drive the buckets fewer than k
drives still hold (that is how listing and lookups see them too). The first set of the
first pool is the reference for every other set, so a pool added later gets every bucket.

A create or delete in flight looks exactly like a drive that missed one, so a fix is
applied only when the same discrepancy was already seen by the previous pass, an interval
earlier: operations finish in seconds, missed ones stay.
"""

from __future__ import annotations

import logging

from shardfleet.cluster.drive import DriveError, VolumeExists, VolumeNotFound
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.quorum import fan_out
from shardfleet.healing.worker import Worker

log = logging.getLogger(__name__)


class BucketSync(Worker):
    name = "bucket sync"

    def __init__(self, sets: list[ErasureSet], interval: float = 30.0) -> None:
        super().__init__(interval)
        self.sets = sets
        self.created = 0
        self.removed = 0
        self._seen: set[tuple[int, int, int, str, bool]] = set()
        self._now: set[tuple[int, int, int, str, bool]] = set()

    async def run_once(self) -> tuple[int, int]:
        sets = list(self.sets)
        if not sets:
            return 0, 0
        self._now = set()
        views = [await self._views(eset) for eset in sets]
        if views[0] is None:
            return 0, 0  # the reference set cannot decide: try again next pass
        stamps: dict[str, list[int]] = {}
        for buckets in views[0].values():
            for name, created in buckets.items():
                stamps.setdefault(name, []).append(created)
        truth = {
            name: min(seen) for name, seen in stamps.items() if len(seen) >= sets[0].read_quorum
        }
        created = removed = 0
        for eset, view in zip(sets, views, strict=True):
            if view is not None:
                c, r = await self._fix(eset, view, truth)
                created += c
                removed += r
        self._seen = self._now
        self.created += created
        self.removed += removed
        return created, removed

    async def _views(self, eset: ErasureSet) -> dict[int, dict[str, int]] | None:
        views, _ = await fan_out([d.list_buckets for d in eset.drives], timeout=eset.timeouts.meta)
        return views if len(views) >= eset.write_quorum else None

    async def _fix(
        self, eset: ErasureSet, views: dict[int, dict[str, int]], truth: dict[str, int]
    ) -> tuple[int, int]:
        created = removed = 0
        names = set(truth).union(*views.values())
        for name in sorted(names):
            agreed = name in truth
            for pos, buckets in views.items():
                drive = eset.drives[pos]
                if agreed == (name in buckets):
                    continue
                finding = (eset.pool, eset.index, pos, name, agreed)
                self._now.add(finding)
                if finding not in self._seen:
                    continue  # maybe an operation in flight: look again next pass
                try:
                    if agreed:
                        await drive.make_bucket(name, truth[name])
                        created += 1
                        log.info("bucket %s restored on drive %s", name, drive.endpoint)
                    else:
                        await drive.delete_bucket(name, force=True)
                        removed += 1
                        log.info("stale bucket %s removed from drive %s", name, drive.endpoint)
                except (VolumeExists, VolumeNotFound):
                    pass  # someone else got there first
                except DriveError as exc:
                    log.warning("bucket sync on drive %s: %s", drive.endpoint, exc)
        return created, removed
