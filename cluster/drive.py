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
    └── ShardNotFound     metadata present but the shard data is missing
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import msgpack

from cluster.meta import ObjectMeta


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


class ShardNotFound(DriveError):
    pass


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


@runtime_checkable
class Drive(Protocol):
    drive_id: str
    endpoint: str
    is_local: bool

    @property
    def online(self) -> bool: ...

    async def info(self) -> DriveInfo: ...

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

    async def read_meta(self, bucket: str, key: str) -> MetaRecord: ...

    async def read_shard(
        self, bucket: str, vid: str, part: int, offset: int, length: int
    ) -> bytes | memoryview:
        """Up to `length` bytes of a shard file at `offset` (a read-only view may alias a
        buffer the drive will not touch again)."""

    async def delete(self, bucket: str, key: str, *, vid: str | None = None) -> None:
        """Removes the key (only if its current version is `vid`, when given)."""

    async def scan(
        self, bucket: str, prefix: str, start_after: str, limit: int
    ) -> list[tuple[str, bytes]]:
        """Up to `limit` (key, packed meta) with key > start_after and key.startswith(prefix),
        sorted. Packed, because listing compares copies without decoding them."""

    async def scan_digest(
        self, bucket: str, prefix: str, start_after: str, limit: int
    ) -> ScanDigest:
        """`scan_digest` of what `scan` would return: listing reads the rows from one drive
        and checks the others against them without moving their rows."""


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

    def __getattr__(self, name: str) -> object:
        async def offline(*args: object, **kwargs: object) -> None:
            raise DriveOffline(self.reason)

        return offline
