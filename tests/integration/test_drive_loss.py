"""2+2 on 4 drives: lose any 2 drives (live and across a restart), rot bytes, lose 3."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from tests.support.shards import flip_bytes, remove_drive, shard_files

SIZES = {"empty": 0, "one": 1, "small": 5000, "inline-max": 128 << 10, "stripes": (3 << 20) + 4321}


def wait_not_ready(node, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(node.endpoint + "/health/ready", timeout=5)
        except urllib.error.HTTPError as err:
            if err.code == 503:
                return
        time.sleep(0.2)
    raise AssertionError("the node never noticed its lost drives")


def fill(s3) -> dict[str, bytes]:
    s3.create_bucket(Bucket="loss")
    objects = {}
    for name, size in SIZES.items():
        objects[name] = os.urandom(size)
        s3.put_object(Bucket="loss", Key=name, Body=objects[name])
    return objects


def assert_all_exact(s3, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        assert s3.get_object(Bucket="loss", Key=key)["Body"].read() == data, key
        if len(data) > 10:
            got = s3.get_object(Bucket="loss", Key=key, Range=f"bytes=7-{len(data) - 3}")
            assert got["Body"].read() == data[7 : len(data) - 2], key
    listed = s3.list_objects_v2(Bucket="loss")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(objects)


@pytest.mark.parametrize("lost", [(1, 2), (1, 3), (2, 4), (3, 4)])
def test_two_drives_deleted_live_then_restart(node, lost):
    s3 = node.client()
    objects = fill(s3)
    for i in lost:
        remove_drive(node.drive_path(i))
    assert_all_exact(s3, objects)
    # with 2 of 4 left, a write cannot reach its quorum of 3: refused, nothing half-written
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket="loss", Key="new", Body=os.urandom(300_000))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    node.restart()
    s3 = node.client()
    assert_all_exact(s3, objects)


def test_one_drive_lost_still_takes_writes(node):
    s3 = node.client()
    objects = fill(s3)
    remove_drive(node.drive_path(2))
    for key in ("after-small", "after-big"):
        objects[key] = os.urandom(100 if key.endswith("small") else (2 << 20) + 5)
        s3.put_object(Bucket="loss", Key=key, Body=objects[key])
    assert_all_exact(s3, objects)


def test_bitrot_is_decoded_around(node):
    s3 = node.client()
    objects = fill(s3)
    stripes = objects["stripes"]
    # rot one block on each of two drives: still decodable from the other two per stripe
    rotten = 0
    for i in (1, 2):
        for shard in shard_files(node.drive_path(i), "loss"):
            size = shard.stat().st_size
            flip_bytes(shard, [10, size // 2, size - 1])
            rotten += 1
    assert rotten == 2
    assert s3.get_object(Bucket="loss", Key="stripes")["Body"].read() == stripes
    for a, b in [(0, 99), (1 << 20, (1 << 20) + 10), (len(stripes) - 50, len(stripes) - 1)]:
        got = s3.get_object(Bucket="loss", Key="stripes", Range=f"bytes={a}-{b}")
        assert got["Body"].read() == stripes[a : b + 1]


@pytest.mark.parametrize("offset", [100, 600_000], ids=["first-stripe", "mid-stream"])
def test_rot_beyond_parity_never_returns_wrong_bytes(node, offset):
    s3 = node.client(retries={"max_attempts": 1}, read_timeout=20)
    objects = fill(s3)
    for i in (1, 2, 3):
        for shard in shard_files(node.drive_path(i), "loss"):
            flip_bytes(shard, [offset])  # one stripe rotten on 3 of 4 drives
    body = None
    try:
        body = s3.get_object(Bucket="loss", Key="stripes")["Body"].read()
    except Exception:
        pass  # a cut-short stream or an error is right; wrong bytes are not
    assert body is None or body == objects["stripes"]


def test_three_of_four_lost_is_a_clear_error(node):
    s3 = node.client(retries={"max_attempts": 1})
    objects = fill(s3)
    for i in (1, 2, 4):
        remove_drive(node.drive_path(i))
    wait_not_ready(node)  # the drive probe notices vanished directories within seconds
    for key in objects:
        with pytest.raises(ClientError) as err:
            s3.get_object(Bucket="loss", Key=key)
        assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket="loss", Key="x", Body=b"y")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    node.restart()
    s3 = node.client(retries={"max_attempts": 1})
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket="loss", Key="stripes")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
