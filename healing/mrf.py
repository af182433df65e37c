"""The MRF queue (most recently failed): objects whose write missed drives, or whose read
found a shard missing or bad, healed as soon as the drives they missed are back.

Fed by the object layer's hooks (`on_partial` for a write acknowledged without some
drives, `on_degraded` for a read that decoded around bad shards). One entry per key, the
newest report wins; the queue is bounded (`capacity`): reports beyond it are dropped and
counted, and the scanner's next pass finds those objects instead. An entry waits while a
drive it missed is offline and is healed the pass after the drive is back (a peer coming
back wakes the queue). Entries survive a restart: the queue is written to `path` (msgpack,
atomically) after every pass that changed it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import msgpack

from shardfleet.cluster.objects import ObjectLayer
from shardfleet.healing.reconstruct import heal_object
from shardfleet.healing.worker import Worker

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 20  # an entry that failed this often is left to the scanner


@dataclass(slots=True)
class Entry:
    bucket: str
    key: str
    vid: str
    positions: list[int]
    added: float
    attempts: int = 0
    #: the (bucket, key) whose set holds it, when not its own: a multipart part (in the
    #: "+mp" volume) is placed with its object, and healed with it once completed
    place: tuple[str, str] | None = None

    def eset_key(self) -> tuple[str, str]:
        return self.place or (self.bucket, self.key)


class MRF(Worker):
    name = "mrf"

    def __init__(
        self,
        layer: ObjectLayer,
        *,
        capacity: int = 100_000,
        path: Path | None = None,
        interval: float = 1.0,
    ) -> None:
        super().__init__(interval)
        self.layer = layer
        self.capacity = capacity
        self.path = path
        self.entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self.dropped = 0
        self.healed = 0
        self.failed = 0
        self.bytes = 0
        self._dirty = False
        self._load()

    def __len__(self) -> int:
        return len(self.entries)

    def add(
        self,
        bucket: str,
        key: str,
        vid: str,
        positions: list[int],
        *,
        place: tuple[str, str] | None = None,
    ) -> None:
        """A hook: called on the event loop, never blocks, never raises."""
        name = (bucket, key)
        if name not in self.entries and len(self.entries) >= self.capacity:
            self.dropped += 1
            return
        self.entries[name] = Entry(bucket, key, vid, sorted(positions), time.time(), place=place)
        self.entries.move_to_end(name)
        self._dirty = True
        self.wake()

    async def run_once(self) -> int:
        """Heals what can be healed now; returns the number of entries done."""
        done = 0
        for name, entry in list(self.entries.items()):
            if not self._ready(entry):
                continue
            try:
                results = []
                for pool in sorted(self.layer.pools):
                    eset = self.layer.set_for(*entry.eset_key(), pool)
                    result = await heal_object(eset, *name)
                    if result.state == "absent" and entry.place is not None:
                        # a part no longer in the volume: completed (its object holds it
                        # now, heal that) or aborted (the object heal is then a no-op)
                        result = await heal_object(eset, *entry.place)
                    results.append(result)
            except Exception as exc:  # a drive error mid-heal: try again next pass
                log.info("mrf: heal of %s/%s failed: %s", entry.bucket, entry.key, exc)
                results = []
            states = {r.state for r in results}
            self.bytes += sum(r.bytes for r in results)
            if results and any(p in r.unreached for r in results for p in entry.positions):
                # a drive it missed did not answer (a peer dead but not yet noticed): nothing
                # was learnt, so neither done nor an attempt; _ready holds it from the moment
                # the drive counts offline until it is back
                continue
            if results and states <= {"ok", "healed", "absent", "collected"}:
                self.healed += "healed" in states
                del self.entries[name]
                done += 1
            else:
                entry.attempts += 1
                if entry.attempts >= MAX_ATTEMPTS:
                    self.failed += 1
                    self.dropped += 1
                    del self.entries[name]
                    log.warning(
                        "mrf: %s/%s not healed after %d attempts (%s): left to the scanner",
                        entry.bucket, entry.key, entry.attempts, sorted(states),
                    )  # fmt: skip
            self._dirty = True
        self._save()
        return done

    def _ready(self, entry: Entry) -> bool:
        """Every drive the entry names is online in the key's first-pool set (an entry
        from another pool is tried as soon as that set is whole)."""
        eset = self.layer.set_for(*entry.eset_key())
        online = set(eset.online_positions())
        return all(p in online for p in entry.positions if p < len(eset.drives))

    # -- persistence ---------------------------------------------------------------------
    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            rows = msgpack.unpackb(self.path.read_bytes())
            for row in rows[: self.capacity]:
                bucket, key, vid, positions, added, attempts, *rest = row
                place = tuple(rest[0]) if rest and rest[0] is not None else None
                self.entries[(bucket, key)] = Entry(
                    bucket,
                    key,
                    vid,
                    positions,
                    added,
                    attempts,
                    place,  # type: ignore[arg-type]
                )
        except Exception as exc:  # a torn or foreign file: start empty, the scanner covers
            log.warning("mrf: ignoring unreadable queue file %s: %s", self.path, exc)

    def _save(self) -> None:
        if self.path is None or not self._dirty:
            return
        if not (self.path.parent / "format.json").exists():
            return  # its drive was wiped: a file there would keep the slot from being reused
        rows = [
            [e.bucket, e.key, e.vid, e.positions, e.added, e.attempts, e.place]
            for e in self.entries.values()
        ]
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(msgpack.packb(rows))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:
            log.warning("mrf: cannot save the queue to %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def status(self) -> dict[str, object]:
        return super().status() | {
            "depth": len(self.entries),
            "healed": self.healed,
            "failed": self.failed,
            "dropped": self.dropped,
            "bytes": self.bytes,
        }
