"""The Drive protocol: what the object layer needs from one drive, local or remote.

The object layer never knows whether a drive is a directory on this host (`LocalDrive`,
node/storage) or a peer's drive reached over QUIC. Every method may raise a DriveError;
the object layer treats any of them as "this drive did not answer" and lets quorum decide.

    DriveError
    ├── DriveOffline      the drive is missing, unformatted, or marked faulty
    ├── DriveFull         no space left
    ├── DriveIOError      any other I/O failure
    ├── VolumeNotFound    the bucket does not exist on this drive
    ├── VolumeExists      make_bucket of an existing bucket
    ├── VolumeNotEmpty    delete_bucket of a bucket that still holds objects
    ├── FileNotFound      no metadata for that key (or not that version)
    │   └── NotYetHealed  ... on a drive formatted empty and not fully healed since: no
    │                     evidence that the key is absent (read_meta), nor listing rows
    ├── ShardNotFound     metadata present but the shard data is missing
    └── StaleVersion      commit of a version older than the key's current one (refused)

Besides data, a drive keeps short per-key leases (`lock` / `unlock`, a `LeaseTable` in
memory): cluster/keylock.py takes a key's lock on a majority of its set's drives so that a
conditional write can check and commit without a concurrent writer in between.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import msgpack

from shardfleet.cluster.meta import ObjectMeta


class DriveError(Exception):
    pass


class DriveOffline(DriveError):
    pass


class DriveFull(DriveError):
    pass


class DriveIOError(DriveError):
    pass


class VolumeNotFound(DriveError):
    pass


class VolumeExists(DriveError):
    pass


class VolumeNotEmpty(DriveError):
    pass


class FileNotFound(DriveError):
    pass


class NotYetHealed(FileNotFound):
    """The drive was formatted empty into its slot (a replaced or wiped disk) and has not
    been fully healed since. It answers what it already holds, but its "no such key" and
    its listing rows prove nothing: the key may be one the healer has not reached yet.
    Quorum decisions about absence leave it out (cluster/get.resolve, cluster/listing)."""


class ShardNotFound(DriveError):
    pass


class StaleVersion(DriveError):
    """A commit was refused: the drive holds a newer version of the key (ObjectMeta.order).
    The drive is fine and up to date; the refused version left nothing behind."""


@dataclass(frozen=True, slots=True)
class DriveInfo:
    drive_id: str
    endpoint: str
    online: bool
    total: int
    free: int
    errors: int


@dataclass(frozen=True, slots=True)
class MetaRecord:
    """What a drive holds for one key: the metadata and, for small objects, its shard."""

    meta: ObjectMeta
    inline: bytes | None = None


class ShardWriter(Protocol):
    async def write(self, chunks: Sequence[bytes | memoryview]) -> None: ...

    async def finish(self) -> None:
        """Makes the shard durable (fsync). The shard stays staged until `commit`."""

    async def abort(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ScanDigest:
    """A scan's rows summarised: replicas that agree send 30 bytes instead of the rows."""

    count: int
    last_key: str
    digest: bytes


def scan_digest(rows: list[tuple[str, bytes]]) -> ScanDigest:
    """The digest of `scan` rows; equal rows give equal digests on every node."""
    digest = hashlib.blake2b(msgpack.packb(rows), digest_size=16).digest()
    return ScanDigest(len(rows), rows[-1][0] if rows else "", digest)


MAX_LOCK_TTL = 300.0  # seconds; a lease asked for longer is refused as bad input
MAX_LOCK_RESOURCE = 2048  # bytes of a resource name (bucket/key: 63 + 1 + 1024 at most)
MAX_LOCK_OWNER = 128  # bytes of an owner token
LEASE_TABLE_CAP = 50_000  # leases one drive holds at most; grants beyond are refused
LEASE_SWEEP_INTERVAL = 1.0  # seconds between full sweeps of expired leases


class LeaseTable:
    """A drive's leases: resource -> (owner, expiry on the monotonic clock).

    Nothing here touches a disk or waits: every call is a dict operation on the event loop
    (a sweep of expired leases runs at most once per LEASE_SWEEP_INTERVAL, O(table)). The
    table is bounded: past `cap` live leases a grant of a new resource is refused (the
    caller sees a conflict and backs off) instead of growing without bound. At the cap and
    with the longest resource names that is ~120 MB; real tables hold one lease per
    conditional write in flight, a few KiB.
    """

    def __init__(
        self, cap: int = LEASE_TABLE_CAP, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._leases: dict[str, tuple[str, float]] = {}
        self._cap = cap
        self._clock = clock
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._leases)

    def grant(self, resource: str, owner: str, ttl: float) -> bool:
        """True (and the lease runs `ttl` seconds from now) if `resource` is free, its lease
        expired, or `owner` already holds it (a renewal); False if another owner holds it."""
        if not 0 < ttl <= MAX_LOCK_TTL:  # also refuses NaN
            raise ValueError(f"lease ttl {ttl!r} outside (0, {MAX_LOCK_TTL:.0f}]")
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        held = self._leases.get(resource)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        if held is None and len(self._leases) >= self._cap:
            return False
        self._leases[resource] = (owner, now + ttl)
        return True

    def release(self, resource: str, owner: str) -> None:
        """Drops the lease if `owner` holds it; anything else (free, another owner's) stays."""
        held = self._leases.get(resource)
        if held is not None and held[0] == owner:
            del self._leases[resource]

    def holder(self, resource: str) -> str | None:
        """The owner of a live lease on `resource`, or None."""
        held = self._leases.get(resource)
        return held[0] if held is not None and held[1] > self._clock() else None

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + LEASE_SWEEP_INTERVAL
        expired = [r for r, (_, until) in self._leases.items() if until <= now]
        for resource in expired:
            del self._leases[resource]


@runtime_checkable
class Drive(Protocol):
    drive_id: str
    endpoint: str
    is_local: bool

    @property
    def online(self) -> bool: ...

    async def info(self) -> DriveInfo: ...

    def snapshot(self) -> DriveInfo:
        """What the drive knows of itself without I/O (free space from its last probe; 0s
        where it knows none, as a remote drive today): for scrapes and status pages."""
        ...

    async def make_bucket(self, bucket: str, created: int) -> None: ...

    async def delete_bucket(self, bucket: str, *, force: bool = False) -> None: ...

    async def list_buckets(self) -> dict[str, int]:
        """Bucket name -> creation time (ns)."""

    async def bucket_exists(self, bucket: str) -> bool: ...

    async def open_shard(self, bucket: str, vid: str, part: int) -> ShardWriter: ...

    async def commit(self, bucket: str, key: str, meta: ObjectMeta, inline: bytes | None) -> None:
        """Atomically makes `meta` (and its staged shards or inline shard) the key's current
        version; the previous version's data is removed after the commit is durable."""

    async def abort(self, bucket: str, vid: str) -> None:
        """Drops shards staged for a version that will not be committed."""

    async def install(self, bucket: str, vid: str) -> None:
        """Installs shards staged (open_shard) for a version the drive's index already
        references, replacing its files atomically; FileNotFound (staged files dropped) when
        it references none. How a healer rewrites a shard without touching metadata."""

    async def read_meta(self, bucket: str, key: str) -> MetaRecord: ...

    async def read_shard(
        self, bucket: str, vid: str, part: int, offset: int, length: int
    ) -> bytes | memoryview:
        """Up to `length` bytes of a shard file at `offset` (a read-only view may alias a
        buffer the drive will not touch again)."""

    async def delete(
        self,
        bucket: str,
        key: str,
        *,
        vid: str | None = None,
        tombstone: ObjectMeta | None = None,
    ) -> None:
        """With a `tombstone` (ObjectMeta.tombstone, a DELETE): the key's record becomes the
        tombstone (made if there was none) and its version's data goes, unless the record
        is newer than the tombstone (StaleVersion: a later write wins) or is that tombstone
        already (a retry). `vid` is then ignored: the tombstone's stamp says what it deletes.

        Without one: the record is removed outright, a tombstone too (an undone PUT, a
        collected tombstone); FileNotFound if there is none, or, with `vid`, if the
        record's version is not `vid`."""

    async def scan(
        self, bucket: str, prefix: str, start_after: str, limit: int, *, every: bool = False
    ) -> list[tuple[str, bytes]]:
        """Up to `limit` (key, packed meta) with key > start_after and key.startswith(prefix),
        sorted. Packed, because listing compares copies without decoding them. A drive not
        healed yet answers NotYetHealed unless `every` (the scanner: its rows are copies
        all the same, and the scanner is what heals it)."""

    async def scan_digest(
        self, bucket: str, prefix: str, start_after: str, limit: int, *, every: bool = False
    ) -> ScanDigest:
        """`scan_digest` of what `scan` would return: listing reads the rows from one drive
        and checks the others against them without moving their rows."""

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
        """Completes multipart upload `uid` of bucket/key on this drive, in one index
        transaction: `meta` (a multipart record, `table` its packed part table) becomes the
        key's version unless a newer one is current (StaleVersion; the upload is done all
        the same), the upload's chosen part versions pass to the key, every other attempt
        is retired, and the upload's record becomes `tombstone` (with `tomb_inline`, what a
        roll-forward re-sends). No shard data moves. A retry of the same completion
        succeeds; an unknown upload, or one completed as another version, is FileNotFound."""

    async def lock(self, resource: str, owner: str, ttl: float) -> bool:
        """Grants `owner` a lease on `resource` for `ttl` seconds (0 < ttl <= MAX_LOCK_TTL).

        True if the resource was free, its lease had expired, or `owner` already held it
        (the lease is renewed); False while another owner's lease is live. Leases live in
        memory (a `LeaseTable`, monotonic clock), never on disk.

        Why memory is safe enough: a lock is only ever taken on a strict majority
        q = n//2 + 1 of a set's n drives (cluster/keylock.py), and two majorities share a
        drive, which grants one owner at a time. A drive that restarts forgets its leases,
        so a second owner can win while the first still holds the lock only if enough of
        the first owner's drives restarted inside its critical section: 2q - n of them
        when it was granted by exactly q drives (one drive for odd n, two for even n;
        more grants, more margin). A node restart takes all of that node's drives in the
        set at once, so with several drives per node per set one node restarting during
        someone's critical section (at most seconds, see keylock.py) can break mutual
        exclusion for that one key. Persisting leases would not be worth a disk write per
        conditional request; a restarted drive refusing grants for MAX_LOCK_TTL would close
        the gap at the price of conditional writes after restarts. Leases also bound the
        damage of a holder that dies: its lock is free again after `ttl`.
        """

    async def unlock(self, resource: str, owner: str) -> None:
        """Releases `owner`'s lease on `resource`; a no-op if `owner` does not hold it
        (already released, expired, or taken over by another owner)."""

    def background(self) -> Drive:
        """The same drive for background work (heal, scan): a remote drive's calls go on
        the peer's background connection, their bodies paced to the transport's
        `background_rate`; a local drive is itself (its disk is not paced here)."""
        ...


class OfflineDrive:
    """Stands in a set slot whose drive is missing: every call fails as DriveOffline."""

    is_local = True
    online = False

    def __init__(self, drive_id: str, endpoint: str, reason: str) -> None:
        self.drive_id = drive_id
        self.endpoint = endpoint
        self.reason = reason

    async def info(self) -> DriveInfo:
        return DriveInfo(self.drive_id, self.endpoint, False, 0, 0, 0)

    def background(self) -> OfflineDrive:
        return self

    def snapshot(self) -> DriveInfo:
        return DriveInfo(self.drive_id, self.endpoint, False, 0, 0, 0)

    def __getattr__(self, name: str) -> object:
        async def offline(*args: object, **kwargs: object) -> None:
            raise DriveOffline(self.reason)

        return offline
