"""Wiring a cluster node: topology, local and remote drives, the RPC endpoint with its
handlers, membership, and pools added while the cluster runs. The RPCs themselves (both
ends of each) are in cluster/: drive_rpc, membership_rpc and topology_rpc; this module
creates the endpoint, registers their handlers and starts the heartbeat.

Every node derives the same layout from the same topology (pool 0 from the cluster file,
later pools from the topology document), sets interleaved across nodes and drive ids
derived from the cluster id, so no coordination is needed to form a pool: each node
formats only its own drives and checks that drives already formatted agree.

The topology document is kept in `topology.json` on every local drive. A node learns a
newer one three ways: `admin add-pool` pushes it, a heartbeat answer carries a higher
version (a node that was down fetches it), or, for a node of a new pool starting for the
first time, from a seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from shardfleet.cluster.drive import Drive
from shardfleet.cluster.drive_rpc import RemoteDrive, drive_handlers
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.membership import Heartbeat, MembershipConfig, MembershipView
from shardfleet.cluster.membership_rpc import membership_handlers, ping
from shardfleet.cluster.topology import (
    ClusterTopology,
    NodeSpec,
    form_sets,
    pool_formats,
    shards_per_node,
)
from shardfleet.cluster.topology_rpc import get_topology, push_topology, topology_handlers
from shardfleet.node.config import NodeConfig
from shardfleet.node.storage.format import FormatError, open_assigned, opened_here
from shardfleet.node.storage.fsutil import atomic_write
from shardfleet.transport.endpoint import Peer, RpcEndpoint, TransportConfig
from shardfleet.transport.tls import TlsFiles

log = logging.getLogger(__name__)

TOPOLOGY_FILE = "topology.json"


def cluster_id_for(name: str, ca_cert: Path) -> str:
    """Stable for one cluster (name + CA), different for any other: formats can be derived
    on every node alone, and a drive of another cluster is recognised as foreign."""
    try:
        fingerprint = hashlib.sha256(ca_cert.read_bytes()).hexdigest()
    except OSError as exc:
        raise FormatError(f"cannot read the cluster CA {ca_cert}: {exc.strerror}") from exc
    return uuid.uuid5(uuid.NAMESPACE_URL, f"shardfleet:{name}:{fingerprint}").hex


def first_pool(config: NodeConfig) -> tuple[NodeSpec, ...]:
    assert config.cluster is not None
    return tuple(NodeSpec(n.id, n.s3, n.rpc, tuple(n.drives)) for n in config.cluster.nodes)


def stored_topology(config: NodeConfig, drives: list[str]) -> ClusterTopology:
    """The newest topology on these drive paths, or pool 0 alone (version 0)."""
    best = ClusterTopology(0, (first_pool(config),))
    for path in drives:
        with contextlib.suppress(OSError, ValueError, KeyError):
            doc = ClusterTopology.from_json((Path(path) / TOPOLOGY_FILE).read_text())
            if doc.version > best.version:
                best = doc
    if best.pools[0] != first_pool(config):
        raise FormatError(
            "the cluster file's node list differs from the first pool the drives record"
        )
    return best


def transport_config(config: NodeConfig) -> TransportConfig:
    assert config.cluster is not None
    size = config.cluster.max_datagram_size
    rate = int(config.cluster.background_rate_mib * (1 << 20))
    return TransportConfig(background_rate=rate, **({"max_datagram_size": size} if size else {}))


def tls_files(config: NodeConfig) -> TlsFiles:
    assert config.cluster is not None and config.node is not None
    tls = config.cluster.tls.for_node(config.node)
    return TlsFiles(ca_cert=tls.ca, cert=tls.cert, key=tls.key)


async def fetch_topology(
    config: NodeConfig, seeds: list[str], timeout: float = 10.0
) -> ClusterTopology:
    """Asks seeds (HOST:PORT of their QUIC endpoints) for the topology, from a throwaway
    client endpoint: a node of a new pool does not know its own addresses yet."""
    assert config.node is not None
    client = RpcEndpoint(
        node_id=config.node,
        tls=tls_files(config),
        host="0.0.0.0",
        port=0,
        config=transport_config(config),
    )
    await client.start()
    errors = []
    try:
        for seed in seeds:
            host, _, port = seed.rpartition(":")
            for spec in (s for pool in [first_pool(config)] for s in pool):
                if spec.rpc == seed:
                    name = spec.id
                    break
            else:
                name = host
            try:
                return await get_topology(
                    client, Peer(name, host.strip("[]"), int(port)), timeout=timeout
                )
            except Exception as exc:  # try the next seed
                errors.append(f"{seed}: {type(exc).__name__}: {exc}")
    finally:
        await client.close()
    raise FormatError("no seed answered with the cluster topology: " + "; ".join(errors))


@dataclass(slots=True)
class ClusterRuntime:
    config: NodeConfig
    cluster_id: str
    topology: ClusterTopology
    endpoint: RpcEndpoint
    view: MembershipView
    heartbeat: Heartbeat
    sets: list[ErasureSet]
    local: dict[Path, Drive]
    peers: dict[str, Peer]
    warnings: list[str]
    io_pool: Executor
    on_new_sets: list = field(default_factory=list)  # callbacks(list[ErasureSet])
    served: dict[str, Drive] = field(default_factory=dict)
    #: drive id -> online, as each peer reports its own drives with every heartbeat answer
    remote_online: dict[str, bool] = field(default_factory=dict)
    observe_rpc: Callable[[str, float], None] | None = None
    _handlers_registered: bool = False
    _fetching: bool = False

    def _drive_alive(self, drive_id: str) -> Callable[[str], bool]:
        """A remote drive is online while its node is alive and the node says the drive is
        (its own probe took it offline, a wiped or unmounted disk)."""

        def alive(node: str) -> bool:
            return self.view.is_alive(node) and self.remote_online.get(drive_id, True)

        return alive

    def has_majority(self) -> bool:
        return self.view.has_majority(time.monotonic())

    def pool_joined(self, pool: int) -> bool:
        """False while a pool announced by add-pool has had none of its nodes answer yet:
        it can hold no data, so reads, listings and placement leave it out (instead of
        failing for want of its drives). After a restart every known pool counts."""
        if pool >= len(self.topology.pools):
            return False
        nodes = [n.id for n in self.topology.pools[pool]]
        return self.config.node in nodes or any(self.view.counted(n) for n in nodes)

    def _pool_sets(
        self, pool: int, nodes: tuple[NodeSpec, ...]
    ) -> tuple[list[ErasureSet], dict[Path, Drive]]:
        config = self.config
        me = config.node
        params = config.params
        formats = pool_formats(
            self.cluster_id, pool, list(nodes), str(params), params.stripe_size, params.n
        )
        local = open_assigned(
            {Path(p): f for (node, p), f in formats.items() if node == me}, self.io_pool
        )
        for spec in nodes:
            if spec.id != me and spec.id not in self.peers:
                self.peers[spec.id] = Peer(spec.id, spec.rpc_host, spec.rpc_port)
                self.view.add_peer(spec.id, time.monotonic())
        sets = []
        for set_no, slots in enumerate(form_sets(list(nodes), params.n)):
            drives: list[Drive] = []
            for slot in slots:
                fmt = formats[(slot.node, slot.drive)]
                if slot.node == me:
                    drives.append(local[Path(slot.drive)])
                else:
                    peer = self.peers[slot.node]
                    drives.append(
                        RemoteDrive(
                            self.endpoint,
                            peer,
                            fmt.drive_id,
                            slot.drive,
                            is_alive=self._drive_alive(fmt.drive_id),
                            observe=self.observe_rpc,
                        )
                    )
            sets.append(
                ErasureSet(
                    cluster_id=self.cluster_id,
                    pool=pool,
                    index=set_no,
                    params=params,
                    drives=drives,
                    write_quorum=config.write_quorum or 0,
                )
            )
        worst = shards_per_node(form_sets(list(nodes), params.n))
        if sets and params.n - worst < sets[0].write_quorum:
            self.warnings.append(
                f"pool {pool}: a set keeps {params.n - worst} shards with its largest node down, "
                f"below the write quorum {sets[0].write_quorum}: writes stop while such a node is down"
            )
        return sets, local

    def save_topology(self) -> None:
        for drive in opened_here(self.local.values()):
            if drive.online:
                with contextlib.suppress(OSError):
                    atomic_write(drive.root, TOPOLOGY_FILE, [self.topology.to_json().encode()])

    def apply_topology(self, new: ClusterTopology) -> list[ErasureSet]:
        """Adds the pools `new` has beyond ours (blocking: opens drives); returns new sets."""
        if new.version <= self.topology.version:
            return []
        if new.pools[: len(self.topology.pools)] != self.topology.pools:
            raise ValueError("topology conflict: existing pools differ")
        added: list[ErasureSet] = []
        for pool in range(len(self.topology.pools), len(new.pools)):
            sets, local = self._pool_sets(pool, new.pools[pool])
            self.local.update(local)
            added.extend(sets)
        self.topology = new
        self.sets.extend(added)
        self.save_topology()
        self._register_drives()
        log.info("topology version %d: %d pools", new.version, len(new.pools))
        for hook in self.on_new_sets:
            hook(added)
        return added

    def _register_drives(self) -> None:
        """Serves our drives to peers; the handlers read `served`, refreshed as pools come."""
        self.served.clear()
        for drive in opened_here(self.local.values()):
            self.served[drive.drive_id] = drive
        if not self._handlers_registered:
            for method, handler in drive_handlers(self.served).items():
                self.endpoint.register(method, handler)
            self._handlers_registered = True

    async def apply_async(self, new: ClusterTopology) -> list[ErasureSet]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.io_pool, self.apply_topology, new)

    async def push_topology(self, timeout: float = 10.0) -> dict[str, str]:
        """Sends our topology to every peer; returns {peer: 'ok' | error}."""
        return await push_topology(
            self.endpoint, list(self.peers.values()), self.topology, timeout=timeout
        )

    async def _catch_up(self, peer: str) -> None:
        if self._fetching:
            return
        self._fetching = True
        try:
            new = await get_topology(self.endpoint, self.peers[peer], timeout=10.0)
            await self.apply_async(new)
        except Exception as exc:
            log.warning("fetching the topology from %s failed: %s", peer, exc)
        finally:
            self._fetching = False

    def register_handlers(self) -> None:
        self._register_drives()
        handlers = membership_handlers(
            self.config.node,
            self.view,
            lambda: self.topology.version,
            lambda: {d: drive.online for d, drive in self.served.items()},
        )
        # a pushed topology whose pools cannot be formatted here is refused like a bad one
        handlers |= topology_handlers(
            lambda: self.topology, self.apply_async, rejected=(FormatError,)
        )
        for method, handler in handlers.items():
            self.endpoint.register(method, handler)

    async def send_ping(self, peer: str, timeout: float) -> None:
        version, drives = await ping(
            self.endpoint, self.peers[peer], self.config.node, timeout=timeout
        )
        self.remote_online.update(drives)
        if version > self.topology.version:
            asyncio.ensure_future(self._catch_up(peer))


def build(
    config: NodeConfig,
    io_pool: Executor,
    topology: ClusterTopology,
    observe_rpc: Callable[[str, float], None] | None = None,
) -> ClusterRuntime:
    """Opens local drives and builds the sets of every pool; the endpoint is not started."""
    cl = config.cluster
    me = config.node
    assert cl is not None and me is not None
    cid = cluster_id_for(cl.name, tls_files(config).ca_cert)
    found = topology.node(me)
    if found is None:
        raise FormatError(f"node {me!r} is in no pool of the cluster")
    spec = found[1]
    endpoint = RpcEndpoint(
        node_id=me,
        tls=tls_files(config),
        host=spec.rpc_host,
        port=spec.rpc_port,
        config=transport_config(config),
    )
    view = MembershipView(
        me,
        topology.node_ids,
        MembershipConfig(interval=cl.heartbeat_interval, offline_after=cl.offline_after),
        time.monotonic(),
    )
    runtime = ClusterRuntime(
        config=config,
        cluster_id=cid,
        topology=ClusterTopology(0, ()),
        endpoint=endpoint,
        view=view,
        heartbeat=None,  # type: ignore[arg-type]
        sets=[],
        local={},
        peers={},
        warnings=[],
        io_pool=io_pool,
        observe_rpc=observe_rpc,
    )
    for pool, nodes in enumerate(topology.pools):
        sets, local = runtime._pool_sets(pool, nodes)
        runtime.sets.extend(sets)
        runtime.local.update(local)
    runtime.topology = topology
    runtime.save_topology()
    runtime.register_handlers()
    runtime.heartbeat = Heartbeat(view, runtime.send_ping)
    # a peer that restarted (or reconnected to us while we backed off from it) is pinged at
    # once, over a fresh connection: alive here within a round trip, not after a timeout
    endpoint.on_peer_up.append(runtime.heartbeat.probe)
    return runtime
