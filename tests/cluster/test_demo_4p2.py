"""Issue 15, "What must show", on a real 6-node dev cluster as 4+2: 6 nodes x 2 drives form
two sets of 6, each with one drive on every node (drives are taken round-robin over the
nodes), so two lost nodes cost each set two shards and k = 4 drives are left to read from.

1. A drive wiped while its node runs is formatted into its slot and healed; then two other
   nodes die, and every object (so the healed drive's shards too) reads back byte-exact.
2. A node that was down during PUTs, overwrites and DELETEs catches up once it is back; then
   two other nodes die, so that its drives are needed for every read: every live key reads
   back byte-exact, every deleted key answers 404 NoSuchKey, and the listing is exact.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from botocore.exceptions import ClientError

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from shardfleet.node.devcluster import DevCluster, DevClusterSpec, free_base_port
from tests.cluster.conftest import client
from tests.cluster.test_healing_cluster import admin_status, assert_done, eventually, heal_status

NODES, DRIVES, EC, K = 6, 2, "4+2", 4
BUCKET = "demo"
MiB = 1 << 20


@pytest.fixture
def cluster6(tmp_path) -> Iterator[DevCluster]:
    spec = DevClusterSpec(
        nodes=NODES,
        drives_per_node=DRIVES,
        ec=EC,
        data=tmp_path / "cluster",
        base_port=free_base_port(NODES),
        heartbeat=0.5,
        offline_after=5.0,
    )
    cluster = DevCluster(spec)
    try:
        cluster.start(timeout=90)
        yield cluster
    finally:
        cluster.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def heal_start(endpoint: str) -> None:
    env = dict(
        os.environ, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY, SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY
    )
    proc = subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", "admin", "heal", "start",
         "--endpoint", endpoint],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def heal_and_wait(endpoint: str, timeout: float = 120.0) -> dict:
    """`admin heal start`, then `heal status --json` until done with no node unreachable."""
    heal_start(endpoint)
    time.sleep(1)
    eventually(lambda: assert_done(endpoint), timeout=timeout)
    st = heal_status(endpoint)
    for n in st["nodes"]:  # shown with -s: what each node's healing did
        m, s = n["mrf"], n["scanner"]
        print(
            f"    {n['node']}: mrf healed {m['healed']} failed {m['failed']} dropped"
            f" {m['dropped']}; scanner passes {s['passes']} scanned {s['scanned']} healed"
            f" {s['healed']} failed {s['failed']} error {s['last_error']}"
        )
    return st


def assert_sets_span_every_node(cluster: DevCluster) -> None:
    """Each set has exactly one drive on each of the 6 nodes (the premise of the demo)."""
    st = admin_status(cluster.endpoint(1))
    sets = [s for pool in st["pools"] for s in pool["sets"]]
    assert len(sets) == NODES * DRIVES // (K + 2), sets
    for s in sets:
        owners = sorted(re.search(r"/(node\d+)/drive\d+$", d["endpoint"])[1] for d in s["drives"])
        assert owners == [f"node{i}" for i in range(1, NODES + 1)], s


def wait_nodes_down(cluster: DevCluster, via: int, dead: list[int], timeout: float = 30.0):
    """Until node `via` no longer counts the dead nodes alive (so it reads around them)."""

    def down() -> None:
        states = {n["node"]: n["state"] for n in admin_status(cluster.endpoint(via))["nodes"]}
        assert all(states.get(f"node{i}") != "alive" for i in dead), states

    eventually(down, timeout=timeout)


def put(s3, key: str, body: bytes) -> None:
    eventually(lambda: s3.put_object(Bucket=BUCKET, Key=key, Body=body))


def put_multipart(s3, key: str, parts: list[bytes]) -> None:
    def once() -> None:
        up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        done = []
        for n, part in enumerate(parts, 1):
            r = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=n, Body=part)
            done.append({"PartNumber": n, "ETag": r["ETag"]})
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=up, MultipartUpload={"Parts": done}
        )

    eventually(once)


def listed(s3) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def read_all(clients: list, expected: dict[str, str], budget: float = 60.0) -> dict[str, str]:
    """Reads every key through the clients in turn, retrying a failed read for up to 10 s
    while the whole `budget` lasts; returns the failures (key -> why)."""
    bad = {}
    deadline = time.monotonic() + budget
    for i, (key, digest) in enumerate(sorted(expected.items())):
        s3 = clients[i % len(clients)]
        try:
            got = eventually(
                lambda k=key, c=s3: c.get_object(Bucket=BUCKET, Key=k)["Body"].read(),
                timeout=min(10.0, deadline - time.monotonic()),
            )
        except ClientError as exc:
            bad[key] = f"{exc.response['Error']['Code']} ({exc.response['Error'].get('Message')})"
            continue
        if sha(got) != digest:
            bad[key] = f"wrong bytes: {len(got)} bytes, sha256 {sha(got)[:16]}"
    return bad


def error_code(fn: Callable[[], object]) -> str:
    try:
        fn()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return "200"


@pytest.mark.timeout(300)
def test_wiped_drive_is_healed_then_two_nodes_die(cluster6):
    t0 = time.monotonic()
    rng = random.Random(15_01)
    assert_sets_span_every_node(cluster6)
    s3 = {i: client(cluster6.endpoint(i)) for i in range(1, NODES + 1)}
    s3[1].create_bucket(Bucket=BUCKET)
    sizes = [0, 1024, 200_000, MiB, 3 * MiB + 7]
    expected: dict[str, str] = {}
    for i in range(58):
        body = rng.randbytes(sizes[i % len(sizes)])
        key = f"obj/{i:03d}-{len(body)}"
        put(s3[1 + i % NODES], key, body)
        expected[key] = sha(body)
    for j, tail in enumerate((1, 777_777)):
        parts = [rng.randbytes(5 * MiB), rng.randbytes(tail)]
        key = f"mpu/{j}"
        put_multipart(s3[1 + j], key, parts)
        expected[key] = sha(b"".join(parts))
    print(f"\n  wrote {len(expected)} objects in {time.monotonic() - t0:.1f}s")

    wiped = cluster6.spec.data.resolve() / "node3" / "drive1"
    assert (wiped / "format.json").exists()
    shutil.rmtree(wiped)
    wiped.mkdir()

    def reformatted() -> None:  # node 3 formats the empty directory into the slot
        assert (wiped / "format.json").exists(), sorted(p.name for p in wiped.iterdir())

    eventually(reformatted, timeout=20)
    t1 = time.monotonic()
    st = heal_and_wait(cluster6.endpoint(1))
    healed = sum(n["scanner"]["healed"] + n["mrf"]["healed"] for n in st["nodes"])
    print(f"  wiped node3/drive1; healed {healed} objects, done in {time.monotonic() - t1:.1f}s")
    assert healed > 0, st  # the wiped drive held shards of about half the objects

    dead = [1, 5]  # two nodes other than node 3
    for i in dead:
        cluster6.kill_node(i)
    alive = [i for i in range(1, NODES + 1) if i not in dead]
    wait_nodes_down(cluster6, alive[0], dead)
    bad = read_all([s3[i] for i in alive], expected)
    assert not bad, f"{len(bad)} of {len(expected)} objects unreadable: {bad}"
    for i in alive:
        keys = eventually(lambda i=i: listed(s3[i]))
        assert sorted(keys) == sorted(expected), (i, set(expected) ^ set(keys))
    print(f"  all read back and listed with nodes {dead} dead; {time.monotonic() - t0:.1f}s")


@pytest.mark.timeout(300)
def test_node_down_during_puts_and_deletes_catches_up(cluster6):
    t0 = time.monotonic()
    rng = random.Random(15_02)
    assert_sets_span_every_node(cluster6)
    s3 = {i: client(cluster6.endpoint(i)) for i in range(1, NODES + 1)}
    s3[1].create_bucket(Bucket=BUCKET)
    sizes = [0, 1024, 200_000, MiB + 3]
    live: dict[str, str] = {}
    original = [f"key/{i:03d}" for i in range(40)]
    for i, key in enumerate(original):
        body = rng.randbytes(sizes[i % len(sizes)])
        put(s3[1 + i % NODES], key, body)
        live[key] = sha(body)

    down = 4
    cluster6.kill_node(down)
    others = [i for i in range(1, NODES + 1) if i != down]
    shuffled = rng.sample(original, len(original))
    to_delete, to_overwrite = shuffled[:20], shuffled[20:]
    new_keys = [f"new/{i:03d}" for i in range(60)]
    # 100 PUTs: 60 new keys, 40 overwrites (of the 20 kept old keys and of new keys already
    # written), and 20 DELETEs of old keys (never written again), in a random order
    ops: list[tuple[str, str]] = [("put", k) for k in new_keys]
    ops += [("overwrite", to_overwrite[i % 20]) for i in range(30)]
    ops += [("overwrite", new_keys[i]) for i in range(0, 60, 6)]
    ops += [("delete", k) for k in to_delete]
    rng.shuffle(ops)
    deleted: set[str] = set()
    puts = 0
    for n, (op, key) in enumerate(ops):
        c = s3[others[n % len(others)]]
        if op == "delete":
            eventually(lambda k=key, c=c: c.delete_object(Bucket=BUCKET, Key=k))
            live.pop(key)
            deleted.add(key)
            continue
        body = rng.randbytes(rng.choice(sizes))
        put(c, key, body)
        live[key] = sha(body)
        puts += 1
    assert puts == 100 and len(deleted) == 20
    print(f"\n  node{down} down: {puts} PUTs, {len(deleted)} DELETEs; {time.monotonic() - t0:.1f}s")

    cluster6.start_node(down)
    cluster6.wait_ready([down], timeout=60)
    t1 = time.monotonic()
    st = heal_and_wait(cluster6.endpoint(1))
    healed = sum(n["scanner"]["healed"] + n["mrf"]["healed"] for n in st["nodes"])
    print(f"  node{down} back; healed {healed}, done in {time.monotonic() - t1:.1f}s")

    dead = [1, 2]  # two nodes other than node 4: node 4's drives are needed for every read
    for i in dead:
        cluster6.kill_node(i)
    alive = [i for i in range(1, NODES + 1) if i not in dead]
    wait_nodes_down(cluster6, alive[0], dead)
    clients = [s3[i] for i in alive]
    bad = read_all(clients, live)
    assert not bad, f"{len(bad)} of {len(live)} live keys unreadable: {bad}"

    codes: dict[str, str] = {}
    for attempt in range(3):  # a transient answer right after the kills gets two more tries
        for n, key in enumerate(sorted(deleted)):
            if codes.get(key) == "NoSuchKey":
                continue
            c = clients[n % len(clients)]
            codes[key] = error_code(lambda k=key, c=c: c.get_object(Bucket=BUCKET, Key=k))
        if all(code == "NoSuchKey" for code in codes.values()):
            break
        time.sleep(1 + attempt)
    wrong = {k: v for k, v in codes.items() if v != "NoSuchKey"}
    assert not wrong, f"{len(wrong)} of {len(deleted)} deleted keys do not answer 404: {wrong}"

    for i in alive:
        keys = eventually(lambda i=i: listed(s3[i]))
        assert sorted(keys) == sorted(live), (
            i,
            {"missing": sorted(set(live) - set(keys)), "extra": sorted(set(keys) - set(live))},
        )
    print(f"  all checked with nodes {dead} dead; {time.monotonic() - t0:.1f}s")
