"""GET: metadata by quorum -> range plan -> k shard blocks per stripe -> verify -> stream.

Metadata is read from every drive of the set; the newest version that k drives agree on
is served. For each run of stripes (at most READ_BATCH bytes per drive) the data shards
that hold the requested bytes are read; when one is missing or fails its CRC32C, the run
is read from every other drive that holds the version and decoded from any k good
blocks. Wrong bytes are never returned: a block is used only after its checksum matched.

At most READ_AHEAD runs are being read and PREFETCH runs buffered ahead of the client, so
memory per request stays near (READ_AHEAD + PREFETCH + 1) * READ_BATCH * k bytes whatever
the object size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from shardfleet.cluster.cpu import run_cpu
from shardfleet.cluster.drive import FileNotFound, MetaRecord, NotYetHealed, VolumeNotFound
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import NoSuchBucket, NoSuchKey, ReadQuorumLost
from shardfleet.cluster.meta import ObjectMeta, pick_agreed
from shardfleet.cluster.parts import PartTable, mp_volume, table_digest
from shardfleet.cluster.quorum import fan_out
from shardfleet.erasure import (
    BitrotError,
    ErasureError,
    ErasureParams,
    StripeSpan,
    stripes_for_range,
    verify_block,
)
from shardfleet.erasure.stripe import data_blocks_for_range

# Per drive per read: fewer, larger shard RPCs (1 MiB batches cost ~25% of GET throughput).
READ_BATCH = 2 << 20
PREFETCH = 2
READ_AHEAD = 2

DegradedHook = Callable[[str, str, str, list[int]], None]
Chunk = bytes | memoryview


@dataclass(slots=True)
class ReadHandle:
    bucket: str
    key: str
    meta: ObjectMeta
    holders: list[int]  # set positions whose metadata matches the chosen version
    records: dict[int, MetaRecord]
    missing: list[int]  # positions that do not hold this version
    eset: ErasureSet | None = None  # the set it was found in
    _table: PartTable | None = None

    @property
    def parts(self) -> PartTable | None:
        """A multipart object's part table: the first holder's copy whose digest is the one
        the quorum agreed on (a damaged copy is skipped); None for a single-part object."""
        if not self.meta.parts:
            return None
        if self._table is None:
            for pos in self.holders:
                rec = self.records.get(pos)
                if rec is None or rec.inline is None:
                    continue
                if table_digest(rec.inline) != self.meta.parts_digest:
                    continue
                try:
                    table = PartTable.unpack(rec.inline)
                except ValueError:
                    continue
                if len(table.parts) == self.meta.parts and table.size == self.meta.size:
                    self._table = table
                    break
            else:
                raise ReadQuorumLost("read part table", 1, 0, len(self.meta.dist), {})
        return self._table


@dataclass(frozen=True, slots=True)
class _Segment:
    """A piece of an object stored as one shard file: the whole of a single-part object,
    or one part of a multipart one; `start`/`end` are offsets within it."""

    volume: str
    vid: str
    size: int
    start: int
    end: int


def resolve(
    results: dict[int, MetaRecord], errors: dict[int, BaseException], k: int, n: int, w: int
) -> ObjectMeta:
    """The version to serve, or the right error when there is none.

    NoSuchKey only on evidence: the newest record is a tombstone, or at least n - W + 1
    drives that answered (and were not formatted empty since, NotYetHealed) have no record
    of the key, which no acknowledged write (on W drives) leaves. Anything short of that,
    a record some drive still holds that too few agree on, or too few answers, is
    ReadQuorumLost (503): the key may exist, and a 404 would tell a client it does not."""
    meta = pick_agreed([r.meta for r in results.values()], k)
    if meta is not None:
        if meta.deleted:
            raise NoSuchKey()
        return meta
    no_bucket = sum(isinstance(e, VolumeNotFound) for e in errors.values())
    if no_bucket >= k:
        raise NoSuchBucket()
    absent = sum(
        isinstance(e, FileNotFound) and not isinstance(e, NotYetHealed) for e in errors.values()
    )
    if absent + no_bucket >= n - w + 1:
        raise NoSuchKey()
    raise ReadQuorumLost("read metadata", k, len(results), n, errors)


def _retrieve(task: asyncio.Future[object]) -> None:
    """Marks a cancelled read's outcome as seen (no "exception never retrieved")."""
    if not task.cancelled():
        task.exception()


class Getter:
    def __init__(self, eset: ErasureSet, on_degraded: DegradedHook) -> None:
        self.eset = eset
        self.on_degraded = on_degraded

    async def open(self, bucket: str, key: str) -> ReadHandle:
        return await self._open_fast(bucket, key) or await self._open_all(bucket, key)

    async def _open_fast(self, bucket: str, key: str) -> ReadHandle | None:
        """Reads metadata from only max(k, n - W + 1) drives, local ones first.

        Any n - W + 1 drives include one that took the newest acknowledged write (W + R > n),
        so when they all hold the same version it is the one to serve. Shard data is
        addressed by version id, so reading shards from drives not asked is still safe: they
        have that version's exact bytes (checksummed) or nothing. Anything else, a
        disagreement, an error or a rotten inline shard, falls back to asking every drive."""
        eset = self.eset
        drives = eset.drives
        n = len(drives)
        r = max(eset.read_quorum, n - eset.write_quorum + 1)
        if r >= n:
            return None
        order = sorted(
            (i for i in range(n) if drives[i].online), key=lambda i: not drives[i].is_local
        )
        first = order[:r]
        if len(first) < r:
            return None
        calls = [None] * n
        for i in first:
            calls[i] = lambda d=drives[i]: d.read_meta(bucket, key)
        # a hedge, not the drive timeout: a slow or frozen drive among the nearest r sends
        # the read to every drive after a second, where quorum decides without it
        results, errors = await fan_out(calls, timeout=eset.timeouts.meta_hedge)  # type: ignore[arg-type]
        if errors or len(results) < r:
            return None
        metas = [rec.meta for rec in results.values()]
        meta = metas[0]
        if any(m.order != meta.order for m in metas):
            return None
        if meta.deleted:  # n - W + 1 drives hold the same tombstone: nothing newer was written
            raise NoSuchKey()
        if meta.inline:
            span_len = -(-meta.size // meta.k) if meta.size else 0
            for rec in results.values():
                if rec.inline is None:
                    return None
                try:
                    if meta.size:
                        verify_block(rec.inline, span_len)
                except BitrotError:
                    return None
            holders = sorted(results)
        elif meta.parts:
            holders = list(range(n))
            handle = ReadHandle(bucket, key, meta, holders, results, [], eset)
            try:
                handle.parts  # noqa: B018 - a table no drive asked holds intact: ask them all
            except ReadQuorumLost:
                return None
        else:
            holders = list(range(n))
        # drives that cannot answer are as good as missing this version: report them, as
        # the full path would, so the degraded-read signal does not depend on the path
        offline = [i for i in range(n) if not drives[i].online]
        return ReadHandle(bucket, key, meta, holders, results, offline, eset)

    async def _open_all(self, bucket: str, key: str) -> ReadHandle:
        eset = self.eset
        drives = eset.drives
        # any n - W + 1 drives include one with the newest acknowledged version: once that
        # many answered, the rest get the grace period, so one frozen drive costs seconds
        need = max(eset.read_quorum, len(drives) - eset.write_quorum + 1)
        results, errors = await fan_out(
            [(lambda d=d: d.read_meta(bucket, key)) for d in drives],
            timeout=eset.timeouts.meta,
            need=need,
            grace=eset.timeouts.meta_grace,
        )
        meta = resolve(results, errors, eset.read_quorum, len(drives), eset.write_quorum)
        holders = [i for i, r in results.items() if r.meta.order == meta.order]
        missing = [i for i in range(len(drives)) if i not in holders]
        return ReadHandle(bucket, key, meta, sorted(holders), results, missing, self.eset)

    def report(self, handle: ReadHandle, bad: list[int]) -> None:
        if bad:
            self.on_degraded(handle.bucket, handle.key, handle.meta.vid, sorted(set(bad)))

    async def stream(self, handle: ReadHandle, start: int, end: int) -> AsyncGenerator[Chunk, None]:
        """Object bytes [start, end), in order."""
        if end <= start:
            return
        if handle.meta.inline:
            for piece in await self._read_inline(handle, start, end):
                yield piece
            return
        queue: asyncio.Queue[list[Chunk] | None] = asyncio.Queue(PREFETCH)
        producer = asyncio.ensure_future(self._produce(handle, start, end, queue))
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                await asyncio.wait({get, producer}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    producer.result()
                    continue
                pieces = get.result()
                if pieces is None:
                    break
                for piece in pieces:
                    yield piece
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(BaseException):
                    await producer

    # -- inline -------------------------------------------------------------------------
    async def _read_inline(self, handle: ReadHandle, start: int, end: int) -> list[Chunk]:
        meta = handle.meta
        span = stripes_for_range(meta.size, self._params(meta), 0, meta.size)[0]
        good: dict[int, memoryview] = {}
        bad: list[int] = []
        for pos in handle.holders:
            raw = handle.records[pos].inline
            try:
                if raw is None:
                    raise BitrotError("inline shard missing")
                good[meta.dist[pos]] = verify_block(raw, span.block_len)
            except ErasureError:
                bad.append(pos)
        self.report(handle, bad + handle.missing)
        if len(good) < meta.k:
            raise ReadQuorumLost("read inline shards", meta.k, len(good), len(meta.dist), {})
        data = self.eset.codec.join(self.eset.codec.decode(good), span.data_len)
        return [memoryview(data)[start:end]]

    # -- streamed -----------------------------------------------------------------------
    @staticmethod
    def _params(meta: ObjectMeta) -> ErasureParams:
        return ErasureParams(meta.k, meta.m, meta.stripe)

    def _segments(self, handle: ReadHandle, start: int, end: int) -> list[_Segment]:
        table = handle.parts
        if table is None:
            return [_Segment(handle.bucket, handle.meta.vid, handle.meta.size, start, end)]
        volume = mp_volume(handle.bucket)
        segments = []
        i = table.locate(start)
        while i < len(table.parts) and table.offsets[i] < end:
            part, off = table.parts[i], table.offsets[i]
            lo, hi = max(start, off) - off, min(end, off + part.size) - off
            if hi > lo:
                segments.append(_Segment(volume, part.pvid, part.size, lo, hi))
            i += 1
        return segments

    async def _produce(
        self, handle: ReadHandle, start: int, end: int, queue: asyncio.Queue[list[Chunk] | None]
    ) -> None:
        params = self._params(handle.meta)
        per_run = max(1, READ_BATCH // (params.block_size + 4))
        segments = self._segments(handle, start, end)
        # a drive missing one part's shard may hold the next part's: bad is per segment
        bads = [set(handle.missing) for _ in segments]
        # READ_AHEAD runs are read at once, so the drives and the network are never idle
        # while a run is checked and handed over; they are queued in order (across parts)
        reading: deque[asyncio.Future[list[Chunk]]] = deque()
        try:
            for seg, bad in zip(segments, bads, strict=True):
                spans = stripes_for_range(seg.size, params, seg.start, seg.end)
                for i in range(0, len(spans), per_run):
                    run = spans[i : i + per_run]
                    reading.append(
                        asyncio.ensure_future(self._read_run(handle, params, run, seg, bad))
                    )
                    if len(reading) >= READ_AHEAD:
                        await queue.put(await reading.popleft())
            while reading:
                await queue.put(await reading.popleft())
            await queue.put(None)
        finally:
            for task in reading:  # the request failed or was cancelled: stop the rest
                task.cancel()
                task.add_done_callback(_retrieve)
            self.report(handle, list(set().union(*bads)) if bads else list(handle.missing))

    async def _read_run(
        self,
        handle: ReadHandle,
        params: ErasureParams,
        run: list[StripeSpan],
        seg: _Segment,
        bad: set[int],
    ) -> list[Chunk]:
        meta = handle.meta
        start, end = seg.start, seg.end
        wanted = sorted({b for s in run for b in data_blocks_for_range(s, params, start, end)})
        first = self._choose(handle, wanted, bad)
        # a hedge: a drive that has not answered by then is read around (and left out of
        # the rest of this GET), the others then get the full shard timeout
        blocks = await self._fetch(handle, seg, run, first, bad, self.eset.timeouts.read_hedge)
        if all(
            all(meta.dist[p] in blk for p in first) and len(first) == len(wanted) for blk in blocks
        ):
            if all(meta.dist[p] < meta.k for p in first):
                return self._slice(run, blocks, start, end, decode=False)
            return await run_cpu(self._slice, run, blocks, start, end, True)
        # Degraded: read every other holder and decode from any k good blocks per stripe.
        rest = [p for p in handle.holders if p not in first and p not in bad]
        more = await self._fetch(handle, seg, run, rest, bad, self.eset.timeouts.shard)
        for blk, extra in zip(blocks, more, strict=True):
            blk.update(extra)
        for blk in blocks:
            if len(blk) < meta.k:
                raise ReadQuorumLost("read shards", meta.k, len(blk), len(meta.dist), {})
        return await run_cpu(self._slice, run, blocks, start, end, True)

    def _choose(self, handle: ReadHandle, wanted: list[int], bad: set[int]) -> list[int]:
        """The positions to read a run from: the data shards that hold the wanted bytes.

        When whole stripes are wanted, any k blocks rebuild them, and a block on this
        node's own drive costs no network hop: a local parity block then stands in for a
        remote data block (zfec decodes at ~1 GB/s, far cheaper than QUIC per byte)."""
        meta = handle.meta
        if len(wanted) < meta.k:
            by_shard = {meta.dist[pos]: pos for pos in handle.holders}
            return [by_shard[b] for b in wanted if b in by_shard and by_shard[b] not in bad]
        drives = self.eset.drives
        good = [p for p in handle.holders if p not in bad]
        good.sort(key=lambda p: (not drives[p].is_local, meta.dist[p] >= meta.k, meta.dist[p]))
        return good[: meta.k]

    async def _fetch(
        self,
        handle: ReadHandle,
        seg: _Segment,
        run: list[StripeSpan],
        positions: list[int],
        bad: set[int],
        timeout: float,
    ) -> list[dict[int, memoryview]]:
        """Reads the run from each position; returns per stripe {shard index: good block}.

        CRC32C runs here, on the loop: hardware CRC does a 512 KiB block in ~40 us, less
        than a hop to the CPU pool would cost; decoding, when needed, goes to the pool."""
        offset = run[0].file_offset
        length = run[-1].file_offset + run[-1].framed_len - offset
        drives = self.eset.drives
        calls: list[Callable[[], object] | None] = [None] * len(drives)
        for pos in positions:
            calls[pos] = lambda d=drives[pos]: d.read_shard(seg.volume, seg.vid, 1, offset, length)
        results, errors = await fan_out(calls, timeout=timeout)  # type: ignore[arg-type]
        bad.update(errors)
        out: list[dict[int, memoryview]] = [{} for _ in run]
        for pos, raw in results.items():
            view = memoryview(raw)
            shard = handle.meta.dist[pos]
            for j, span in enumerate(run):
                lo = span.file_offset - offset
                try:
                    out[j][shard] = verify_block(view[lo : lo + span.framed_len], span.block_len)
                except BitrotError:
                    bad.add(pos)
        return out

    def _slice(
        self,
        run: list[StripeSpan],
        blocks: list[dict[int, memoryview]],
        start: int,
        end: int,
        decode: bool,
    ) -> list[Chunk]:
        """The requested bytes of each stripe, as views into the blocks where possible."""
        codec = self.eset.codec
        pieces: list[Chunk] = []
        for span, blk in zip(run, blocks, strict=True):
            data = codec.decode(blk) if decode else None
            lo = max(start, span.object_offset) - span.object_offset
            hi = min(end, span.object_offset + span.data_len) - span.object_offset
            first_block, last_block = lo // span.block_len, (hi - 1) // span.block_len
            for b in range(first_block, last_block + 1):
                block = memoryview(data[b] if data is not None else blk[b])
                b_lo = max(lo - b * span.block_len, 0)
                b_hi = min(hi - b * span.block_len, span.block_len)
                pieces.append(block[b_lo:b_hi])
        return pieces
