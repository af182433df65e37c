"""FaultyDrive: a real drive with faults injected on command (MinIO's naughtyDisk).

For tests only: the healing issue's tests (lost, rotten and slow shards, drives that fill
up or vanish mid-PUT) and chaos runs. Nothing in a production code path imports this
module (tests/integration/test_drive_conformance.py checks that). It wraps a real Drive,
a LocalDrive or a RemoteDrive, and delegates every call of the Drive protocol to it, so
what a test sees is the real drive's behaviour plus exactly the faults it armed; no mock
decides anything. With nothing armed it passes the drive conformance suite.

    fd = FaultyDrive(local_drive)
    fd.fail("commit", DriveIOError("disk said no"), times=1)   # the next commit fails
    fd.fail("commit", DriveIOError("ack lost"), after=True)    # commits land, replies fail
    fd.delay("read_shard", 2.0)       # a slow disk: every shard read waits 2 s first
    fd.short_reads(100)               # read_shard returns at most 100 bytes
    fd.flip_bits(every_nth_read=3)    # every 3rd shard read has one bit flipped
    fd.enospc()                       # writes and commits raise DriveFull
    fd.offline()                      # every call raises DriveOffline; fd.online is False
    fd.clear()                        # back to the plain real drive

Fault targets are the Drive method names (`info`, `make_bucket`, ..., `lock`, `unlock`)
and, for the ShardWriter returned by `open_shard`, "shard.write" and "shard.finish".
The writer's abort is never faulted: it releases what the real drive opened for the
writer (a file descriptor, a QUIC stream), and a test that faulted it would only leak.

Where a fault acts, in this order: offline (at once, DriveOffline: a dead disk fails
fast; a hung one is `delay`), then the delay (asyncio.sleep, so a caller's timeout
cancels it as it would cancel a call to a hung disk), then ENOSPC, then an armed failure.
Faults raised before the call never reach the real drive: like a request lost on the
way, the real drive saw nothing, and what was staged before stays staged until the
caller aborts it (as after a lost commit RPC). `fail(..., after=True)` runs the real call
and then raises: the effect happened and only the answer was lost.

Short reads. The contract of read_shard is "up to `length` bytes": a drive returns fewer
only where the shard file ends. A short read here returns the first `n_bytes` of what the
real drive read (real bytes, never padding or garbage), which to the caller is a shard
file that ends early: a torn or truncated file, the way a flaky disk or a crash between
writes leaves it. The reader must notice by length, as erasure.verify_block does
(BitrotError on a block of the wrong size); nothing tells it the read was short.

Bit flips return a copy of the real bytes with one bit flipped at a deterministic place
(it moves with each flip); the real drive's buffer is never touched, so a read after
`clear()` returns the stored bytes. The per-block CRC32C must catch every flip.

The fault table is guarded by a lock and never held across an await: faults may be
armed from another thread while the event loop runs calls, and counted faults (`times`,
every n-th read) fire exactly as often as asked under concurrent calls. `injected`
counts the faults that fired, by kind ("offline", "delay", "enospc", "fail",
"short_read", "flip"), so a test can check that its fault was exercised.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shardfleet.cluster.drive import (
    Drive,
    DriveFull,
    DriveInfo,
    DriveOffline,
    MetaRecord,
    ScanDigest,
    ShardWriter,
)
from shardfleet.cluster.meta import ObjectMeta

DRIVE_METHODS = frozenset(
    {
        "info",
        "make_bucket",
        "delete_bucket",
        "list_buckets",
        "bucket_exists",
        "open_shard",
        "commit",
        "abort",
        "read_meta",
        "read_shard",
        "delete",
        "scan",
        "scan_digest",
        "lock",
        "unlock",
        "complete_upload",
        "install",
    }
)
WRITER_METHODS = frozenset({"shard.write", "shard.finish"})
METHODS = DRIVE_METHODS | WRITER_METHODS
# What a full disk refuses: everything that allocates space. Deletes and aborts free it.
ENOSPC_METHODS = frozenset(
    {"make_bucket", "open_shard", "shard.write", "shard.finish", "commit", "complete_upload"}
)


@dataclass(slots=True)
class _Failure:
    exc: BaseException | type[BaseException]
    times: int | None  # None: until cleared
    after: bool


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown drive method {method!r}; one of {sorted(METHODS)}")
    return method


def _instance(exc: BaseException | type[BaseException], method: str) -> BaseException:
    """A fresh exception each time, so raising it again does not chain old tracebacks."""
    if isinstance(exc, type):
        return exc(f"injected fault in {method}")
    try:
        return copy.copy(exc)
    except Exception:
        return exc


def _flip_one_bit(data: bytes | memoryview, seed: int) -> bytes:
    buf = bytearray(data)  # a copy: the real drive's buffer stays as it was
    pos = (seed * 7919) % len(buf)
    buf[pos] ^= 1 << (seed % 8)
    return bytes(buf)


class FaultyShardWriter:
    """The real drive's ShardWriter with "shard.write" and "shard.finish" faulted."""

    def __init__(self, drive: FaultyDrive, real: ShardWriter) -> None:
        self._drive = drive
        self._real = real

    async def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        after = await self._drive._before("shard.write")
        await self._real.write(chunks)
        self._drive._after(after)

    async def finish(self) -> None:
        after = await self._drive._before("shard.finish")
        await self._real.finish()
        self._drive._after(after)

    async def abort(self) -> None:
        await self._real.abort()


class FaultyDrive:
    """A Drive that delegates to `real` and injects the faults armed on it."""

    def __init__(self, real: Drive) -> None:
        self.real = real
        self._lock = threading.Lock()
        self._failures: dict[str, _Failure] = {}
        self._delays: dict[str, float] = {}
        self._short: int | None = None
        self._flip_every: int | None = None
        self._reads = 0  # shard reads since flip_bits was armed
        self._flips = 0
        self._enospc = False
        self._offline = False
        self.injected: Counter[str] = Counter()

    # -- arming ---------------------------------------------------------------------------
    def fail(
        self,
        method: str,
        exc: BaseException | type[BaseException],
        times: int | None = None,
        *,
        after: bool = False,
    ) -> None:
        """Calls of `method` raise `exc` (a copy of an instance, or the class built with a
        message), the next `times` calls or until cleared. With `after`, the real call runs
        first and only its answer is replaced by the error. Replaces an earlier arming."""
        _check_method(method)
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 (or None), not {times}")
        with self._lock:
            self._failures[method] = _Failure(exc, times, after)

    def delay(self, method: str, seconds: float) -> None:
        """Every call of `method` waits `seconds` before doing anything (0 disarms)."""
        _check_method(method)
        if not seconds >= 0:
            raise ValueError(f"delay must be >= 0 seconds, not {seconds}")
        with self._lock:
            if seconds:
                self._delays[method] = seconds
            else:
                self._delays.pop(method, None)

    def short_reads(self, n_bytes: int) -> None:
        """read_shard returns at most the first `n_bytes` of what the real drive read."""
        if n_bytes < 0:
            raise ValueError(f"n_bytes must be >= 0, not {n_bytes}")
        with self._lock:
            self._short = n_bytes

    def flip_bits(self, every_nth_read: int = 1) -> None:
        """Every n-th read_shard from now on returns a copy with one bit flipped."""
        if every_nth_read < 1:
            raise ValueError(f"every_nth_read must be at least 1, not {every_nth_read}")
        with self._lock:
            self._flip_every = every_nth_read
            self._reads = 0

    def enospc(self) -> None:
        """The drive is full: calls that allocate space (ENOSPC_METHODS) raise DriveFull
        and `info` reports no free space; reads and deletes still work."""
        with self._lock:
            self._enospc = True

    def offline(self) -> None:
        """The drive is gone: every call raises DriveOffline (`info` answers online=False,
        as every Drive does) and `online` is False, until `clear`."""
        with self._lock:
            self._offline = True

    def clear(self, method: str | None = None) -> None:
        """Disarms everything, or only the failure and delay armed on `method`."""
        with self._lock:
            if method is not None:
                _check_method(method)
                self._failures.pop(method, None)
                self._delays.pop(method, None)
                return
            self._failures.clear()
            self._delays.clear()
            self._short = self._flip_every = None
            self._reads = 0
            self._enospc = self._offline = False

    # -- where faults act -------------------------------------------------------------------
    async def _before(self, method: str) -> BaseException | None:
        """Applies the faults armed for `method`; returns an error to raise after the real
        call (a fail(..., after=True)), or None."""
        with self._lock:
            if self._offline:
                self.injected["offline"] += 1
                raise DriveOffline(f"injected: drive {self.drive_id} is offline")
            pause = self._delays.get(method, 0.0)
            if pause:
                self.injected["delay"] += 1
        if pause:
            await asyncio.sleep(pause)
        with self._lock:
            if self._enospc and method in ENOSPC_METHODS:
                self.injected["enospc"] += 1
                raise DriveFull(f"injected: no space left on drive {self.drive_id}")
            armed = self._failures.get(method)
            if armed is None:
                return None
            if armed.times is not None:
                armed.times -= 1
                if armed.times == 0:
                    del self._failures[method]
            self.injected["fail"] += 1
            exc = _instance(armed.exc, method)
            if not armed.after:
                raise exc
            return exc

    @staticmethod
    def _after(exc: BaseException | None) -> None:
        if exc is not None:
            raise exc

    def _damage(self, data: bytes | memoryview) -> bytes | memoryview:
        with self._lock:
            if self._short is not None and len(data) > self._short:
                data = data[: self._short]
                self.injected["short_read"] += 1
            if self._flip_every is None:
                return data
            self._reads += 1
            if self._reads % self._flip_every or not len(data):
                return data
            self._flips += 1
            self.injected["flip"] += 1
            seed = self._flips
        return _flip_one_bit(data, seed)

    # -- the Drive protocol -----------------------------------------------------------------
    @property
    def drive_id(self) -> str:
        return self.real.drive_id

    @property
    def endpoint(self) -> str:
        return self.real.endpoint

    @property
    def is_local(self) -> bool:
        return self.real.is_local

    @property
    def online(self) -> bool:
        return not self._offline and self.real.online

    async def info(self) -> DriveInfo:
        with self._lock:
            offline = self._offline
            if offline:
                self.injected["offline"] += 1
        if offline:  # info never raises on any Drive: it is how callers learn the state
            return DriveInfo(self.drive_id, self.endpoint, False, 0, 0, 0)
        after = await self._before("info")
        got = await self.real.info()
        self._after(after)
        if self._enospc:
            return DriveInfo(got.drive_id, got.endpoint, got.online, got.total, 0, got.errors)
        return got

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        after = await self._before(method)
        result = await getattr(self.real, method)(*args, **kwargs)
        self._after(after)
        return result

    async def make_bucket(self, bucket: str, created: int) -> None:
        await self._call("make_bucket", bucket, created)

    async def delete_bucket(self, bucket: str, *, force: bool = False) -> None:
        await self._call("delete_bucket", bucket, force=force)

    async def list_buckets(self) -> dict[str, int]:
        return await self._call("list_buckets")

    async def bucket_exists(self, bucket: str) -> bool:
        return await self._call("bucket_exists", bucket)

    async def open_shard(self, bucket: str, vid: str, part: int) -> ShardWriter:
        return FaultyShardWriter(self, await self._call("open_shard", bucket, vid, part))

    async def commit(self, bucket: str, key: str, meta: ObjectMeta, inline: bytes | None) -> None:
        await self._call("commit", bucket, key, meta, inline)

    async def abort(self, bucket: str, vid: str) -> None:
        await self._call("abort", bucket, vid)

    async def install(self, bucket: str, vid: str) -> None:
        await self._call("install", bucket, vid)

    async def read_meta(self, bucket: str, key: str) -> MetaRecord:
        return await self._call("read_meta", bucket, key)

    async def read_shard(
        self, bucket: str, vid: str, part: int, offset: int, length: int
    ) -> bytes | memoryview:
        return self._damage(await self._call("read_shard", bucket, vid, part, offset, length))

    async def delete(
        self,
        bucket: str,
        key: str,
        *,
        vid: str | None = None,
        tombstone: ObjectMeta | None = None,
    ) -> None:
        await self._call("delete", bucket, key, vid=vid, tombstone=tombstone)

    async def scan(
        self, bucket: str, prefix: str, start_after: str, limit: int, *, every: bool = False
    ) -> list[tuple[str, bytes]]:
        return await self._call("scan", bucket, prefix, start_after, limit, every=every)

    async def scan_digest(
        self, bucket: str, prefix: str, start_after: str, limit: int, *, every: bool = False
    ) -> ScanDigest:
        return await self._call("scan_digest", bucket, prefix, start_after, limit, every=every)

    async def complete_upload(
        self,
        bucket: str,
        key: str,
        uid: str,
        meta: ObjectMeta,
        table: bytes,
        tombstone: ObjectMeta,
        tomb_inline: bytes,
    ) -> None:
        await self._call("complete_upload", bucket, key, uid, meta, table, tombstone, tomb_inline)

    async def lock(self, resource: str, owner: str, ttl: float) -> bool:
        return await self._call("lock", resource, owner, ttl)

    async def unlock(self, resource: str, owner: str) -> None:
        await self._call("unlock", resource, owner)

    def snapshot(self) -> DriveInfo:
        real = self.real.snapshot()
        return DriveInfo(real.drive_id, real.endpoint, self.online, real.total, real.free,
                         real.errors)  # fmt: skip

    def background(self) -> FaultyDrive:
        """Itself: faults injected on command apply to background work too (the wrapped
        drive's own background view is not used)."""
        return self
