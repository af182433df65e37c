from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.nodeproc import NodeProcess


@pytest.fixture
def node_factory(tmp_path) -> Iterator:
    """Starts node processes in this test's temp dir and stops every one afterwards."""
    started: list[NodeProcess] = []

    def make(name: str = "node", **kwargs) -> NodeProcess:
        proc = NodeProcess(tmp_path / name, **kwargs)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.kill() if os.environ.get("SHARDFLEET_FAST_KILL") else proc.stop()


@pytest.fixture
def node(node_factory) -> NodeProcess:
    return node_factory()


@pytest.fixture
def s3(node):
    return node.client()
