"""Listing over four real LocalDrives in-process: digests where replicas agree, rows where
they differ, and the page is the quorum's answer either way."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.listing import list_objects
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.erasure import ErasureParams
from shardfleet.node.storage.format import open_drives


def meta(i: int) -> ObjectMeta:
    return ObjectMeta(
        vid=f"{i:032x}",
        mtime=1_000_000_000 * (i + 1),
        size=i,
        etag="d41d8cd98f00b204e9800998ecf8427e",
        k=2,
        m=2,
        stripe=1 << 20,
        dist=[0, 1, 2, 3],
        inline=True,
    )


@pytest.fixture
async def drives(tmp_path):
    pool = ThreadPoolExecutor(4)
    (opened,) = open_drives([tmp_path / f"d{i}" for i in range(4)], ErasureParams(2, 2), pool)
    for d in opened.drives:
        await d.make_bucket("bkt", 1)
    yield opened.drives
    for d in opened.drives:
        d.close()
    pool.shutdown()


class Counting:
    """A real drive that counts which listing calls reach it."""

    def __init__(self, drive) -> None:
        self._drive = drive
        self.calls: list[str] = []

    def __getattr__(self, name):
        attr = getattr(self._drive, name)
        if name in ("scan", "scan_digest"):
            self.calls.append(name)
        return attr


async def page_keys(eset: ErasureSet, **kw) -> list[str]:
    args = {"prefix": "", "delimiter": "", "start_after": "", "max_keys": 1000} | kw
    page = await list_objects(eset, "bkt", **args)
    return [key for key, *_ in page.objects]


async def test_agreeing_replicas_send_digests_and_disagreeing_ones_rows(drives):
    keys = [f"k{i:03d}" for i in range(40)]
    for i, key in enumerate(keys):
        for d in drives:
            await d.commit("bkt", key, meta(i), b"x")
    counted = [Counting(d) for d in drives]
    eset = ErasureSet("c", 0, 0, ErasureParams(2, 2), counted)
    assert await page_keys(eset) == keys
    assert sorted(c for d in counted for c in d.calls) == ["scan", "scan_digest", "scan_digest"]

    # one drive missed a write and another a delete: digests differ, rows are read, and
    # the page is what k drives agree on
    await drives[0].commit("bkt", "extra-on-one", meta(99), b"x")
    await drives[1].delete("bkt", keys[5])
    for d in counted:
        d.calls.clear()
    assert await page_keys(eset) == keys
    assert sum(c == "scan" for d in counted for c in d.calls) >= 3
    assert await page_keys(eset, max_keys=7, start_after="k010") == keys[11:18]
