"""A PUT's bucket check is a fail-fast from a local drive; the commit's check decides.

Four real LocalDrives in-process: the bucket is deleted while one drive (this node's, say)
was away. The pre-check passes on that stale drive without asking the others, the body is
streamed, and the commit, which looks at the bucket on every drive, refuses the PUT with
NoSuchBucket and leaves nothing behind.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from shardfleet.cluster.drive import FileNotFound
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import NoSuchBucket
from shardfleet.cluster.objects import ObjectLayer
from shardfleet.cluster.put import PutRequest
from shardfleet.erasure import ErasureParams
from shardfleet.node.storage.format import open_drives


class Counting:
    """A real drive that counts its bucket lookups."""

    def __init__(self, drive) -> None:
        self._drive = drive
        self.lookups = 0

    def __getattr__(self, name):
        if name == "bucket_exists":
            self.lookups += 1
        return getattr(self._drive, name)


async def body(data: bytes):
    for i in range(0, len(data), 64 << 10):
        yield data[i : i + (64 << 10)]


@pytest.fixture
async def drives(tmp_path):
    pool = ThreadPoolExecutor(4)
    (opened,) = open_drives([tmp_path / f"d{i}" for i in range(4)], ErasureParams(2, 2), pool)
    yield opened.drives
    for d in opened.drives:
        d.close()
    pool.shutdown()


async def test_stale_local_drive_passes_the_precheck_and_the_commit_refuses(drives):
    counted = [Counting(d) for d in drives]
    layer = ObjectLayer([ErasureSet("c", 0, 0, ErasureParams(2, 2), counted)])
    for d in drives:
        await d.make_bucket("gone", 1)
    await layer.precheck_bucket("gone")
    assert sum(c.lookups for c in counted) == 1  # the first local drive answered

    for d in drives[1:]:  # deleted while drive 0 was away
        await d.delete_bucket("gone", force=True)
    await layer.precheck_bucket("gone")  # drive 0 still has it: fail-fast passes
    data = os.urandom(1_500_000)  # streamed (not inline): shards are staged, then refused
    with pytest.raises(NoSuchBucket):
        await layer.put_object(PutRequest("gone", "k", len(data)), body(data))
    with pytest.raises(FileNotFound):
        await drives[0].read_meta("gone", "k")  # the stale drive's commit was taken back
    for d in drives:
        assert not any(d._tmp.iterdir()), "staged shards left behind"


async def test_missing_bucket_is_decided_by_the_quorum(drives):
    counted = [Counting(d) for d in drives]
    layer = ObjectLayer([ErasureSet("c", 0, 0, ErasureParams(2, 2), counted)])
    with pytest.raises(NoSuchBucket):
        await layer.precheck_bucket("never-made")
    assert all(c.lookups >= 1 for c in counted)  # no local drive had it: every drive asked
