"""A node killed with SIGKILL and started again on the same ports counts as alive at every
peer within a fraction of a second of being ready (README, Membership), whether it comes
back before the peers noticed it was gone or after they took it offline.

What used to go wrong (issue 15: 9-20 s): the peers kept their QUIC connections to the dead
process, which the new one does not know and never answers, and the heartbeat's own
backstop timeout cancelled each ping at the instant the ping's timeout fired, so the
transport never saw a timed-out call and kept the dead connection until its 20 s idle
timeout; after that, the reconnect backoff (up to 10 s) delayed the first new connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from shardfleet.node.admin import fetch_status
from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from shardfleet.node.devcluster import DevCluster, DevClusterSpec, free_base_port

VICTIM = 2
PEERS = [1, 3, 4]
ALIVE_WITHIN = 1.5  # seconds after the restarted node is ready
HOLD = 6.0  # ... and it stays alive that long (a ping timing out on a dead connection takes 2 s)


@pytest.fixture
def cluster(tmp_path) -> Iterator[DevCluster]:
    spec = DevClusterSpec(
        nodes=4,
        drives_per_node=2,
        ec="2+2",
        data=tmp_path / "cluster",
        base_port=free_base_port(4),
        heartbeat=1.0,
        offline_after=5.0,
    )
    c = DevCluster(spec)
    try:
        c.start(timeout=60)
        yield c
    finally:
        c.stop()


def victim_row(c: DevCluster, i: int) -> dict | None:
    """Node i's membership row for the victim (admin status), or None if i did not answer."""
    try:
        status = fetch_status(c.endpoint(i), DEV_ACCESS_KEY, DEV_SECRET_KEY)
    except SystemExit:  # the admin client's way of failing
        return None
    return next(n for n in status["nodes"] if n["node"] == c.spec.node_id(VICTIM))


def wait_states(c: DevCluster, pool: ThreadPoolExecutor, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = list(pool.map(lambda i: victim_row(c, i), PEERS))
        if all(r is not None and r["state"] == state for r in rows):
            return
        assert time.monotonic() < deadline, f"peers never all saw the victim {state}: {rows}"
        time.sleep(0.1)


def restart_and_time(c: DevCluster, pool: ThreadPoolExecutor) -> tuple[float, list]:
    """Starts the victim again; returns how long after it was ready every peer counted it
    alive, with an answer from the new process, and kept doing so until ready + HOLD."""
    c.start_node(VICTIM)
    spawned = time.monotonic()
    c.wait_ready([VICTIM], timeout=60)
    ready = time.monotonic()
    good_since: dict[int, float | None] = dict.fromkeys(PEERS)
    seen: list = []
    while (now := time.monotonic()) < ready + HOLD:
        rows = list(pool.map(lambda i: victim_row(c, i), PEERS))
        t = time.monotonic()
        for i, row in zip(PEERS, rows, strict=True):
            fresh = (
                row is not None
                and row["state"] == "alive"
                and row["last_seen_s"] is not None
                and row["last_seen_s"] <= t - spawned  # heard from the new process
            )
            if not fresh:
                good_since[i] = None
            elif good_since[i] is None:
                good_since[i] = now
        seen.append((round(now - ready, 2), [r and r["state"] for r in rows]))
        time.sleep(0.05)
    assert None not in good_since.values(), f"not alive at every peer at the end: {seen}"
    return max(0.0, max(good_since.values()) - ready), seen  # type: ignore[type-var]


@pytest.mark.timeout(180)
def test_quick_restart_counts_alive_at_once(cluster):
    """Killed and started again within a second: before the peers noticed."""
    with ThreadPoolExecutor(len(PEERS)) as pool:
        wait_states(cluster, pool, "alive", 30)
        for _ in range(2):
            cluster.kill_node(VICTIM)
            took, seen = restart_and_time(cluster, pool)
            assert took <= ALIVE_WITHIN, (took, seen)


@pytest.mark.timeout(180)
def test_restart_after_offline_counts_alive_at_once(cluster):
    """Killed, taken offline by every peer, then started again."""
    with ThreadPoolExecutor(len(PEERS)) as pool:
        wait_states(cluster, pool, "alive", 30)
        cluster.kill_node(VICTIM)
        wait_states(cluster, pool, "offline", 60)
        time.sleep(1.0)  # the peers' reconnect attempts have failed and back off meanwhile
        took, seen = restart_and_time(cluster, pool)
        assert took <= ALIVE_WITHIN, (took, seen)
