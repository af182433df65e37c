"""Multipart uploads on a real 4-node dev cluster (2 drives each, 2+2): parts through every
node, completion through another, a node lost mid-upload, and a coordinator killed in the
middle of a completion."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.cluster.conftest import client
from tests.support.shards import index_writes_held, upload_completed_on

MiB = 1 << 20


def eventually(fn, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (ClientError, AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def etag_of(parts: list[bytes]) -> str:
    return f'"{hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()}-{len(parts)}"'


def test_parts_through_every_node_and_a_node_lost_mid_upload(dev_cluster):
    s3 = [client(ep) for ep in dev_cluster.endpoints]
    s3[0].create_bucket(Bucket="mpc")
    parts = [os.urandom(5 * MiB + i) for i in range(6)] + [b"tail"]
    uid = s3[0].create_multipart_upload(Bucket="mpc", Key="k")["UploadId"]

    def send(n: int) -> dict:
        r = s3[n % 4].upload_part(
            Bucket="mpc", Key="k", UploadId=uid, PartNumber=n, Body=parts[n - 1]
        )
        return {"PartNumber": n, "ETag": r["ETag"]}

    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(send, range(1, len(parts) + 1)))
    listed = s3[1].list_parts(Bucket="mpc", Key="k", UploadId=uid)["Parts"]
    assert [p["ETag"] for p in listed] == [d["ETag"] for d in done]
    result = s3[2].complete_multipart_upload(
        Bucket="mpc", Key="k", UploadId=uid, MultipartUpload={"Parts": done}
    )
    assert result["ETag"] == etag_of(parts)
    data = b"".join(parts)
    for c in s3:
        assert c.get_object(Bucket="mpc", Key="k")["Body"].read() == data
    head = s3[3].head_object(Bucket="mpc", Key="k", PartNumber=7)
    assert head["ContentLength"] == 4 and head["PartsCount"] == 7

    # a node dies after part 2: the upload goes on through the others and completes
    second = [os.urandom(5 * MiB + 7 * i) for i in range(4)]
    uid = s3[0].create_multipart_upload(Bucket="mpc", Key="k2")["UploadId"]
    done = []
    for n in (1, 2):
        r = s3[n].upload_part(
            Bucket="mpc", Key="k2", UploadId=uid, PartNumber=n, Body=second[n - 1]
        )
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    dev_cluster.kill_node(4)
    for n in (3, 4):
        r = eventually(
            lambda n=n: s3[n % 3].upload_part(
                Bucket="mpc", Key="k2", UploadId=uid, PartNumber=n, Body=second[n - 1]
            )
        )
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    eventually(
        lambda: s3[1].complete_multipart_upload(
            Bucket="mpc", Key="k2", UploadId=uid, MultipartUpload={"Parts": done}
        )
    )
    data = b"".join(second)
    for c in s3[:3]:
        assert c.get_object(Bucket="mpc", Key="k2")["Body"].read() == data
    dev_cluster.start_node(4)
    dev_cluster.wait_ready([4], timeout=60)
    assert eventually(lambda: s3[3].get_object(Bucket="mpc", Key="k2")["Body"].read()) == data


@pytest.mark.chaos_long  # a minute of it is the dead coordinator's lock lease running out
def test_coordinator_killed_mid_completion_is_rolled_forward(dev_cluster):
    s3 = [client(ep) for ep in dev_cluster.endpoints]
    s3[0].create_bucket(Bucket="mpc")
    old = os.urandom(300_000)
    s3[0].put_object(Bucket="mpc", Key="k", Body=old)
    parts = [os.urandom(5 * MiB + i) for i in range(3)]
    uid = s3[0].create_multipart_upload(Bucket="mpc", Key="k")["UploadId"]
    done = []
    for n, body in enumerate(parts, 1):
        r = s3[0].upload_part(Bucket="mpc", Key="k", UploadId=uid, PartNumber=n, Body=body)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    data = dev_cluster.spec.data
    held = [data / f"node{n}" / f"drive{d}" for n in (3, 4) for d in (1, 2)]
    free = [data / f"node{n}" / f"drive{d}" for n in (1, 2) for d in (1, 2)]

    def complete(c) -> dict:
        return c.complete_multipart_upload(
            Bucket="mpc", Key="k", UploadId=uid, MultipartUpload={"Parts": done}
        )

    def quietly() -> None:
        try:
            complete(s3[0])
        except Exception:
            pass  # its node is killed under it

    with contextlib.ExitStack() as stack:
        for drive in held:
            stack.enter_context(index_writes_held(drive))
        thread = threading.Thread(target=quietly, daemon=True)
        thread.start()
        # node 1 coordinates; drives of nodes 1 and 2 commit, those of 3 and 4 wait here
        deadline = time.monotonic() + 30
        while not any(upload_completed_on(d, "mpc") for d in free):
            assert time.monotonic() < deadline, "no drive completed the upload"
            time.sleep(0.05)
        dev_cluster.kill_node(1)
    thread.join(30)
    got = eventually(lambda: s3[1].get_object(Bucket="mpc", Key="k")["Body"].read())
    assert got in (old, b"".join(parts))
    # the dead coordinator's lock lapses with its lease (60 s); a retry then rolls forward
    result = eventually(lambda: complete(s3[1]), timeout=100)
    assert result["ETag"] == etag_of(parts)
    for c in s3[1:]:
        assert eventually(
            lambda c=c: c.get_object(Bucket="mpc", Key="k")["Body"].read()
        ) == b"".join(parts)
    assert "Uploads" not in s3[2].list_multipart_uploads(Bucket="mpc")


def test_default_clients_upload_through_one_node_and_read_through_another(dev_cluster, tmp_path):
    """boto3's upload_file / download_file and `aws s3 cp` at their default settings
    (multipart above 8 MiB), writing through one node and reading through another."""
    import random
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY

    s3 = [client(ep) for ep in dev_cluster.endpoints]
    s3[0].create_bucket(Bucket="tools")
    data = random.Random(3).randbytes(200 * MiB + 11)
    up, back = tmp_path / "up.bin", tmp_path / "back.bin"
    up.write_bytes(data)
    s3[0].upload_file(str(up), "tools", "boto3.bin")
    s3[2].download_file("tools", "boto3.bin", str(back))
    assert back.read_bytes() == data
    assert s3[1].head_object(Bucket="tools", Key="boto3.bin")["ETag"].endswith('-26"')

    aws = shutil.which("aws", path=str(Path(sys.executable).parent))
    assert aws, "the AWS CLI (awscli, a test dependency) is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=DEV_SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        HOME=str(tmp_path),
    )
    small = data[: 50 * MiB + 5]
    up.write_bytes(small)

    def cp(node: int, src: str, dst: str) -> None:
        endpoint = dev_cluster.endpoints[node]
        cmd = [aws, "--endpoint-url", endpoint, "s3", "cp", src, dst]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    cp(1, str(up), "s3://tools/cli.bin")
    cp(3, "s3://tools/cli.bin", str(back))
    assert back.read_bytes() == small
    assert s3[0].head_object(Bucket="tools", Key="cli.bin")["ETag"].endswith('-7"')
