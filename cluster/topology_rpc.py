"""Both ends of the topology RPC: fetching and pushing the topology document (client) and
answering for it (server).

    "cluster.topology.get"  {}                     ->  {"topology": <ClusterTopology JSON>}
    "cluster.topology.put"  {"topology": <JSON>}   ->  {"version": <version now held>}
                            a document that cannot be parsed or applied: fault "BadTopology"

The document travels as `ClusterTopology.to_json()` text in the header. Applying one (the
pools it adds: opening drives, building sets) is the node's business: the server side is
handed the current topology and the apply step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence

from shardfleet.cluster.topology import ClusterTopology
from shardfleet.transport.endpoint import Handler, Peer, Request, Response, RpcEndpoint, RpcFault

TOPOLOGY_GET = "cluster.topology.get"
TOPOLOGY_PUT = "cluster.topology.put"
BAD_TOPOLOGY = "BadTopology"


async def get_topology(endpoint: RpcEndpoint, peer: Peer, *, timeout: float) -> ClusterTopology:
    """The topology `peer` holds."""
    reply = await endpoint.call(peer, TOPOLOGY_GET, {}, None, timeout=timeout)
    return ClusterTopology.from_json(reply.header["topology"])


async def push_topology(
    endpoint: RpcEndpoint, peers: Sequence[Peer], topology: ClusterTopology, *, timeout: float
) -> dict[str, str]:
    """Sends `topology` to every peer at once; returns {peer: 'ok' | error}."""
    doc = topology.to_json()

    async def one(peer: Peer) -> str:
        try:
            await endpoint.call(peer, TOPOLOGY_PUT, {"topology": doc}, None, timeout=timeout)
            return "ok"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    targets = list(peers)
    results = await asyncio.gather(*(one(p) for p in targets))
    return {p.node_id: r for p, r in zip(targets, results, strict=True)}


def topology_handlers(
    current: Callable[[], ClusterTopology],
    apply: Callable[[ClusterTopology], Awaitable[object]],
    *,
    rejected: tuple[type[Exception], ...] = (),
) -> dict[str, Handler]:
    """get answers `current()`; put parses the document and awaits `apply` on it.
    `rejected`: the errors of `apply` that mean the document does not fit this node (its
    drive-format errors, which cluster/ does not know), answered as BadTopology like a
    document that does not parse."""
    bad = (ValueError, KeyError, json.JSONDecodeError, *rejected)

    async def topology_get(req: Request) -> Response:
        return Response({"topology": current().to_json()})

    async def topology_put(req: Request) -> Response:
        try:
            new = ClusterTopology.from_json(req.header["topology"])
            await apply(new)
        except bad as exc:
            raise RpcFault(BAD_TOPOLOGY, str(exc)) from exc
        return Response({"version": current().version})

    return {TOPOLOGY_GET: topology_get, TOPOLOGY_PUT: topology_put}
