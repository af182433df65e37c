"""Both ends of the membership RPC: the heartbeat ping (client) and its handler (server).

    "member.ping"  {"node": <caller's id>}  ->  {"node": <our id>, "topology": <version>}

The caller is known by `request.peer_id` (proven by the transport's mutual TLS), not by
the "node" field it sends. Each answer carries the answering node's topology version, so
a node that missed an `admin add-pool` learns there is a newer topology from its next
heartbeat (cluster/topology_rpc.py then fetches it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shardfleet.cluster.membership import MembershipView
from shardfleet.transport.endpoint import Handler, Peer, Request, Response, RpcEndpoint

PING = "member.ping"


async def ping(endpoint: RpcEndpoint, peer: Peer, me: str | None, *, timeout: float) -> int:
    """Pings `peer`; returns the topology version it answered with (0 if it sent none)."""
    reply = await endpoint.call(peer, PING, {"node": me}, None, timeout=timeout)
    return reply.header.get("topology", 0)


def membership_handlers(
    me: str | None, view: MembershipView, topology_version: Callable[[], int]
) -> dict[str, Handler]:
    """The ping handler: a ping is news that its caller is alive."""

    async def on_ping(req: Request) -> Response:
        view.heard_from(req.peer_id, time.monotonic())
        return Response({"node": me, "topology": topology_version()})

    return {PING: on_ping}
