"""`shardfleet dev-cluster --tls`: every node serves S3 over HTTPS with a certificate from
the cluster CA, the printed output names https endpoints and the CA bundle, and clients
that trust that bundle use any node (the admin heal fan-out reaches the peers over HTTPS)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import boto3
import pytest
from botocore.config import Config

from shardfleet.node.admin import fetch_heal, fetch_status
from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from shardfleet.node.devcluster import free_base_port


@pytest.mark.timeout(180)
def test_dev_cluster_tls(tmp_path):
    base = free_base_port(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHARDFLEET_", "AWS_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardfleet.node.main", "dev-cluster", "--tls", "--nodes", "4",
         "--data", str(tmp_path / "cluster"), "--base-port", str(base), "--heartbeat", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops every node" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not ready.wait(0.1):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        out = "".join(lines)
        endpoints = re.findall(r"node\d: endpoint (\S+)", out)
        assert endpoints == [f"https://127.0.0.1:{base + i}" for i in range(1, 5)], out
        bundle = re.search(r"CA bundle: (\S+)", out)
        assert bundle, out
        ca = bundle[1]
        assert ca == str((tmp_path / "cluster" / "certs" / "ca.crt").resolve())
        assert f"export AWS_CA_BUNDLE={ca}" in out

        def client(endpoint: str):
            return boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=DEV_ACCESS_KEY,
                aws_secret_access_key=DEV_SECRET_KEY,
                region_name="us-east-1",
                verify=ca,
                config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
            )

        one, two = client(endpoints[0]), client(endpoints[1])
        one.create_bucket(Bucket="tls")
        body = os.urandom((3 << 20) + 17)
        one.put_object(Bucket="tls", Key="k", Body=body)
        assert two.get_object(Bucket="tls", Key="k")["Body"].read() == body

        status = fetch_status(endpoints[1], DEV_ACCESS_KEY, DEV_SECRET_KEY, ca_bundle=ca)
        assert status["node"] == "node2"
        heal = fetch_heal(endpoints[2], DEV_ACCESS_KEY, DEV_SECRET_KEY, ca_bundle=ca)
        assert heal["unreachable"] == [] and len(heal["nodes"]) == 4, heal
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
