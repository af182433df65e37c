"""Per-key locks (cluster/keylock.py) over real LocalDrives in temp dirs, and through
RemoteDrives over real QUIC on 127.0.0.1: mutual exclusion, independence of keys, lease
expiry, drives down, cancellation, and hostile lock messages."""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shardfleet.cluster import keylock
from shardfleet.cluster.drive import MAX_LOCK_TTL, DriveIOError, DriveOffline, LeaseTable
from shardfleet.cluster.drive_rpc import RemoteDrive, drive_handlers
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import LockConflict, ObjectError
from shardfleet.erasure import ErasureParams
from shardfleet.node.storage.format import open_drives
from shardfleet.transport import (
    Peer,
    RemoteError,
    RpcEndpoint,
    TransportConfig,
    create_ca,
    issue_node_cert,
)

pytestmark = pytest.mark.timeout(30)

PARAMS = ErasureParams(2, 2)
CONFIG = TransportConfig(auth_timeout=1.0, connect_timeout=5.0, idle_timeout=6.0)


@pytest.fixture(autouse=True)
async def no_unlock_left_running():
    yield
    await keylock.drain(5.0)
    assert not keylock._releases


@pytest.fixture
async def drives(tmp_path):
    pool = ThreadPoolExecutor(4)
    (opened,) = open_drives([tmp_path / f"d{i}" for i in range(PARAMS.n)], PARAMS, pool)
    yield opened.drives
    for d in opened.drives:
        d.close()
    pool.shutdown()


@pytest.fixture
def eset(drives):
    return ErasureSet("c" * 32, 0, 0, PARAMS, drives)


def no_leases_left(drives) -> bool:
    return all(d.leases.holder("bkt/k") is None and len(d.leases) == 0 for d in drives)


class Room:
    """A critical section that notices two holders at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.order: list[str] = []

    async def enter(self, who: str, stay: float) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        assert self.inside == 1, f"{who} entered while another holder was inside"
        self.order.append(who)
        await asyncio.sleep(stay)
        self.inside -= 1


# -- (a) mutual exclusion -----------------------------------------------------------------------
async def test_two_concurrent_holders_take_turns(eset, drives):
    room = Room()

    async def holder(who: str) -> None:
        for _ in range(5):
            async with keylock.hold(eset, "bkt", "k", wait=10):
                await room.enter(who, 0.01)

    await asyncio.wait_for(asyncio.gather(holder("a"), holder("b")), 20)
    assert room.most == 1 and sorted(room.order) == ["a"] * 5 + ["b"] * 5
    await keylock.drain()
    assert no_leases_left(drives)


async def test_many_contenders_all_get_through_one_at_a_time(eset, drives):
    """Contenders that split the drives between them back off at random: nobody livelocks."""
    room = Room()

    async def holder(who: str) -> None:
        async with keylock.hold(eset, "bkt", "k", wait=15):
            await room.enter(who, 0.002)

    names = [f"h{i}" for i in range(12)]
    await asyncio.wait_for(asyncio.gather(*(holder(n) for n in names)), 25)
    assert room.most == 1 and sorted(room.order) == sorted(names)


async def test_if_none_match_race_has_exactly_one_winner(eset):
    """What a conditional PUT does under the lock: check absent, then commit."""
    store: dict[str, str] = {}

    async def put_if_absent(who: str) -> bool:
        async with keylock.hold(eset, "bkt", "new-key"):
            if "new-key" in store:
                return False
            await asyncio.sleep(0.02)  # the metadata read and the commit
            store["new-key"] = who
            return True

    for _ in range(5):
        store.clear()
        won = await asyncio.wait_for(asyncio.gather(put_if_absent("a"), put_if_absent("b")), 10)
        assert sorted(won) == [False, True]


async def test_a_majority_makes_the_lock_and_a_minority_does_not(eset, drives):
    for d in drives[:2]:  # another owner holds half the drives: nobody can get a majority
        assert await d.lock("bkt/k", "other", 30)
    with pytest.raises(LockConflict, match="2 held it for another owner"):
        async with keylock.hold(eset, "bkt", "k", wait=0.1):
            pytest.fail("granted by half of the drives")
    assert [d.leases.holder("bkt/k") for d in drives] == ["other", "other", None, None]
    await drives[1].unlock("bkt/k", "other")  # one drive of four is held: 3 of 4 grant
    async with keylock.hold(eset, "bkt", "k", wait=0.5):
        holders = [d.leases.holder("bkt/k") for d in drives]
        assert holders[0] == "other" and None not in holders[1:]
        assert len(set(holders[1:])) == 1  # one owner on the majority
    assert [d.leases.holder("bkt/k") for d in drives] == ["other", None, None, None]


async def test_an_error_in_the_body_releases_the_lock(eset, drives):
    with pytest.raises(RuntimeError, match="boom"):
        async with keylock.hold(eset, "bkt", "k"):
            raise RuntimeError("boom")
    assert no_leases_left(drives)
    async with keylock.hold(eset, "bkt", "k", wait=0.2):
        pass


# -- (b) keys are independent -------------------------------------------------------------------
async def test_different_keys_do_not_block_each_other(eset):
    async with keylock.hold(eset, "bkt", "a"):
        started = time.monotonic()
        async with keylock.hold(eset, "bkt", "b", wait=0.5):
            pass
        async with keylock.hold(eset, "other", "a", wait=0.5):  # same key, other bucket
            pass
        assert time.monotonic() - started < 0.4
        with pytest.raises(LockConflict):
            async with keylock.hold(eset, "bkt", "a", wait=0.05):
                pass


# -- (c) a holder that never releases -----------------------------------------------------------
async def test_a_dead_holders_lease_expires(eset, drives):
    # a holder that died right after winning: its grants stay until its TTL runs out
    for d in drives:
        assert await d.lock("bkt/k", "dead-process", 0.4)
    with pytest.raises(LockConflict, match="bkt/k"):
        async with keylock.hold(eset, "bkt", "k", wait=0.1):
            pass
    started = time.monotonic()
    async with keylock.hold(eset, "bkt", "k", wait=5):
        waited = time.monotonic() - started
    assert 0.2 <= waited < 2.0


async def test_an_abandoned_hold_is_taken_over_after_its_ttl(eset):
    stuck = keylock.hold(eset, "bkt", "k", ttl=0.3)
    await stuck.__aenter__()  # and never leaves (its node hung, say)
    try:
        started = time.monotonic()
        async with keylock.hold(eset, "bkt", "k", wait=5):
            assert time.monotonic() - started >= 0.2
    finally:
        await stuck.__aexit__(None, None, None)  # releases nothing of the new holder's


# -- (d) drives down ----------------------------------------------------------------------------
async def test_one_of_four_drives_offline_still_locks(eset, drives):
    drives[3].mark_offline("pulled for the test")
    room = Room()

    async def holder(who: str) -> None:
        async with keylock.hold(eset, "bkt", "k", wait=10):
            await room.enter(who, 0.01)

    await asyncio.wait_for(asyncio.gather(*(holder(w) for w in "abc")), 15)
    assert room.most == 1
    with pytest.raises(DriveOffline):
        await drives[3].lock("bkt/x", "o", 1)


async def test_two_of_four_drives_offline_is_a_conflict_after_the_wait(eset, drives):
    drives[2].mark_offline("pulled for the test")
    drives[3].mark_offline("pulled for the test")
    started = time.monotonic()
    with pytest.raises(LockConflict) as info:
        async with keylock.hold(eset, "bkt", "k", wait=0.3):
            pytest.fail("a minority of drives granted the lock")
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
    assert isinstance(info.value, ObjectError)
    assert "bkt/k" in str(info.value) and "DriveOffline" in str(info.value)
    await keylock.drain()
    assert all(len(d.leases) == 0 for d in drives[:2])  # the minority grants were given back


# -- cancellation -------------------------------------------------------------------------------
async def test_a_cancelled_holder_releases_without_waiting_for_the_ttl(eset, drives):
    inside = asyncio.Event()

    async def holder() -> None:
        async with keylock.hold(eset, "bkt", "k", ttl=30):
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(holder())
    await asyncio.wait_for(inside.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with keylock.hold(eset, "bkt", "k", wait=1):
        pass


async def test_a_cancelled_waiter_leaves_no_lease_behind(eset, drives):
    async with keylock.hold(eset, "bkt", "k"):
        waiter = asyncio.create_task(_hold_briefly(eset))
        await asyncio.sleep(0.1)  # a few rounds of being refused
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    await keylock.drain()
    assert no_leases_left(drives)


async def test_a_holder_inside_asyncio_timeout_gets_out_at_once(eset, drives):
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            async with keylock.hold(eset, "bkt", "k"):
                await asyncio.sleep(10)
    assert time.monotonic() - started < 1.0
    await keylock.drain()
    assert no_leases_left(drives)


async def _hold_briefly(eset: ErasureSet) -> None:
    async with keylock.hold(eset, "bkt", "k", wait=10):
        pass


async def test_bad_ttl_is_refused_up_front(eset):
    for ttl in (0, -1, MAX_LOCK_TTL + 1, math.nan):
        with pytest.raises(ValueError):
            async with keylock.hold(eset, "bkt", "k", ttl=ttl):
                pass


# -- the drive's lease table --------------------------------------------------------------------
def test_lease_table_grants_renews_and_releases_by_owner_only():
    now = [100.0]
    table = LeaseTable(clock=lambda: now[0])
    assert table.grant("r", "a", 10)
    assert not table.grant("r", "b", 10)
    assert table.grant("r", "a", 10)  # renewal by the holder
    now[0] += 9
    assert not table.grant("r", "b", 10)  # renewed at 100: still live at 109
    table.release("r", "b")  # not b's: nothing happens
    assert table.holder("r") == "a"
    table.release("r", "a")
    table.release("r", "a")  # idempotent
    assert table.holder("r") is None and table.grant("r", "b", 1)
    now[0] += 1
    assert table.holder("r") is None and table.grant("r", "c", 1)  # expired: taken over


def test_lease_table_is_bounded_and_sweeps_expired_leases():
    now = [0.0]
    table = LeaseTable(cap=3, clock=lambda: now[0])
    assert all(table.grant(f"r{i}", "o", 5) for i in range(3))
    assert not table.grant("r3", "o", 5)  # full of live leases: refused, not grown
    assert table.grant("r0", "o", 5)  # renewing an existing lease still works
    assert len(table) == 3
    now[0] += 6  # all expired; the next grant sweeps them
    assert table.grant("r3", "o", 5)
    assert len(table) == 1
    with pytest.raises(ValueError):
        table.grant("r", "o", 0)


# -- (e) over QUIC: RemoteDrive and drive_handlers ----------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca", "it")
    return {
        name: issue_node_cert(root / "ca", name, ["127.0.0.1"], root / name)
        for name in ("drive-node", "node-a", "node-b")
    }


@pytest.fixture
async def cluster(pki, drives):
    """One node serving the four drives over QUIC, two nodes reaching them as RemoteDrives."""
    made: list[RpcEndpoint] = []

    async def endpoint(name: str) -> RpcEndpoint:
        ep = RpcEndpoint(node_id=name, tls=pki[name], host="127.0.0.1", port=0, config=CONFIG)
        await ep.start()
        made.append(ep)
        return ep

    try:
        server = await endpoint("drive-node")
        for method, handler in drive_handlers({d.drive_id: d for d in drives}).items():
            server.register(method, handler)
        peer = Peer("drive-node", "127.0.0.1", server.port)
        sets = {}
        for name in ("node-a", "node-b"):
            ep = await endpoint(name)
            remote = [
                RemoteDrive(ep, peer, d.drive_id, str(d.root), is_alive=lambda _: True, timeout=5)
                for d in drives
            ]
            sets[name] = ErasureSet("c" * 32, 0, 0, PARAMS, remote)
        yield sets, made[1], peer
    finally:
        await keylock.drain()
        for ep in made:
            await ep.close()


async def test_remote_lock_and_unlock(cluster, drives):
    sets, _, _ = cluster
    remote = sets["node-a"].drives[0]
    assert await remote.lock("bkt/k", "owner-1", 5)
    assert drives[0].leases.holder("bkt/k") == "owner-1"
    assert not await remote.lock("bkt/k", "owner-2", 5)
    assert await remote.lock("bkt/k", "owner-1", 5)  # renewal
    await remote.unlock("bkt/k", "owner-2")  # not its lease: stays
    assert drives[0].leases.holder("bkt/k") == "owner-1"
    await remote.unlock("bkt/k", "owner-1")
    await remote.unlock("bkt/k", "owner-1")
    assert drives[0].leases.holder("bkt/k") is None
    drives[1].mark_offline("pulled for the test")
    with pytest.raises(DriveOffline):
        await sets["node-a"].drives[1].lock("bkt/k", "owner-1", 5)


async def test_if_none_match_race_through_two_nodes_has_one_winner(cluster, drives):
    sets, _, _ = cluster
    store: dict[str, str] = {}
    room = Room()

    async def put_if_absent(node: str, key: str) -> bool:
        async with keylock.hold(sets[node], "bkt", key, wait=10):
            await room.enter(node, 0.01)
            if key in store:
                return False
            store[key] = node
            return True

    for i in range(5):
        key = f"new-{i}"
        won = await asyncio.wait_for(
            asyncio.gather(put_if_absent("node-a", key), put_if_absent("node-b", key)), 20
        )
        assert sorted(won) == [False, True] and key in store
    assert room.most == 1
    await keylock.drain()
    assert all(len(d.leases) == 0 for d in drives)


async def test_hostile_lock_messages_get_a_clean_error(cluster, drives):
    _, client, peer = cluster
    drive_id = drives[0].drive_id
    good = {"d": drive_id, "r": "bkt/k", "o": "owner", "t": 5}
    bad_headers = [
        {k: v for k, v in good.items() if k != "r"},
        {k: v for k, v in good.items() if k != "o"},
        {k: v for k, v in good.items() if k != "t"},
        good | {"r": 7},
        good | {"r": b"bkt/k"},
        good | {"r": ""},
        good | {"r": ["bkt/k"]},
        good | {"r": "x" * 2049},
        good | {"r": "é" * 1025},  # 1025 characters, 2050 bytes
        good | {"o": None},
        good | {"o": "o" * 129},
        good | {"t": "5"},
        good | {"t": True},
        good | {"t": 0},
        good | {"t": -1.0},
        good | {"t": 301},
        good | {"t": math.nan},
        good | {"t": math.inf},
        good | {"t": [5]},
    ]
    for header in bad_headers:
        for method in ("drive.lock", "drive.unlock"):
            if method == "drive.unlock" and ("t" not in header or header["t"] != good["t"]):
                continue  # unlock takes no ttl: a bad one is no fault there
            with pytest.raises(RemoteError) as info:
                await client.call(peer, method, header, timeout=5)
            assert info.value.kind == "bad-request", (method, header, info.value)
    for header in (
        good | {"d": ["x"]},
        good | {"d": 1},
        {k: v for k, v in good.items() if k != "d"},
    ):
        with pytest.raises(RemoteError) as info:
            await client.call(peer, "drive.lock", header, timeout=5)
        assert info.value.kind == "DriveOffline"
    assert len(drives[0].leases) == 0
    # the limits themselves are accepted
    ok = good | {"r": "x" * 2048, "o": "o" * 128, "t": MAX_LOCK_TTL}
    assert (await client.call(peer, "drive.lock", ok, timeout=5)).header == {"g": True}
    await client.call(peer, "drive.unlock", ok, timeout=5)
    # through a RemoteDrive, bad input is a drive error the quorum logic can count
    remote = RemoteDrive(client, peer, drive_id, "d0", is_alive=lambda _: True, timeout=5)
    with pytest.raises(DriveIOError, match="bad-request"):
        await remote.lock("x" * 3000, "owner", 5)
    with pytest.raises(DriveIOError, match="bad-request"):
        await remote.lock("bkt/k", "owner", math.nan)
    assert len(drives[0].leases) == 0
