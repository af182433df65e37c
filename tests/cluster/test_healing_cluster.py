"""Healing on a real 4-node dev cluster (2 drives each, 2+2; each set has one drive on each
node): a node that was down while objects were written and overwritten catches up through
the other nodes' MRF queues as soon as it is back, so that it and one other node alone then
serve every object byte-exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from botocore.exceptions import ClientError

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.cluster.conftest import client


def eventually(fn, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (ClientError, AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def heal_status(endpoint: str) -> dict:
    env = dict(
        os.environ, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY, SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY
    )
    proc = subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", "admin", "heal", "status", "--json",
         "--endpoint", endpoint],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def assert_done(endpoint: str) -> None:
    st = heal_status(endpoint)
    assert st["done"] and not st["unreachable"], st


def test_a_node_that_was_down_catches_up(dev_cluster):
    s3 = [client(ep) for ep in dev_cluster.endpoints]
    s3[0].create_bucket(Bucket="catchup")
    before = {f"old-{i}": os.urandom(200_000 + i) for i in range(10)}
    for key, value in before.items():
        s3[0].put_object(Bucket="catchup", Key=key, Body=value)
    dev_cluster.kill_node(4)
    written = dict(before)
    for i in range(30):  # new keys and overwrites while node 4 is down
        key = f"new-{i}" if i % 3 else f"old-{i % 10}"
        written[key] = os.urandom(150_000 + 1000 * i)
        eventually(
            lambda k=key, c=s3[i % 3]: c.put_object(Bucket="catchup", Key=k, Body=written[k])
        )
    dev_cluster.start_node(4)
    dev_cluster.wait_ready([4], timeout=60)

    def healed() -> None:
        st = heal_status(dev_cluster.endpoints[0])
        assert st["done"] and not st["unreachable"], st
        # one entry per key (an overwrite joins the key's entry), some healed by a read first
        assert sum(n["mrf"]["healed"] for n in st["nodes"]) >= 20, st

    eventually(healed, timeout=60)
    # then the scanner, as the design has it (MRF entries first, then a pass over the sets)
    env = dict(
        os.environ, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY, SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY
    )
    subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", "admin", "heal", "start",
         "--endpoint", dev_cluster.endpoints[0]],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    time.sleep(1)
    eventually(lambda: assert_done(dev_cluster.endpoints[0]), timeout=60)
    dev_cluster.kill_node(1)
    dev_cluster.kill_node(2)
    for key, value in written.items():
        got = eventually(lambda k=key: s3[2].get_object(Bucket="catchup", Key=k)["Body"].read())
        assert got == value, key


def admin_status(endpoint: str) -> dict:
    env = dict(
        os.environ, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY, SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY
    )
    proc = subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", "admin", "status", "--json",
         "--endpoint", endpoint],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_every_node_sees_a_peers_failed_drive(dev_cluster):
    drive = dev_cluster.spec.data / "node2" / "drive1"
    (drive / "format.json").rename(drive / "format.json.away")  # node 2 takes it offline

    def seen_offline_everywhere() -> None:
        for endpoint in dev_cluster.endpoints:
            rows = [
                d
                for pool in admin_status(endpoint)["pools"]
                for s in pool["sets"]
                for d in s["drives"]
                if d["endpoint"].endswith(str(drive))
            ]
            assert rows and not any(d["online"] for d in rows), (endpoint, rows)

    eventually(seen_offline_everywhere, timeout=20)
