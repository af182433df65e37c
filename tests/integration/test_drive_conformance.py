"""One Drive conformance suite, run against every Drive: a LocalDrive on a temp dir, a
RemoteDrive over real QUIC on 127.0.0.1 (a server endpoint serving LocalDrives through
drive_handlers), and a FaultyDrive(LocalDrive) with no fault armed.

The checks are trio-style `check_*(make_drive)` functions: each takes a factory of fresh
drives and uses only the Drive protocol, plus the directory of the LocalDrive behind it to
see what is left on disk (every drive here is backed by one). After the suite, tests of
FaultyDrive itself: each fault shows up as documented in cluster/faulty_drive.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from shardfleet.cluster.drive import (
    MAX_LOCK_TTL,
    Drive,
    DriveError,
    DriveIOError,
    FileNotFound,
    MetaRecord,
    ShardNotFound,
    StaleVersion,
    VolumeExists,
    VolumeNotEmpty,
    VolumeNotFound,
    scan_digest,
)
from shardfleet.cluster.drive_rpc import RemoteDrive, drive_handlers
from shardfleet.cluster.faulty_drive import FaultyDrive
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.erasure import ErasureParams
from shardfleet.node.storage.format import open_drives
from shardfleet.transport import Peer, RpcEndpoint, TransportConfig, create_ca, issue_node_cert
from tests.support.shards import staged_files, version_dirs

pytestmark = pytest.mark.timeout(30)

CONFIG = TransportConfig(auth_timeout=1.0, connect_timeout=5.0, idle_timeout=6.0)
REPO = Path(__file__).resolve().parents[2]


@dataclass(slots=True)
class Subject:
    drive: Drive
    root: Path  # the directory of the LocalDrive behind the drive


MakeDrive = Callable[[], Awaitable[Subject]]


def meta(vid: str, mtime: int = 100, *, inline: bool = True, size: int = 5) -> ObjectMeta:
    return ObjectMeta(
        vid=vid,
        mtime=mtime,
        size=size,
        etag="9" * 32,
        k=1,
        m=0,
        stripe=1 << 20,
        dist=[0],
        inline=inline,
        content_type="text/plain; charset=utf-8",
        user={"colour": "blue", "note": "é"},
        headers={"Cache-Control": "no-cache"},
    )


def vid_of(n: int) -> str:
    return f"{n:032x}"


async def stage(drive: Drive, bucket: str, vid: str, parts: dict[int, bytes]) -> None:
    for part, body in parts.items():
        writer = await drive.open_shard(bucket, vid, part)
        cut = len(body) // 3
        await writer.write([body[:cut], memoryview(body)[cut : 2 * cut]])
        await writer.write([body[2 * cut :]])
        await writer.finish()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """For effects that trail the call (a RemoteDrive's writer abort resets a stream; the
    peer's handler cleans up when it sees the reset)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def dirs(s: Subject, bucket: str) -> list[str]:
    return [p.name for p in version_dirs(s.root, bucket)]


# -- the fixtures: one factory per kind of drive ---------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca", "it")
    return {
        name: issue_node_cert(root / "ca", name, ["127.0.0.1"], root / name)
        for name in ("drive-node", "client-node")
    }


@pytest.fixture
async def local_factory(tmp_path):
    """Fresh LocalDrives, each in its own directory (its own one-drive cluster)."""
    pool = ThreadPoolExecutor(4)
    made = []

    def make():
        (opened,) = open_drives([tmp_path / f"d{len(made)}"], ErasureParams(1, 0), pool)
        made.append(opened.drives[0])
        return made[-1]

    yield make
    for d in made:
        d.close()
    pool.shutdown()


@pytest.fixture(params=["local", "remote", "faulty"])
async def make_drive(request, local_factory, pki):
    kind = request.param
    if kind == "local":

        async def make_local() -> Subject:
            d = local_factory()
            return Subject(d, d.root)

        yield make_local
        return
    if kind == "faulty":

        async def make_faulty() -> Subject:
            d = local_factory()
            return Subject(FaultyDrive(d), d.root)

        yield make_faulty
        return
    served: dict[str, Drive] = {}  # drive_handlers looks drives up per call
    endpoints: list[RpcEndpoint] = []
    try:
        for name in ("drive-node", "client-node"):
            ep = RpcEndpoint(node_id=name, tls=pki[name], host="127.0.0.1", port=0, config=CONFIG)
            endpoints.append(ep)
            await ep.start()
        server, client = endpoints
        for method, handler in drive_handlers(served).items():
            server.register(method, handler)
        peer = Peer("drive-node", "127.0.0.1", server.port)

        async def make_remote() -> Subject:
            d = local_factory()
            served[d.drive_id] = d
            remote = RemoteDrive(
                client, peer, d.drive_id, str(d.root), is_alive=lambda _: True, timeout=5
            )
            return Subject(remote, d.root)

        yield make_remote
    finally:
        for ep in endpoints:
            await ep.close()


# -- the checks ---------------------------------------------------------------------------------
async def check_identity_and_info(make_drive: MakeDrive) -> None:
    s = await make_drive()
    d = s.drive
    assert isinstance(d, Drive)
    assert isinstance(d.drive_id, str) and d.drive_id
    assert isinstance(d.endpoint, str) and d.endpoint
    assert isinstance(d.is_local, bool)
    assert d.online
    info = await d.info()
    assert info.drive_id == d.drive_id and info.endpoint == d.endpoint
    assert info.online and info.total >= info.free > 0 and info.errors == 0


async def check_buckets(make_drive: MakeDrive) -> None:
    d = (s := await make_drive()).drive
    assert await d.list_buckets() == {}
    await d.make_bucket("b1", 11)
    await d.make_bucket("b2", 22)
    assert await d.list_buckets() == {"b1": 11, "b2": 22}
    assert await d.bucket_exists("b1") and not await d.bucket_exists("nope")
    with pytest.raises(VolumeExists):
        await d.make_bucket("b1", 99)
    assert (await d.list_buckets())["b1"] == 11  # a refused make changes nothing
    with pytest.raises(VolumeNotFound):
        await d.delete_bucket("nope")
    await stage(d, "b1", vid_of(1), {1: b"shard"})
    await d.commit("b1", "k", meta(vid_of(1), inline=False), None)
    with pytest.raises(VolumeNotEmpty):
        await d.delete_bucket("b1")
    assert (await d.read_meta("b1", "k")).meta.vid == vid_of(1)
    await d.delete_bucket("b1", force=True)  # with its objects and their data
    assert not await d.bucket_exists("b1")
    assert dirs(s, "b1") == []
    with pytest.raises(VolumeNotFound):
        await d.read_meta("b1", "k")
    await d.delete_bucket("b2")
    assert await d.list_buckets() == {}


async def check_missing_bucket_errors(make_drive: MakeDrive) -> None:
    d = (s := await make_drive()).drive
    with pytest.raises(VolumeNotFound):
        await d.read_meta("nope", "k")
    with pytest.raises(VolumeNotFound):
        await d.scan("nope", "", "", 10)
    with pytest.raises(VolumeNotFound):
        await d.scan_digest("nope", "", "", 10)
    with pytest.raises(VolumeNotFound):
        await d.delete("nope", "k")
    with pytest.raises(VolumeNotFound):
        await d.commit("nope", "k", meta(vid_of(1)), b"x")
    await stage(d, "nope", vid_of(2), {1: b"shard"})
    with pytest.raises(VolumeNotFound):
        await d.commit("nope", "k", meta(vid_of(2), inline=False), None)
    assert dirs(s, "nope") == [] and staged_files(s.root) == []  # the refused data is gone


async def check_inline_commit_and_read_meta(make_drive: MakeDrive) -> None:
    d = (await make_drive()).drive
    await d.make_bucket("bkt", 1)
    with pytest.raises(FileNotFound):
        await d.read_meta("bkt", "k")
    m = meta(vid_of(1))
    await d.commit("bkt", "k", m, b"small")
    rec = await d.read_meta("bkt", "k")
    assert isinstance(rec, MetaRecord)
    assert rec == MetaRecord(m, b"small")  # every field round-trips, user metadata too
    with pytest.raises(FileNotFound):
        await d.read_meta("bkt", "other")


async def check_streamed_commit_and_read_shard(make_drive: MakeDrive) -> None:
    d = (await make_drive()).drive
    await d.make_bucket("bkt", 1)
    rng = random.Random(5)
    body = rng.randbytes((200 << 10) + 3)  # above the O_DIRECT threshold, not page-aligned
    small = rng.randbytes(777)
    vid = vid_of(1)
    await stage(d, "bkt", vid, {1: body, 2: small})
    m = meta(vid, inline=False, size=len(body))
    await d.commit("bkt", "k", m, None)
    assert await d.read_meta("bkt", "k") == MetaRecord(m, None)
    n = len(body)
    for offset, length in [
        (0, n),
        (0, n + 1000),  # past the end: what there is
        (1, 100),
        (4095, 4098),
        (70_000, 65_536),
        (n - 10, 100),
        (n, 10),  # at the end: nothing
        (n + 4096, 10),
        (123, 0),
    ]:
        got = await d.read_shard("bkt", vid, 1, offset, length)
        assert bytes(got) == body[offset : offset + length], (offset, length)
    assert bytes(await d.read_shard("bkt", vid, 2, 0, 1 << 20)) == small
    with pytest.raises(ShardNotFound):
        await d.read_shard("bkt", vid, 3, 0, 10)
    with pytest.raises(ShardNotFound):
        await d.read_shard("bkt", vid_of(9), 1, 0, 10)


async def check_overwrite_retires_the_old_version(make_drive: MakeDrive) -> None:
    d = (s := await make_drive()).drive
    await d.make_bucket("bkt", 1)
    await stage(d, "bkt", vid_of(1), {1: b"one"})
    await d.commit("bkt", "k", meta(vid_of(1), 100, inline=False), None)
    await stage(d, "bkt", vid_of(2), {1: b"two"})
    await d.commit("bkt", "k", meta(vid_of(2), 200, inline=False), None)
    assert (await d.read_meta("bkt", "k")).meta.vid == vid_of(2)
    with pytest.raises(ShardNotFound):
        await d.read_shard("bkt", vid_of(1), 1, 0, 10)  # removed once the commit was durable
    assert dirs(s, "bkt") == [vid_of(2)]
    await d.commit("bkt", "k", meta(vid_of(3), 300), b"inline now")
    assert await d.read_meta("bkt", "k") == MetaRecord(meta(vid_of(3), 300), b"inline now")
    assert dirs(s, "bkt") == []


async def check_stale_commit_is_refused(make_drive: MakeDrive) -> None:
    d = (s := await make_drive()).drive
    await d.make_bucket("bkt", 1)
    newer = meta(vid_of(1), 200, inline=False)
    await stage(d, "bkt", newer.vid, {1: b"newer"})
    await d.commit("bkt", "k", newer, None)
    await d.commit("bkt", "k", newer, None)  # a retry of the same version is fine
    await stage(d, "bkt", vid_of(2), {1: b"older"})
    with pytest.raises(DriveError) as info:
        await d.commit("bkt", "k", meta(vid_of(2), 100, inline=False), None)
    assert await d.read_meta("bkt", "k") == MetaRecord(newer, None)
    assert dirs(s, "bkt") == [newer.vid] and staged_files(s.root) == []
    assert isinstance(info.value, StaleVersion), repr(info.value)


async def check_abort(make_drive: MakeDrive) -> None:
    d = (s := await make_drive()).drive
    await d.make_bucket("bkt", 1)
    # a writer given up half-way
    writer = await d.open_shard("bkt", vid_of(1), 1)
    await writer.write([b"half a shard"])
    await writer.abort()
    assert await eventually(lambda: staged_files(s.root) == [])
    # shards made durable, then the version abandoned before its commit
    await stage(d, "bkt", vid_of(2), {1: b"p1", 2: b"p2"})
    assert staged_files(s.root)
    await d.abort("bkt", vid_of(2))
    assert staged_files(s.root) == []
    with pytest.raises(DriveError):  # nothing is left to commit
        await d.commit("bkt", "k", meta(vid_of(2), inline=False), None)
    with pytest.raises(FileNotFound):
        await d.read_meta("bkt", "k")
    assert dirs(s, "bkt") == []
    await d.abort("bkt", vid_of(3))  # nothing staged: a no-op


async def check_delete(make_drive: MakeDrive) -> None:
    d = (s := await make_drive()).drive
    await d.make_bucket("bkt", 1)
    await stage(d, "bkt", vid_of(1), {1: b"data"})
    await d.commit("bkt", "streamed", meta(vid_of(1), inline=False), None)
    await d.commit("bkt", "inline", meta(vid_of(2)), b"data")
    await d.delete("bkt", "inline")
    with pytest.raises(FileNotFound):
        await d.read_meta("bkt", "inline")
    with pytest.raises(FileNotFound):
        await d.delete("bkt", "inline")
    with pytest.raises(FileNotFound):  # only if its current version is that one
        await d.delete("bkt", "streamed", vid=vid_of(7))
    assert (await d.read_meta("bkt", "streamed")).meta.vid == vid_of(1)
    await d.delete("bkt", "streamed", vid=vid_of(1))
    with pytest.raises(FileNotFound):
        await d.read_meta("bkt", "streamed")
    with pytest.raises(ShardNotFound):
        await d.read_shard("bkt", vid_of(1), 1, 0, 4)
    assert dirs(s, "bkt") == []
    assert await d.scan("bkt", "", "", 10) == []
    await d.delete_bucket("bkt")  # empty again


async def check_scan_and_scan_digest(make_drive: MakeDrive) -> None:
    d = (await make_drive()).drive
    await d.make_bucket("bkt", 1)
    rng = random.Random(3)
    keys = {"".join(rng.choice("ab/é") for _ in range(rng.randint(1, 5))) for _ in range(60)}
    keys |= {"a", "a/", "b/" + "x" * 600}  # a long key takes the index's general walk
    packed: dict[str, bytes] = {}
    for i, key in enumerate(rng.sample(sorted(keys), len(keys))):  # committed out of order
        m = meta(vid_of(i + 1))
        await d.commit("bkt", key, m, b"x")
        packed[key] = m.pack()
    assert await d.scan("bkt", "", "", 1000) == sorted(packed.items())
    probes = ["", "a", "a/", "b", "é", "zz", *sorted(keys)[::9]]
    for prefix in ["", "a", "a/", "b/", "é", "c"]:
        for after in probes:
            for limit in (1, 4, 1000):
                want = sorted(
                    (k, v) for k, v in packed.items() if k.startswith(prefix) and k > after
                )[:limit]
                rows = await d.scan("bkt", prefix, after, limit)
                assert rows == want, (prefix, after, limit)
                assert await d.scan_digest("bkt", prefix, after, limit) == scan_digest(want)
    listed, after = [], ""
    while rows := await d.scan("bkt", "", after, 7):  # paging by start-after
        listed += [k for k, _ in rows]
        after = rows[-1][0]
    assert listed == sorted(keys)
    empty = await d.scan_digest("bkt", "zz", "", 10)
    assert (empty.count, empty.last_key) == (0, "")


async def check_locks(make_drive: MakeDrive) -> None:
    d = (await make_drive()).drive
    assert await d.lock("bkt/k", "owner-1", 5)
    assert not await d.lock("bkt/k", "owner-2", 5)
    assert await d.lock("bkt/k", "owner-1", 5)  # a renewal
    assert await d.lock("bkt/other", "owner-2", 5)  # keys are independent
    await d.unlock("bkt/k", "owner-2")  # not its lease: stays
    assert not await d.lock("bkt/k", "owner-2", 5)
    await d.unlock("bkt/k", "owner-1")
    await d.unlock("bkt/k", "owner-1")  # already released: a no-op
    assert await d.lock("bkt/k", "owner-2", 0.2)
    await asyncio.sleep(0.3)
    assert await d.lock("bkt/k", "owner-1", MAX_LOCK_TTL)  # the lease expired
    # a ttl outside (0, MAX_LOCK_TTL]: ValueError on the drive itself, DriveIOError
    # ("bad-request") through the RPC, where the message is checked before the drive
    for ttl in (0, -1.0, MAX_LOCK_TTL + 1, float("nan")):
        with pytest.raises((ValueError, DriveIOError)):
            await d.lock("bkt/x", "owner-1", ttl)


async def check_background_view(make_drive: MakeDrive) -> None:
    """`background()` is the same drive: what a heal writes through it, clients read, and
    the other way round (over RPC it rides the paced background connection)."""
    d = (await make_drive()).drive
    bg = d.background()
    assert bg.drive_id == d.drive_id and bg.online
    snap = d.snapshot()  # no I/O; free space only where the drive has probed it
    assert (snap.drive_id, snap.online) == (d.drive_id, True)
    assert 0 <= snap.free <= snap.total
    await bg.make_bucket("bkt", 1)
    body = random.Random(9).randbytes((300 << 10) + 1)
    vid = vid_of(1)
    await stage(bg, "bkt", vid, {1: body})
    m = meta(vid, inline=False, size=len(body))
    await bg.commit("bkt", "k", m, None)
    assert await d.read_meta("bkt", "k") == MetaRecord(m, None)
    assert bytes(await bg.read_shard("bkt", vid, 1, 0, 1 << 20)) == body
    assert bytes(await d.read_shard("bkt", vid, 1, 0, 1 << 20)) == body
    with pytest.raises(StaleVersion):  # the conditional commit holds for a heal too
        await bg.commit("bkt", "k", meta(vid_of(0), 50, inline=True, size=1), b"x")


CHECKS = [
    check_identity_and_info,
    check_buckets,
    check_missing_bucket_errors,
    check_inline_commit_and_read_meta,
    check_streamed_commit_and_read_shard,
    check_overwrite_retires_the_old_version,
    check_stale_commit_is_refused,
    check_abort,
    check_delete,
    check_scan_and_scan_digest,
    check_locks,
    check_background_view,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_drive_conformance(check, make_drive):
    await asyncio.wait_for(check(make_drive), 20)


# -- FaultyDrive: each fault shows up -----------------------------------------------------------
