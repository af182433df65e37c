"""The chaos suite's clusters: the 4-node dev cluster of tests/cluster, with two additions
for the fault injector, and the same cluster in network namespaces for partitions.

- One drive (node 2, drive 2) is a small tmpfs of its own (ENOSPC_SIZE), mounted before
  the cluster starts and unmounted after it stops, whatever happened: the ENOSPC fault fills
  it. (The node's second drive, not its first, where the MRF queue keeps its file.) Needs
  root; without it the run has no ENOSPC fault and says so.
- Every node starts with SHARDFLEET_TEST_FAULTS=1: its drives are FaultyDrives armed
  through the test-only route of node/testfaults.py.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from shardfleet.node.devcluster import DevCluster, DevClusterSpec, free_base_port

ENOSPC_NODE, ENOSPC_DRIVE = 2, 2
ENOSPC_SIZE = "96m"  # the drive holds ~20 MiB of the workload's shards; filled on command
FAULTS_ENV = {"SHARDFLEET_TEST_FAULTS": "1"}


@dataclass
class ChaosCluster:
    cluster: DevCluster
    full_drive: Path | None  # the small tmpfs drive, or None where nothing can be mounted


def _spec(data: Path, base_port: int) -> DevClusterSpec:
    # tests/cluster/conftest.py's dev_cluster
    return DevClusterSpec(
        nodes=4,
        drives_per_node=2,
        ec="2+2",
        data=data,
        base_port=base_port,
        heartbeat=0.5,
        offline_after=5.0,
    )


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        print("no ENOSPC fault: mounting a tmpfs needs root")
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "chaos-enospc", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        print(f"no ENOSPC fault: cannot mount a tmpfs here: {done.stderr.strip()}")
        return False
    return True


def _unmount(path: Path) -> None:
    if not os.path.ismount(path):
        return
    done = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:  # something still holds it: detach now, freed when let go
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture
def chaos_cluster(tmp_path: Path) -> Iterator[ChaosCluster]:
    spec = _spec(tmp_path / "cluster", free_base_port(4))
    small = spec.data / spec.node_id(ENOSPC_NODE) / f"drive{ENOSPC_DRIVE}"
    mounted = False
    try:
        mounted = _mount_tmpfs(small, ENOSPC_SIZE)
        cluster = DevCluster(spec, env=FAULTS_ENV)
        try:
            cluster.start(timeout=60)
            yield ChaosCluster(cluster, small if mounted else None)
        finally:
            cluster.stop()
    finally:
        if mounted:
            _unmount(small)


# -- the cluster in network namespaces --------------------------------------------------------
@pytest.fixture
def netns_chaos_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChaosCluster]:
    from tests.chaos.netns import NetnsCluster, script
    from tests.cluster.test_netns import _skip_reason

    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("NO_PROXY", "*")  # the nodes are reached directly
    monkeypatch.setenv("no_proxy", "*")
    prefix = f"c{os.getpid() % 10_000_000}"
    script("down", prefix, check=False)  # leftovers of a killed run with the same pid
    subnet, last = None, ""
    for attempt in range(20):
        candidate = f"10.78.{(os.getpid() + attempt) % 200 + 20}"
        result = script("up", "4", prefix, candidate, check=False)
        if result.returncode == 0:
            subnet = candidate
            break
        last = result.stderr.strip()
        if "already in use" not in last:
            break
    if subnet is None:
        script("down", prefix, check=False)
        pytest.fail(f"netns-cluster.sh up failed: {last}")
    # off loopback a node refuses the printed development credentials unless they are set
    env = dict(
        FAULTS_ENV, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY, SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY
    )
    try:
        cluster = NetnsCluster(_spec(tmp_path / "cluster", 0), prefix, subnet, env=env)
        try:
            cluster.start(timeout=60)
            if not cluster.wait_converged(timeout=30):
                pytest.fail("the namespaced cluster never converged")
            yield ChaosCluster(cluster, None)
        finally:
            for i in list(cluster.cuts):
                cluster.mend(i)
            cluster.stop()
    finally:
        script("down", prefix, check=False)
