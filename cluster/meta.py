"""Object metadata as every drive of a set stores it, and the quorum choice among copies.

The record is identical on every drive of the set (the drive's shard index comes from
`dist` and the drive's position), so copies can be compared for equality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import msgpack

_VERSION = 1
_VERSION_PARTS = 2  # a multipart object: format 1's fields, then the part count and digest
_VERSION_DELETED = 3  # a tombstone: [3, vid, mtime], what a DELETE leaves


@dataclass(slots=True)
class ObjectMeta:
    vid: str  # version id: names the data directory on every drive
    mtime: int  # hybrid-logical-clock stamp, ns
    size: int
    etag: str  # hex MD5 (no quotes)
    k: int
    m: int
    stripe: int  # stripe size in object bytes
    dist: list[int]  # dist[set position] = shard index held by the drive at that position
    inline: bool = False  # shards live inside the drives' metadata records
    content_type: str = "binary/octet-stream"
    user: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* (lowercase names)
    headers: dict[str, str] = field(default_factory=dict)  # Cache-Control, Content-Encoding...
    #: a multipart object's part count; its part table (cluster/parts.py) is the key's
    #: inline row on every drive, and `parts_digest` (blake2b-16 of the packed table) is
    #: compared by quorum with the rest of the record, so one holder's table suffices
    parts: int = 0
    parts_digest: bytes = b""
    #: a tombstone: the key was deleted at `mtime` (its HLC stamp); only vid and mtime
    #: count. It stays on the drives the DELETE reached so that a drive that missed the
    #: delete, or a heal that read the old version before it, can never bring the key back:
    #: the old version is older (ObjectMeta.order) and loses everywhere it meets this.
    deleted: bool = False

    @classmethod
    def tombstone(cls, vid: str, mtime: int) -> ObjectMeta:
        return cls(vid, mtime, 0, "", 0, 0, 0, [], deleted=True)

    def pack(self) -> bytes:
        """Format 1 (byte for byte as before multipart) unless the object has parts, so
        single-part records of mixed-version nodes still compare equal."""
        if self.deleted:
            return msgpack.packb([_VERSION_DELETED, self.vid, self.mtime])
        fields = [
            _VERSION,
            self.vid,
            self.mtime,
            self.size,
            self.etag,
            self.k,
            self.m,
            self.stripe,
            self.dist,
            self.inline,
            self.content_type,
            self.user,
            self.headers,
        ]
        if self.parts:
            fields[0] = _VERSION_PARTS
            fields += [self.parts, self.parts_digest]
        return msgpack.packb(fields)

    @classmethod
    def unpack(cls, data: bytes) -> ObjectMeta:
        fields = msgpack.unpackb(data)
        if fields[0] == _VERSION and len(fields) == 13:
            return cls(*fields[1:])
        if fields[0] == _VERSION_PARTS and len(fields) == 15:
            return cls(*fields[1:])
        if fields[0] == _VERSION_DELETED and len(fields) == 3:
            return cls.tombstone(fields[1], fields[2])
        raise ValueError(f"unknown metadata version {fields[0]}")

    @property
    def order(self) -> tuple[int, str]:
        """Newest wins: HLC stamp, ties broken by version id."""
        return (self.mtime, self.vid)

    def shard_index(self, position: int) -> int:
        return self.dist[position]


def pick_agreed(metas: Sequence[ObjectMeta | None], quorum: int) -> ObjectMeta | None:
    """The newest of: the versions held by at least `quorum` drives, and the tombstones
    held by any drive; None if there is neither. A tombstone may be the answer (the key
    is deleted): callers check `.deleted`.

    A version on fewer drives is a write that did not reach quorum (or is still being
    healed) and is never served. A tombstone counts from one copy: a DELETE that reached
    any drive may have been acknowledged (on drives now down), and either outcome of one
    that failed is allowed; a heal then carries it to the drives that lack it.
    """
    counts: dict[tuple[int, str], int] = {}
    first: dict[tuple[int, str], ObjectMeta] = {}
    for meta in metas:
        if meta is None:
            continue
        counts[meta.order] = counts.get(meta.order, 0) + 1
        first.setdefault(meta.order, meta)
    agreed = [o for o, count in counts.items() if count >= quorum or first[o].deleted]
    return first[max(agreed)] if agreed else None


def is_deleted_packed(packed: bytes) -> bool:
    """Whether a packed record is a tombstone, without decoding it (listing hot path)."""
    return packed[1:2] == b"\x03" and packed[:1] == b"\x93"


def pick_agreed_packed(copies: Sequence[bytes], quorum: int) -> ObjectMeta | None:
    """pick_agreed over packed records: identical versions pack to identical bytes, so
    copies are counted without decoding and only the winner is unpacked (listing hot path)."""
    counts: dict[bytes, int] = {}
    for packed in copies:
        counts[packed] = counts.get(packed, 0) + 1
    agreed = [p for p, count in counts.items() if count >= quorum or is_deleted_packed(p)]
    if not agreed:
        return None
    if len(agreed) == 1:
        return ObjectMeta.unpack(agreed[0])
    return max((ObjectMeta.unpack(p) for p in agreed), key=lambda m: m.order)


def summary(packed: bytes) -> tuple[int, str, int]:
    """(mtime, etag, size) straight from a packed record: what a listing shows."""
    fields = msgpack.unpackb(packed)
    return fields[2], fields[4], fields[3]
