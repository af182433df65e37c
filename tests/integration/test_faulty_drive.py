"""FaultyDrive (cluster/faulty_drive.py) injects each fault it promises, on a real
LocalDrive: errors, delays, short reads, ENOSPC, bit flips and offline. Its fault-free
behaviour is the drive contract, checked in test_drive_conformance.py."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shardfleet.cluster.drive import (
    Drive,
    DriveFull,
    DriveIOError,
    DriveOffline,
    FileNotFound,
)
from shardfleet.cluster.faulty_drive import DRIVE_METHODS, METHODS, FaultyDrive
from shardfleet.erasure.checksum import frame_header, verify_block
from shardfleet.erasure.errors import BitrotError
from tests.integration.test_drive_conformance import (  # noqa: F401 - a pytest fixture
    dirs,
    eventually,
    local_factory,
    meta,
    stage,
    vid_of,
)
from tests.support.shards import staged_files

pytestmark = pytest.mark.timeout(30)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def faulty(local_factory):
    real = local_factory()
    fd = FaultyDrive(real)
    await fd.make_bucket("bkt", 1)
    return fd


async def put_framed(fd: FaultyDrive, vid: str, blocks: list[bytes]) -> bytes:
    """A committed shard file of CRC32C-framed blocks, as put.py writes them."""
    framed = b"".join(frame_header(b) + b for b in blocks)
    await stage(fd, "bkt", vid, {1: framed})
    await fd.commit("bkt", "k", meta(vid, inline=False, size=len(framed)), None)
    return framed


def test_faulty_drive_covers_the_whole_protocol():
    protocol = {
        name
        for name, value in vars(Drive).items()
        if not name.startswith("_")
        and callable(value)
        and name not in ("online", "background", "snapshot")
    }
    assert protocol == set(DRIVE_METHODS)
    assert callable(FaultyDrive.background)  # sync, no fault of its own: the drive itself
    assert all(callable(getattr(FaultyDrive, name)) for name in protocol)
    assert METHODS == DRIVE_METHODS | {"shard.write", "shard.finish"}


def test_faulty_drive_is_never_imported_by_production_code():
    """The one place that names it is node/testfaults.py, the test-only switch that node/app.py
    imports at start only when SHARDFLEET_TEST_FAULTS=1; so no module names testfaults but
    app.py, and importing every module of the package (what any start can reach) loads
    neither."""
    sources = {
        path.relative_to(REPO): path.read_text()
        for package in ("erasure", "transport", "cluster", "healing", "node")
        for path in (REPO / package).rglob("*.py")
    }
    users = [
        p for p, text in sources.items() if "faulty_drive" in text and p.name != "faulty_drive.py"
    ]
    assert users == [Path("node/testfaults.py")]
    switch = [
        p for p, text in sources.items() if "testfaults" in text and p.name != "testfaults.py"
    ]
    assert switch == [Path("node/app.py")]
    probe = (
        "import importlib, pkgutil, sys\n"
        "for pkg in ('erasure', 'transport', 'cluster', 'healing', 'node'):\n"
        "    base = importlib.import_module('shardfleet.' + pkg)\n"
        "    for m in pkgutil.walk_packages(base.__path__, base.__name__ + '.'):\n"
        "        if m.name not in ('shardfleet.cluster.faulty_drive', 'shardfleet.node.testfaults'):\n"
        "            importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.endswith(('faulty_drive', 'testfaults'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SHARDFLEET_TEST_FAULTS"}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def test_fail_a_number_of_times_then_until_cleared(faulty):
    await faulty.commit("bkt", "k", meta(vid_of(1)), b"x")
    faulty.fail("read_meta", DriveIOError("disk said no"), times=2)
    for _ in range(2):
        with pytest.raises(DriveIOError, match="disk said no"):
            await faulty.read_meta("bkt", "k")
    assert (await faulty.read_meta("bkt", "k")).meta.vid == vid_of(1)
    faulty.fail("read_meta", FileNotFound)  # a class: built with a message, until cleared
    for _ in range(5):
        with pytest.raises(FileNotFound, match="injected fault in read_meta"):
            await faulty.read_meta("bkt", "k")
    assert await faulty.scan("bkt", "", "", 10)  # other methods are untouched
    faulty.clear("read_meta")
    assert (await faulty.read_meta("bkt", "k")).meta.vid == vid_of(1)
    assert faulty.injected["fail"] == 7
    with pytest.raises(ValueError, match="unknown drive method"):
        faulty.fail("read_metadata", DriveIOError())
    with pytest.raises(ValueError):
        faulty.fail("commit", DriveIOError(), times=0)


async def test_a_failure_before_the_call_never_reaches_the_drive(faulty):
    faulty.fail("commit", DriveIOError("lost on the way"), times=1)
    with pytest.raises(DriveIOError):
        await faulty.commit("bkt", "k", meta(vid_of(1)), b"x")
    with pytest.raises(FileNotFound):
        await faulty.real.read_meta("bkt", "k")


async def test_a_failure_after_the_call_loses_only_the_answer(faulty):
    faulty.fail("commit", DriveIOError("ack lost"), times=1, after=True)
    with pytest.raises(DriveIOError, match="ack lost"):
        await faulty.commit("bkt", "k", meta(vid_of(1)), b"x")
    assert (await faulty.read_meta("bkt", "k")).meta.vid == vid_of(1)  # it landed


async def test_fail_the_shard_writer(faulty):
    faulty.fail("shard.write", DriveIOError("torn"), times=1)
    writer = await faulty.open_shard("bkt", vid_of(1), 1)
    with pytest.raises(DriveIOError, match="torn"):
        await writer.write([b"abc"])
    await writer.write([b"abc"])  # once only
    faulty.fail("shard.finish", DriveIOError("fsync failed"))
    with pytest.raises(DriveIOError, match="fsync failed"):
        await writer.finish()
    await writer.abort()  # never faulted: releases the real writer
    assert staged_files(faulty.real.root) == []


async def test_delay_slows_a_method_and_a_timeout_cancels_it(faulty):
    await faulty.commit("bkt", "k", meta(vid_of(1)), b"x")
    faulty.delay("read_meta", 0.3)
    started = time.monotonic()
    await faulty.read_meta("bkt", "k")
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(faulty.read_meta("bkt", "k"), 0.05)
    assert time.monotonic() - started < 0.25
    started = time.monotonic()
    await faulty.scan("bkt", "", "", 10)  # other methods are not slowed
    faulty.delay("read_meta", 0)
    await faulty.read_meta("bkt", "k")
    assert time.monotonic() - started < 0.2
    assert faulty.injected["delay"] == 2


async def test_enospc_refuses_writes_and_commits(faulty):
    await faulty.commit("bkt", "old", meta(vid_of(1)), b"x")
    early = await faulty.open_shard("bkt", vid_of(2), 1)  # opened before the disk filled
    faulty.enospc()
    with pytest.raises(DriveFull):
        await early.write([b"more"])
    with pytest.raises(DriveFull):
        await early.finish()
    await early.abort()
    with pytest.raises(DriveFull):
        await faulty.open_shard("bkt", vid_of(3), 1)
    with pytest.raises(DriveFull):
        await faulty.commit("bkt", "new", meta(vid_of(4)), b"x")
    with pytest.raises(DriveFull):
        await faulty.make_bucket("other", 1)
    assert (await faulty.info()).free == 0
    assert (await faulty.read_meta("bkt", "old")).meta.vid == vid_of(1)  # reads work
    await faulty.delete("bkt", "old")  # and deletes, which free space
    assert staged_files(faulty.real.root) == []
    faulty.clear()
    await faulty.commit("bkt", "new", meta(vid_of(4)), b"x")
    assert (await faulty.info()).free > 0


async def test_short_reads_look_like_a_truncated_shard_file(faulty):
    block = random.Random(1).randbytes(4096)
    framed = await put_framed(faulty, vid_of(1), [block])
    faulty.short_reads(1000)
    got = await faulty.read_shard("bkt", vid_of(1), 1, 0, len(framed))
    assert bytes(got) == framed[:1000]  # the real bytes, fewer of them
    with pytest.raises(BitrotError, match="expected 4100"):
        verify_block(got, len(block))
    small = await faulty.read_shard("bkt", vid_of(1), 1, 50, 200)  # shorter already: as is
    assert bytes(small) == framed[50:250]
    faulty.clear()
    assert verify_block(await faulty.read_shard("bkt", vid_of(1), 1, 0, 4100), 4096) == block
    assert faulty.injected["short_read"] == 1


async def test_bit_flips_are_caught_by_the_block_crc(faulty):
    blocks = [random.Random(i).randbytes(4096) for i in range(3)]
    framed = await put_framed(faulty, vid_of(1), blocks)
    faulty.flip_bits(every_nth_read=2)
    outcomes = []
    for n in range(6):
        i = n % 3
        got = await faulty.read_shard("bkt", vid_of(1), 1, i * 4100, 4100)
        real = framed[i * 4100 : (i + 1) * 4100]
        diff = sum(bin(a ^ b).count("1") for a, b in zip(bytes(got), real, strict=True))
        try:
            verify_block(got, 4096)
            outcomes.append(("ok", diff))
        except BitrotError:
            outcomes.append(("rot", diff))
    assert outcomes == [("ok", 0), ("rot", 1)] * 3  # every 2nd read, exactly one bit
    real = await faulty.real.read_shard("bkt", vid_of(1), 1, 0, len(framed))
    assert bytes(real) == framed  # the drive's data and buffers were never touched
    faulty.clear()
    for i, block in enumerate(blocks):
        got = await faulty.read_shard("bkt", vid_of(1), 1, i * 4100, 4100)
        assert verify_block(got, 4096) == block
    assert faulty.injected["flip"] == 3


OFFLINE_CALLS = {
    "make_bucket": lambda d: d.make_bucket("b2", 1),
    "delete_bucket": lambda d: d.delete_bucket("bkt"),
    "list_buckets": lambda d: d.list_buckets(),
    "bucket_exists": lambda d: d.bucket_exists("bkt"),
    "open_shard": lambda d: d.open_shard("bkt", vid_of(5), 1),
    "commit": lambda d: d.commit("bkt", "k2", meta(vid_of(6)), b"x"),
    "abort": lambda d: d.abort("bkt", vid_of(5)),
    "read_meta": lambda d: d.read_meta("bkt", "k"),
    "read_shard": lambda d: d.read_shard("bkt", vid_of(1), 1, 0, 10),
    "delete": lambda d: d.delete("bkt", "k"),
    "scan": lambda d: d.scan("bkt", "", "", 10),
    "scan_digest": lambda d: d.scan_digest("bkt", "", "", 10),
    "lock": lambda d: d.lock("bkt/k", "o", 5),
    "unlock": lambda d: d.unlock("bkt/k", "o"),
    "install": lambda d: d.install("bkt", vid_of(5)),
    "complete_upload": lambda d: d.complete_upload(
        "bkt", "k", vid_of(7), meta(vid_of(8)), b"", meta(vid_of(9)), b""
    ),
}


async def test_offline_fails_every_call(faulty):
    assert set(OFFLINE_CALLS) == DRIVE_METHODS - {"info"}
    await put_framed(faulty, vid_of(1), [b"x" * 100])
    writer = await faulty.open_shard("bkt", vid_of(2), 1)
    faulty.offline()
    assert not faulty.online and faulty.real.online
    info = await faulty.info()  # info answers, as on every Drive: that is how one learns
    assert not info.online and info.drive_id == faulty.drive_id
    answered = []
    for name, call in OFFLINE_CALLS.items():
        try:
            await call(faulty)
        except DriveOffline:
            continue
        answered.append(name)
    assert answered == []
    with pytest.raises(DriveOffline):
        await writer.write([b"data"])
    with pytest.raises(DriveOffline):
        await writer.finish()
    await writer.abort()
    faulty.clear()
    assert faulty.online and (await faulty.info()).online
    assert (await faulty.read_meta("bkt", "k")).meta.vid == vid_of(1)  # nothing was changed
    assert staged_files(faulty.real.root) == []


async def test_counted_faults_fire_exactly_as_asked_under_concurrency(faulty):
    framed = await put_framed(faulty, vid_of(1), [b"y" * 4096])
    armed = threading.Event()

    def arm() -> None:  # from another thread, while the loop runs
        faulty.fail("read_meta", DriveIOError("busy"), times=7)
        faulty.flip_bits(every_nth_read=5)
        armed.set()

    await asyncio.to_thread(arm)
    assert armed.is_set()
    metas = await asyncio.gather(
        *(faulty.read_meta("bkt", "k") for _ in range(40)), return_exceptions=True
    )
    reads = await asyncio.gather(
        *(faulty.read_shard("bkt", vid_of(1), 1, 0, len(framed)) for _ in range(50))
    )
    assert sum(isinstance(r, DriveIOError) for r in metas) == 7
    assert sum(bytes(r) != framed for r in reads) == 10
