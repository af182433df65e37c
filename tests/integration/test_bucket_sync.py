"""Bucket catch-up over real drives: a drive that missed a create or a delete is fixed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.erasure import ErasureParams
from shardfleet.healing.buckets import BucketSync
from shardfleet.node.storage.format import open_drives


@pytest.fixture
async def eset(tmp_path):
    pool = ThreadPoolExecutor(8)
    params = ErasureParams(2, 2)
    (opened,) = open_drives([tmp_path / f"d{i}" for i in range(4)], params, pool)
    s = ErasureSet("c" * 32, 0, 0, params, opened.drives)
    yield s
    for d in opened.drives:
        d.close()
    pool.shutdown()


async def test_missed_create_and_missed_delete_are_caught_up(eset):
    d = eset.drives
    for drive in d[:3]:
        await drive.make_bucket("made-while-d3-down", 1)
    await d[3].make_bucket("deleted-while-d3-down", 1)
    sync = BucketSync([eset], interval=0.01)
    assert await sync.run_once() == (0, 0)  # first sighting: could be in flight
    assert await sync.run_once() == (1, 1)
    for drive in d:
        assert await drive.list_buckets() == {"made-while-d3-down": 1}
    assert await sync.run_once() == (0, 0)
