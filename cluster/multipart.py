"""Multipart uploads in one erasure set: create, parts, list, complete, abort, list uploads.

Everything an upload has lives on the drives of its key's set, in the bucket's "+mp" volume
(cluster/parts.py names the keys):

    u<key> NUL <uid>        the upload's record: an empty inline ObjectMeta whose content
                            type, metadata, headers and distribution the object will get
    p<uid>/<NNNNN>          part N's current attempt, an ordinary streamed object version

So a part is a PUT: erasure-coded as it arrives, staged and committed with a PUT's crash
safety, and a part sent again (or twice at once) replaces the older attempt atomically,
newest first, like an overwrite. Part commits, completion and abort of one upload take
the upload's lock (cluster/keylock.py), so no part lands while a completion reads the
parts and commits, and none after an abort.

Completion writes metadata only: every drive, in one index transaction
(`Drive.complete_upload`), makes the object a multipart version whose part table names
the chosen part versions, hands those to the key, retires the rest and turns the upload
record into a tombstone carrying that version. There is no undo once one drive has done
so: a completion that reached fewer than W drives (a crash, a lost node) is finished by
rolling it forward, with the very same version, from a tombstone, by a retried Complete,
an Abort or the sweeper (healing/uploads.py). A reader meanwhile sees the old object or
the new one, whole: parts were durable before completion started and are never moved.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack

from shardfleet.cluster.drive import FileNotFound, StaleVersion, VolumeNotFound
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import NoSuchBucket, NoSuchKey, NoSuchUpload, WriteQuorumLost
from shardfleet.cluster.get import Getter
from shardfleet.cluster.hlc import HybridClock
from shardfleet.cluster.keylock import hold
from shardfleet.cluster.listing import PAST, list_objects
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.cluster.parts import (
    TOMBSTONE_ETAG,
    UID_LEN,
    UPLOAD_PREFIX,
    Part,
    PartTable,
    is_tombstone,
    mp_volume,
    part_key,
    parts_prefix,
    split_upload_key,
    upload_key,
)
from shardfleet.cluster.placement import distribution
from shardfleet.cluster.put import Body, PartialHook, PutRequest, Putter
from shardfleet.cluster.quorum import fan_out, reach_quorum

MAX_PARTS = 10_000
COMPLETE_LOCK_TTL = 60.0  # a completion reads the upload and its parts, then commits
PAGE = 1000


def new_upload_id(stamp: int, pool: int) -> str:
    """32 hex digits (a version id's shape): the initiation stamp first, so one key's
    uploads list in initiation order, then the pool the upload's parts go to."""
    return f"{stamp:016x}{pool:02x}{int.from_bytes(os.urandom(7), 'big'):014x}"


def upload_pool(uid: str) -> int:
    """The pool an upload id names; NoSuchUpload for anything not shaped like one."""
    if len(uid) != UID_LEN or any(c not in "0123456789abcdef" for c in uid):
        raise NoSuchUpload(uid)
    return int(uid[16:18], 16)


@dataclass(slots=True)
class Completion:
    """What the S3 layer decided from the client's part list (after validating it)."""

    parts: list[ObjectMeta]  # the chosen part versions, in object order
    numbers: list[int]
    etag: str
    headers: dict[str, str] = field(default_factory=dict)  # checksum headers of the object
    checksums: list[bytes] = field(default_factory=list)  # raw per-part digests, or empty
    list_digest: bytes = b""  # of the client's list: a repeated Complete is recognised


#: given the upload record and its current parts (by number), returns the completion or
#: raises the S3 error for a list that cannot complete (nothing changed yet)
Choose = Callable[[ObjectMeta, dict[int, ObjectMeta]], Completion]


@dataclass(slots=True)
class Completed:
    meta: ObjectMeta  # the object version the upload became
    list_digest: bytes
    repeated: bool = False  # the upload had been completed before this request


@dataclass(slots=True)
class UploadEntry:
    key: str
    uid: str
    initiated: int  # HLC stamp, ns


@dataclass(slots=True)
class UploadPage:
    uploads: list[UploadEntry] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    next_key: str = ""
    next_uid: str = ""


def list_digest(pairs: list[tuple[int, str]]) -> bytes:
    return hashlib.blake2b(msgpack.packb(pairs), digest_size=16).digest()


class Uploads:
    """The multipart operations on one set (like Putter and Getter, built per call)."""

    def __init__(self, eset: ErasureSet, clock: HybridClock, on_partial: PartialHook) -> None:
        self.eset = eset
        self.clock = clock
        self.on_partial = on_partial

    def _lock(self, bucket: str, key: str, uid: str, **kw: float):  # noqa: ANN202
        return hold(self.eset, mp_volume(bucket), upload_key(key, uid), **kw)

    async def forget(self, bucket: str, key: str, uid: str) -> None:
        """Drops a completed upload's tombstone, after rolling its completion forward once
        more (a drive that missed it and is back gets it now). NoSuchUpload for an upload
        that is still open."""
        eset = self.eset
        volume, ukey = mp_volume(bucket), upload_key(key, uid)
        async with self._lock(bucket, key, uid):
            if await self._roll_forward_if_completed(bucket, key, uid) is None:
                raise NoSuchUpload(uid)
            await reach_quorum(
                [(lambda d=d: d.delete(volume, ukey)) for d in eset.drives],
                need=eset.write_quorum,
                timeout=eset.timeouts.meta,
                grace=eset.timeouts.meta_grace,
                what="forget a completed upload",
                counts=(FileNotFound, VolumeNotFound),
            )

    # -- create ---------------------------------------------------------------------------
    async def create(
        self,
        bucket: str,
        key: str,
        *,
        pool: int,
        content_type: str,
        user: dict[str, str],
        headers: dict[str, str],
    ) -> str:
        eset = self.eset
        p = eset.params
        stamp = self.clock.now()
        uid = new_upload_id(stamp, pool)
        record = ObjectMeta(
            vid=uid,
            mtime=stamp,
            size=0,
            etag="",
            k=p.k,
            m=p.m,
            stripe=p.stripe_size,
            dist=distribution(eset.cluster_id, bucket, key, p.n),
            inline=True,
            content_type=content_type,
            user=user,
            headers=headers,
        )
        volume, ukey = mp_volume(bucket), upload_key(key, uid)
        await reach_quorum(
            [(lambda d=d: d.commit(volume, ukey, record, b"")) for d in eset.drives],
            need=eset.write_quorum,
            timeout=eset.timeouts.meta,
            grace=eset.timeouts.meta_grace,
            what="create multipart upload",
            on_short=functools.partial(_no_bucket, eset.read_quorum),
        )
        return uid

    # -- the upload record ---------------------------------------------------------------
    async def record(self, bucket: str, key: str, uid: str) -> ObjectMeta:
        """The open upload's record; NoSuchUpload if it is unknown, aborted or completed."""
        try:
            handle = await Getter(self.eset, _no_hook).open(mp_volume(bucket), upload_key(key, uid))
        except NoSuchKey:
            raise NoSuchUpload(uid) from None
        except NoSuchBucket:
            raise NoSuchBucket(bucket) from None
        if is_tombstone(handle.meta):
            raise NoSuchUpload(uid)
        return handle.meta

    # -- parts ----------------------------------------------------------------------------
    async def upload_part(
        self,
        bucket: str,
        key: str,
        uid: str,
        number: int,
        body: Body,
        *,
        size: int,
        content_md5: bytes | None,
        headers: dict[str, str],
        opened: ObjectMeta | None = None,
    ) -> ObjectMeta:
        """Stores part `number` (streamed, never inline) and makes it the part's current
        attempt if the upload is still open when it commits; returns the part's record."""
        if opened is None:
            await self.record(bucket, key, uid)  # fail before the body is read

        async def still_open() -> None:
            # every drive's record, not a quorum's: a completion that reached only some
            # drives (its coordinator died) has decided the upload, and no part may land
            # after it (it would stay behind on the drives that completed)
            if await self._roll_forward_if_completed(bucket, key, uid) is not None:
                raise NoSuchUpload(uid)
            await self.record(bucket, key, uid)

        volume = mp_volume(bucket)
        req = PutRequest(
            bucket=volume,
            key=part_key(uid, number),
            size=size,
            headers=headers,
            content_md5=content_md5,
            guard=still_open,
            lock=(volume, upload_key(key, uid)),
            place_as=(bucket, key),
            streamed=True,
        )

        def missed(volume: str, pkey: str, vid: str, positions: list[int]) -> None:
            # the part lives in its object's set, not the set its own key would hash to
            self.on_partial(volume, pkey, vid, positions, place=(bucket, key))

        return await Putter(self.eset, self.clock, missed, lock_set=self.eset).put(req, body)

    async def list_parts(
        self, bucket: str, key: str, uid: str, *, after: int, limit: int
    ) -> tuple[ObjectMeta, list[tuple[int, ObjectMeta]], bool]:
        """(record, [(number, part record)] after part `after`, truncated)."""
        record = await self.record(bucket, key, uid)
        parts, truncated = await self._parts(bucket, uid, after, limit)
        return record, parts, truncated

    async def _parts(
        self, bucket: str, uid: str, after: int, limit: int
    ) -> tuple[list[tuple[int, ObjectMeta]], bool]:
        prefix = parts_prefix(uid)
        out: list[tuple[int, ObjectMeta]] = []
        marker = part_key(uid, after) if after else ""
        while len(out) < limit:
            page = await list_objects(
                self.eset,
                mp_volume(bucket),
                prefix=prefix,
                delimiter="",
                start_after=marker,
                max_keys=min(PAGE, limit - len(out)),
                metas=True,
            )
            for (stored, *_), meta in zip(page.objects, page.metas, strict=True):
                out.append((int(stored[len(prefix) :]), meta))
            if not page.truncated:
                return out, False
            marker = page.next_marker
        return out, True

    # -- complete -------------------------------------------------------------------------
    async def complete(self, bucket: str, key: str, uid: str, choose: Choose) -> Completed:
        eset = self.eset
        async with self._lock(bucket, key, uid, ttl=COMPLETE_LOCK_TTL):
            done = await self._roll_forward_if_completed(bucket, key, uid)
            if done is not None:
                return done
            record = await self.record(bucket, key, uid)
            parts, _ = await self._parts(bucket, uid, 0, MAX_PARTS + 1)
            completion = choose(record, dict(parts))
            table = PartTable(
                tuple(
                    Part(n, pm.size, pm.vid, bytes.fromhex(pm.etag), cs)
                    for n, pm, cs in zip(
                        completion.numbers,
                        completion.parts,
                        completion.checksums or [b""] * len(completion.parts),
                        strict=True,
                    )
                )
            )
            packed = table.pack()
            meta = ObjectMeta(
                vid=uuid.uuid4().hex,
                mtime=self.clock.now(),
                size=table.size,
                etag=completion.etag,
                k=record.k,
                m=record.m,
                stripe=record.stripe,
                dist=list(record.dist),
                inline=False,
                content_type=record.content_type,
                user=dict(record.user),
                headers=dict(record.headers) | completion.headers,
                parts=len(table.parts),
                parts_digest=table.digest(),
            )
            tombstone, tomb_inline = _tombstone(record, meta, packed, completion.list_digest)
            done_at, errors = await fan_out(
                [
                    (lambda d=d: d.complete_upload(
                        bucket, key, uid, meta, packed, tombstone, tomb_inline
                    ))
                    for d in eset.drives
                ],
                timeout=eset.timeouts.meta,
                need=eset.write_quorum,
                grace=eset.timeouts.meta_grace,
            )  # fmt: skip
            # no undo below quorum: a drive that committed decided it (rolled forward later)
            superseded = [i for i, e in errors.items() if isinstance(e, StaleVersion)]
            if len(done_at) + len(superseded) < eset.write_quorum:
                raise WriteQuorumLost(
                    "complete multipart upload",
                    eset.write_quorum,
                    len(done_at),
                    len(eset.drives),
                    errors,
                )
            missed = [
                i for i in range(len(eset.drives)) if i not in done_at and i not in superseded
            ]
            if missed:
                self.on_partial(bucket, key, meta.vid, missed)
            return Completed(meta, completion.list_digest)

    async def _roll_forward_if_completed(self, bucket: str, key: str, uid: str) -> Completed | None:
        """If any drive holds the upload's tombstone, finishes that completion on the
        drives that missed it and returns it; None while no drive has completed it."""
        eset = self.eset
        volume, ukey = mp_volume(bucket), upload_key(key, uid)
        results, _ = await fan_out(
            [(lambda d=d: d.read_meta(volume, ukey)) for d in eset.drives],
            timeout=eset.timeouts.meta,
        )
        tombs = [r for r in results.values() if is_tombstone(r.meta) and r.inline]
        if not tombs:
            return None
        tomb = max(tombs, key=lambda r: r.meta.order)
        packed_meta, packed_table, digest = msgpack.unpackb(tomb.inline)  # type: ignore[arg-type]
        meta = ObjectMeta.unpack(packed_meta)
        open_at = [i for i, r in results.items() if not is_tombstone(r.meta)]
        if open_at:
            await fan_out(
                [
                    (lambda d=d: d.complete_upload(
                        bucket, key, uid, meta, packed_table, tomb.meta, tomb.inline
                    )) if i in open_at else None
                    for i, d in enumerate(eset.drives)
                ],
                timeout=eset.timeouts.meta,
            )  # fmt: skip
        return Completed(meta, digest, repeated=True)

    # -- abort ----------------------------------------------------------------------------
    async def abort(self, bucket: str, key: str, uid: str) -> None:
        """Removes an open upload, its parts and their shards. NoSuchUpload for one that
        is unknown or was completed (a completion some drives missed is rolled forward)."""
        async with self._lock(bucket, key, uid):
            if await self._roll_forward_if_completed(bucket, key, uid) is not None:
                raise NoSuchUpload(uid)
            await self.record(bucket, key, uid)
            await self.remove(bucket, key, uid)

    async def remove(self, bucket: str, key: str, uid: str) -> None:
        """Deletes every part attempt any drive holds (not only the listed ones: an attempt
        that reached too few drives has shards too), then the record. Caller holds the lock."""
        eset = self.eset
        volume = mp_volume(bucket)
        names: set[str] = set()
        prefix, marker = parts_prefix(uid), ""
        while True:
            rows, _ = await fan_out(
                [(lambda d=d, m=marker: d.scan(volume, prefix, m, PAGE)) for d in eset.drives],
                timeout=eset.timeouts.meta,
            )
            batch = sorted({k for got in rows.values() for k, _ in got})
            names.update(batch)
            if not any(len(got) >= PAGE for got in rows.values()) or not batch:
                break
            marker = max(got[-1][0] for got in rows.values() if len(got) >= PAGE)
        gate = asyncio.Semaphore(16)

        async def drop(name: str) -> None:
            async with gate:
                await reach_quorum(
                    [(lambda d=d: d.delete(volume, name)) for d in eset.drives],
                    need=eset.write_quorum,
                    timeout=eset.timeouts.meta,
                    grace=eset.timeouts.meta_grace,
                    what="abort multipart upload",
                    counts=(FileNotFound, VolumeNotFound),
                )

        await asyncio.gather(*(drop(n) for n in sorted(names)))
        await drop(upload_key(key, uid))

    # -- list uploads ---------------------------------------------------------------------
    async def list_uploads(
        self,
        bucket: str,
        *,
        prefix: str,
        delimiter: str,
        key_marker: str,
        uid_marker: str,
        max_uploads: int,
        tombstones: bool = False,
    ) -> UploadPage:
        """Open uploads of this set in (key, initiation) order after the markers, keys
        with the delimiter after the prefix folded into common prefixes (on the key only:
        the record's own suffix never folds)."""
        page = UploadPage()
        if max_uploads <= 0:
            return page
        if uid_marker:
            marker = upload_key(key_marker, uid_marker)
        elif key_marker:
            marker = upload_key(key_marker, "") + PAST  # past every upload of that key
        else:
            marker = ""
        stored_prefix = UPLOAD_PREFIX + prefix
        count = 0
        while True:
            listed = await list_objects(
                self.eset,
                mp_volume(bucket),
                prefix=stored_prefix,
                delimiter="",
                start_after=marker,
                max_keys=PAGE,
            )
            for stored, mtime, etag, _size in listed.objects:
                if (etag == TOMBSTONE_ETAG) != tombstones:
                    marker = stored
                    continue
                key, uid = split_upload_key(stored)
                cp = ""
                if delimiter:
                    at = key.find(delimiter, len(prefix))
                    cp = key[: at + len(delimiter)] if at >= 0 else ""
                if count >= max_uploads:
                    page.truncated = True
                    return page
                count += 1
                if cp:
                    page.prefixes.append(cp)
                    page.next_key, page.next_uid = cp, ""
                    marker = UPLOAD_PREFIX + cp + PAST
                    break  # rescan past the prefix
                page.uploads.append(UploadEntry(key, uid, mtime))
                page.next_key, page.next_uid = key, uid
                marker = stored
            else:
                if not listed.truncated:
                    return page
                marker = max(marker, listed.next_marker)


def _tombstone(
    record: ObjectMeta, meta: ObjectMeta, table: bytes, digest: bytes
) -> tuple[ObjectMeta, bytes]:
    """The record a completed upload leaves: newer than the open record (so a quorum read
    prefers it), marked by its ETag, carrying what a roll-forward re-sends."""
    tomb = ObjectMeta(
        vid=meta.vid,
        mtime=meta.mtime,
        size=0,
        etag=TOMBSTONE_ETAG,
        k=record.k,
        m=record.m,
        stripe=record.stripe,
        dist=list(record.dist),
        inline=True,
        content_type=record.content_type,
    )
    return tomb, msgpack.packb([meta.pack(), table, digest])


def _no_bucket(k: int, errors: dict[int, BaseException]) -> None:
    if sum(isinstance(e, VolumeNotFound) for e in errors.values()) >= k:
        raise NoSuchBucket()


def _no_hook(bucket: str, key: str, vid: str, positions: list[int], **place: object) -> None:
    """Records are metadata only: no degraded shard read to report."""
