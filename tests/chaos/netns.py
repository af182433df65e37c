"""The dev cluster with each node in a network namespace of its own, and partitions.

The same layout as the dev cluster (data/nodeN/driveM, 4 nodes x 2 drives, 2+2, node i's
data under DATA/nodeI), but node i runs in namespace sf-PREFIX-i at SUBNET.i (made by
deploy/netns/netns-cluster.sh, on a bridge with jumbo frames), S3 on port 9000 and QUIC on
9100. The test, in the root namespace, reaches every node through the bridge.

Partitions cut a node off from its peers, never from the clients: the workload keeps
sending it requests, and what a node in the minority answers is checked like every other
answer (a node that cannot be reached at all is what SIGSTOP already tests). Packets are
dropped on the link, silently, as a broken switch drops them: the neighbour entry for the
other side's address is pinned to a MAC address nobody has, so the frames go out and
nobody takes them (no error for the sender; TCP and QUIC just see silence). This needs
nothing but iproute2 (no netfilter here, and tc has no drop action on this kernel):

    cut(i, "out")   in node i's namespace, each peer's address -> nowhere: i's packets to
                    its peers are lost, theirs to i arrive (one-way)
    cut(i, "in")    in each peer's namespace, i's address -> nowhere: what peers send i is
                    lost, what i sends them arrives (one-way)
    cut(i, "both")  both: a clean partition of i from the rest
    mend(i)         the pinned entries removed: addresses resolve again (ARP) at once
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from shardfleet.node.devcluster import DevCluster, DevClusterSpec

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "netns" / "netns-cluster.sh"
S3_PORT = 9000
RPC_PORT = 9100
MTU = 9000
NOWHERE = "02:00:5e:00:de:ad"  # locally administered, on no interface


def script(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, MTU=str(MTU)),
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"netns-cluster.sh {' '.join(args)}: {result.stderr.strip()}")
    return result


class NetnsCluster(DevCluster):
    def __init__(
        self, spec: DevClusterSpec, prefix: str, subnet: str, env: dict[str, str] | None = None
    ) -> None:
        self.spec = spec
        self.env = env
        self.prefix = prefix
        self.subnet = subnet
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.cuts: dict[int, list[tuple[str, str]]] = {}  # node -> (namespace, address) pinned
        self.config = self._write_config()

    def ns(self, i: int) -> str:
        return f"sf-{self.prefix}-{i}"

    def ip(self, i: int) -> str:
        return f"{self.subnet}.{i}"

    def endpoint(self, i: int) -> str:
        return f"http://{self.ip(i)}:{S3_PORT}"

    def _write_config(self) -> Path:
        from shardfleet.transport.tls import create_ca, issue_node_cert

        spec = self.spec
        data = spec.data.resolve()
        certs = data / "certs"
        if not (certs / "ca.crt").exists():
            create_ca(certs, f"shardfleet-chaos-{self.prefix}")
        lines = [
            f'ec = "{spec.ec}"',
            f"bucket_sync_interval = {spec.bucket_sync_interval}",
            "",
            "[cluster]",
            'name = "chaos"',
            f"heartbeat_interval = {spec.heartbeat}",
            f"offline_after = {spec.offline_after}",
            f"max_datagram_size = {MTU - 48}",  # the jumbo-frame LAN of the README
            "",
            "[cluster.tls]",
            f'ca = "{certs / "ca.crt"}"',
            f'cert = "{certs}/{{node}}.crt"',
            f'key = "{certs}/{{node}}.key"',
        ]
        for i in range(1, spec.nodes + 1):
            node = spec.node_id(i)
            if not (certs / f"{node}.crt").exists():
                files = issue_node_cert(certs, node, [self.ip(i)], certs / "issued")
                files.cert.rename(certs / f"{node}.crt")
                files.key.rename(certs / f"{node}.key")
            drives = ", ".join(
                f'"{data / node / f"drive{d}"}"' for d in range(1, spec.drives_per_node + 1)
            )
            lines += [
                "",
                "[[cluster.nodes]]",
                f'id = "{node}"',
                f's3 = "{self.ip(i)}:{S3_PORT}"',
                f'rpc = "{self.ip(i)}:{RPC_PORT}"',
                f"drives = [{drives}]",
            ]
        path = data / "cluster.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_node(self, i: int, log_dir: Path | None = None) -> None:
        log_dir = log_dir or self.spec.data.resolve() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.env or {})
        with open(log_dir / f"{self.spec.node_id(i)}.log", "ab") as out:
            # `ip netns exec` execs the command: the pid is the node's own (SIGSTOP works)
            self.procs[i] = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns(i),
                    sys.executable,
                    "-m",
                    "shardfleet.node.main",
                    "serve",
                    "--config",
                    str(self.config),
                    "--node",
                    self.spec.node_id(i),
                ],  # fmt: skip
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    # -- partitions ----------------------------------------------------------------------
    def _pin(self, ns: str, address: str) -> None:
        subprocess.run(
            ["ip", "-n", ns, "neigh", "replace", address, "lladdr", NOWHERE, "dev", "eth0",
             "nud", "permanent"],  # fmt: skip
            check=True, capture_output=True, timeout=10,
        )  # fmt: skip

    def cut(self, i: int, direction: str) -> None:
        if direction not in ("in", "out", "both"):
            raise ValueError(f"direction must be in, out or both, not {direction!r}")
        peers = [j for j in range(1, self.spec.nodes + 1) if j != i]
        pins = []
        if direction in ("out", "both"):
            pins += [(self.ns(i), self.ip(j)) for j in peers]
        if direction in ("in", "both"):
            pins += [(self.ns(j), self.ip(i)) for j in peers]
        self.cuts.setdefault(i, [])
        for ns, address in pins:
            self.cuts[i].append((ns, address))  # first noted, so mend undoes a half cut too
            self._pin(ns, address)

    def mend(self, i: int) -> None:
        for ns, address in self.cuts.pop(i, []):
            subprocess.run(
                ["ip", "-n", ns, "neigh", "del", address, "dev", "eth0"],
                capture_output=True, timeout=10,
            )  # fmt: skip

    def wait_converged(self, timeout: float = 15.0) -> bool:
        """Until every node sees every other alive (or the timeout: False)."""
        from shardfleet.node.admin import fetch_status
        from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY

        everyone = sorted(self.spec.node_id(i) for i in self.procs)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(
                    sorted(
                        n["node"]
                        for n in fetch_status(self.endpoint(i), DEV_ACCESS_KEY, DEV_SECRET_KEY)[
                            "nodes"
                        ]
                        if n["state"] == "alive"
                    )
                    == everyone
                    for i in self.procs
                ):
                    return True
            except (SystemExit, Exception):  # noqa: BLE001 - a node not answering yet
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
