"""Adding capacity: a second pool joins a running cluster; nothing stored moves."""

from __future__ import annotations

import os

from tests.cluster.conftest import client
from tests.cluster.test_cluster import eventually, listing
from tests.support.shards import version_dirs


def pool_dirs(dev_cluster, nodes: range, bucket: str) -> int:
    data = dev_cluster.spec.data
    return sum(
        len(version_dirs(data / f"node{i}" / f"drive{d}", bucket)) for i in nodes for d in (1, 2)
    )


def test_add_pool_keeps_old_objects_and_takes_new_ones(dev_cluster):
    s3 = client(dev_cluster.endpoint(1))
    s3.create_bucket(Bucket="growing")
    old = {f"old-{i}": os.urandom(300_000 + i) for i in range(4)}
    old["old-small"] = b"tiny"
    for key, data in old.items():
        s3.put_object(Bucket="growing", Key=key, Body=data)
    before = pool_dirs(dev_cluster, range(1, 5), "growing")

    new_nodes = dev_cluster.add_pool(4, start=False)
    # announced but not started: the running cluster keeps serving everything
    s3.put_object(Bucket="growing", Key="during-window", Body=b"window")
    old["during-window"] = b"window"
    assert s3.get_object(Bucket="growing", Key="old-0")["Body"].read() == old["old-0"]
    assert listing(s3, "growing") == sorted(old)
    for i in new_nodes:
        dev_cluster.start_node(i)
    dev_cluster.wait_ready(new_nodes, timeout=90)
    everyone = [client(dev_cluster.endpoint(i)) for i in range(1, 9)]

    for c in everyone:  # old objects read byte-exact through old and new nodes
        for key, data in old.items():
            assert (
                eventually(
                    lambda c=c, key=key: c.get_object(Bucket="growing", Key=key)["Body"].read(), 30
                )
                == data
            )
    # nothing moved: the old pool holds exactly what it held
    assert pool_dirs(dev_cluster, range(1, 5), "growing") == before  # ("during-window" is inline)
    assert pool_dirs(dev_cluster, range(5, 9), "growing") == 0

    # new objects go to the new, emptier pool once the bucket catch-up has given it the bucket;
    # each probe is a new key (a probe put before that lands in the old pool, and an overwrite
    # of it would rightly stay there)
    def probe_lands_in_new_pool() -> None:
        key = f"probe-{len(old)}"
        data = os.urandom(200_000)
        everyone[0].put_object(Bucket="growing", Key=key, Body=data)
        old[key] = data
        assert pool_dirs(dev_cluster, range(5, 9), "growing") > 0

    eventually(probe_lands_in_new_pool, timeout=60)
    in_new_pool = pool_dirs(dev_cluster, range(5, 9), "growing")
    new = {f"new-{i}": os.urandom(250_000 + i) for i in range(4)}
    for i, (key, data) in enumerate(new.items()):
        everyone[i % 8].put_object(Bucket="growing", Key=key, Body=data)
    assert pool_dirs(dev_cluster, range(5, 9), "growing") >= in_new_pool + len(new)
    # an overwrite of an old key stays in the old pool
    in_new_pool = pool_dirs(dev_cluster, range(5, 9), "growing")
    old["old-0"] = os.urandom(280_000)
    everyone[6].put_object(Bucket="growing", Key="old-0", Body=old["old-0"])
    assert pool_dirs(dev_cluster, range(5, 9), "growing") == in_new_pool
    for c in (everyone[0], everyone[7]):
        for key, data in {**old, **new}.items():
            assert c.get_object(Bucket="growing", Key=key)["Body"].read() == data
        assert listing(c, "growing") == sorted({**old, **new})
    everyone[5].delete_object(Bucket="growing", Key="old-1")
    assert "old-1" not in listing(everyone[2], "growing")
