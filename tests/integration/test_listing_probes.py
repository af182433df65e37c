"""Listings and probes with boto3 against a real node: keys with control characters and any
UTF-8 through every listing (boto3 asks for encoding-type=url and decodes what AWS
encodes), markers encoded as AWS encodes them, ListBuckets paging, HeadBucket's headers,
and the conditional and response-override headers of GET and HEAD."""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from tests.support.raw_http import (  # noqa: F401 - pytest fixtures
    raw,
    s3,
    server,
)

ODD_KEYS = ["tab\there", "nl\nx", "\x01start", "del\x7f", "é/ü", "日本/語", "emoji 😀", "a+b %20"]


@pytest.fixture
def bucket(s3) -> str:
    name = f"probe-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def test_odd_keys_round_trip_through_every_listing(s3, bucket):
    for key in ODD_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        if key != "\x01start":  # CreateMultipartUpload's reply cannot carry it in XML 1.0
            s3.create_multipart_upload(Bucket=bucket, Key=key)
    want = sorted(ODD_KEYS)
    v2 = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    v1 = [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]]
    versions = [v["Key"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]]
    assert v2 == v1 == versions == want
    assert uploads == [k for k in want if k != "\x01start"]
    for key in ODD_KEYS:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    # paging one key at a time: every marker goes out and comes back encoded
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=1, **kw)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == want
    seen, marker = [], ""
    while True:
        page = s3.list_objects(Bucket=bucket, MaxKeys=1, Marker=marker)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
    assert seen == want
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="é/ü")
    assert after["StartAfter"] == "é/ü"
    assert [o["Key"] for o in after["Contents"]] == [k for k in want if k > "é/ü"]


def test_url_encoding_covers_the_markers(raw, s3, bucket):
    s3.put_object(Bucket=bucket, Key="ü/1", Body=b"1")
    s3.put_object(Bucket=bucket, Key="ü/2", Body=b"2")
    marker = quote("ü/1", safe="")
    reply = raw.request("GET", f"/{bucket}?encoding-type=url&marker={marker}&max-keys=1")
    assert reply.status == 200
    assert f"<Marker>{quote('ü/1')}</Marker>".encode() in reply.body
    assert f"<Key>{quote('ü/2')}</Key>".encode() in reply.body
    reply = raw.request("GET", f"/{bucket}?list-type=2&encoding-type=url&start-after={marker}")
    assert f"<StartAfter>{quote('ü/1')}</StartAfter>".encode() in reply.body


def test_list_buckets_pages_and_prefix(raw, s3):
    tag = uuid.uuid4().hex[:8]
    names = [f"lb-{tag}-{i}" for i in range(5)]
    for name in names:
        s3.create_bucket(Bucket=name)
    try:
        mine = s3.list_buckets(Prefix=f"lb-{tag}-")
        assert [b["Name"] for b in mine["Buckets"]] == names
        assert mine["Prefix"] == f"lb-{tag}-"
        seen, token = [], None
        while True:
            kw = {"ContinuationToken": token} if token else {}
            page = s3.list_buckets(Prefix=f"lb-{tag}-", MaxBuckets=2, **kw)
            seen += [b["Name"] for b in page["Buckets"]]
            token = page.get("ContinuationToken")
            if not token:
                break
        assert seen == names
        assert s3.list_buckets(BucketRegion="eu-west-3")["Buckets"] == []
        for bad in ("0", "10001", "x"):
            reply = raw.request("GET", f"/?max-buckets={bad}")
            assert reply.status == 400 and b"<Code>InvalidArgument</Code>" in reply.body
        paginated = s3.get_paginator("list_buckets").paginate(
            Prefix=f"lb-{tag}-", PaginationConfig={"PageSize": 3}
        )
        assert [b["Name"] for page in paginated for b in page["Buckets"]] == names
    finally:
        for name in names:
            s3.delete_bucket(Bucket=name)


def test_head_bucket_headers(s3, bucket):
    head = s3.head_bucket(Bucket=bucket)
    headers = head["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-bucket-region"] == "us-east-1"
    assert head["BucketRegion"] == "us-east-1"
    assert headers["x-amz-access-point-alias"] == "false"
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket="no-such-bucket-anywhere")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_conditional_reads_on_get_and_head(s3, bucket):
    s3.put_object(Bucket=bucket, Key="c", Body=b"data", ContentType="text/plain")
    head = s3.head_object(Bucket=bucket, Key="c")
    etag, modified = head["ETag"], head["LastModified"]
    past, future = modified - dt.timedelta(days=1), modified + dt.timedelta(days=1)
    for call in (s3.get_object, s3.head_object):
        for kwargs, status in [
            ({"IfNoneMatch": etag}, 304),
            ({"IfNoneMatch": f"W/{etag}"}, 304),
            ({"IfModifiedSince": future}, 304),
            ({"IfMatch": '"nope"'}, 412),
            ({"IfUnmodifiedSince": past}, 412),
            ({"IfMatch": etag, "IfUnmodifiedSince": past}, 200),
            ({"IfNoneMatch": '"nope"', "IfModifiedSince": future}, 200),
            ({"IfNoneMatch": etag, "IfModifiedSince": past}, 304),
            ({"IfMatch": '"nope"', "IfNoneMatch": etag}, 412),
        ]:
            if status == 200:
                got = call(Bucket=bucket, Key="c", **kwargs)
                assert got["ETag"] == etag, kwargs
                continue
            with pytest.raises(ClientError) as info:
                call(Bucket=bucket, Key="c", **kwargs)
            meta = info.value.response["ResponseMetadata"]
            assert meta["HTTPStatusCode"] == status, (call.__name__, kwargs)
            if status == 304:
                assert meta["HTTPHeaders"]["etag"] == etag
                assert "last-modified" in meta["HTTPHeaders"]


def test_response_header_overrides(s3, bucket):
    s3.put_object(Bucket=bucket, Key="o", Body=b"x", ContentType="text/plain")
    got = s3.get_object(
        Bucket=bucket,
        Key="o",
        ResponseContentType="application/json",
        ResponseContentDisposition='attachment; filename="o.json"',
        ResponseContentEncoding="identity",
        ResponseContentLanguage="de",
        ResponseCacheControl="no-store",
        ResponseExpires=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )
    assert got["ContentType"] == "application/json"
    assert got["ContentDisposition"] == 'attachment; filename="o.json"'
    assert got["ContentEncoding"] == "identity"
    assert got["ContentLanguage"] == "de"
    assert got["CacheControl"] == "no-store"
    assert got["ResponseMetadata"]["HTTPHeaders"]["expires"].startswith("Tue, 01 Jan 2030")
    assert got["Body"].read() == b"x"
