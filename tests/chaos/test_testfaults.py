"""The test-only fault route of node/testfaults.py, on a real standalone node (4 drives, 2+2,
W = 3): absent without SHARDFLEET_TEST_FAULTS=1; with it, root credentials only, faults
armed on one drive act inside the node (a failing commit costs the write nothing while the
other three commit; a delay is counted), clear and ttl disarm them."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from shardfleet.node import testfaults
from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.support.nodeproc import NodeProcess

pytestmark = pytest.mark.timeout(60)
ENV = {testfaults.ENV: "1"}


def arm(node: NodeProcess, **params: object) -> dict:
    return testfaults.call(node.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY, **params)


def injected(node: NodeProcess, drive: int) -> dict[str, int]:
    st = testfaults.call(node.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY, http_method="GET")
    return st["drives"][drive - 1]["injected"]


def test_no_route_without_the_switch(tmp_path):
    node = NodeProcess(tmp_path / "n").start()
    try:
        with pytest.raises(RuntimeError) as err:
            arm(node, drive=1, kind="fail", method="commit")
        assert " 200 " not in str(err.value)
        node.client().create_bucket(Bucket="plain")
        node.client().put_object(Bucket="plain", Key="k", Body=b"x" * 100_000)
    finally:
        node.stop()
    assert "test faults" not in "".join(node.output)


def test_faults_armed_and_cleared_in_a_running_node(tmp_path):
    node = NodeProcess(tmp_path / "n", env=ENV).start()
    try:
        s3 = node.client()
        s3.create_bucket(Bucket="faults")
        state = arm(node, drive=1, kind="fail", method="commit", error="io")
        assert [d["drive"] for d in state["drives"]] == [1, 2, 3, 4]
        assert state["drives"][0]["path"].endswith("drive1")
        body = b"y" * 300_000
        s3.put_object(Bucket="faults", Key="k", Body=body)  # 3 of 4 drives commit: W = 3
        assert injected(node, 1).get("fail", 0) >= 1
        assert s3.get_object(Bucket="faults", Key="k")["Body"].read() == body
        arm(node, drive=1, kind="clear")
        before = injected(node, 1)
        s3.put_object(Bucket="faults", Key="k2", Body=body)
        assert injected(node, 1) == before  # cleared: nothing fires

        arm(node, drive=2, kind="delay", method="read_meta", seconds=0.3)
        t0 = time.monotonic()
        assert s3.get_object(Bucket="faults", Key="k2")["Body"].read() == body
        assert injected(node, 2).get("delay", 0) >= 1, time.monotonic() - t0
        arm(node, drive=0, kind="clear")

        arm(node, drive=3, kind="fail", method="commit", ttl=0.5)  # expires by itself
        time.sleep(1.0)
        before = injected(node, 3)
        s3.put_object(Bucket="faults", Key="k3", Body=body)
        assert injected(node, 3) == before

        for bad in (
            {"drive": 9, "kind": "clear"},
            {"drive": 1, "kind": "fail", "method": "no_such_method"},
            {"drive": 1, "kind": "delay", "method": "commit", "seconds": -1},
            {"drive": 1, "kind": "boom"},
            {"drive": 1, "kind": "enospc", "ttl": 10_000},
        ):
            with pytest.raises(RuntimeError, match=" 400 "):
                arm(node, **bad)
        # root credentials only
        url = node.endpoint + testfaults.PATH + "?drive=1&kind=clear"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5)
        assert err.value.code == 403
        with pytest.raises(RuntimeError, match=" 403 "):
            testfaults.call(node.endpoint, "someone", "else-entirely", drive=1, kind="clear")
    finally:
        node.stop()
