"""healing/reconstruct.py over real drives (a 2+2 set of LocalDrives on disk): missing and
rotten shards, missing metadata, inline and multipart objects are rebuilt from k good
shards, every block checked afterwards; a newer version is never replaced; an object with
fewer than k good shards is reported, not touched."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.cluster.objects import ObjectLayer
from shardfleet.cluster.parts import mp_volume
from shardfleet.cluster.put import PutRequest
from shardfleet.erasure import ErasureParams, stripes_for_range, verify_block
from shardfleet.healing.reconstruct import heal_object
from shardfleet.node.storage.format import open_drives
from tests.support.shards import flip_bytes

MiB = 1 << 20


@pytest.fixture
async def layer(tmp_path):
    pool = ThreadPoolExecutor(8)
    params = ErasureParams(2, 2)
    (opened,) = open_drives([tmp_path / f"d{i}" for i in range(4)], params, pool)
    layer = ObjectLayer([ErasureSet("c" * 32, 0, 0, params, opened.drives)])
    await layer.make_bucket("heal")
    yield layer
    for d in opened.drives:
        d.close()
    pool.shutdown()


async def body(data: bytes):
    for i in range(0, len(data), 1 << 16):
        yield data[i : i + (1 << 16)]


async def put(layer: ObjectLayer, key: str, data: bytes) -> ObjectMeta:
    return await layer.put_object(PutRequest("heal", key, len(data)), body(data))


async def read(layer: ObjectLayer, key: str) -> bytes:
    handle = await layer.open_object("heal", key)
    return b"".join([bytes(c) async for c in layer.read_object(handle, 0, handle.meta.size)])


async def shards_whole(layer: ObjectLayer, key: str) -> None:
    """Every drive holds the agreed version, and every block of its shard(s) checks."""
    eset = layer.sets[0]
    metas = [(await d.read_meta("heal", key)).meta for d in eset.drives]
    assert len({m.order for m in metas}) == 1, "drives disagree on the version"
    meta = metas[0]
    if meta.inline:
        return
    handle = await layer.open_object("heal", key)
    table = handle.parts
    pieces = (
        [(mp_volume("heal"), p.pvid, p.size) for p in table.parts]
        if table is not None
        else [("heal", meta.vid, meta.size)]
    )
    params = ErasureParams(meta.k, meta.m, meta.stripe)
    for volume, vid, size in pieces:
        spans = stripes_for_range(size, params, 0, size)
        length = spans[-1].file_offset + spans[-1].framed_len if spans else 0
        for drive in eset.drives:
            raw = memoryview(await drive.read_shard(volume, vid, 1, 0, length))
            for span in spans:
                verify_block(
                    raw[span.file_offset : span.file_offset + span.framed_len], span.block_len
                )


def shard_path(drive, volume: str, vid: str):
    return drive.root / "data" / volume / vid[:2] / vid / "part.1"


async def test_missing_and_rotten_shards_and_metadata_are_rebuilt(layer):
    eset = layer.sets[0]
    d = eset.drives
    data = {k: os.urandom(n) for k, n in [("small", 5000), ("zero", 0), ("big", 8 * MiB + 7)]}
    metas = {k: await put(layer, k, v) for k, v in data.items()}
    big = metas["big"]
    os.remove(shard_path(d[1], "heal", big.vid))  # a missing shard file
    await d[3].delete("heal", "big")  # a drive that never got the version
    await d[2].delete("heal", "small")  # an inline object missing on one drive
    first = await heal_object(eset, "heal", "big")
    assert first.state == "healed" and sorted(first.healed) == [1, 3]
    flip_bytes(shard_path(d[0], "heal", big.vid), [100])  # rot in the first run
    shallow = await heal_object(eset, "heal", "big")
    assert shallow.state == "healed" and shallow.healed == [0]
    # rot past the first run: a shallow look (the first run) misses it, a deep one does not
    flip_bytes(shard_path(d[2], "heal", big.vid), [3 * MiB + 99])
    assert (await heal_object(eset, "heal", "big")).state == "ok"
    deep = await heal_object(eset, "heal", "big", deep=True)
    assert deep.state == "healed" and deep.healed == [2] and deep.bytes > 0
    assert (await heal_object(eset, "heal", "small")).healed == [2]
    assert (await heal_object(eset, "heal", "zero")).state == "ok"
    for key, value in data.items():
        await shards_whole(layer, key)
        assert await read(layer, key) == value
    assert (await heal_object(eset, "heal", "big", deep=True)).state == "ok"  # nothing left


async def test_multipart_objects_heal_part_by_part(layer):
    from shardfleet.cluster.multipart import Completion
    from shardfleet.cluster.parts import multipart_etag

    eset = layer.sets[0]
    d = eset.drives
    parts = [os.urandom(5 * MiB + 3), os.urandom(777)]
    uid = await layer.create_upload("heal", "mp", content_type="x/y", user={}, headers={})
    done = []
    for n, p in enumerate(parts, 1):
        done.append(
            await layer.upload_part(
                "heal", "mp", uid, n, body(p), size=len(p), content_md5=None, headers={}
            )
        )

    def choose(record, current):
        chosen = [current[1], current[2]]
        return Completion(
            chosen, [1, 2], multipart_etag([bytes.fromhex(m.etag) for m in chosen]), {}
        )

    await layer.complete_upload("heal", "mp", uid, choose)
    shutil.rmtree(shard_path(d[1], mp_volume("heal"), done[0].vid).parent)  # a part lost
    await d[2].delete("heal", "mp")  # the object (and its parts) gone from a drive
    result = await heal_object(eset, "heal", "mp")
    assert result.state == "healed" and sorted(result.healed) == [1, 2]
    await shards_whole(layer, "mp")
    assert await read(layer, "mp") == b"".join(parts)


async def test_a_newer_version_is_never_replaced_and_unreadable_is_reported(layer):
    eset = layer.sets[0]
    d = eset.drives
    old = await put(layer, "k", os.urandom(300_000))
    # a newer version that reached one drive only (its write failed below quorum)
    newer = ObjectMeta(**{**{f: getattr(old, f) for f in old.__slots__}, "vid": "e" * 32})
    newer.mtime = old.mtime + 1
    newer.inline = True
    await d[3].commit("heal", "k", newer, b"")
    assert (await heal_object(eset, "heal", "k")).state == "ok"
    assert (await d[3].read_meta("heal", "k")).meta.vid == "e" * 32  # left alone
    lost = await put(layer, "lost", os.urandom(300_000))
    for drive in d[:3]:
        os.remove(shard_path(drive, "heal", lost.vid))
    result = await heal_object(eset, "heal", "lost")
    assert result.state == "unreadable" and result.healed == []
    assert (await heal_object(eset, "heal", "never-was")).state == "absent"
