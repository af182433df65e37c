from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from shardfleet.node.devcluster import DevCluster, DevClusterSpec, free_base_port


def client(endpoint: str, **config: object):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=DEV_ACCESS_KEY,
        aws_secret_access_key=DEV_SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30, **config),
    )


@pytest.fixture
def dev_cluster(tmp_path) -> Iterator[DevCluster]:
    spec = DevClusterSpec(
        nodes=4,
        drives_per_node=2,
        ec="2+2",
        data=tmp_path / "cluster",
        base_port=free_base_port(4),
        heartbeat=0.5,
        offline_after=5.0,
    )
    cluster = DevCluster(spec)
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()
