"""The scanner: walks every set this node owns, one pass per `interval` (default 24 h),
and heals what it finds, at a capped rate, so nothing depends on a write or read having
noticed the damage.

Shallow (every pass): each listed object's metadata is read from every drive of its set
and the first run of every holder's shard read and checked, which finds a drive that
missed a version, holds an older one, or lost the shard file; it is healed on the spot
(healing/reconstruct.py). Deep (every `deep_every`-th pass, or on demand): every block of
every shard is read and checked against its CRC32C, which finds rot anywhere.

Every key any drive of the set holds a record of is visited (the listing's `every`): a
version k drives agree on is healed, a tombstone carried to the drives that lack it or
collected (healing/reconstruct.Collect), and a version too few drives hold is never healed
into existence (and collected once enough drives prove it absent). A pass over every
bucket that found nothing it could not heal reports the sets it covered (`on_pass`): a
drive formatted empty into one of them before the pass began is then fully healed. The rate cap (`rate`, objects per second) keeps a
pass from competing with clients; shard traffic goes through the drives' background
views. A pass can be started now (`start`, the admin API's `heal start`), for one bucket
or all, shallow or deep; progress and an estimate of the time left come from the number of
objects the previous pass saw.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import NoSuchBucket
from shardfleet.cluster.listing import list_objects
from shardfleet.cluster.objects import ObjectLayer
from shardfleet.healing.reconstruct import Collect, heal_object
from shardfleet.healing.worker import Worker

log = logging.getLogger(__name__)

PAGE = 1000


@dataclass(frozen=True, slots=True)
class PassDone:
    """A whole pass over every bucket: the sets it covered, when it began (time.time()),
    and whether every object in them is whole now (nothing unreadable or failed)."""

    sets: list[ErasureSet]
    started: float
    clean: bool


class Scanner(Worker):
    name = "scanner"

    def __init__(
        self,
        layer: ObjectLayer,
        *,
        interval: float = 86_400.0,
        deep_every: int = 7,
        rate: float = 200.0,
        owns: Callable[[ErasureSet], bool] = lambda eset: True,
        collect: Collect | None = None,
        on_pass: Callable[[PassDone], None] = lambda done: None,
    ) -> None:
        super().__init__(interval, first_delay=min(interval, 60.0))
        self.layer = layer
        self.collect = collect or Collect()
        self.on_pass = on_pass
        self.collected = 0
        self.unreached = 0  # objects checked while a drive of their set did not answer
        self.deep_every = deep_every
        self.rate = rate
        self.owns = owns
        self.running = False
        #: a pass asked for: bucket, deep, and the sets to scan whoever owns them (None: the
        #: sets this node owns)
        self.pending: tuple[str | None, bool, list[ErasureSet] | None] | None = None
        self.scanned = self.healed = self.failed = self.bytes = 0
        self.pass_scanned = 0
        self.last_total = 0  # objects the previous pass saw (for progress and ETA)
        self.pass_started: float | None = None
        self.pass_deep = False

    def start(
        self,
        bucket: str | None = None,
        *,
        deep: bool = False,
        sets: list[ErasureSet] | None = None,
    ) -> None:
        """Asks for a pass now: the admin API's `heal start`, or a drive just replaced on
        this node (`sets`: its sets, scanned here whichever node owns them)."""
        self.pending = (bucket, deep, sets)
        self.wake()

    async def run_once(self) -> int:
        bucket, deep, sets = self.pending or (None, False, None)
        self.pending = None
        if not deep and self.deep_every > 0:
            deep = (self.passes + 1) % self.deep_every == 0
        return await self.scan(bucket, deep=deep, sets=sets)

    async def scan(
        self, only: str | None = None, *, deep: bool = False, sets: list[ErasureSet] | None = None
    ) -> int:
        """One pass; returns the objects healed."""
        self.running, self.pass_deep = True, deep
        self.pass_started, self.pass_scanned = time.monotonic(), 0
        began, failed_before, unreached_before = time.time(), self.failed, self.unreached
        healed = 0
        covered = [
            eset
            for eset in (sets if sets is not None else self.layer.active_sets)
            if sets is not None or self.owns(eset)
        ]
        try:
            buckets = [only] if only else sorted(await self.layer.list_buckets())
            for bucket in buckets:
                for eset in covered:
                    try:
                        healed += await self._scan_set(eset, bucket, deep)
                    except NoSuchBucket:
                        continue
                    except Exception as exc:  # a listing below quorum: the rest goes on
                        log.warning("scanner: %s in set %s: %s", bucket, eset.index, exc)
                        self.failed += 1
            self.last_total = self.pass_scanned
        except Exception:
            self.failed += 1  # a listing below quorum, say: not a clean pass
            if only is None:  # so a replaced drive waiting for a clean pass gets another
                self.on_pass(PassDone(covered, began, False))
            raise
        finally:
            self.running = False
        if healed:
            log.info("scanner: pass done, %d objects scanned, %d healed", self.pass_scanned, healed)
        if only is None:
            clean = self.failed == failed_before and self.unreached == unreached_before
            self.on_pass(PassDone(covered, began, clean))
        return healed

    async def _scan_set(self, eset: ErasureSet, bucket: str, deep: bool) -> int:
        healed = 0
        marker = ""
        while True:
            page = await list_objects(
                eset, bucket, prefix="", delimiter="", start_after=marker, max_keys=PAGE, every=True
            )
            for key, *_ in page.objects:
                started = time.monotonic()
                try:
                    result = await heal_object(eset, bucket, key, deep=deep, collect=self.collect)
                except Exception as exc:  # a drive failed mid-heal: the next pass retries
                    log.info("scanner: %s/%s: %s", bucket, key, exc)
                    self.failed += 1
                else:
                    self.bytes += result.bytes
                    self.unreached += bool(result.unreached)
                    if result.state == "healed":
                        healed += 1
                        self.healed += 1
                    elif result.state == "collected":
                        self.collected += 1
                    elif result.state in ("unreadable", "partial"):
                        self.failed += 1
                        log.warning(
                            "scanner: %s/%s %s: %s", bucket, key, result.state, result.detail
                        )
                self.scanned += 1
                self.pass_scanned += 1
                if self.rate > 0:
                    await asyncio.sleep(max(0.0, 1.0 / self.rate - (time.monotonic() - started)))
            if not page.truncated:
                return healed
            marker = page.next_marker

    def status(self) -> dict[str, object]:
        progress = eta = None
        if self.running and self.pass_started is not None:
            elapsed = time.monotonic() - self.pass_started
            if self.last_total:
                progress = min(1.0, self.pass_scanned / self.last_total)
                rate = self.pass_scanned / elapsed if elapsed > 0 else 0
                left = max(0, self.last_total - self.pass_scanned)
                eta = left / rate if rate > 0 else None
        return super().status() | {
            "running": self.running,
            "pending": self.pending is not None,
            "deep": self.pass_deep,
            "scanned": self.scanned,
            "pass_scanned": self.pass_scanned,
            "healed": self.healed,
            "failed": self.failed,
            "collected": self.collected,
            "unreached": self.unreached,
            "bytes": self.bytes,
            "progress": progress,
            "eta_s": eta,
        }
