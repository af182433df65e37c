"""Multipart upload expiry: uploads left unfinished are removed, shards and all.

A client that starts a multipart upload and never completes or aborts it (a crashed
backup, a killed `aws s3 cp`) leaves parts on the drives; AWS leaves them until a lifecycle
rule says otherwise, which in practice means forever. Here every pass aborts, set by set,
each upload initiated more than `max_age` ago (default 7 days), exactly as an
AbortMultipartUpload would: under the upload's lock, every part attempt any drive holds,
then its record. A completion that some drives missed is rolled forward, never undone.

Completed uploads leave a tombstone (cluster/multipart.py) so that a repeated Complete is
answered and a completion can be finished on drives that missed it; tombstones older than
`tombstone_ttl` (a day) are rolled forward once more and then forgotten.

Each node sweeps only the sets whose first online drive is its own (`owns`), so a cluster
does each upload's removal once; two nodes that disagree for a moment both act, which is
harmless (every step is locked and idempotent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import NoSuchBucket, NoSuchUpload
from shardfleet.cluster.objects import ObjectLayer
from shardfleet.healing.worker import Worker

log = logging.getLogger(__name__)

DAY = 86_400.0
PAGE = 1000


class UploadSweeper(Worker):
    name = "upload sweep"

    def __init__(
        self,
        layer: ObjectLayer,
        *,
        max_age: float = 7 * DAY,
        tombstone_ttl: float = DAY,
        interval: float = 3600.0,
        owns: Callable[[ErasureSet], bool] = lambda eset: True,
        now: Callable[[], int] = time.time_ns,
    ) -> None:
        # nothing about expiry is urgent: the first pass waits until the peers are up
        super().__init__(interval, first_delay=min(interval, 30.0))
        self.layer = layer
        self.max_age = max_age
        self.tombstone_ttl = tombstone_ttl
        self.owns = owns
        self.now = now
        self.aborted = 0
        self.forgotten = 0

    async def run_once(self) -> tuple[int, int]:
        """(uploads aborted, tombstones forgotten) by this pass."""
        aborted = forgotten = 0
        for bucket in await self.layer.list_buckets():
            for eset in self.layer.active_sets:
                if not self.owns(eset):
                    continue
                try:
                    a, f = await self._sweep(eset, bucket)
                except NoSuchBucket:
                    continue  # deleted meanwhile: its uploads went with it
                aborted += a
                forgotten += f
        self.aborted += aborted
        self.forgotten += forgotten
        if aborted or forgotten:
            log.info(
                "upload sweep: %d expired uploads aborted, %d tombstones forgotten",
                aborted,
                forgotten,
            )
        return aborted, forgotten

    async def _sweep(self, eset: ErasureSet, bucket: str) -> tuple[int, int]:
        uploads = self.layer.uploads_in(eset)
        now = self.now()
        aborted = forgotten = 0
        for tombstones, age in ((False, self.max_age), (True, self.tombstone_ttl)):
            old = now - int(age * 1e9)
            key_marker = uid_marker = ""
            while True:
                page = await uploads.list_uploads(
                    bucket,
                    prefix="",
                    delimiter="",
                    key_marker=key_marker,
                    uid_marker=uid_marker,
                    max_uploads=PAGE,
                    tombstones=tombstones,
                )
                for entry in page.uploads:
                    if entry.initiated > old:
                        continue
                    try:
                        if tombstones:
                            await uploads.forget(bucket, entry.key, entry.uid)
                            forgotten += 1
                        else:
                            await uploads.abort(bucket, entry.key, entry.uid)
                            aborted += 1
                    except NoSuchUpload:
                        pass  # completed or aborted meanwhile
                if not page.truncated:
                    break
                key_marker, uid_marker = page.next_key, page.next_uid
        return aborted, forgotten
