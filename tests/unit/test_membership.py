"""The membership state machine with a hand-driven clock."""

from shardfleet.cluster.membership import MembershipConfig, MembershipView, PeerState

CFG = MembershipConfig(interval=1.0, offline_after=10.0, ping_timeout=0.5)


def view(n: int = 5) -> MembershipView:
    return MembershipView("n0", [f"n{i}" for i in range(n)], CFG, now=0.0)


def test_peers_start_suspect_until_they_answer():
    v = view(3)
    v.tick(0.0)
    assert v.state("n1") is PeerState.SUSPECT and v.state("n0") is PeerState.ALIVE
    v.heard_from("n1", 0.1)
    v.tick(0.2)
    assert v.is_alive("n1") and not v.is_alive("n2")


def test_silence_leads_to_suspect_then_offline_with_majority():
    v = view(5)
    for t in range(0, 30):
        for p in ("n1", "n2", "n3"):
            v.heard_from(p, float(t))
        v.heard_from("n4", min(float(t), 2.0))
        v.tick(float(t))
        if t == 5:
            assert v.state("n4") is PeerState.SUSPECT
    assert v.state("n4") is PeerState.OFFLINE
    assert v.has_majority(29.0)


def test_failed_call_is_suspect_at_once():
    v = view(3)
    v.heard_from("n1", 0.0)
    v.heard_from("n2", 0.0)
    v.tick(0.0)
    v.call_failed("n1")
    assert ("n1", PeerState.ALIVE, PeerState.SUSPECT) in v.tick(0.1)


def test_minority_never_marks_offline_and_reports_no_majority():
    v = view(5)
    v.heard_from("n1", 0.0)
    for t in range(0, 60):
        v.tick(float(t))
    assert not v.has_majority(59.0)
    assert all(v.state(f"n{i}") is PeerState.SUSPECT for i in range(1, 5))


def test_two_node_cluster_needs_both():
    v = MembershipView("a", ["a", "b"], CFG, now=0.0)
    assert not v.has_majority(0.0)
    v.heard_from("b", 0.0)
    assert v.has_majority(0.5)


def test_announced_pool_does_not_cost_the_majority_until_it_answers():
    v = view(3)
    for p in ("n1", "n2"):
        v.heard_from(p, 0.0)
    for i in range(3, 8):
        v.add_peer(f"n{i}", 0.0)
    assert v.has_majority(0.5)
    for i in range(3, 8):
        v.heard_from(f"n{i}", 1.0)
    assert v.has_majority(1.5)
    # once they have answered they count: 3 of 8 is no majority
    v.heard_from("n1", 100.0)
    assert not v.has_majority(100.0)


async def test_a_peer_that_was_not_up_yet_is_retried_within_the_interval():
    """A node that starts before its peer: the first ping fails (connection refused), and
    the peer is pinged again after RETRY_FIRST, not after the whole 5 s interval."""
    import asyncio
    import time

    from shardfleet.cluster.membership import Heartbeat

    config = MembershipConfig(interval=5.0, offline_after=30.0, ping_timeout=1.0)
    view = MembershipView("a", ["a", "b", "c"], config, now=time.monotonic())
    pings: dict[str, int] = {"b": 0, "c": 0}

    async def ping(peer: str, timeout: float) -> None:
        pings[peer] += 1
        if peer == "b" and pings["b"] == 1:
            raise ConnectionRefusedError("not listening yet")

    heartbeat = Heartbeat(view, ping)
    heartbeat.start()
    try:
        deadline = time.monotonic() + 2.0
        while not view.is_alive("b") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert view.is_alive("b") and view.is_alive("c")
        assert pings == {"b": 2, "c": 1}  # only the peer that was not alive was asked again
    finally:
        await heartbeat.stop()


async def test_the_pings_own_timeout_fires_before_the_heartbeats_backstop():
    """The transport drops a connection that stayed silent through a call's timeout (a
    crashed and restarted peer never answers it); cancelled from outside at the same
    instant instead, the call cannot tell, and every later ping waited on the dead
    connection. So the ping must see its own TimeoutError, not a CancelledError."""
    import asyncio
    import time

    from shardfleet.cluster.membership import Heartbeat

    config = MembershipConfig(interval=5.0, offline_after=30.0, ping_timeout=0.2)
    view = MembershipView("a", ["a", "b"], config, now=time.monotonic())
    seen: list[str] = []

    async def ping(peer: str, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.sleep(10)  # a peer that never answers
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    await Heartbeat(view, ping).round()
    assert seen == ["TimeoutError"]
    assert not view.is_alive("b")


async def test_probe_pings_a_peer_at_once_outside_the_schedule():
    """The transport saw a peer restart: it is pinged at once, not at the next round."""
    import asyncio
    import time

    from shardfleet.cluster.membership import Heartbeat

    config = MembershipConfig(interval=60.0, offline_after=30.0, ping_timeout=1.0)
    view = MembershipView("a", ["a", "b"], config, now=time.monotonic())
    up = False
    pings = 0

    async def ping(peer: str, timeout: float) -> None:
        nonlocal pings
        pings += 1
        if not up:
            raise ConnectionRefusedError("down")

    heartbeat = Heartbeat(view, ping)
    heartbeat.RETRY_FIRST = 30.0  # no retry comes before the 60 s round
    heartbeat.start()
    try:
        await asyncio.sleep(0.05)
        assert pings == 1 and not view.is_alive("b")
        up = True
        heartbeat.probe("b")
        heartbeat.probe("b")  # one probe at a time
        heartbeat.probe("nobody")  # not a peer: ignored
        deadline = time.monotonic() + 2.0
        while not view.is_alive("b") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert view.is_alive("b") and pings == 2
    finally:
        await heartbeat.stop()
