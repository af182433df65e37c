"""LocalDrive on a real directory: the index keeps S3 key order, long keys included."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from shardfleet.cluster.meta import ObjectMeta
from shardfleet.erasure import ErasureParams
from shardfleet.node.storage.format import open_drives


def meta(vid: str) -> ObjectMeta:
    return ObjectMeta(
        vid=vid,
        mtime=1,
        size=0,
        etag="d41d8cd98f00b204e9800998ecf8427e",
        k=1,
        m=0,
        stripe=1 << 20,
        dist=[0],
        inline=True,
    )


@pytest.fixture
async def drive(tmp_path):
    pool = ThreadPoolExecutor(4)
    (opened,) = open_drives([tmp_path / "d1"], ErasureParams(1, 0), pool)
    d = opened.drives[0]
    await d.make_bucket("bkt", 1)
    yield d
    d.close()
    pool.shutdown()


async def test_long_keys_sort_like_s3(drive):
    rng = random.Random(7)
    head = "p/" + "x" * 600
    keys = {
        head + "".join(rng.choice("abcé/") for _ in range(rng.randint(1, 300))) for _ in range(60)
    }
    keys |= {"a", "p/", "p/x", "z" * 1024, "é" * 500, head[:450], head[:447]}
    for i, key in enumerate(sorted(keys)):
        await drive.commit("bkt", key, meta(f"{i:032x}"), b"")
    listed, after = [], ""
    while True:
        rows = await drive.scan("bkt", "", after, 7)
        if not rows:
            break
        listed += [k for k, _ in rows]
        after = rows[-1][0]
    assert listed == sorted(keys)
    under = [k for k, _ in await drive.scan("bkt", head, "", 1000)]
    assert under == sorted(k for k in keys if k.startswith(head))
    for key in list(keys)[:10]:
        assert (await drive.read_meta("bkt", key)).meta.vid
        await drive.delete("bkt", key)
    remaining = [k for k, _ in await drive.scan("bkt", "", "", 1000)]
    assert remaining == sorted(list(keys)[10:])


async def test_scan_pages_match_a_sorted_filter(drive):
    """Prefix, start-after and limit at every boundary, on short keys (the fast path) and
    with long keys mixed in (the general walk)."""
    rng = random.Random(11)
    keys = {"".join(rng.choice("ab/é") for _ in range(rng.randint(1, 6))) for _ in range(150)}
    keys |= {"b/" + "y" * 700}
    for i, key in enumerate(sorted(keys)):
        await drive.commit("bkt", key, meta(f"{i:032x}"), b"")
    probes = sorted(keys)[::7] + ["", "a", "b/", "é", "zz", "a/é"]
    for prefix in ["", "a", "b", "b/", "é", "ab/", "c"]:
        for after in probes:
            for limit in (1, 3, 1000):
                want = sorted(k for k in keys if k.startswith(prefix) and k > after)[:limit]
                got = [k for k, _ in await drive.scan("bkt", prefix, after, limit)]
                assert got == want, (prefix, after, limit)
