"""`shardfleet dev-cluster`: N node processes on one host, for development and tests.

Makes a cluster CA and one certificate per node (once, under DATA/certs), writes
DATA/cluster.toml, starts every node as its own process (node i serves S3 on
BASE_PORT + i and QUIC on BASE_PORT + 100 + i), prints the endpoints and credentials, and
stops them all on Ctrl-C or SIGTERM. The default topology, 4 nodes x 2 drives as 2+2,
keeps both reads and writes going with any one node down: each set has one shard per
node, so a lost node costs a set one shard and the write quorum (k+1 = 3) still holds.

With `tls` (`dev-cluster --tls`) every node also gets an S3 server certificate from the
same CA (SAN 127.0.0.1 and localhost, under DATA/certs/s3) and serves HTTPS;
DATA/certs/ca.crt is the CA bundle for clients (AWS_CA_BUNDLE). SIGHUP is passed on to
every node (they read their certificates again).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shardfleet.erasure import ErasureParams


@dataclass(frozen=True, slots=True)
class DevClusterSpec:
    nodes: int = 4
    drives_per_node: int = 2
    ec: str = "2+2"
    data: Path = Path(".data/dev-cluster")
    base_port: int = 9000
    host: str = "127.0.0.1"
    heartbeat: float = 1.0
    offline_after: float = 10.0
    bucket_sync_interval: float = 15.0
    tls: bool = False
    """S3 over HTTPS, with a certificate per node from the cluster CA."""
    extra_config: str = ""
    """Top-level TOML every node reads too (tests: [[users]], rate limits, [cors_default])."""

    def node_id(self, i: int) -> str:
        return f"node{i}"

    @property
    def certs(self) -> Path:
        return self.data.resolve() / "certs"

    def s3_cert(self, i: int) -> tuple[Path, Path]:
        """Node i's S3 (HTTPS) certificate and key, with tls."""
        return (
            self.certs / "s3" / f"{self.node_id(i)}.crt",
            self.certs / "s3" / f"{self.node_id(i)}.key",
        )

    def issue_s3_cert(self, i: int) -> None:
        """Node i's S3 server certificate under the cluster CA, unless it has one already."""
        from shardfleet.transport.tls import issue_node_cert

        cert, key = self.s3_cert(i)
        if cert.exists() and key.exists():
            return
        hosts = list(dict.fromkeys([self.host, "127.0.0.1", "localhost"]))
        files = issue_node_cert(
            self.certs, self.node_id(i), hosts, self.certs / "s3" / "issued", overwrite=True
        )
        files.key.rename(key)
        files.cert.rename(cert)


def serve_command(data: Path, drives: int, ec: str, *extra: str) -> list[str]:
    """The command line of a standalone node on a free loopback port (it prints the port)."""
    return [
        sys.executable,
        "-m",
        "shardfleet.node.main",
        "serve",
        "--data",
        str(data),
        "--drives",
        str(drives),
        "--ec",
        ec,
        "--address",
        "127.0.0.1:0",
        *extra,
    ]


def _port_free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def _ephemeral_low() -> int:
    """The first port the kernel hands out to outgoing connections (Linux's default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_base_port(nodes: int, host: str = "127.0.0.1", *, spare: int = 8) -> int:
    """A base port whose S3 (base+i) and QUIC (base+100+i) ports are free for every node,
    and for `spare` more (a pool added later): for tests and benchmarks that run beside
    other clusters. Below the kernel's ephemeral range, so no client connection made
    meanwhile can take a port before the node that owns it starts."""
    count = max(nodes, spare)
    top = max(_ephemeral_low() - 200, 10200)
    for _ in range(200):
        base = random.randrange(10000, top, 200)
        if all(
            _port_free(host, base + i) and _port_free(host, base + 100 + i)
            for i in range(1, count + 1)
        ):
            return base
    raise RuntimeError("no free port range")


def write_cluster_files(spec: DevClusterSpec) -> Path:
    """CA, node certificates and cluster.toml under spec.data; returns the TOML path."""
    from shardfleet.transport.tls import create_ca, issue_node_cert

    params = ErasureParams.parse(spec.ec)
    total = spec.nodes * spec.drives_per_node
    if total % params.n:
        raise ValueError(
            f"{spec.nodes} nodes x {spec.drives_per_node} drives do not form sets of {params.n}"
        )
    data = spec.data.resolve()
    certs = data / "certs"
    if not (certs / "ca.crt").exists():
        create_ca(certs, "shardfleet-dev")
    for i in range(1, spec.nodes + 1):
        if not (certs / f"{spec.node_id(i)}.crt").exists():
            files = issue_node_cert(certs, spec.node_id(i), [spec.host], certs / "issued")
            files.cert.rename(certs / f"{spec.node_id(i)}.crt")
            files.key.rename(certs / f"{spec.node_id(i)}.key")
        if spec.tls:
            spec.issue_s3_cert(i)
    lines = [
        f'ec = "{spec.ec}"',
        f"bucket_sync_interval = {spec.bucket_sync_interval}",
        spec.extra_config,
        "",
        "[cluster]",
        'name = "dev"',
        f"heartbeat_interval = {spec.heartbeat}",
        f"offline_after = {spec.offline_after}",
        "",
        "[cluster.tls]",
        f'ca = "{certs / "ca.crt"}"',
        f'cert = "{certs}/{{node}}.crt"',
        f'key = "{certs}/{{node}}.key"',
    ]
    for i in range(1, spec.nodes + 1):
        drives = ", ".join(
            f'"{data / spec.node_id(i) / f"drive{d}"}"' for d in range(1, spec.drives_per_node + 1)
        )
        lines += [
            "",
            "[[cluster.nodes]]",
            f'id = "{spec.node_id(i)}"',
            f's3 = "{spec.host}:{spec.base_port + i}"',
            f'rpc = "{spec.host}:{spec.base_port + 100 + i}"',
            f"drives = [{drives}]",
        ]
    path = data / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class DevCluster:
    """The node processes of a dev cluster; used by the CLI and by tests."""

    def __init__(self, spec: DevClusterSpec, env: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.env = env
        self.config = write_cluster_files(spec)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def add_pool(
        self, nodes: int, drives_per_node: int | None = None, *, start: bool = True
    ) -> list[int]:
        """Adds a pool of `nodes` new node processes through `admin add-pool`; returns their
        numbers. They start with the same cluster file and learn their place from a seed."""
        from shardfleet.node.admin import post_pool
        from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
        from shardfleet.transport.tls import issue_node_cert

        spec = self.spec
        data = spec.data.resolve()
        certs = data / "certs"
        first = max(self.procs, default=spec.nodes) + 1
        numbers = list(range(first, first + nodes))
        entries = []
        for i in numbers:
            node = spec.node_id(i)
            files = issue_node_cert(certs, node, [spec.host], certs / "issued")
            files.cert.rename(certs / f"{node}.crt")
            files.key.rename(certs / f"{node}.key")
            if spec.tls:
                spec.issue_s3_cert(i)
            entries.append(
                {
                    "id": node,
                    "s3": f"{spec.host}:{spec.base_port + i}",
                    "rpc": f"{spec.host}:{spec.base_port + 100 + i}",
                    "drives": [
                        str(data / node / f"drive{d}")
                        for d in range(1, (drives_per_node or spec.drives_per_node) + 1)
                    ],
                }
            )
        env = self.env or {}
        post_pool(
            self.endpoint(1),
            env.get("SHARDFLEET_ACCESS_KEY", DEV_ACCESS_KEY),
            env.get("SHARDFLEET_SECRET_KEY", DEV_SECRET_KEY),
            entries,
            ca_bundle=self.ca_bundle,
        )
        if start:
            for i in numbers:
                self.start_node(i)
        return numbers

    def endpoint(self, i: int) -> str:
        scheme = "https" if self.spec.tls else "http"
        return f"{scheme}://{self.spec.host}:{self.spec.base_port + i}"

    @property
    def ca_bundle(self) -> Path | None:
        """With tls: the CA certificate that clients verify the nodes' S3 certificates with."""
        return self.spec.certs / "ca.crt" if self.spec.tls else None

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint(i) for i in sorted(self.procs) or range(1, self.spec.nodes + 1)]

    def start_node(self, i: int, log_dir: Path | None = None) -> None:
        log_dir = log_dir or self.spec.data.resolve() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_dir / f"{self.spec.node_id(i)}.log", "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ)
        env.update(self.env or {})
        self.procs[i] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shardfleet.node.main",
                "serve",
                "--config",
                str(self.config),
                "--node",
                self.spec.node_id(i),
                *self._tls_args(i),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        out.close()

    def _tls_args(self, i: int) -> list[str]:
        if not self.spec.tls:
            return []
        cert, key = self.spec.s3_cert(i)
        return ["--tls-cert", str(cert), "--tls-key", str(key)]

    def start(self, timeout: float = 30.0) -> None:
        for i in range(1, self.spec.nodes + 1):
            self.start_node(i)
        self.wait_ready(range(1, self.spec.nodes + 1), timeout)

    def wait_ready(self, nodes: range | list[int], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(nodes)
        context = None
        if self.ca_bundle is not None:
            import ssl

            context = ssl.create_default_context(cafile=str(self.ca_bundle))
        while pending:
            for i in list(pending):
                proc = self.procs.get(i)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{self.spec.node_id(i)} exited with {proc.returncode}")
                try:
                    url = self.endpoint(i) + "/health/ready"
                    with urllib.request.urlopen(url, timeout=2, context=context):
                        pending.discard(i)
                except (urllib.error.URLError, OSError):
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"nodes {sorted(pending)} not ready after {timeout}s")
            time.sleep(0.1)

    def kill_node(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(i)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]


def run(spec: DevClusterSpec) -> int:
    """The CLI: start, print, wait for a signal, stop everything."""
    from shardfleet.node.config import (
        DEV_ACCESS_KEY,
        DEV_SECRET_KEY,
        ENV_ACCESS_KEY,
        ENV_SECRET_KEY,
    )

    cluster = DevCluster(spec)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    def on_hangup(signum: int, frame: object) -> None:
        for proc in cluster.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    try:
        cluster.start()
        ak = os.environ.get(ENV_ACCESS_KEY, DEV_ACCESS_KEY)
        sk = os.environ.get(ENV_SECRET_KEY, DEV_SECRET_KEY)
        print(
            f"shardfleet dev cluster ready: {spec.nodes} nodes x {spec.drives_per_node} drives, {spec.ec}"
        )
        for i, ep in enumerate(cluster.endpoints, 1):
            print(f"  node{i}: endpoint {ep}  (pid {cluster.procs[i].pid})")
        print(f"  access key: {ak}")
        print(f"  secret key: {sk}")
        if cluster.ca_bundle is not None:
            print(f"  CA bundle: {cluster.ca_bundle}  (export AWS_CA_BUNDLE={cluster.ca_bundle})")
        print(f"  data: {spec.data.resolve()}  logs: {spec.data.resolve() / 'logs'}")
        print("  Ctrl-C stops every node.", flush=True)
        reported: set[int] = set()
        while not stop:
            for i, proc in cluster.procs.items():
                if proc.poll() is not None and i not in reported:
                    print(f"  node{i} exited with {proc.returncode}", flush=True)
                    reported.add(i)
            time.sleep(0.5)
    finally:
        cluster.stop()
    return 0
