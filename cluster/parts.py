"""A multipart object's part table: which part versions make up the object, in order.

Every part of a multipart upload is stored as its own immutable part version (a `pvid`,
erasure-coded as it arrived, each part starting a fresh stripe in its own shard file), so
completing an upload writes only this table, never part data. The object's ObjectMeta
carries the part count and the table's digest; the table itself is the key's inline row on
every drive of the set (a 10,000-part table is ~0.5 MB: far too big for the listed record,
small enough for one row). Tables are immutable per object version.

Packed as a msgpack list of fixed-width byte strings (one C-speed decode, no per-part
objects): numbers (u16 big-endian), sizes (u64), pvids (16 raw bytes), md5s (16 raw
bytes), checksums (raw digests of one algorithm's width, or empty) and that width.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

import msgpack

_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    size: int
    pvid: str  # the part version's id: its shards are data/<bucket>+mp/<pvid[:2]>/<pvid>/part.1
    md5: bytes  # raw MD5 of the part's bytes (its ETag)
    checksum: bytes = b""  # raw digest of the upload's checksum algorithm, if it has one


@dataclass(frozen=True, slots=True)
class PartTable:
    parts: tuple[Part, ...]
    offsets: tuple[int, ...] = field(default=(), compare=False)  # where each part starts

    def __post_init__(self) -> None:
        if not self.offsets:
            starts = tuple(accumulate((p.size for p in self.parts), initial=0))[:-1]
            object.__setattr__(self, "offsets", starts)

    @property
    def size(self) -> int:
        return self.offsets[-1] + self.parts[-1].size if self.parts else 0

    def pack(self) -> bytes:
        width = len(self.parts[0].checksum) if self.parts else 0
        if any(len(p.checksum) != width for p in self.parts):
            raise ValueError("a part table's checksums must all have one width")
        return msgpack.packb(
            [
                _FORMAT,
                b"".join(p.number.to_bytes(2, "big") for p in self.parts),
                b"".join(p.size.to_bytes(8, "big") for p in self.parts),
                b"".join(bytes.fromhex(p.pvid) for p in self.parts),
                b"".join(p.md5 for p in self.parts),
                b"".join(p.checksum for p in self.parts),
                width,
            ]
        )

    @classmethod
    def unpack(cls, data: bytes) -> PartTable:
        """Raises ValueError for anything that is not a well-formed table."""
        try:
            fmt, numbers, sizes, pvids, md5s, checksums, width = msgpack.unpackb(data)
        except Exception as exc:
            raise ValueError(f"not a part table ({type(exc).__name__})") from None
        n = len(numbers) // 2
        if (
            fmt != _FORMAT
            or not all(isinstance(b, bytes) for b in (numbers, sizes, pvids, md5s, checksums))
            or not isinstance(width, int)
            or len(numbers) != 2 * n
            or len(sizes) != 8 * n
            or len(pvids) != 16 * n
            or len(md5s) != 16 * n
            or len(checksums) != width * n
        ):
            raise ValueError("malformed part table")
        parts = tuple(
            Part(
                int.from_bytes(numbers[2 * i : 2 * i + 2], "big"),
                int.from_bytes(sizes[8 * i : 8 * i + 8], "big"),
                pvids[16 * i : 16 * i + 16].hex(),
                md5s[16 * i : 16 * i + 16],
                checksums[width * i : width * (i + 1)],
            )
            for i in range(n)
        )
        return cls(parts)

    def digest(self) -> bytes:
        return table_digest(self.pack())

    def locate(self, offset: int) -> int:
        """The index of the part holding object byte `offset`."""
        return bisect_right(self.offsets, offset) - 1

    def pvids(self) -> set[str]:
        return {p.pvid for p in self.parts}


def table_digest(packed: bytes) -> bytes:
    return hashlib.blake2b(packed, digest_size=16).digest()


def multipart_etag(md5s: list[bytes]) -> str:
    """S3's ETag of a multipart object: MD5 of the parts' binary MD5s, dash, part count."""
    return f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(md5s)}"


def table_pvids(packed: bytes) -> set[str]:
    """The part versions a packed table references (for a drive retiring the object)."""
    return PartTable.unpack(packed).pvids()


def mp_volume(bucket: str) -> str:
    """The drive volume of a bucket's multipart uploads and parts.

    "+" cannot appear in a bucket name, so the volume never collides with a bucket; a
    drive treats it as existing exactly while the bucket does, lists only the bucket, and
    removes both together."""
    return bucket + MP_SUFFIX


MP_SUFFIX = "+mp"


def volume_bucket(volume: str) -> str:
    """The bucket a drive volume belongs to (itself, or the bucket of a "+mp" volume)."""
    return volume[: -len(MP_SUFFIX)] if volume.endswith(MP_SUFFIX) else volume


# -- the "+mp" volume's keys ------------------------------------------------------------------
# An upload's record is "u" + key + NUL + uid: uploads list in key order, and one key's in
# initiation order (the uid starts with the initiation stamp). A part version is the
# object "p" + uid + "/" + five-digit part number: re-sending a part is an overwrite of that
# object, with a PUT's atomicity and newest-wins order.
UPLOAD_PREFIX = "u"
PART_PREFIX = "p"
UID_LEN = 32
#: the ETag of an upload record that a completion turned into a tombstone (an open
#: record's is empty): listings tell them apart without decoding the record
TOMBSTONE_ETAG = "completed"


def upload_key(key: str, uid: str) -> str:
    return f"{UPLOAD_PREFIX}{key}\x00{uid}"


def split_upload_key(stored: str) -> tuple[str, str]:
    """(key, uid) of an upload record's key."""
    return stored[len(UPLOAD_PREFIX) : -UID_LEN - 1], stored[-UID_LEN:]


def parts_prefix(uid: str) -> str:
    return f"{PART_PREFIX}{uid}/"


def part_key(uid: str, number: int) -> str:
    return f"{parts_prefix(uid)}{number:05d}"


def is_tombstone(record: object) -> bool:
    return getattr(record, "etag", "") == TOMBSTONE_ETAG
