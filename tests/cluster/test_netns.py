"""A cluster of three "hosts" with their own IP addresses, in network namespaces.

`deploy/netns/netns-cluster.sh` makes three namespaces on a bridge; each runs one node
process with the 3-node bare-metal example (`deploy/configs/cluster-3node.toml`: 3+3 over
4 drives per node, QUIC datagrams of 1452 bytes on 1500-MTU links), its addresses and
paths rewritten for this run. Certificates come from the documented CLI (`shardfleet
certs init` / `certs issue`). The S3 client runs in the root namespace, which reaches the
nodes through the bridge: a bucket made through node1, objects written through node2,
read back byte-exact and listed through node3 (and listed through all three); then node3
is killed and nodes 1 and 2 must still take writes and serve reads, as the example's
topology promises; then they must stop cleanly on SIGTERM.

Needs root and a usable `ip netns`; skips otherwise. Everything it makes (processes,
namespaces, the bridge) is removed afterwards, also when the test fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shardfleet.cluster.topology import NodeSpec, form_sets, shards_per_node
from shardfleet.node.config import load

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "netns" / "netns-cluster.sh"
CONFIGS = REPO / "deploy" / "configs"
EXAMPLE = CONFIGS / "cluster-3node.toml"
NODES = 3
S3_PORT = 9000
RPC_PORT = 9100
ACCESS_KEY = "netns-test-access"
SECRET_KEY = "netns-test-secret-key-0123456789"
READY_TIMEOUT = 30.0


# -- the example configurations (no root needed) -------------------------------------------
@pytest.mark.parametrize("name", ["cluster-3node.toml", "cluster-6node.toml"])
def test_example_config_parses_for_every_node_and_survives_a_node_loss(name: str) -> None:
    path = CONFIGS / name
    env = {"SHARDFLEET_ACCESS_KEY": ACCESS_KEY, "SHARDFLEET_SECRET_KEY": SECRET_KEY}
    ids = [n["id"] for n in tomllib.loads(path.read_text())["cluster"]["nodes"]]
    for node_id in ids:
        config = load(path, {"node": node_id}, env)
        assert config.node == node_id and config.cluster is not None
        entry = config.cluster.node(node_id)
        assert config.address == entry.s3 and [str(d) for d in config.drives] == entry.drives
        assert str(config.cluster.tls.for_node(node_id).cert).endswith(f"/{node_id}.crt")
    # The quorum rule: with a node down, every set still has a write quorum (and so a
    # read quorum) of drives.
    params = config.params
    nodes = [NodeSpec(n.id, n.s3, n.rpc, tuple(n.drives)) for n in config.cluster.nodes]
    sets = form_sets(nodes, params.n)
    w = config.write_quorum or params.default_write_quorum
    assert params.n - shards_per_node(sets) >= w >= params.k
    # A majority of nodes is left too.
    assert len(ids) - 1 > len(ids) // 2


# -- namespaces ------------------------------------------------------------------------------
def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns, veth, bridge)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"sf-probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _script(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"netns-cluster.sh {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass
class Cluster:
    prefix: str
    subnet: str
    root: Path
    config: Path = Path()
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def ns(self, i: int) -> str:
        return f"sf-{self.prefix}-{i}"

    def ip(self, i: int) -> str:
        return f"{self.subnet}.{i}"

    def endpoint(self, i: int) -> str:
        return f"http://{self.ip(i)}:{S3_PORT}"

    def log(self, i: int) -> Path:
        return self.root / "logs" / f"node{i}.log"

    def log_tail(self, i: int, lines: int = 60) -> str:
        try:
            text = self.log(i).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(
            f"----- node{i} ({self.ip(i)}) -----\n{self.log_tail(i)}" for i in self.procs
        )


@pytest.fixture
def netns_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # The cluster transport (QUIC RPC) must exist for a cluster node to start.
    if not (REPO / "transport" / "endpoint.py").exists():
        pytest.skip("the cluster transport (transport/endpoint.py) is not there yet")
    # The nodes are reached directly, never through a proxy.
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")

    prefix = f"t{os.getpid() % 10_000_000}"
    _script("down", prefix)  # leftovers of a killed run with the same pid
    subnet = None
    last = ""
    for attempt in range(20):
        candidate = f"10.77.{(os.getpid() + attempt) % 200 + 20}"
        result = _script("up", str(NODES), prefix, candidate, check=False)
        if result.returncode == 0:
            subnet = candidate
            break
        last = result.stderr.strip()
        if "already in use" not in last:
            break
    if subnet is None:
        _script("down", prefix, check=False)
        pytest.fail(f"netns-cluster.sh up failed: {last}")

    cluster = Cluster(prefix, subnet, tmp_path)
    try:
        yield cluster
    finally:
        for proc in cluster.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in cluster.procs.items():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                print(f"node{i} (pid {proc.pid}) ignored SIGTERM for 20 s; killing it")
                proc.kill()
                proc.wait(10)
        print(cluster.logs())  # shown by pytest when the test failed
        _script("down", prefix, check=False)
        assert not [
            line
            for line in subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True
            ).stdout.splitlines()
            if line.startswith(f"sf-{prefix}-")
        ], "namespaces left behind"


# -- setting the cluster up ----------------------------------------------------------------------
def _shardfleet(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, f"shardfleet {' '.join(args)}: {result.stderr}"
    return result.stdout


def _issue_certs(cluster: Cluster) -> Path:
    """The documented steps: one CA, one certificate per node, copied to <node>.crt/.key."""
    ca_dir = cluster.root / "ca"
    certs = cluster.root / "certs"
    certs.mkdir()
    _shardfleet("certs", "init", "--dir", str(ca_dir), "--name", f"netns-{cluster.prefix}")
    for i in range(1, NODES + 1):
        out = cluster.root / "issued" / f"node{i}"
        _shardfleet(
            "certs", "issue", f"node{i}", "--dir", str(ca_dir), "--host", cluster.ip(i),
            "--out", str(out),
        )  # fmt: skip
        shutil.copy(out / "node.crt", certs / f"node{i}.crt")
        shutil.copy(out / "node.key", certs / f"node{i}.key")
    shutil.copy(ca_dir / "ca.crt", certs / "ca.crt")
    return certs


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for anything we write
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _write_config(cluster: Cluster, certs: Path) -> Path:
    """deploy/configs/cluster-3node.toml, moved to this run's addresses and directories."""
    data = tomllib.loads(EXAMPLE.read_text())
    cl = data.pop("cluster")
    lines = [f"{k} = {_toml(v)}" for k, v in data.items()]
    lines += ["", "[cluster]", f"name = {_toml(cl['name'])}"]
    lines += ["heartbeat_interval = 1.0", "offline_after = 5.0"]
    if "max_datagram_size" in cl:
        lines.append(f"max_datagram_size = {cl['max_datagram_size']}")
    lines += [
        "",
        "[cluster.tls]",
        f"ca = {_toml(str(certs / 'ca.crt'))}",
        f"cert = {_toml(str(certs / '{node}.crt'))}",
        f"key = {_toml(str(certs / '{node}.key'))}",
    ]
    assert len(cl["nodes"]) == NODES
    for i, entry in enumerate(cl["nodes"], 1):
        assert entry["id"] == f"node{i}"
        drives = [str(cluster.root / "data" / entry["id"] / Path(d).name) for d in entry["drives"]]
        lines += [
            "",
            "[[cluster.nodes]]",
            f"id = {_toml(entry['id'])}",
            f"s3 = {_toml(f'{cluster.ip(i)}:{S3_PORT}')}",
            f"rpc = {_toml(f'{cluster.ip(i)}:{RPC_PORT}')}",
            f"drives = {_toml(drives)}",
        ]
    path = cluster.root / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(cluster: Cluster, i: int) -> None:
    cluster.log(i).parent.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        SHARDFLEET_ACCESS_KEY=ACCESS_KEY, SHARDFLEET_SECRET_KEY=SECRET_KEY, PYTHONUNBUFFERED="1"
    )
    with open(cluster.log(i), "wb") as out:
        # `ip netns exec` execs the command: the pid is the node's own.
        cluster.procs[i] = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                cluster.ns(i),
                sys.executable,
                "-m",
                "shardfleet.node.main",
                "serve",
                "--config",
                str(cluster.config),
                "--node",
                f"node{i}",
            ],  # fmt: skip
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )


def _wait_ready(cluster: Cluster, timeout: float = READY_TIMEOUT) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    pending = set(cluster.procs)
    last: dict[int, str] = {}
    while pending:
        for i in sorted(pending):
            proc = cluster.procs[i]
            if proc.poll() is not None:
                pytest.fail(
                    f"node{i} exited with {proc.returncode} before it was ready:\n"
                    + cluster.log_tail(i)
                )
            try:
                with opener.open(cluster.endpoint(i) + "/health/ready", timeout=2) as resp:
                    if resp.status == 200:
                        pending.discard(i)
            except urllib.error.HTTPError as exc:
                last[i] = f"{exc.code} {exc.read()[:300]!r}"
            except (urllib.error.URLError, OSError) as exc:
                last[i] = str(exc)
        if pending and time.monotonic() > deadline:
            pytest.fail(
                f"nodes {sorted(pending)} not ready after {timeout}s "
                f"(last answers {last}):\n{cluster.logs()}"
            )
        time.sleep(0.2)


def _wait_converged(cluster: Cluster, timeout: float = READY_TIMEOUT) -> None:
    """The deployment health check of the README: every node sees every other alive.

    A node that answers /health/ready serves at once; a write it takes before it has heard
    from a peer leaves out that peer's drives (at write quorum, for the healer), and this
    test later loses a node, so it writes only once the cluster has formed."""
    from shardfleet.node.admin import fetch_status

    deadline = time.monotonic() + timeout
    while True:
        states = {}
        for i in cluster.procs:
            try:
                nodes = fetch_status(cluster.endpoint(i), ACCESS_KEY, SECRET_KEY)["nodes"]
                states[i] = sorted(n["node"] for n in nodes if n["state"] == "alive")
            except Exception as exc:  # noqa: BLE001 - reported below if it never settles
                states[i] = [repr(exc)]
        everyone = sorted(f"node{i}" for i in cluster.procs)
        if all(alive == everyone for alive in states.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"membership never converged: {states}\n{cluster.logs()}")
        time.sleep(0.2)


def _client(cluster: Cluster, i: int):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cluster.endpoint(i),
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=60,
            proxies={},
        ),
    )


# -- the test --------------------------------------------------------------------------------
def test_three_namespaced_nodes_serve_one_bucket(netns_cluster: Cluster) -> None:
    cluster = netns_cluster
    started = time.monotonic()
    certs = _issue_certs(cluster)
    cluster.config = _write_config(cluster, certs)
    for i in range(1, NODES + 1):
        _start(cluster, i)
    _wait_ready(cluster)
    ready_after = time.monotonic() - started
    _wait_converged(cluster)

    # Every node runs in its own namespace, at its own address.
    for i, proc in cluster.procs.items():
        mine, theirs = os.stat(f"/proc/{proc.pid}/ns/net"), os.stat(f"/run/netns/{cluster.ns(i)}")
        assert (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino), f"node{i}"

    rng = random.Random(cluster.prefix)
    objects = {
        "tiny": rng.randbytes(1),
        "dir/two-hundred-kb": rng.randbytes(200_000),
        "dir/sub/three-mib-odd-tail": rng.randbytes(3 * (1 << 20) + 12_345),
    }
    bucket = f"netns-{cluster.prefix}"
    s1, s2, s3 = (_client(cluster, i) for i in (1, 2, 3))

    s1.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        resp = s2.put_object(Bucket=bucket, Key=key, Body=body)
        assert resp["ETag"].strip('"') == hashlib.md5(body).hexdigest(), key

    for key, body in objects.items():
        got = s3.get_object(Bucket=bucket, Key=key)
        data = got["Body"].read()
        assert len(data) == len(body) and data == body, f"{key}: bytes differ through node3"
        assert got["ContentLength"] == len(body)
        assert got["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    # A range across the first stripe boundary of the large object, through node1.
    big = objects["dir/sub/three-mib-odd-tail"]
    lo, hi = (1 << 20) - 1000, (1 << 20) + 999
    part = s1.get_object(Bucket=bucket, Key="dir/sub/three-mib-odd-tail", Range=f"bytes={lo}-{hi}")
    assert part["Body"].read() == big[lo : hi + 1]

    expected = sorted((k, len(v)) for k, v in objects.items())
    for i, client in ((1, s1), (2, s2), (3, s3)):
        listed = client.list_objects_v2(Bucket=bucket)
        got = sorted((o["Key"], o["Size"]) for o in listed.get("Contents", []))
        assert got == expected, f"listing through node{i}"
        assert any(b["Name"] == bucket for b in client.list_buckets()["Buckets"]), f"node{i}"
        delimited = client.list_objects_v2(Bucket=bucket, Delimiter="/")
        assert [o["Key"] for o in delimited.get("Contents", [])] == ["tiny"]
        assert [p["Prefix"] for p in delimited.get("CommonPrefixes", [])] == ["dir/"]

    # The documented health check of a deployment: every node sees the other two.
    env = dict(os.environ, SHARDFLEET_ACCESS_KEY=ACCESS_KEY, SHARDFLEET_SECRET_KEY=SECRET_KEY)
    status = subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", "admin", "status", "--json",
         "--endpoint", cluster.endpoint(1)],  # fmt: skip
        capture_output=True, text=True, cwd=REPO, env=env, timeout=30,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["node"] == "node1" and st["majority"] is True
    assert sorted(n["node"] for n in st["nodes"]) == ["node1", "node2", "node3"]
    assert all(n["state"] == "alive" for n in st["nodes"]), st["nodes"]
    sets = [s for pool in st["pools"] for s in pool["sets"]]
    assert len(sets) == 2 and all(s["online"] == 6 for s in sets), sets
    drives = [d for s in sets for d in s["drives"]]
    assert sum(d["local"] for d in drives) == 4, drives  # node1's own 4 drives
    remote = {str(d["endpoint"]).partition(":")[0] for d in drives if not d["local"]}
    assert remote == {"node2", "node3"}, remote

    # Nothing alarming in the logs.
    for i in cluster.procs:
        text = cluster.log(i).read_text(errors="replace")
        assert not re.search(r"Traceback|ERROR", text), f"node{i} logged errors:\n{text[-4000:]}"

    # What the example topology promises: a host lost (SIGKILL, no goodbye), and the other
    # two still take writes (3+3, two shards per node: 4 left >= W = 4) and serve reads.
    cluster.procs[3].kill()
    cluster.procs[3].wait(10)
    later = {"after-loss/small": rng.randbytes(70_000), "after-loss/big": rng.randbytes(2_500_001)}
    for key, body in later.items():
        s1.put_object(Bucket=bucket, Key=key, Body=body)
    for key, body in {**objects, **later}.items():
        assert s2.get_object(Bucket=bucket, Key=key)["Body"].read() == body, f"{key} via node2"
    listed = s2.list_objects_v2(Bucket=bucket)
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted({**objects, **later})

    # Graceful stop, as systemd does it (SIGTERM; TimeoutStopSec must cover it).
    for i in (1, 2):
        t0 = time.monotonic()
        cluster.procs[i].send_signal(signal.SIGTERM)
        code = cluster.procs[i].wait(30)
        assert code == 0, f"node{i} exited with {code} on SIGTERM:\n{cluster.log_tail(i)}"
        assert time.monotonic() - t0 < 15, f"node{i} took {time.monotonic() - t0:.1f}s to stop"

    took = time.monotonic() - started
    print(f"cluster ready after {ready_after:.1f}s, whole test {took:.1f}s")
    assert took < 60, f"took {took:.1f}s"
