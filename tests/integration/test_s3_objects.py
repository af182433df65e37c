"""The core S3 object API against a real node process, through boto3 with default settings
(so the default aws-chunked + CRC trailer uploads are exercised)."""

from __future__ import annotations

import hashlib
import os

import pytest
from botocore.exceptions import ClientError

SIZES = [0, 1, 4096, 128 << 10, (128 << 10) + 1, (3 << 20) + 12345]


@pytest.fixture
def bucket(s3):
    s3.create_bucket(Bucket="objects")
    return "objects"


@pytest.mark.parametrize("size", SIZES)
def test_put_get_head_roundtrip(s3, bucket, size):
    data = os.urandom(size)
    put = s3.put_object(
        Bucket=bucket,
        Key=f"obj-{size}",
        Body=data,
        ContentType="text/plain",
        Metadata={"colour": "blue", "x-y": "z"},
    )
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert put["ETag"] == etag
    got = s3.get_object(Bucket=bucket, Key=f"obj-{size}")
    assert got["Body"].read() == data
    assert got["ETag"] == etag
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"colour": "blue", "x-y": "z"}
    assert "x-amz-request-id" in got["ResponseMetadata"]["HTTPHeaders"]
    head = s3.head_object(Bucket=bucket, Key=f"obj-{size}")
    assert head["ContentLength"] == size
    assert head["ETag"] == etag


@pytest.mark.parametrize("size", [10, 200_000, (2 << 20) + 777])
def test_ranges(s3, bucket, size):
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    stripe = 1 << 20
    cases = [(0, 0), (3, 7), (size - 1, size - 1), (0, size - 1), (size // 2, size + 100)]
    if size > stripe:
        cases += [(stripe - 3, stripe + 3), (stripe, 2 * stripe - 1), (stripe // 2 + 1, size - 5)]
    for a, b in cases:
        got = s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={a}-{b}")
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        end = min(b, size - 1)
        assert got["ContentRange"] == f"bytes {a}-{end}/{size}"
        assert got["Body"].read() == data[a : end + 1]
    tail = s3.get_object(Bucket=bucket, Key="r", Range="bytes=-4")
    assert tail["Body"].read() == data[-4:]
    opened = s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={size - 3}-")
    assert opened["Body"].read() == data[-3:]


def test_overwrite_and_delete(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(300_000))
    s3.put_object(Bucket=bucket, Key="k", Body=b"three")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"three"
    s3.delete_object(Bucket=bucket, Key="k")
    s3.delete_object(Bucket=bucket, Key="k")  # idempotent
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="k")
    assert err.value.response["Error"]["Code"] == "NoSuchKey"


def test_conditional_get(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"data")["ETag"]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"nope"')
    assert err.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"data"


def test_list_objects_v2(s3, bucket):
    keys = sorted(
        [f"photos/2024/{i:03}.jpg" for i in range(7)]
        + [f"photos/2025/{i:03}.jpg" for i in range(3)]
        + ["docs/a.txt", "docs/b.txt", "readme", "zeta/x", "ünïcode/ключ", "a b+c=d"]
    )
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    everything = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in everything["Contents"]] == sorted(keys, key=lambda k: k.encode())
    assert everything["KeyCount"] == len(keys)
    assert everything["IsTruncated"] is False

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["docs/", "photos/", "zeta/", "ünïcode/"]
    assert [o["Key"] for o in top["Contents"]] == ["a b+c=d", "readme"]
    assert top["KeyCount"] == 6

    years = s3.list_objects_v2(Bucket=bucket, Prefix="photos/", Delimiter="/")
    assert [p["Prefix"] for p in years["CommonPrefixes"]] == ["photos/2024/", "photos/2025/"]

    pages, token, seen = 0, None, []
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, Prefix="photos/", MaxKeys=3, **kwargs)
        seen += [o["Key"] for o in page.get("Contents", [])]
        pages += 1
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == [k for k in keys if k.startswith("photos/")]
    assert pages == 4

    after = s3.list_objects_v2(Bucket=bucket, StartAfter="photos/2025/000.jpg")
    assert [o["Key"] for o in after["Contents"]][0] == "photos/2025/001.jpg"

    paged_delim, token = [], None
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, Delimiter="/", MaxKeys=1, **kwargs)
        paged_delim += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        paged_delim += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert sorted(paged_delim) == sorted(
        ["docs/", "photos/", "zeta/", "ünïcode/", "a b+c=d", "readme"]
    )

    v1 = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2)
    assert v1["IsTruncated"] is True
    rest = s3.list_objects(Bucket=bucket, Delimiter="/", Marker=v1["NextMarker"])
    names = [p["Prefix"] for p in v1.get("CommonPrefixes", []) + rest.get("CommonPrefixes", [])]
    names += [o["Key"] for o in v1.get("Contents", []) + rest.get("Contents", [])]
    assert sorted(names) == sorted(["docs/", "photos/", "zeta/", "ünïcode/", "a b+c=d", "readme"])


def test_delete_objects_batch(s3, bucket):
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"d/{i}", Body=b"x")
    out = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": f"d/{i}"} for i in range(15)] + [{"Key": "missing"}]},
    )
    assert len(out["Deleted"]) == 16
    left = s3.list_objects_v2(Bucket=bucket, Prefix="d/")
    assert sorted(o["Key"] for o in left["Contents"]) == sorted(f"d/{i}" for i in range(15, 20))


def test_buckets(s3):
    for name in ["alpha", "beta.dots", "gamma-1"]:
        s3.create_bucket(Bucket=name)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["alpha", "beta.dots", "gamma-1"]
    s3.head_bucket(Bucket="alpha")
    assert s3.get_bucket_location(Bucket="alpha").get("LocationConstraint") in (None, "")
    s3.put_object(Bucket="alpha", Key="k", Body=b"1")
    with pytest.raises(ClientError) as err:
        s3.delete_bucket(Bucket="alpha")
    assert err.value.response["Error"]["Code"] == "BucketNotEmpty"
    s3.delete_object(Bucket="alpha", Key="k")
    s3.delete_bucket(Bucket="alpha")
    with pytest.raises(ClientError) as err:
        s3.head_bucket(Bucket="alpha")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # a bucket re-created under the same name starts empty
    s3.create_bucket(Bucket="alpha")
    assert s3.list_objects_v2(Bucket="alpha")["KeyCount"] == 0


def test_presigned_get(node, s3, bucket):
    import urllib.request

    s3.put_object(Bucket=bucket, Key="shared.txt", Body=b"hello presigned")
    url = node.client(signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared.txt"}, ExpiresIn=60
    )
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"hello presigned"


def test_health(node):
    import json
    import urllib.request

    for path in ("/health/live", "/health/ready"):
        with urllib.request.urlopen(node.endpoint + path, timeout=5) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["status"] in ("live", "ready")


def test_expect_100_continue_is_answered_before_the_body(node, s3, bucket):
    """boto3 sends Expect: 100-continue on PutObject and waits for the interim answer."""
    import socket

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY

    body = b"continued body"
    req = AWSRequest(
        method="PUT",
        url=f"{node.endpoint}/{bucket}/cont",
        data=body,
        headers={"Expect": "100-continue", "Content-Length": str(len(body))},
    )
    S3SigV4Auth(Credentials(DEV_ACCESS_KEY, DEV_SECRET_KEY), "s3", "us-east-1").add_auth(req)
    host, port = node.endpoint.split("//")[1].split(":")
    head = f"PUT /{bucket}/cont HTTP/1.1\r\nHost: {host}:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items() if k.lower() != "host")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((head + "\r\n").encode())
        interim = sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        sock.sendall(body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert s3.get_object(Bucket=bucket, Key="cont")["Body"].read() == body
