"""LocalDrive.commit never replaces a newer version with an older one (ObjectMeta.order).

A healer writing an old version back, or a slow coordinator's commit arriving late, must
not roll back a PUT that landed meanwhile: the old commit is refused as StaleVersion,
the current version stays, and the refused version leaves no data directory behind. A
retry of the current version (same vid) still succeeds. Real LocalDrives in temp dirs.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from shardfleet.cluster.drive import DriveError, FileNotFound, ShardNotFound, StaleVersion
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.erasure import ErasureParams
from shardfleet.node.storage.format import open_drives
from tests.support.shards import staged_files, version_dirs

pytestmark = pytest.mark.timeout(30)

OLD = "a" * 32  # version ids; the stamps below decide the order, not these
NEW = "b" * 32


def meta(vid: str, mtime: int, *, inline: bool) -> ObjectMeta:
    return ObjectMeta(
        vid=vid,
        mtime=mtime,
        size=5,
        etag="0" * 32,
        k=1,
        m=0,
        stripe=1 << 20,
        dist=[0],
        inline=inline,
    )


@pytest.fixture
async def drive(tmp_path):
    pool = ThreadPoolExecutor(4)
    (opened,) = open_drives([tmp_path / "d0"], ErasureParams(1, 0), pool)
    d = opened.drives[0]
    await d.make_bucket("bkt", 1)
    yield d
    d.close()
    pool.shutdown()


async def put(drive, vid: str, mtime: int, body: bytes, *, inline: bool) -> None:
    """What one drive sees of a PUT: shards staged and made durable, then the commit."""
    if inline:
        await drive.commit("bkt", "k", meta(vid, mtime, inline=True), body)
        return
    writer = await drive.open_shard("bkt", vid, 1)
    await writer.write([body[:2], memoryview(body)[2:]])
    await writer.finish()
    await drive.commit("bkt", "k", meta(vid, mtime, inline=False), None)


async def current_body(drive) -> tuple[str, bytes]:
    rec = await drive.read_meta("bkt", "k")
    if rec.meta.inline:
        return rec.meta.vid, rec.inline
    return rec.meta.vid, bytes(await drive.read_shard("bkt", rec.meta.vid, 1, 0, 1 << 20))


def dirs(drive) -> list[str]:
    return [p.name for p in version_dirs(drive.root, "bkt")]


@pytest.mark.parametrize("old_inline", [True, False], ids=["old-inline", "old-streamed"])
@pytest.mark.parametrize("new_inline", [True, False], ids=["new-inline", "new-streamed"])
async def test_an_older_commit_after_a_newer_one_is_refused(drive, old_inline, new_inline):
    """The healer's case: it read version OLD, a PUT of NEW landed, then it writes OLD back."""
    await put(drive, NEW, 200, b"new!!", inline=new_inline)
    with pytest.raises(StaleVersion, match="older than the current") as info:
        await put(drive, OLD, 100, b"old!!", inline=old_inline)
    assert isinstance(info.value, DriveError)  # the object layer's catch-all still holds
    assert await current_body(drive) == (NEW, b"new!!")
    assert (await drive.read_meta("bkt", "k")).meta == meta(NEW, 200, inline=new_inline)
    rows = await drive.scan("bkt", "", "", 10)
    assert rows == [("k", meta(NEW, 200, inline=new_inline).pack())]
    # the refused version left nothing: no data directory, nothing staged, no index entry
    assert dirs(drive) == ([] if new_inline else [NEW])
    assert staged_files(drive.root) == []
    assert drive.index.get(drive.index.vids, OLD.encode()) is None
    with pytest.raises(ShardNotFound):
        await drive.read_shard("bkt", OLD, 1, 0, 10)
    assert drive.errors == 0  # a stale commit is not a failing disk


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "streamed"])
async def test_a_newer_commit_replaces_an_older_one(drive, inline):
    await put(drive, OLD, 100, b"old!!", inline=inline)
    await put(drive, NEW, 200, b"new!!", inline=inline)
    assert await current_body(drive) == (NEW, b"new!!")
    assert dirs(drive) == ([] if inline else [NEW])  # the old directory was retired


async def test_equal_stamps_are_ordered_by_version_id(drive):
    await put(drive, NEW, 100, b"new!!", inline=False)
    with pytest.raises(StaleVersion):
        await put(drive, OLD, 100, b"old!!", inline=False)  # same stamp, smaller vid
    assert await current_body(drive) == (NEW, b"new!!")
    assert dirs(drive) == [NEW]


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "streamed"])
async def test_the_same_version_committed_twice_succeeds(drive, inline):
    """A retried commit (its first answer was lost) is not stale and keeps the data."""
    await put(drive, NEW, 200, b"new!!", inline=inline)
    body = b"new!!" if inline else None
    for _ in range(2):
        await drive.commit("bkt", "k", meta(NEW, 200, inline=inline), body)
    assert await current_body(drive) == (NEW, b"new!!")
    assert dirs(drive) == ([] if inline else [NEW])
    assert staged_files(drive.root) == []


async def test_shards_staged_again_for_the_current_version_replace_its_files(drive):
    """A healer rewriting a rotten shard of the current version: same vid, new file."""
    await put(drive, NEW, 200, b"rot!!", inline=False)
    await put(drive, NEW, 200, b"new!!", inline=False)
    assert await current_body(drive) == (NEW, b"new!!")
    assert dirs(drive) == [NEW] and staged_files(drive.root) == []


async def test_a_cancelled_commit_never_leaves_a_version_without_its_data(drive):
    """Cancelling commit() does not stop the group transaction already in the index's
    thread: whenever the cancel lands (here at every point of the first few loop turns),
    a version that became current still has its directory, and one that did not leaves
    nothing the index references."""
    for turns in range(12):
        vid = f"{turns:02d}" + NEW[2:]
        writer = await drive.open_shard("bkt", vid, 1)
        await writer.write([b"new!!"])
        await writer.finish()
        task = asyncio.create_task(
            drive.commit("bkt", "k", meta(vid, 200 + turns, inline=False), None)
        )
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while drive.index._running is not None:  # the group commit finishes on its own
            await asyncio.sleep(0.02)
        try:
            record = await drive.read_meta("bkt", "k")
        except FileNotFound:
            continue  # cancelled before it landed: an unreferenced directory is the sweep's
        assert record.meta.vid in dirs(drive)
        assert await current_body(drive) == (record.meta.vid, b"new!!")


async def test_concurrent_commits_end_with_the_newer_version(drive):
    """Two commits of one key race (one group transaction in index.py, or two; installs
    finish in any order): the check is inside the transaction, so arrival never decides.
    The newer one always succeeds; the older one is refused or replaced."""
    rounds = 12
    for i in range(rounds):
        for vid in (f"{i:02d}" + OLD[2:], f"{i:02d}" + NEW[2:]):
            writer = await drive.open_shard("bkt", vid, 1)
            await writer.write([vid.encode()])
            await writer.finish()
    for i in range(rounds):
        old, new = f"{i:02d}" + OLD[2:], f"{i:02d}" + NEW[2:]
        stamps = {old: 100, new: 200}
        order = [old, new] if i % 2 else [new, old]
        got = await asyncio.gather(
            *(drive.commit("bkt", f"k{i}", meta(v, stamps[v], inline=False), None) for v in order),
            return_exceptions=True,
        )
        results = dict(zip(order, got, strict=True))
        assert results[new] is None
        assert results[old] is None or isinstance(results[old], StaleVersion)
        assert (await drive.read_meta("bkt", f"k{i}")).meta.vid == new
    assert sorted(dirs(drive)) == sorted(f"{i:02d}" + NEW[2:] for i in range(rounds))
    assert staged_files(drive.root) == []


# A DELETE leaves a tombstone stamped at the delete (cluster/meta.ObjectMeta.tombstone): an
# old version's late commit (a healer that read it before the DELETE, a coordinator stalled
# past it) is older than the tombstone and refused, so the key never comes back on a drive.
DELETED_AT = 150


async def test_an_old_commit_after_a_delete_does_not_resurrect_the_key(drive):
    await put(drive, NEW, 200, b"new!!", inline=False)
    tomb = ObjectMeta.tombstone("c" * 32, 300)
    await drive.delete("bkt", "k", tombstone=tomb)
    assert (await drive.read_meta("bkt", "k")).meta.deleted
    with pytest.raises(StaleVersion):
        await put(drive, OLD, 100, b"old!!", inline=False)
    with pytest.raises(StaleVersion):  # older than the delete, newer than what it deleted
        await put(drive, "d" * 32, 250, b"mid!!", inline=False)
    rec = await drive.read_meta("bkt", "k")
    assert rec.meta.deleted and rec.meta.vid == tomb.vid
    assert dirs(drive) == []
    assert staged_files(drive.root) == []


async def test_a_delete_older_than_the_current_version_is_refused(drive):
    await put(drive, NEW, 200, b"new!!", inline=False)
    with pytest.raises(StaleVersion):
        await drive.delete("bkt", "k", tombstone=ObjectMeta.tombstone("c" * 32, DELETED_AT))
    assert (await drive.read_meta("bkt", "k")).meta.vid == NEW
    assert len(dirs(drive)) == 1


async def test_a_newer_commit_replaces_a_tombstone_and_a_retried_delete_is_a_no_op(drive):
    tomb = ObjectMeta.tombstone("c" * 32, 300)
    await drive.delete("bkt", "k", tombstone=tomb)  # no record yet: the tombstone is made
    await drive.delete("bkt", "k", tombstone=tomb)  # a retry
    assert (await drive.read_meta("bkt", "k")).meta.deleted
    await put(drive, NEW, 400, b"new!!", inline=False)
    assert (await drive.read_meta("bkt", "k")).meta.vid == NEW
    await drive.delete("bkt", "k", vid=NEW)  # an undone PUT: removed outright, no tombstone
    with pytest.raises(FileNotFound):
        await drive.read_meta("bkt", "k")
    assert dirs(drive) == []


async def test_a_bucket_holding_only_tombstones_can_be_deleted(drive):
    await put(drive, NEW, 200, b"new!!", inline=True)
    await drive.delete("bkt", "k", tombstone=ObjectMeta.tombstone("c" * 32, 300))
    await drive.delete_bucket("bkt")
    assert "bkt" not in await drive.list_buckets()


async def test_a_shard_staged_and_left_behind_can_be_staged_again(drive):
    """A write whose coordinator gave up on this drive after staging (no commit, no abort
    ever came) must not block a heal of that version here: it once failed with
    FileExistsError forever (O_EXCL), found by the chaos runs."""
    left = await drive.open_shard("bkt", NEW, 1)
    await left.write([b"stale"])
    await left.finish()  # staged, durable, and then nobody came back
    busy = await drive.open_shard("bkt", OLD, 1)
    with pytest.raises(DriveError):  # one still being written is not replaced
        await drive.open_shard("bkt", OLD, 1)
    await busy.abort()
    await put(drive, NEW, 200, b"fresh", inline=False)  # the heal's (or a retry's) shard
    assert (await drive.read_meta("bkt", "k")).meta.vid == NEW
    assert bytes(await drive.read_shard("bkt", NEW, 1, 0, 5)) == b"fresh"
    assert staged_files(drive.root) == []
