"""Listing: a merge of sorted per-drive scans, each key decided by metadata quorum.

Every drive returns up to `batch` keys after the marker. Keys are merged only up to the
horizon, the smallest last key among drives that filled their batch (past it, a drive may
hold keys not yet seen). A key is listed when k drives agree on one version, so a write
that failed to reach quorum, or a delete that some drive missed, never shows. Keys under
a common prefix are skipped in place, and a fresh scan starts past the prefix when the
batch runs out inside it, so one huge "directory" costs one scan, not one per key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.drive import VolumeNotFound
from cluster.erasure_set import ErasureSet
from cluster.errors import NoSuchBucket, ReadQuorumLost
from cluster.meta import ObjectMeta, pick_agreed_packed
from cluster.quorum import fan_out

PAST = "\U0010ffff"  # sorts after every character a key can continue with


@dataclass(slots=True)
class ListPage:
    objects: list[tuple[str, ObjectMeta]] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    next_marker: str = ""  # start-after for the next page


async def list_objects(
    eset: ErasureSet, bucket: str, *, prefix: str, delimiter: str, start_after: str, max_keys: int
) -> ListPage:
    page = ListPage()
    if max_keys <= 0:
        return page
    k = eset.read_quorum
    batch = min(max_keys + 1, 1000) if not delimiter else 1000
    marker = start_after
    current_cp = ""
    while True:
        results, errors = await fan_out(
            [(lambda d=d, m=marker: d.scan(bucket, prefix, m, batch)) for d in eset.drives],
            timeout=eset.timeouts.meta,
            need=eset.write_quorum,
            grace=eset.timeouts.meta_grace,
        )
        if sum(isinstance(e, VolumeNotFound) for e in errors.values()) >= k:
            raise NoSuchBucket()
        if len(results) < k:
            raise ReadQuorumLost("list", k, len(results), len(eset.drives), errors)
        full = [rows[-1][0] for rows in results.values() if len(rows) >= batch]
        horizon = min(full) if full else None
        per_key: dict[str, list[bytes]] = {}
        for rows in results.values():
            for key, packed in rows:
                if horizon is None or key <= horizon:
                    per_key.setdefault(key, []).append(packed)
        for key in sorted(per_key):
            if current_cp and key.startswith(current_cp):
                continue
            meta = pick_agreed_packed(per_key[key], k)
            if meta is None:
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
                page.objects.append((key, meta))
                page.next_marker = key
        if horizon is None:
            return page
        marker = current_cp + PAST if current_cp and horizon.startswith(current_cp) else horizon


def _common_prefix(key: str, prefix: str, delimiter: str) -> str:
    if not delimiter:
        return ""
    at = key.find(delimiter, len(prefix))
    return key[: at + len(delimiter)] if at >= 0 else ""
