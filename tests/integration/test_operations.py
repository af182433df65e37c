"""Operations: metrics move with traffic, the access log is structured and holds no secrets."""

from __future__ import annotations

import json
import re
import urllib.request

from shardfleet.node.config import DEV_SECRET_KEY


def scrape(endpoint: str) -> dict[str, float]:
    with urllib.request.urlopen(endpoint + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_change_as_requests_run(node):
    s3 = node.client()
    before = scrape(node.endpoint)
    s3.create_bucket(Bucket="metered")
    s3.put_object(Bucket="metered", Key="k", Body=b"x" * 1000)
    s3.get_object(Bucket="metered", Key="k")["Body"].read()
    after = scrape(node.endpoint)

    def count(op: str, status: str, v: dict[str, float]) -> float:
        return v.get(f'shardfleet_s3_requests_total{{op="{op}",status="{status}"}}', 0.0)

    assert count("PutObject", "200", after) == count("PutObject", "200", before) + 1
    assert count("GetObject", "200", after) == count("GetObject", "200", before) + 1
    assert (
        after["shardfleet_s3_received_bytes_total"]
        >= before.get("shardfleet_s3_received_bytes_total", 0) + 1000
    )
    assert (
        after["shardfleet_s3_sent_bytes_total"]
        >= before.get("shardfleet_s3_sent_bytes_total", 0) + 1000
    )
    drives = [k for k in after if k.startswith("shardfleet_drive_online{")]
    assert len(drives) == 4 and all(after[k] == 1.0 for k in drives)
    assert "shardfleet_event_loop_lag_seconds" in after
    assert any(k.startswith("shardfleet_s3_request_seconds_bucket{") for k in after)


def test_json_access_log_without_secrets(node_factory):
    node = node_factory("jsonlog", args=["--log-format", "json"])
    s3 = node.client()
    s3.create_bucket(Bucket="logged")
    s3.put_object(Bucket="logged", Key="a/b", Body=b"hello")
    node.stop()
    lines = [json.loads(line) for line in node.output if line.startswith("{")]
    puts = [e for e in lines if e.get("op") == "PutObject"]
    assert puts, node.output
    entry = puts[0]
    assert entry["status"] == 200 and entry["bytes_in"] > 0 and entry["resource"] == "/logged/a/b"
    assert (
        re.fullmatch(r"[0-9A-F]{16}", entry["request_id"])
        and entry["access_key"] == "shardfleet-dev"
    )
    logged = [line for line in node.output if line.startswith("{")]  # the banner prints dev keys
    assert not any(DEV_SECRET_KEY in line or "Signature=" in line for line in logged)


def test_degraded_reads_and_missed_writes_are_counted(node):
    import os

    from tests.support.shards import remove_drive

    s3 = node.client()
    s3.create_bucket(Bucket="degraded")
    data = os.urandom(300_000)
    s3.put_object(Bucket="degraded", Key="k", Body=data)
    remove_drive(node.drive_path(1))
    import time

    deadline = time.monotonic() + 10
    while (
        sum(v for k, v in scrape(node.endpoint).items() if k.startswith("shardfleet_drive_online{"))
        > 3
    ):
        assert time.monotonic() < deadline, "the drive probe never noticed the lost drive"
        time.sleep(0.2)
    assert s3.get_object(Bucket="degraded", Key="k")["Body"].read() == data
    s3.put_object(Bucket="degraded", Key="k2", Body=data)  # 3 of 4 drives: a partial write
    after = scrape(node.endpoint)
    assert after["shardfleet_degraded_reads_total"] >= 1
    assert after["shardfleet_mrf_queued_total"] >= 1
