"""Listing: a merge of sorted per-drive scans, each key decided by metadata quorum.

Every drive returns up to `batch` keys after the marker. Keys are merged only up to the
horizon, the smallest last key among drives that filled their batch (past it, a drive may
hold keys not yet seen). A key is listed when k drives agree on one version (and no newer
tombstone, cluster/meta.pick_agreed, says it was deleted), so a write that failed to reach
quorum, or a delete that some drive missed, never shows.

Never a short listing: a key some drive holds but too few agree on is left out only when
at least n - W + 1 answering drives lack it (no acknowledged write leaves that), and a
listing needs that many answers at all; anything less is ReadQuorumLost (503), not a 200
that silently misses keys. A drive formatted empty and not yet healed does not answer
(NotYetHealed): its missing rows prove nothing. Keys under
a common prefix are skipped in place, and a fresh scan starts past the prefix when the
batch runs out inside it, so one huge "directory" costs one scan, not one per key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardfleet.cluster.drive import VolumeNotFound, scan_digest
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import NoSuchBucket, ReadQuorumLost
from shardfleet.cluster.meta import ObjectMeta, is_deleted_packed, pick_agreed_packed, summary
from shardfleet.cluster.quorum import fan_out

MAX_BATCH = 1001  # one page of 1,000 keys and the one that says whether more follow
MIN_BATCH = 128
PAST = "\U0010ffff"  # sorts after every character a key can continue with


@dataclass(slots=True)
class ListPage:
    objects: list[tuple[str, int, str, int]] = field(default_factory=list)  # key, mtime, etag, size
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    next_marker: str = ""  # start-after for the next page
    #: each listed object's agreed record, beside `objects` (only when asked: `metas=True`)
    metas: list[ObjectMeta] = field(default_factory=list)


async def list_objects(
    eset: ErasureSet,
    bucket: str,
    *,
    prefix: str,
    delimiter: str,
    start_after: str,
    max_keys: int,
    metas: bool = False,
    every: bool = False,
) -> ListPage:
    """One page of the set's keys. With `every` (the scanner), every key any drive holds a
    record of, deleted or undecided too (as (key, 0, "", 0) unless agreed), so that
    tombstones and stray versions get healed or collected."""
    page = ListPage()
    if max_keys <= 0:
        return page
    k = eset.read_quorum
    # never tiny batches: a run of tombstones (deleted keys, not yet collected) between
    # live keys would otherwise cost one round of scans per two of them
    batch = min(max(max_keys + 1, MIN_BATCH), MAX_BATCH) if not delimiter else MAX_BATCH
    marker = start_after
    current_cp = ""
    drives = eset.drives
    # Any n - (W - k) drives hold at least k copies of every acknowledged version: scan
    # only those, local ones first (a tombstone counts from one copy, cluster/meta.py).
    enough = len(drives) - (eset.write_quorum - k)
    order = sorted(
        (i for i, d in enumerate(drives) if d.online), key=lambda i: not drives[i].is_local
    )
    chosen = set(order[:enough]) if len(order) >= enough else set(range(len(drives)))
    evidence = len(drives) - eset.write_quorum + 1  # answers that can prove a key absent
    while True:
        results, errors = await _scans(
            eset, chosen, order, bucket, prefix, marker, batch, every=every
        )
        if len(results) < min(enough, len(drives)) and len(chosen) < len(drives):
            chosen = set(range(len(drives)))  # a chosen drive failed: ask them all
            continue
        if sum(isinstance(e, VolumeNotFound) for e in errors.values()) >= k:
            raise NoSuchBucket()
        if len(results) < evidence:
            raise ReadQuorumLost("list", evidence, len(results), len(eset.drives), errors)
        full = [rows[-1][0] for rows in results.values() if len(rows) >= batch]
        horizon = min(full) if full else None
        agreed = _agreed(list(results.values()), horizon, k, evidence, every)
        if not delimiter:  # the common listing: every agreed key is an object of the page
            room = max_keys - len(page.objects)
            if metas:
                page.metas += [
                    m if isinstance(m, ObjectMeta) else ObjectMeta.unpack(m)
                    for _, m in agreed[:room]
                ]
            page.objects += [_entry(key, meta) for key, meta in agreed[:room]]
            if page.objects:
                page.next_marker = page.objects[-1][0]
            if len(agreed) > room:
                page.truncated = True
                return page
            if horizon is None:
                return page
            marker = horizon
            continue
        for key, meta in agreed:
            if current_cp and key.startswith(current_cp):
                continue
            if len(page.objects) + len(page.prefixes) >= max_keys:
                page.truncated = True
                return page
            cp = _common_prefix(key, prefix, delimiter)
            if cp:
                current_cp = cp
                page.prefixes.append(cp)
                page.next_marker = cp + PAST
            else:
                page.objects.append(_entry(key, meta))
                page.next_marker = key
        if horizon is None:
            return page
        marker = current_cp + PAST if current_cp and horizon.startswith(current_cp) else horizon


async def _scans(
    eset: ErasureSet,
    chosen: set[int],
    order: list[int],
    bucket: str,
    prefix: str,
    marker: str,
    batch: int,
    *,
    every: bool = False,
) -> tuple[dict[int, list[tuple[str, bytes]]], dict[int, BaseException]]:
    """One batch of rows from each chosen drive that answers.

    One drive (a local one when the set has one here) sends its rows and the others only
    a digest of theirs: where every digest matches, they hold the very same rows, which
    is the healthy case, and skipping those copies saves most of a listing's network and
    decoding. A mismatch, or the reference drive failing, reads full rows from all."""
    t = eset.timeouts

    async def ask(rows_from: Callable[[int], bool]) -> tuple[dict[int, Any], dict[int, Any]]:
        calls = [
            None
            if i not in chosen
            else (lambda d=d: d.scan(bucket, prefix, marker, batch, every=every))
            if rows_from(i)
            else (lambda d=d: d.scan_digest(bucket, prefix, marker, batch, every=every))
            for i, d in enumerate(eset.drives)
        ]
        return await fan_out(calls, timeout=t.meta, need=eset.write_quorum, grace=t.meta_grace)

    ref = next((i for i in order if i in chosen), None)
    if ref is not None and len(chosen) > 1:
        got, errors = await ask(lambda i: i == ref)
        rows = got.get(ref)
        if rows is not None:
            want = scan_digest(rows)
            if all(answer == want for i, answer in got.items() if i != ref):
                return {i: rows for i in got}, errors
    return await ask(lambda i: True)


def _agreed(
    scans: list[list[tuple[str, bytes]]],
    horizon: str | None,
    k: int,
    evidence: int,
    every: bool = False,
) -> list[tuple[str, ObjectMeta | bytes | None]]:
    """(key, agreed meta) in key order, up to the horizon, deleted keys left out. When
    every drive returned the same rows (the healthy case) the rows are the answer as they
    are, without a merge. A key too few drives agree on is left out when at least
    `evidence` drives lack it, else ReadQuorumLost. With `every`, every key is returned
    (None: not agreed; a tombstone's packed row: deleted)."""
    first = scans[0]
    if len(scans) >= k and all(rows == first for rows in scans[1:]):
        rows = first if horizon is None else [r for r in first if r[0] <= horizon]
        if every:
            return list(rows)
        return [r for r in rows if not is_deleted_packed(r[1])]
    per_key: dict[str, list[bytes]] = {}
    for rows in scans:
        for key, packed in rows:
            if horizon is None or key <= horizon:
                per_key.setdefault(key, []).append(packed)
    out: list[tuple[str, ObjectMeta | bytes | None]] = []
    for key in sorted(per_key):
        copies = per_key[key]
        meta = pick_agreed_packed(copies, k)
        if meta is not None and not meta.deleted:
            out.append((key, meta))
        elif every:
            out.append((key, meta.pack() if meta is not None else None))
        elif meta is None and len(scans) - len(copies) < evidence:
            raise ReadQuorumLost(
                f"list ({key!r:.80} is on {len(copies)} of the {len(scans)} drives that"
                f" answered: too few to read it, too many to call it absent)",
                k,
                len(copies),
                len(scans),
                {},
            )
    return out


def _entry(key: str, meta: ObjectMeta | bytes | None) -> tuple[str, int, str, int]:
    """(key, mtime, etag, size) of a listed key; (key, 0, "", 0) for one that is deleted or
    undecided (only in the scanner's listings, `every`)."""
    if isinstance(meta, ObjectMeta):
        return (key, meta.mtime, meta.etag, meta.size)
    if meta is None or is_deleted_packed(meta):
        return (key, 0, "", 0)
    return (key, *summary(meta))


def _common_prefix(key: str, prefix: str, delimiter: str) -> str:
    if not delimiter:
        return ""
    at = key.find(delimiter, len(prefix))
    return key[: at + len(delimiter)] if at >= 0 else ""
