"""Who is where: the format record every drive carries, and the erasure sets built from it.

Sets are formed once, when the drives are formatted, and written into every drive's
format.json (cluster id, pool, set, position and the ids of all drives of the set). From
then on a drive knows its slot, so a set can be rebuilt from whichever drives show up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class DriveFormat:
    cluster_id: str
    drive_id: str
    pool: int
    set: int
    position: int
    ec: str  # "K+M"
    stripe_size: int
    set_drives: list[str]  # drive ids of the set, by position
    version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DriveFormat:
        data = json.loads(text)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format.json version {data.get('version')!r}")
        return cls(**data)

    def same_set(self, other: DriveFormat) -> bool:
        return (
            self.cluster_id == other.cluster_id
            and (self.pool, self.set) == (other.pool, other.set)
            and self.set_drives == other.set_drives
            and self.ec == other.ec
            and self.stripe_size == other.stripe_size
        )


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node of a pool: where it answers and which drives it has."""

    id: str
    s3: str  # host:port of its S3 endpoint
    rpc: str  # host:port of its QUIC endpoint
    drives: tuple[str, ...]

    @property
    def rpc_host(self) -> str:
        return self.rpc.rpartition(":")[0].strip("[]")

    @property
    def rpc_port(self) -> int:
        return int(self.rpc.rpartition(":")[2])


@dataclass(frozen=True, slots=True)
class SetSlot:
    node: str
    drive: str  # path on that node


def form_sets(nodes: list[NodeSpec], n: int) -> list[list[SetSlot]]:
    """Groups a pool's drives into sets of n, interleaved across nodes for fault isolation.

    Drives are taken round-robin over nodes (first drive of every node, then every second
    drive, ...), so consecutive slots of a set sit on different nodes whenever there are
    enough nodes. Formed once, at cluster init; recorded in every drive's format.json.

    >>> a = NodeSpec("a", "", "", ("/d1", "/d2"))
    >>> b = NodeSpec("b", "", "", ("/d1", "/d2"))
    >>> [[(s.node, s.drive) for s in st] for st in form_sets([a, b], 2)]
    [[('a', '/d1'), ('b', '/d1')], [('a', '/d2'), ('b', '/d2')]]
    """
    order: list[SetSlot] = []
    depth = max((len(node.drives) for node in nodes), default=0)
    for i in range(depth):
        order += [SetSlot(node.id, node.drives[i]) for node in nodes if i < len(node.drives)]
    if not order or len(order) % n:
        raise ValueError(f"{len(order)} drives cannot form sets of {n}: give a multiple of {n}")
    return [order[i : i + n] for i in range(0, len(order), n)]


def shards_per_node(sets: list[list[SetSlot]]) -> int:
    """The most shards of one set that a single node holds (the blast radius of a node)."""
    worst = 0
    for slots in sets:
        counts: dict[str, int] = {}
        for slot in slots:
            counts[slot.node] = counts.get(slot.node, 0) + 1
        worst = max(worst, *counts.values())
    return worst


def pool_formats(
    cluster_id: str, pool: int, nodes: list[NodeSpec], ec: str, stripe_size: int, n: int
) -> dict[tuple[str, str], DriveFormat]:
    """The format record of every drive of a pool, derived only from the cluster file, so
    every node computes the same layout without talking to the others."""
    sets = form_sets(nodes, n)
    out: dict[tuple[str, str], DriveFormat] = {}
    for set_no, slots in enumerate(sets):
        ids = [drive_id(cluster_id, pool, s.node, s.drive) for s in slots]
        for pos, slot in enumerate(slots):
            out[(slot.node, slot.drive)] = DriveFormat(
                cluster_id=cluster_id,
                drive_id=ids[pos],
                pool=pool,
                set=set_no,
                position=pos,
                ec=ec,
                stripe_size=stripe_size,
                set_drives=ids,
            )
    return out


def drive_id(cluster_id: str, pool: int, node: str, path: str) -> str:
    import uuid

    return uuid.uuid5(uuid.UUID(cluster_id), f"{pool}/{node}/{path}").hex


@dataclass(frozen=True, slots=True)
class ClusterTopology:
    """Every pool of the cluster, versioned. Pool 0 comes from the cluster file; pools
    added later (admin add-pool) live in this document, kept on every node's drives and
    handed to joining nodes. A pool's sets never change once formed, so neither does
    where an object already stored lives."""

    version: int
    pools: tuple[tuple[NodeSpec, ...], ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "pools": [
                    [asdict(n) | {"drives": list(n.drives)} for n in pool] for pool in self.pools
                ],
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ClusterTopology:
        data = json.loads(text)
        pools = tuple(
            tuple(NodeSpec(n["id"], n["s3"], n["rpc"], tuple(n["drives"])) for n in pool)
            for pool in data["pools"]
        )
        return cls(int(data["version"]), pools)

    def node(self, node_id: str) -> tuple[int, NodeSpec] | None:
        for index, pool in enumerate(self.pools):
            for spec in pool:
                if spec.id == node_id:
                    return index, spec
        return None

    @property
    def node_ids(self) -> list[str]:
        return [n.id for pool in self.pools for n in pool]

    def with_pool(self, nodes: list[NodeSpec], n: int) -> ClusterTopology:
        """A new version with one more pool; refuses duplicates and pools that cannot form sets."""
        if not nodes:
            raise ValueError("a pool needs at least one node")
        taken = {(x.id) for pool in self.pools for x in pool}
        addresses = {a for pool in self.pools for x in pool for a in (x.s3, x.rpc)}
        for spec in nodes:
            if spec.id in taken:
                raise ValueError(f"node id {spec.id!r} is already in the cluster")
            if spec.s3 in addresses or spec.rpc in addresses:
                raise ValueError(f"node {spec.id}: address already used by another node")
            taken.add(spec.id)
            addresses |= {spec.s3, spec.rpc}
        form_sets(list(nodes), n)  # raises if the drives do not divide into sets
        return ClusterTopology(self.version + 1, (*self.pools, tuple(nodes)))
