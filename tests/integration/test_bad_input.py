"""Bad requests get their S3 error code and XML body, and store nothing: authentication,
bucket and key names, ranges. Bodies are in test_bad_bodies.py; shared tools in
tests/support/raw_http.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.support.raw_http import (  # noqa: F401 - pytest fixtures  # shared raw-HTTP tools
    REGION,
    STREAMED,
    _flip_hex,
    assert_absent,
    assert_nothing_staged,
    assert_stored_nothing,
    bucket,
    expect_error,
    get_bytes,
    keys_in,
    path,
    payload,
    raw,
    s3,
    server,
)


# -- authentication ----------------------------------------------------------------------------
def _mutate_authorization(headers: dict[str, str], how: str) -> dict[str, str]:
    auth = headers["Authorization"]
    scheme, _, rest = auth.partition(" ")
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    date = headers["X-Amz-Date"][:8]
    if how == "garbage":
        auth = "AWS4-HMAC-SHA256 garbage"
    elif how == "no-signature":
        auth = (
            f"{scheme} Credential={fields['Credential']}, SignedHeaders={fields['SignedHeaders']}"
        )
    elif how == "no-credential":
        auth = f"{scheme} SignedHeaders={fields['SignedHeaders']}, Signature={fields['Signature']}"
    elif how == "short-signature":
        auth = auth.replace(fields["Signature"], fields["Signature"][:40])
    elif how == "bad-terminator":
        auth = auth.replace("/aws4_request", "/aws4_reqest")
    elif how == "bad-service":
        auth = auth.replace("/s3/aws4_request", "/ec2/aws4_request")
    elif how == "bad-scope-date":
        auth = auth.replace(f"/{date}/", "/19990101/")
    elif how == "wrong-region":
        auth = auth.replace(f"/{REGION}/", "/eu-west-1/")
    elif how == "host-not-signed":
        signed = ";".join(h for h in fields["SignedHeaders"].split(";") if h != "host")
        auth = auth.replace(fields["SignedHeaders"], signed)
    elif how == "uppercase-signed-headers":
        auth = auth.replace(fields["SignedHeaders"], fields["SignedHeaders"].upper())
    else:
        raise AssertionError(how)
    return {**headers, "Authorization": auth}


@pytest.mark.parametrize(
    "how",
    [
        "garbage",
        "no-signature",
        "no-credential",
        "short-signature",
        "bad-terminator",
        "bad-service",
        "bad-scope-date",
        "wrong-region",
        "host-not-signed",
        "uppercase-signed-headers",
    ],
)
def test_malformed_authorization_header(server, s3, raw, bucket, how):
    body = b"should not be stored"
    target = path(bucket, "k")
    headers = raw.sign("PUT", target, {"Content-Length": str(len(body))}, body)
    reply = raw.send("PUT", target, _mutate_authorization(headers, how), [body])
    expect_error(reply, 400, "AuthorizationHeaderMalformed")
    assert_stored_nothing(server, s3, bucket, "k")


def test_wrong_secret_key(server, s3, raw, bucket):
    reply = raw.request("PUT", path(bucket, "k"), b"data", secret_key="not-the-secret")
    root = expect_error(reply, 403, "SignatureDoesNotMatch")
    assert root is not None and root.findtext("AWSAccessKeyId") == DEV_ACCESS_KEY
    assert_stored_nothing(server, s3, bucket, "k")


def test_unknown_access_key(server, s3, raw, bucket):
    reply = raw.request("PUT", path(bucket, "k"), b"data", access_key="AKIDNOSUCHKEY")
    root = expect_error(reply, 403, "InvalidAccessKeyId")
    assert root is not None and root.findtext("AWSAccessKeyId") == "AKIDNOSUCHKEY"
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD", "DELETE"])
def test_no_authentication_at_all(server, s3, raw, bucket, method):
    s3.put_object(Bucket=bucket, Key="k", Body=b"old")
    body = b"new bytes" if method == "PUT" else b""
    headers = {"Host": raw.netloc}
    if method == "PUT":
        headers["Content-Length"] = str(len(body))
    reply = raw.send(method, path(bucket, "k"), headers, [body] if body else [])
    expect_error(reply, 403, "AccessDenied", method)
    assert get_bytes(s3, bucket, "k") == b"old"
    assert keys_in(s3, bucket) == ["k"]


def test_unsupported_authorization_scheme(server, s3, raw, bucket):
    headers = {"Host": raw.netloc, "Content-Length": "4", "Authorization": "AWS AKID:c2lnbmF0dXJl"}
    reply = raw.send("PUT", path(bucket, "k"), headers, [b"data"])
    expect_error(reply, 403, "AccessDenied")
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("how", ["signature", "signed-header", "path", "query", "method"])
def test_tampered_request(server, s3, raw, bucket, how):
    body = b"tampered"
    target = path(bucket, "k")
    headers = raw.sign(
        "PUT", target, {"Content-Length": str(len(body)), "x-amz-meta-owner": "alice"}, body
    )
    method = "PUT"
    if how == "signature":
        sig = headers["Authorization"].rsplit("Signature=", 1)[1]
        headers["Authorization"] = headers["Authorization"].replace(sig, _flip_hex(sig))
    elif how == "signed-header":
        headers["x-amz-meta-owner"] = "mallory"
    elif how == "path":
        target = path(bucket, "other")
    elif how == "query":
        target += "?x-id=PutObject"
    elif how == "method":
        method = "POST"  # POST /bucket/key is not an S3 operation, but auth runs first
    reply = raw.send(method, target, headers, [body])
    expect_error(reply, 403, "SignatureDoesNotMatch")
    assert_stored_nothing(server, s3, bucket, "k")
    assert_absent(s3, bucket, "other")


def test_signed_header_missing_from_request(server, s3, raw, bucket):
    headers = raw.sign(
        "PUT", path(bucket, "k"), {"Content-Length": "4", "x-amz-meta-a": "b"}, b"data"
    )
    del headers["x-amz-meta-a"]
    reply = raw.send("PUT", path(bucket, "k"), headers, [b"data"])
    expect_error(reply, 403, "SignatureDoesNotMatch")
    assert_stored_nothing(server, s3, bucket, "k")


def test_request_time_too_skewed(server, s3, raw, bucket):
    from shardfleet.node.s3.signer import sign

    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    target = path(bucket, "k")
    headers = sign(
        "PUT", raw.endpoint + target, DEV_ACCESS_KEY, DEV_SECRET_KEY, now=an_hour_ago, body=b"data"
    )
    headers["Content-Length"] = "4"
    expect_error(raw.send("PUT", target, headers, [b"data"]), 403, "RequestTimeTooSkewed")
    assert_stored_nothing(server, s3, bucket, "k")


def test_missing_content_sha256_header(server, s3, raw, bucket):
    headers = raw.sign("PUT", path(bucket, "k"), {"Content-Length": "4"}, b"data")
    del headers["X-Amz-Content-SHA256"]
    reply = raw.send("PUT", path(bucket, "k"), headers, [b"data"])
    expect_error(reply, 400, "InvalidRequest")
    assert_stored_nothing(server, s3, bucket, "k")


def test_invalid_content_sha256_value(server, s3, raw, bucket):
    reply = raw.request("PUT", path(bucket, "k"), b"data", payload_hash="not-a-sha256")
    expect_error(reply, 400, "InvalidArgument")
    assert_stored_nothing(server, s3, bucket, "k")


# -- buckets -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["ab", "UPPER", "a..b", "192.168.1.1", "-abc", "abc-", "a" * 64, "a_b", "a.-b", "xn--abc"],
)
def test_create_bucket_invalid_name(s3, raw, name):
    reply = raw.request("PUT", f"/{name}")
    root = expect_error(reply, 400, "InvalidBucketName")
    assert root is not None and root.findtext("BucketName") == name
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert name not in names and name.lower() not in names
    expect_error(raw.request("HEAD", f"/{name}"), 404, "NoSuchBucket", "HEAD")


def test_bucket_name_limits_are_inclusive(s3, raw):
    for name in ("abc", "b" * 63):
        assert raw.request("PUT", f"/{name}").status == 200
        assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        s3.delete_bucket(Bucket=name)


def test_create_existing_bucket(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    reply = raw.request("PUT", f"/{bucket}")
    expect_error(reply, 409, "BucketAlreadyOwnedByYou")
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket=bucket)
    assert info.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    assert get_bytes(s3, bucket, "k") == b"kept"


def test_delete_non_empty_bucket(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    reply = raw.request("DELETE", f"/{bucket}")
    expect_error(reply, 409, "BucketNotEmpty")
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert get_bytes(s3, bucket, "k") == b"kept"


def test_missing_bucket(s3, raw):
    name = f"missing-{uuid.uuid4().hex[:12]}"
    expect_error(raw.request("GET", path(name, "k")), 404, "NoSuchBucket")
    expect_error(raw.request("GET", f"/{name}?list-type=2"), 404, "NoSuchBucket")
    expect_error(raw.request("PUT", path(name, "k"), b"data"), 404, "NoSuchBucket")
    expect_error(raw.request("PUT", path(name, "big"), payload(STREAMED)), 404, "NoSuchBucket")
    expect_error(raw.request("HEAD", path(name, "k")), 404, "NoSuchBucket", "HEAD")
    expect_error(raw.request("DELETE", f"/{name}"), 404, "NoSuchBucket")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=name, Key="k", Body=b"data")
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_missing_key(s3, raw, bucket):
    root = expect_error(raw.request("GET", path(bucket, "nope")), 404, "NoSuchKey")
    assert root is not None
    reply = raw.request("HEAD", path(bucket, "nope"))
    expect_error(reply, 404, "NoSuchKey", "HEAD")
    assert reply.header("content-length") in (None, "0")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="nope")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"


# -- keys --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["k" * 1025, "é" * 512 + "x", "€" * 342])
def test_key_too_long(server, s3, raw, bucket, key):
    assert len(key.encode()) > 1024
    reply = raw.request("PUT", path(bucket, key), b"data")
    expect_error(reply, 400, "KeyTooLongError")
    assert keys_in(s3, bucket) == []
    assert_nothing_staged(server, bucket)
    expect_error(raw.request("GET", path(bucket, key)), 400, "KeyTooLongError")


@pytest.mark.parametrize("key", ["k" * 1024, "é" * 512, "dir/" * 255 + "file"])
def test_key_of_exactly_1024_bytes(s3, raw, bucket, key):
    assert len(key.encode()) == 1024
    assert raw.request("PUT", path(bucket, key), b"fits").status == 200
    assert keys_in(s3, bucket) == [key]
    assert get_bytes(s3, bucket, key) == b"fits"
    s3.put_object(Bucket=bucket, Key=key, Body=b"boto3 too")
    assert get_bytes(s3, bucket, key) == b"boto3 too"


# -- ranges ------------------------------------------------------------------------------------
@pytest.fixture
def ten(s3, bucket) -> str:
    s3.put_object(Bucket=bucket, Key="ten", Body=b"0123456789")
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    return bucket


@pytest.mark.parametrize("rng", ["bytes=100-", "bytes=10-", "bytes=10-20", "bytes=-0"])
def test_unsatisfiable_range(raw, ten, rng):
    root = expect_error(
        raw.request("GET", path(ten, "ten"), headers={"Range": rng}), 416, "InvalidRange"
    )
    assert root is not None
    expect_error(
        raw.request("HEAD", path(ten, "ten"), headers={"Range": rng}), 416, "InvalidRange", "HEAD"
    )


@pytest.mark.parametrize(
    "rng",
    [
        "bytes=0-0",
        "bytes=0-",
        "bytes=5-9",
        "bytes=-1",
        "bytes=-5",
    ],
)
def test_any_range_on_empty_object(raw, ten, rng):
    expect_error(
        raw.request("GET", path(ten, "empty"), headers={"Range": rng}), 416, "InvalidRange"
    )
    expect_error(
        raw.request("HEAD", path(ten, "empty"), headers={"Range": rng}), 416, "InvalidRange", "HEAD"
    )


@pytest.mark.parametrize(
    ("rng", "body", "content_range"),
    [
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=-100", b"0123456789", "bytes 0-9/10"),
        ("bytes=9-", b"9", "bytes 9-9/10"),
        ("bytes=2-4", b"234", "bytes 2-4/10"),
        ("bytes=8-100", b"89", "bytes 8-9/10"),
    ],
)
def test_satisfiable_range(s3, raw, ten, rng, body, content_range):
    reply = raw.request("GET", path(ten, "ten"), headers={"Range": rng})
    assert reply.status == 206
    assert reply.body == body
    assert reply.header("content-range") == content_range
    assert reply.header("content-length") == str(len(body))
    head = raw.request("HEAD", path(ten, "ten"), headers={"Range": rng})
    assert (head.status, head.header("content-range")) == (206, content_range)
    got = s3.get_object(Bucket=ten, Key="ten", Range=rng)
    assert got["Body"].read() == body and got["ContentRange"] == content_range


def test_range_on_streamed_object(s3, raw, bucket):
    data = payload(STREAMED, seed=7)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    reply = raw.request("GET", path(bucket, "big"), headers={"Range": "bytes=-3"})
    assert (reply.status, reply.body) == (206, data[-3:])
    assert reply.header("content-range") == f"bytes {STREAMED - 3}-{STREAMED - 1}/{STREAMED}"
    reply = raw.request("GET", path(bucket, "big"), headers={"Range": f"bytes={STREAMED}-"})
    expect_error(reply, 416, "InvalidRange")
