"""Rebuilding one object's missing or rotten shards from k good ones.

`heal_object(eset, bucket, key)` reads the key's metadata from every drive of its set and
takes the version k drives agree on (a version on fewer drives is a write that did not
reach quorum: never healed into existence). Every online drive that lacks that version,
or holds an older one, is a *target*: it gets the version's shards and then its metadata,
through the same steps as a PUT (shards staged under tmp/, fsynced, installed, then the
conditional commit), so a heal never replaces a newer version: a PUT that landed meanwhile
wins (StaleVersion) and the heal of that drive is simply moot. A drive that holds the
version but whose shard is missing or fails its CRC32C gets the shard rewritten, file by
atomic file (`Drive.install`); its metadata stays. A multipart object is healed part by
part (each part is its own shard file).

Shards are rebuilt stripe by stripe: each run of stripes is read from the holders, every
block checked, any k good blocks decoded and re-encoded into the targets' blocks
(`Codec.rebuild`), written as they come: memory stays at a few runs whatever the size.
With `deep`, every holder's every block is read and checked first, so rot that a read
would never meet (a parity block, say) is found and rewritten too.

Deletes: when the newest record is a tombstone (cluster/meta.py), the drives that lack it,
or hold the older version, get the tombstone (a conditional commit, like any version), so
a drive that missed a DELETE never serves, lists or heals the old version back. With a
`Collect` policy (the scanner's) the garbage goes too: a tombstone every drive of the set
holds, once `tombstone_min_age` old (no heal that read the old version is still in flight
by then), or any tombstone after `tombstone_ttl`; and a record on too few drives to read
that enough drives prove absent (a write that never reached quorum and whose undo was
lost with its coordinator), once `dangling_after` old.

All of it goes through each drive's background view (`Drive.background`): on remote drives
at the transport's background priority and rate cap, so client traffic keeps most of the
machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shardfleet.cluster.cpu import run_cpu
from shardfleet.cluster.drive import (
    Drive,
    DriveError,
    FileNotFound,
    MetaRecord,
    NotYetHealed,
    ShardWriter,
    StaleVersion,
    VolumeNotFound,
)
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.meta import ObjectMeta, pick_agreed
from shardfleet.cluster.parts import PartTable, mp_volume, table_digest
from shardfleet.cluster.quorum import fan_out
from shardfleet.erasure import (
    BitrotError,
    Codec,
    ErasureParams,
    StripeSpan,
    frame_header,
    stripes_for_range,
    verify_block,
)

log = logging.getLogger(__name__)

READ_BATCH = 2 << 20  # per drive per read, as GET


@dataclass(slots=True)
class HealResult:
    bucket: str
    key: str
    state: str = "ok"  # ok | healed | absent | unreadable | partial | collected
    vid: str = ""
    healed: list[int] = field(default_factory=list)  # set positions rewritten
    failed: list[int] = field(default_factory=list)  # targets that could not be written
    #: positions whose drive did not answer at all (offline, a dead peer not yet noticed, a
    #: timeout): nothing is known about them, so a heal "ok" is not "ok" for them
    unreached: list[int] = field(default_factory=list)
    bytes: int = 0  # shard bytes written
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Collect:
    """What a heal may collect, and when (seconds); see the module docstring."""

    tombstone_min_age: float = 600.0
    tombstone_ttl: float = 30 * 86400.0
    dangling_after: float = 600.0


class Unreadable(Exception):
    """Fewer than k good blocks of some stripe: the version cannot be rebuilt now."""


#: one heal of a key at a time in this process (the MRF queue and the scanner meet on the
#: same object: two rebuilds of one version would stage the same shard file on a drive)
_healing: dict[tuple[int, str, str], asyncio.Lock] = {}


async def heal_object(
    eset: ErasureSet,
    bucket: str,
    key: str,
    *,
    deep: bool = False,
    skip: Callable[[int], bool] = lambda pos: False,
    collect: Collect | None = None,
) -> HealResult:
    """Heals `key` on every online drive of `eset`; see the module docstring."""
    name = (id(eset), bucket, key)
    lock = _healing.setdefault(name, asyncio.Lock())
    try:
        async with lock:
            return await _heal(eset, bucket, key, deep, skip, collect)
    finally:
        if not lock.locked() and _healing.get(name) is lock:
            del _healing[name]


async def _heal(
    eset: ErasureSet,
    bucket: str,
    key: str,
    deep: bool,
    skip: Callable[[int], bool],
    collect: Collect | None,
) -> HealResult:
    drives = [d.background() for d in eset.drives]
    n, k = len(drives), eset.read_quorum
    result = HealResult(bucket, key)
    records, errors = await fan_out(
        [(lambda d=d: d.read_meta(bucket, key)) for d in drives], timeout=eset.timeouts.meta
    )
    result.unreached = sorted(
        i for i, e in errors.items() if not isinstance(e, FileNotFound | VolumeNotFound)
    )
    meta = pick_agreed([r.meta for r in records.values()], k)
    if meta is None:
        # as cluster/get.resolve: absent only when n - W + 1 drives (not freshly formatted
        # ones) prove it; otherwise the records there may be all that is left of the key
        absent = sum(
            isinstance(e, FileNotFound | VolumeNotFound) and not isinstance(e, NotYetHealed)
            for e in errors.values()
        )
        if absent < n - eset.write_quorum + 1:
            result.state = "unreadable"
            result.detail = f"{len(records)} records, no version on {k} drives"
            return result
        result.state = "absent"
        if collect is not None and records:
            await _collect_dangling(drives, bucket, key, records, collect, result)
        return result
    result.vid = meta.vid
    if meta.deleted:
        await _heal_tombstone(drives, bucket, key, meta, records, errors, skip, collect, result)
        return result
    holders = sorted(i for i, r in records.items() if r.meta.order == meta.order)
    lacking = [
        i
        for i in range(n)
        if i not in holders
        and drives[i].online
        and not skip(i)
        and (
            (i in records and records[i].meta.order < meta.order)
            or isinstance(errors.get(i), FileNotFound)
        )
    ]
    try:
        if meta.inline:
            await _heal_inline(eset, drives, bucket, key, meta, records, holders, lacking, result)
        elif meta.parts:
            await _heal_multipart(
                eset, drives, bucket, key, meta, records, holders, lacking, deep, result
            )
        else:
            await _heal_streamed(eset, drives, bucket, key, meta, holders, lacking, deep, result)
    except Unreadable as exc:
        result.state, result.detail = "unreadable", str(exc)
        return result
    if result.failed:
        result.state = "partial"
    elif result.healed:
        result.state = "healed"
    return result


# -- deletes ---------------------------------------------------------------------------------
async def _heal_tombstone(
    drives: list[Drive],
    bucket: str,
    key: str,
    meta: ObjectMeta,
    records: dict[int, MetaRecord],
    errors: dict[int, BaseException],
    skip: Callable[[int], bool],
    collect: Collect | None,
    result: HealResult,
) -> None:
    """Carries the tombstone to every drive that lacks it, or collects it."""
    n = len(drives)
    holders = [i for i, r in records.items() if r.meta.order == meta.order]
    age = (time.time_ns() - meta.mtime) / 1e9
    if collect is not None and (
        (len(holders) == n and age >= collect.tombstone_min_age) or age >= collect.tombstone_ttl
    ):
        # the tombstone, and anything older it shadows, goes from every drive holding them
        doomed = {i: r.meta.vid for i, r in records.items() if r.meta.order <= meta.order}
        await _remove(drives, bucket, key, doomed, result)
        return
    lacking = [
        i
        for i in range(n)
        if i not in holders
        and drives[i].online
        and not skip(i)
        and (
            (i in records and records[i].meta.order < meta.order)
            or isinstance(errors.get(i), FileNotFound)
        )
    ]
    if lacking:
        await _commit_all(drives, bucket, key, meta, {}, lacking, result)
    if result.failed:
        result.state = "partial"
    elif result.healed:
        result.state = "healed"


async def _collect_dangling(
    drives: list[Drive],
    bucket: str,
    key: str,
    records: dict[int, MetaRecord],
    collect: Collect,
    result: HealResult,
) -> None:
    """Removes records too few drives hold to read, once old enough that no write of them
    is still under way (a commit reaches every drive within seconds)."""
    now = time.time_ns()
    if any((now - r.meta.mtime) / 1e9 < collect.dangling_after for r in records.values()):
        return
    await _remove(drives, bucket, key, {i: r.meta.vid for i, r in records.items()}, result)


async def _remove(
    drives: list[Drive], bucket: str, key: str, vids: dict[int, str], result: HealResult
) -> None:
    """Removes the key's record `vids[i]` from drive i, by version id: a write that landed
    since is never the one removed."""
    done, errors = await fan_out(
        [
            (lambda d=d, v=vids[i]: d.delete(bucket, key, vid=v)) if i in vids else None
            for i, d in enumerate(drives)
        ],
        timeout=30.0,
    )
    result.healed += sorted(done)
    result.failed += [i for i, e in errors.items() if not isinstance(e, FileNotFound)]
    result.state = "partial" if result.failed else "collected"
    log.info("collected %s/%s from drive positions %s", bucket, key, sorted(done))


# -- inline objects ------------------------------------------------------------------------
async def _heal_inline(
    eset: ErasureSet,
    drives: list[Drive],
    bucket: str,
    key: str,
    meta: ObjectMeta,
    records: dict[int, MetaRecord],
    holders: list[int],
    lacking: list[int],
    result: HealResult,
) -> None:
    codec = Codec(ErasureParams(meta.k, meta.m, meta.stripe))
    span_len = -(-meta.size // meta.k) if meta.size else 0
    good: dict[int, memoryview] = {}
    rotten = []
    for pos in holders:
        raw = records[pos].inline
        try:
            if raw is None:
                raise BitrotError("inline shard missing")
            if meta.size:
                good[meta.dist[pos]] = verify_block(raw, span_len)
            else:
                good[meta.dist[pos]] = memoryview(b"")
        except BitrotError:
            rotten.append(pos)
    targets = [p for p in lacking + rotten if drives[p].online]
    if not targets:
        return
    if meta.size:
        if len(good) < meta.k:
            raise Unreadable(f"inline shards: {len(good)} good of {meta.k} needed")
        rebuilt = codec.rebuild(good, [meta.dist[p] for p in targets])
        shards = {
            p: frame_header(rebuilt[meta.dist[p]]) + bytes(rebuilt[meta.dist[p]]) for p in targets
        }
    else:
        shards = {p: b"" for p in targets}
    await _commit_all(drives, bucket, key, meta, shards, targets, result)


async def _commit_all(
    drives: list[Drive],
    bucket: str,
    key: str,
    meta: ObjectMeta,
    inline: dict[int, bytes | None],
    targets: list[int],
    result: HealResult,
) -> list[int]:
    """Commits `meta` on the targets (the version's shards already staged, or `inline`);
    returns the positions that took it (a StaleVersion drive holds a newer version: done
    there, nothing to heal)."""

    def commit(i: int) -> Callable[[], object]:
        return lambda: drives[i].commit(bucket, key, meta, inline.get(i))

    done, errors = await fan_out(
        [commit(i) if i in targets else None for i in range(len(drives))],  # type: ignore[misc]
        timeout=30.0,
    )
    result.healed += [i for i in sorted(done) if i not in result.healed]
    result.failed += [i for i, e in errors.items() if not isinstance(e, StaleVersion)]
    for i, exc in errors.items():
        if not isinstance(exc, StaleVersion):
            log.info("heal of %s/%s on %s failed: %s", bucket, key, drives[i].endpoint, exc)
    return sorted(done)


# -- streamed objects and parts ----------------------------------------------------------------
async def _heal_streamed(
    eset: ErasureSet,
    drives: list[Drive],
    bucket: str,
    key: str,
    meta: ObjectMeta,
    holders: list[int],
    lacking: list[int],
    deep: bool,
    result: HealResult,
) -> None:
    rotten = await _bad_holders(eset, drives, bucket, meta, meta.vid, meta.size, holders, deep)
    targets = [p for p in lacking + rotten if drives[p].online]
    if not targets:
        return
    good = [p for p in holders if p not in rotten]
    staged = await _rebuild_shards(
        eset, drives, bucket, meta, meta.vid, meta.size, good, targets, result
    )
    # the lacking drives take the version (install + metadata), the rotten ones the shard
    await _commit_all(drives, bucket, key, meta, {}, [p for p in staged if p in lacking], result)
    await _install_all(drives, bucket, meta.vid, [p for p in staged if p in rotten], result)


async def _heal_multipart(
    eset: ErasureSet,
    drives: list[Drive],
    bucket: str,
    key: str,
    meta: ObjectMeta,
    records: dict[int, MetaRecord],
    holders: list[int],
    lacking: list[int],
    deep: bool,
    result: HealResult,
) -> None:
    table_bytes = next(
        (
            records[p].inline
            for p in holders
            if records[p].inline is not None
            and table_digest(records[p].inline) == meta.parts_digest  # type: ignore[arg-type]
        ),
        None,
    )
    if table_bytes is None:
        raise Unreadable("no holder has the part table intact")
    table = PartTable.unpack(table_bytes)
    # first the metadata on the drives that lack it (that makes its parts theirs), so every
    # part's shards below are installed into a version the drive references
    took = await _commit_all(
        drives, bucket, key, meta, dict.fromkeys(lacking, table_bytes), lacking, result
    )
    volume = mp_volume(bucket)
    for part in table.parts:
        rotten = await _bad_holders(eset, drives, volume, meta, part.pvid, part.size, holders, deep)
        targets = took + rotten
        targets = [p for p in targets if drives[p].online and p not in result.failed]
        if not targets:
            continue
        good = [p for p in holders if p not in rotten]
        staged = await _rebuild_shards(
            eset, drives, volume, meta, part.pvid, part.size, good, targets, result
        )
        await _install_all(drives, volume, part.pvid, staged, result)


async def _install_all(
    drives: list[Drive], volume: str, vid: str, targets: list[int], result: HealResult
) -> None:
    if not targets:
        return
    done, errors = await fan_out(
        [
            (lambda d=drives[i]: d.install(volume, vid)) if i in targets else None
            for i in range(len(drives))
        ],
        timeout=30.0,
    )
    result.healed += [i for i in sorted(done) if i not in result.healed]
    result.failed += [i for i in errors if i not in result.failed]


def _runs(size: int, params: ErasureParams) -> list[list[StripeSpan]]:
    spans = stripes_for_range(size, params, 0, size)
    per_run = max(1, READ_BATCH // (params.block_size + 4))
    return [spans[i : i + per_run] for i in range(0, len(spans), per_run)]


async def _read_run(
    eset: ErasureSet,
    drives: list[Drive],
    volume: str,
    vid: str,
    meta: ObjectMeta,
    run: list[StripeSpan],
    positions: list[int],
) -> tuple[list[dict[int, memoryview]], set[int]]:
    """Per stripe {shard index: good block} from `positions`, and the positions that failed
    (missing shard, I/O error, a block failing its CRC)."""
    offset = run[0].file_offset
    length = run[-1].file_offset + run[-1].framed_len - offset
    results, errors = await fan_out(
        [
            (lambda d=drives[i]: d.read_shard(volume, vid, 1, offset, length))
            if i in positions
            else None
            for i in range(len(drives))
        ],
        timeout=eset.timeouts.shard * 4,
    )
    bad = set(errors)
    out: list[dict[int, memoryview]] = [{} for _ in run]
    for pos, raw in results.items():
        view = memoryview(raw)
        for j, span in enumerate(run):
            lo = span.file_offset - offset
            try:
                out[j][meta.dist[pos]] = verify_block(
                    view[lo : lo + span.framed_len], span.block_len
                )
            except BitrotError:
                bad.add(pos)
    return out, bad


async def _bad_holders(
    eset: ErasureSet,
    drives: list[Drive],
    volume: str,
    meta: ObjectMeta,
    vid: str,
    size: int,
    holders: list[int],
    deep: bool,
) -> list[int]:
    """Holders whose shard of `vid` is missing or (with `deep`) has a block failing its
    CRC: read whole when deep, else only their first byte range (presence)."""
    online = [p for p in holders if drives[p].online]
    if not online:
        return []
    params = ErasureParams(meta.k, meta.m, meta.stripe)
    runs = _runs(size, params)
    if not runs:
        return []
    bad: set[int] = set()
    for run in runs if deep else runs[:1]:
        _, failed = await _read_run(eset, drives, volume, vid, meta, run, online)
        bad |= failed
    return sorted(bad)


async def _rebuild_shards(
    eset: ErasureSet,
    drives: list[Drive],
    volume: str,
    meta: ObjectMeta,
    vid: str,
    size: int,
    good: list[int],
    targets: list[int],
    result: HealResult,
) -> list[int]:
    """Writes the targets' shards of `vid` (staged, not installed); returns the targets
    whose shards are durable. Raises Unreadable when some stripe has fewer than k good
    blocks among `good`."""
    params = ErasureParams(meta.k, meta.m, meta.stripe)
    codec = Codec(params)
    opened, errors = await fan_out(
        [
            (lambda d=drives[i]: d.open_shard(volume, vid, 1)) if i in targets else None
            for i in range(len(drives))
        ],
        timeout=eset.timeouts.meta,
    )
    writers: dict[int, ShardWriter] = dict(opened)
    result.failed += [i for i in errors if i not in result.failed]
    sources = [p for p in good if p not in targets]
    try:
        for run in _runs(size, params):
            blocks, failed = await _read_run(eset, drives, volume, vid, meta, run, sources)
            sources = [p for p in sources if p not in failed] or sources
            wanted = [meta.dist[p] for p in writers]
            rebuilt: list[dict[int, object]] = []
            for j, stripe in enumerate(blocks):
                if len(stripe) < meta.k:
                    raise Unreadable(
                        f"stripe {run[j].index} of {vid}: {len(stripe)} good blocks of {meta.k}"
                    )
                rebuilt.append(await run_cpu(codec.rebuild, stripe, wanted))
            for pos in list(writers):
                chunks: list[bytes | memoryview] = []
                for stripe in rebuilt:
                    block = stripe[meta.dist[pos]]
                    chunks += [frame_header(block), block]  # type: ignore[arg-type, list-item]
                try:
                    await writers[pos].write(chunks)
                except DriveError as exc:
                    log.info("heal: shard write to %s failed: %s", drives[pos].endpoint, exc)
                    result.failed.append(pos)
                    with contextlib.suppress(BaseException):
                        await writers.pop(pos).abort()
            result.bytes += len(writers) * sum(span.framed_len for span in run)
        done, failed_finish = await fan_out(
            [(writers[i].finish if i in writers else None) for i in range(len(drives))],
            timeout=eset.timeouts.shard * 4,
        )
        result.failed += [i for i in failed_finish if i not in result.failed]
        return sorted(done)
    except BaseException:
        for writer in writers.values():
            with contextlib.suppress(BaseException):
                await writer.abort()
        raise
