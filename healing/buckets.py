"""Bucket catch-up: every drive of every set ends up with the buckets a quorum agrees on.

Buckets live on all drives. A drive that was offline while a bucket was created misses
it, and would then refuse every write into that bucket; one that was offline during a
delete keeps a stale bucket. Each pass lists the buckets of every drive of a set and, when
enough drives answered to decide (the write quorum), creates the buckets that at least k
drives hold on the drives that lack them, and drops from a drive the buckets fewer than k
drives still hold (that is how listing and lookups see them too).

A create or delete in flight looks exactly like a drive that missed one, so a fix is
applied only when the same discrepancy was already seen by the previous pass, an interval
earlier: operations finish in seconds, missed ones stay.
"""

from __future__ import annotations

import logging

from cluster.drive import DriveError, VolumeExists, VolumeNotFound
from cluster.erasure_set import ErasureSet
from cluster.quorum import fan_out
from healing.worker import Worker

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
        created = removed = 0
        self._now = set()
        for eset in list(self.sets):
            c, r = await self._sync_set(eset)
            created += c
            removed += r
        self._seen = self._now
        self.created += created
        self.removed += removed
        return created, removed

    async def _sync_set(self, eset: ErasureSet) -> tuple[int, int]:
        t = eset.timeouts
        views, _ = await fan_out([d.list_buckets for d in eset.drives], timeout=t.meta)
        if len(views) < eset.write_quorum:
            return 0, 0
        stamps: dict[str, list[int]] = {}
        for buckets in views.values():
            for name, created in buckets.items():
                stamps.setdefault(name, []).append(created)
        created = removed = 0
        for name, seen in stamps.items():
            agreed = len(seen) >= eset.read_quorum
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
                        await drive.make_bucket(name, min(seen))
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
