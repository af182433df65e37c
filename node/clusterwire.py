"""Wiring a cluster node: layout from the cluster file, local and remote drives, the RPC
endpoint with its handlers, and membership.

Every node derives the same layout from the same cluster file (sets interleaved across
nodes, drive ids derived from the cluster id), so no coordination is needed to form the
cluster: each node formats only its own drives, and checks that drives already formatted
agree with the file.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from transport.endpoint import Peer, Request, Response, RpcEndpoint
from transport.tls import TlsFiles

from cluster.drive import Drive
from cluster.drive_rpc import RemoteDrive, drive_handlers
from cluster.erasure_set import ErasureSet
from cluster.membership import Heartbeat, MembershipConfig, MembershipView
from cluster.topology import NodeSpec, form_sets, pool_formats, shards_per_node
from node.config import NodeConfig
from node.storage.format import FormatError, open_assigned

PING = "member.ping"


def cluster_id_for(name: str, ca_cert: Path) -> str:
    """Stable for one cluster (name + CA), different for any other: formats can be derived
    on every node alone, and a drive of another cluster is recognised as foreign."""
    try:
        fingerprint = hashlib.sha256(ca_cert.read_bytes()).hexdigest()
    except OSError as exc:
        raise FormatError(f"cannot read the cluster CA {ca_cert}: {exc.strerror}") from exc
    return uuid.uuid5(uuid.NAMESPACE_URL, f"shardfleet:{name}:{fingerprint}").hex


@dataclass(slots=True)
class ClusterRuntime:
    endpoint: RpcEndpoint
    view: MembershipView
    heartbeat: Heartbeat
    sets: list[ErasureSet]
    local: dict[Path, Drive]
    peers: dict[str, Peer]
    warnings: list[str]

    def has_majority(self) -> bool:
        return self.view.has_majority(time.monotonic())


def build(
    config: NodeConfig, io_pool: Executor, transport_config: object | None = None
) -> ClusterRuntime:
    """Opens local drives and builds the sets; the endpoint is created but not started."""
    from transport.endpoint import TransportConfig

    cl = config.cluster
    me = config.node
    assert cl is not None and me is not None
    params = config.params
    tls = cl.tls.for_node(me)
    cid = cluster_id_for(cl.name, tls.ca)
    nodes = [NodeSpec(n.id, n.s3, n.rpc, tuple(n.drives)) for n in cl.nodes]
    formats = pool_formats(cid, 0, nodes, str(params), params.stripe_size, params.n)
    local = open_assigned({Path(p): f for (node, p), f in formats.items() if node == me}, io_pool)

    entry = cl.node(me)
    tc = transport_config or TransportConfig(
        **({"max_datagram_size": cl.max_datagram_size} if cl.max_datagram_size else {})
    )
    endpoint = RpcEndpoint(
        node_id=me,
        tls=TlsFiles(ca_cert=tls.ca, cert=tls.cert, key=tls.key),
        host=entry.rpc.rpartition(":")[0].strip("[]"),
        port=int(entry.rpc.rpartition(":")[2]),
        config=tc,  # type: ignore[arg-type]
    )
    view = MembershipView(
        me,
        [n.id for n in cl.nodes],
        MembershipConfig(interval=cl.heartbeat_interval, offline_after=cl.offline_after),
        time.monotonic(),
    )
    peers = {n.id: Peer(n.id, n.rpc_host, n.rpc_port) for n in nodes if n.id != me}

    sets: list[ErasureSet] = []
    for set_no, slots in enumerate(form_sets(nodes, params.n)):
        drives: list[Drive] = []
        for slot in slots:
            fmt = formats[(slot.node, slot.drive)]
            if slot.node == me:
                drives.append(local[Path(slot.drive)])
            else:
                drives.append(
                    RemoteDrive(
                        endpoint, peers[slot.node], fmt.drive_id, slot.drive, is_alive=view.is_alive
                    )
                )
        sets.append(
            ErasureSet(
                cluster_id=cid,
                pool=0,
                index=set_no,
                params=params,
                drives=drives,
                write_quorum=config.write_quorum or 0,
            )
        )

    warnings = []
    worst = shards_per_node(form_sets(nodes, params.n))
    w = sets[0].write_quorum
    if params.n - worst < w:
        warnings.append(
            f"a set keeps {params.n - worst} shards with its largest node down, below the "
            f"write quorum {w}: writes stop while any such node is down"
        )

    local_by_id = {d.drive_id: d for d in local.values()}
    for method, handler in drive_handlers(local_by_id).items():
        endpoint.register(method, handler)

    async def ping(req: Request) -> Response:
        view.heard_from(req.peer_id, time.monotonic())
        return Response({"node": me})

    endpoint.register(PING, ping)

    async def send_ping(peer: str, timeout: float) -> None:
        await endpoint.call(peers[peer], PING, {"node": me}, None, timeout=timeout)

    heartbeat = Heartbeat(view, send_ping)
    return ClusterRuntime(endpoint, view, heartbeat, sets, local, peers, warnings)


WriteGate = Callable[[], bool]
