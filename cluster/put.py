"""PUT: body -> stripes -> encode (CPU pool) -> k+m shard writers -> commit at quorum.

Three stages joined by bounded queues: the body is cut into stripes, each stripe is
MD5-hashed, split into k data blocks (slices, no copy), given m parity blocks and a CRC32C
per block in one CPU-pool job, and the n framed blocks go to the n drives in parallel.
Memory per request is bounded whatever the object size: one stripe being filled, at most
QUEUE encoded stripes waiting and one being written, each n/k * stripe_size bytes; with
1 MiB stripes and 2+2 that is about 1 + (2 + 1) * 2 = 7 MiB.

Small objects (at most INLINE_LIMIT bytes) are encoded in one piece and their shards go
inside the drives' metadata records: one index transaction per drive, no files.

A drive that fails mid-stream is dropped; if fewer than the write quorum remain, every
drive's staged shards are dropped and the client gets WriteQuorumLost. After commit, a
version held by fewer than W drives is deleted again (by version id, so a concurrent newer
write is untouched); drives that missed an acknowledged write are reported to `on_partial`
(the healer's MRF queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from shardfleet.cluster.cpu import run_cpu
from shardfleet.cluster.drive import DriveError, ShardWriter, StaleVersion, VolumeNotFound
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import NoSuchBucket, NoSuchKey, WriteQuorumLost
from shardfleet.cluster.get import Getter
from shardfleet.cluster.hlc import HybridClock
from shardfleet.cluster.keylock import hold
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.cluster.placement import distribution
from shardfleet.cluster.quorum import fan_out
from shardfleet.erasure import Codec, frame_header

INLINE_LIMIT = 128 << 10
INLINE_ON_LOOP = 16 << 10  # below this, a thread hop costs more than the encoding
QUEUE = 2

#: (bucket, key, vid, positions[, place=(bucket, key) whose set holds it: a part's object])
PartialHook = Callable[..., None]
Body = AsyncIterator[bytes | bytearray | memoryview]
#: a write's precondition: given the key's current version (None: absent), raises to refuse
Condition = Callable[[ObjectMeta | None], None]


class DigestMismatch(Exception):
    """The body's MD5 differs from the Content-MD5 the client sent."""


@dataclass(slots=True)
class PutRequest:
    bucket: str
    key: str
    size: int  # declared size (Content-Length or x-amz-decoded-content-length)
    content_type: str = "binary/octet-stream"
    user: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content_md5: bytes | None = None
    #: checked against the version the quorum agrees on, under the key's lock, just before
    #: the commit (If-Match / If-None-Match); what it raises reaches the caller unchanged
    condition: Condition | None = None
    #: awaited under the lock just before the commit (a part checks that its upload is
    #: still open); what it raises reaches the caller, the staged shards dropped
    guard: Callable[[], Awaitable[None]] | None = None
    #: the (bucket, key) whose lock brackets guard/condition and commit (default: this one)
    lock: tuple[str, str] | None = None
    #: the (bucket, key) whose shard distribution to follow (a part follows its object's:
    #: a completed object reads every part with one distribution)
    place_as: tuple[str, str] | None = None
    #: never inline, whatever the size (a part's shards must be files the object can own)
    streamed: bool = False


def _encode_stripe(
    codec: Codec, md5: hashlib._Hash, stripe: memoryview
) -> list[list[bytes | memoryview]]:
    """CPU job: hash, encode, frame. Returns per-shard [crc header, block]."""
    md5.update(stripe)
    blocks, _ = codec.encode_stripe(stripe)
    return [[frame_header(b), b] for b in blocks]


def _encode_inline(codec: Codec, data: bytes) -> tuple[str, list[bytes]]:
    """Small object: whole-object MD5 and one framed shard per shard index."""
    etag = hashlib.md5(data).hexdigest()
    if not data:
        return etag, [b""] * codec.n
    blocks, _ = codec.encode_stripe(data)
    return etag, [frame_header(b) + bytes(b) for b in blocks]


async def _stripes(body: Body, stripe_size: int) -> AsyncIterator[memoryview]:
    """Cuts the body into full stripes (and a short last one); one copy per byte."""
    buf = memoryview(bytearray(stripe_size))  # a view: bytearray slice assignment copies twice
    fill = 0
    async for piece in body:
        view = memoryview(piece).cast("B")
        while view:
            take = min(stripe_size - fill, len(view))
            buf[fill : fill + take] = view[:take]
            fill += take
            view = view[take:]
            if fill == stripe_size:
                # read-only: the blocks are sent by reference (transport.calls.send); a
                # stripe's buffer is never written again (zfec output may alias it)
                yield buf.toreadonly()
                buf = memoryview(bytearray(stripe_size))
                fill = 0
    if fill:
        yield buf[:fill].toreadonly()


def _no_hook(bucket: str, key: str, vid: str, positions: list[int], **place: object) -> None:
    """A condition's metadata read streams nothing, so it has no degraded read to report."""


class Putter:
    def __init__(
        self,
        eset: ErasureSet,
        clock: HybridClock,
        on_partial: PartialHook,
        *,
        lock_set: ErasureSet | None = None,
    ) -> None:
        self.eset = eset
        self.clock = clock
        self.on_partial = on_partial
        #: where the key's lock lives (the key's set in the first pool, whichever pool the
        #: write goes to, so every conditional write and delete of a key meets at one lock)
        self.lock_set = lock_set

    def _new_meta(self, req: PutRequest, *, size: int, etag: str, inline: bool) -> ObjectMeta:
        p = self.eset.params
        return ObjectMeta(
            vid=uuid.uuid4().hex,
            mtime=0,
            size=size,
            etag=etag,
            k=p.k,
            m=p.m,
            stripe=p.stripe_size,
            dist=distribution(self.eset.cluster_id, *(req.place_as or (req.bucket, req.key)), p.n),
            inline=inline,
            content_type=req.content_type,
            user=req.user,
            headers=req.headers,
        )

    async def put(self, req: PutRequest, body: Body) -> ObjectMeta:
        online = self.eset.online_positions()
        if len(online) < self.eset.write_quorum:
            raise WriteQuorumLost(
                "put", self.eset.write_quorum, len(online), self.eset.params.n, {}
            )
        if req.size <= INLINE_LIMIT and not req.streamed:
            return await self._put_inline(req, body, online)
        return await self._put_streamed(req, body, online)

    # -- small objects ----------------------------------------------------------------
    async def _put_inline(self, req: PutRequest, body: Body, online: list[int]) -> ObjectMeta:
        chunks = bytearray()
        async for piece in body:
            chunks += piece
            if len(chunks) > INLINE_LIMIT:
                raise ValueError("body longer than declared")  # the body decoder catches it first
        data = bytes(chunks)
        codec = self.eset.codec
        if len(data) <= INLINE_ON_LOOP:
            etag, shards = _encode_inline(codec, data)
        else:
            etag, shards = await run_cpu(_encode_inline, codec, data)
        self._check_md5(req, bytes.fromhex(etag))
        meta = self._new_meta(req, size=len(data), etag=etag, inline=True)
        return await self._commit(req, meta, online, shards)

    # -- streamed objects -------------------------------------------------------------
    async def _put_streamed(self, req: PutRequest, body: Body, online: list[int]) -> ObjectMeta:
        meta = self._new_meta(req, size=0, etag="", inline=False)
        drives = self.eset.drives
        t = self.eset.timeouts
        opened, errors = await fan_out(
            [
                (lambda d=drives[i]: d.open_shard(req.bucket, meta.vid, 1)) if i in online else None
                for i in range(len(drives))
            ],
            timeout=t.meta,
        )
        writers: dict[int, ShardWriter] = dict(opened)
        try:
            self._require(writers, errors)
            size, md5 = await self._stream(body, meta, writers, errors)
            # finish waits for durability on each drive: once W have it, a hung drive gets
            # the grace period and is left behind (the MRF queue heals it), so a frozen
            # peer costs seconds, not the shard timeout
            done, failed = await fan_out(
                [(w.finish if i in writers else None) for i, w in self._slots(writers)],
                timeout=t.shard,
                need=self.eset.write_quorum,
                grace=t.shard_grace,
            )
            errors.update(failed)
            for i in failed:
                writer = writers.pop(i, None)
                if writer is not None:  # reset its stream: the drive drops what it staged
                    with contextlib.suppress(BaseException):
                        await writer.abort()
            self._require(writers, errors)
            self._check_md5(req, md5.digest())
        except BaseException:
            await self._abort_writers(writers)
            raise
        meta.size = size
        meta.etag = md5.hexdigest()
        return await self._commit(req, meta, sorted(writers), None)

    def _slots(self, writers: dict[int, ShardWriter]) -> list[tuple[int, ShardWriter | None]]:
        return [(i, writers.get(i)) for i in range(self.eset.params.n)]

    async def _stream(
        self,
        body: Body,
        meta: ObjectMeta,
        writers: dict[int, ShardWriter],
        errors: dict[int, BaseException],
    ) -> tuple[int, hashlib._Hash]:
        codec = self.eset.codec
        md5 = hashlib.md5()
        queue: asyncio.Queue[list[list[bytes | memoryview]] | None] = asyncio.Queue(QUEUE)
        size = 0

        async def produce() -> None:
            nonlocal size
            async for stripe in _stripes(body, self.eset.params.stripe_size):
                size += len(stripe)
                await queue.put(await run_cpu(_encode_stripe, codec, md5, stripe))
            await queue.put(None)

        producer = asyncio.ensure_future(produce())
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                await asyncio.wait({get, producer}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    producer.result()  # raises the body's error
                    continue
                framed = get.result()
                if framed is None:
                    break
                await self._write_stripe(meta, framed, writers, errors)
            await producer
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(BaseException):
                    await producer
        return size, md5

    async def _write_stripe(
        self,
        meta: ObjectMeta,
        framed: list[list[bytes | memoryview]],
        writers: dict[int, ShardWriter],
        errors: dict[int, BaseException],
    ) -> None:
        calls = [
            (lambda w=w, c=framed[meta.dist[i]]: w.write(c)) if w is not None else None
            for i, w in self._slots(writers)
        ]
        t = self.eset.timeouts
        _, failed = await fan_out(
            calls, timeout=t.shard, need=self.eset.write_quorum, grace=t.shard_grace
        )
        for i, exc in failed.items():
            errors[i] = exc
            writer = writers.pop(i)
            with contextlib.suppress(BaseException):
                await writer.abort()
        self._require(writers, errors)

    def _require(self, writers: dict[int, ShardWriter], errors: dict[int, BaseException]) -> None:
        if len(writers) < self.eset.write_quorum:
            if errors and all(isinstance(e, VolumeNotFound) for e in errors.values()):
                raise NoSuchBucket()
            raise WriteQuorumLost(
                "put", self.eset.write_quorum, len(writers), self.eset.params.n, dict(errors)
            )

    async def _abort_writers(self, writers: dict[int, ShardWriter]) -> None:
        for writer in writers.values():
            with contextlib.suppress(BaseException):
                await writer.abort()
        writers.clear()

    @staticmethod
    def _check_md5(req: PutRequest, digest: bytes) -> None:
        if req.content_md5 is not None and req.content_md5 != digest:
            raise DigestMismatch()

    # -- commit -------------------------------------------------------------------------
    async def _commit(
        self, req: PutRequest, meta: ObjectMeta, positions: list[int], inline: list[bytes] | None
    ) -> ObjectMeta:
        if req.condition is None and req.guard is None:
            return await self._commit_now(req, meta, positions, inline)
        try:
            async with hold(self.lock_set or self.eset, *(req.lock or (req.bucket, req.key))):
                if req.guard is not None:
                    await req.guard()
                if req.condition is not None:
                    try:
                        getter = Getter(self.eset, _no_hook)
                        current = (await getter.open(req.bucket, req.key)).meta
                    except NoSuchKey:
                        current = None
                    req.condition(current)
                return await self._commit_now(req, meta, positions, inline)
        except BaseException:
            if not meta.inline:  # staged shards of a version that will never be committed
                await fan_out(
                    [
                        (lambda d=self.eset.drives[i]: d.abort(req.bucket, meta.vid))
                        if i in positions
                        else None
                        for i in range(len(self.eset.drives))
                    ],
                    timeout=self.eset.timeouts.meta,
                )
            raise

    async def _commit_now(
        self, req: PutRequest, meta: ObjectMeta, positions: list[int], inline: list[bytes] | None
    ) -> ObjectMeta:
        meta.mtime = self.clock.now()
        drives = self.eset.drives
        calls = [
            (
                lambda d=drives[i], s=(inline[meta.dist[i]] if inline is not None else None): (
                    d.commit(req.bucket, req.key, meta, s)
                )
            )
            if i in positions
            else None
            for i in range(len(drives))
        ]
        t = self.eset.timeouts
        done, errors = await fan_out(
            calls, timeout=t.meta, need=self.eset.write_quorum, grace=t.meta_grace
        )
        # A drive that refused as StaleVersion already holds a newer version of the key: under
        # last-writer-wins this write happened and was superseded there, so it counts
        superseded = [i for i, e in errors.items() if isinstance(e, StaleVersion)]
        if len(done) + len(superseded) >= self.eset.write_quorum:
            missed = [i for i in range(len(drives)) if i not in done and i not in superseded]
            if missed:
                self.on_partial(req.bucket, req.key, meta.vid, missed)
            return meta
        # Below quorum: take the new version back out where it landed, by version id.
        await fan_out(
            [
                (lambda d=drives[i]: d.delete(req.bucket, req.key, vid=meta.vid))
                if i in done
                else None
                for i in range(len(drives))
            ],
            timeout=self.eset.timeouts.meta,
        )
        for i in positions:
            if i not in done and not isinstance(errors.get(i), VolumeNotFound):
                with contextlib.suppress(DriveError):
                    await drives[i].abort(req.bucket, meta.vid)
        if errors and all(isinstance(e, VolumeNotFound) for e in errors.values()):
            raise NoSuchBucket()
        raise WriteQuorumLost("put", self.eset.write_quorum, len(done), len(drives), errors)
