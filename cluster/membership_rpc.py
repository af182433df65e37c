"""Both ends of the membership RPC: the heartbeat ping (client) and its handler (server).

    "member.ping"  {"node": <caller's id>}
                   ->  {"node": <our id>, "topology": <version>, "drives": {drive id: online}}

The caller is known by `request.peer_id` (proven by the transport's mutual TLS), not by
the "node" field it sends. Each answer carries the answering node's topology version, so
a node that missed an `admin add-pool` learns there is a newer topology from its next
heartbeat (cluster/topology_rpc.py then fetches it). It also carries whether each of the
answering node's drives is online, so every node sees a peer's failed drive as offline
within a heartbeat, and reports and decides on the same picture as the drive's own node.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shardfleet.cluster.membership import MembershipView
from shardfleet.transport.endpoint import Handler, Peer, Request, Response, RpcEndpoint

PING = "member.ping"


MAX_DRIVES = 4096  # drive states one answer may carry


async def ping(
    endpoint: RpcEndpoint, peer: Peer, me: str | None, *, timeout: float
) -> tuple[int, dict[str, bool]]:
    """Pings `peer`; returns the topology version it answered with (0 if it sent none) and
    its drives' states (only well-formed entries: a peer's answer is checked, not trusted)."""
    reply = await endpoint.call(peer, PING, {"node": me}, None, timeout=timeout)
    version = reply.header.get("topology", 0)
    raw = reply.header.get("drives")
    drives: dict[str, bool] = {}
    if isinstance(raw, dict) and len(raw) <= MAX_DRIVES:
        drives = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, bool)}
    return (version if isinstance(version, int) else 0), drives


def membership_handlers(
    me: str | None,
    view: MembershipView,
    topology_version: Callable[[], int],
    drive_states: Callable[[], dict[str, bool]] = dict,
) -> dict[str, Handler]:
    """The ping handler: a ping is news that its caller is alive."""

    async def on_ping(req: Request) -> Response:
        view.heard_from(req.peer_id, time.monotonic())
        return Response({"node": me, "topology": topology_version(), "drives": drive_states()})

    return {PING: on_ping}
