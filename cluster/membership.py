"""Membership: who is alive, by heartbeats over the transport.

`MembershipView` is the sans-IO core: it is told when a peer answered or failed and what
time it is, and decides each peer's state:

    alive    answered within `suspect_after`
    suspect  silent (or a call just failed) for less than `offline_after`, or silent for
             longer while this node cannot see a majority
    offline  silent for `offline_after` or more, decided only while this node sees a
             majority of the cluster (itself included)

A node that does not see a majority refuses writes (503): it may be the one cut off, and
it cannot make a write durable where the rest of the cluster would find it.
`Heartbeat` is the thin asyncio loop that pings every peer each `interval`; peers that
are not alive sooner, and a peer the transport saw restart or come back at once (`probe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class PeerState(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    interval: float = 5.0  # seconds between heartbeats to each peer
    offline_after: float = 30.0  # silence after which a peer is offline (with a majority)
    ping_timeout: float = 2.0

    @property
    def suspect_after(self) -> float:
        return 2 * self.interval + self.ping_timeout


@dataclass(slots=True)
class _Peer:
    last_seen: float | None = None
    failed: bool = True  # no answer yet: not alive until it has answered once
    state: PeerState = PeerState.SUSPECT
    counted: bool = True  # part of the majority denominator


class MembershipView:
    def __init__(
        self, self_id: str, peers: list[str], config: MembershipConfig, now: float
    ) -> None:
        self.self_id = self_id
        self.config = config
        self._started = now
        self._peers = {p: _Peer() for p in peers if p != self_id}

    def add_peer(self, peer: str, now: float) -> None:
        """A node of a new pool: suspect until it answers, and not counted in the majority
        until it has answered once (a pool announced before its nodes start must not cost
        the running cluster its majority)."""
        if peer != self.self_id and peer not in self._peers:
            self._peers[peer] = _Peer(counted=False)
            self._started = min(self._started, now)

    @property
    def peers(self) -> list[str]:
        return sorted(self._peers)

    def heard_from(self, peer: str, now: float) -> None:
        p = self._peers.get(peer)
        if p is not None:
            p.last_seen = now
            p.failed = False
            p.counted = True

    def call_failed(self, peer: str) -> None:
        p = self._peers.get(peer)
        if p is not None:
            p.failed = True

    def has_majority(self, now: float) -> bool:
        counted = [p for p in self._peers.values() if p.counted]
        alive = 1 + sum(self._raw_alive(p, now) for p in counted)
        return alive * 2 > len(counted) + 1

    def _raw_alive(self, p: _Peer, now: float) -> bool:
        return (
            not p.failed
            and p.last_seen is not None
            and now - p.last_seen <= self.config.suspect_after
        )

    def tick(self, now: float) -> list[tuple[str, PeerState, PeerState]]:
        """Recomputes every state; returns the transitions (peer, old, new)."""
        majority = self.has_majority(now)
        changes = []
        for name, p in self._peers.items():
            since = p.last_seen if p.last_seen is not None else self._started
            if self._raw_alive(p, now):
                new = PeerState.ALIVE
            elif majority and now - since >= self.config.offline_after:
                new = PeerState.OFFLINE
            elif p.state is PeerState.OFFLINE and majority:
                new = PeerState.OFFLINE
            else:
                new = PeerState.SUSPECT
            if new is not p.state:
                changes.append((name, p.state, new))
                p.state = new
        return changes

    def state(self, peer: str) -> PeerState:
        if peer == self.self_id:
            return PeerState.ALIVE
        p = self._peers.get(peer)
        return p.state if p is not None else PeerState.OFFLINE

    def counted(self, peer: str) -> bool:
        """Whether the peer belongs to the majority (it was in the cluster at start, or it
        has answered since its pool was announced)."""
        p = self._peers.get(peer)
        return peer == self.self_id or (p is not None and p.counted)

    def is_alive(self, peer: str) -> bool:
        return self.state(peer) is PeerState.ALIVE

    def snapshot(self, now: float) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = [{"node": self.self_id, "state": "alive", "self": True}]
        for name in self.peers:
            p = self._peers[name]
            rows.append(
                {
                    "node": name,
                    "state": str(p.state),
                    "last_seen_s": None if p.last_seen is None else round(now - p.last_seen, 3),
                }
            )
        return rows


Ping = Callable[[str, float], Awaitable[None]]


class Heartbeat:
    """Pings every peer each interval and feeds the view; runs until stopped."""

    RETRY_FIRST = 0.2  # seconds before a peer that is not alive is pinged again
    # The ping bounds itself by ping_timeout; this backstop is later, so that the ping's
    # own timeout fires first: the transport then knows the call timed out on a silent
    # connection and drops it (cancelled from outside at the same instant, it could not
    # tell, and every later ping waited on the dead connection until its idle timeout).
    BACKSTOP_GRACE = 1.0

    def __init__(
        self, view: MembershipView, ping: Ping, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.view = view
        self._ping = ping
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._probes: dict[str, asyncio.Task[None]] = {}
        self.rounds = 0
        self.on_alive: list[Callable[[str], None]] = []  # called when a peer comes (back)

    async def _one(self, peer: str) -> None:
        timeout = self.view.config.ping_timeout
        try:
            await asyncio.wait_for(self._ping(peer, timeout), timeout + self.BACKSTOP_GRACE)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.view.call_failed(peer)
        else:
            self.view.heard_from(peer, self._clock())

    async def round(self, peers: list[str] | None = None) -> None:
        """Pings `peers` (default: every peer) and applies what changed."""
        await asyncio.gather(*(self._one(p) for p in (self.view.peers if peers is None else peers)))
        self._apply()
        self.rounds += 1

    def _apply(self) -> None:
        for peer, old, new in self.view.tick(self._clock()):
            level = logging.INFO if new is PeerState.ALIVE else logging.WARNING
            log.log(level, "node %s: %s -> %s", peer, old, new)
            if new is PeerState.ALIVE:
                for hook in self.on_alive:
                    hook(peer)

    def probe(self, peer: str) -> None:
        """Pings `peer` now, outside the schedule: the transport saw it restart or come
        back (a new connection from it), so it is alive here as soon as it answers, not
        at the next retry or round. At most one probe per peer at a time."""
        if self._task is None or self._task.done() or peer not in self.view.peers:
            return
        if peer in self._probes:
            return
        task = asyncio.get_running_loop().create_task(self._probe(peer), name=f"probe:{peer}")
        self._probes[peer] = task
        task.add_done_callback(lambda t: self._probes.pop(peer, None))

    async def _probe(self, peer: str) -> None:
        await self._one(peer)
        self._apply()

    async def run(self) -> None:
        """A round every `interval`; in between, peers that are not alive are pinged again
        sooner (RETRY_FIRST, doubling up to the interval). A node that starts before its
        peers, or a peer that restarts, is then alive here within a fraction of a second,
        not after a whole interval in which writes would leave out its drives."""
        while True:
            started = self._clock()
            await self.round()
            retry = self.RETRY_FIRST
            while (left := self.view.config.interval - (self._clock() - started)) > 0:
                waiting = [p for p in self.view.peers if not self.view.is_alive(p)]
                if not waiting or retry >= left:  # the next full round comes first
                    await asyncio.sleep(left)
                    break
                await asyncio.sleep(retry)
                retry *= 2
                await self.round(waiting)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._probes.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
