"""ListObjectVersions on an unversioned bucket, against a real node with boto3 and the AWS
CLI: every object is its one version, `null`, the latest; pages, prefixes and url encoding
as AWS gives them; bad markers get AWS's errors."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


@pytest.fixture
def filled(s3):
    s3.create_bucket(Bucket="vers")
    keys = [f"a/{i:02d}" for i in range(7)] + ["b/x", "b/y", "top", "sp ace+é"]
    for k in keys:
        s3.put_object(Bucket="vers", Key=k, Body=k.encode())
    return s3, sorted(keys)


def test_every_object_is_its_null_version(filled):
    s3, keys = filled
    out = s3.list_object_versions(Bucket="vers")
    assert [v["Key"] for v in out["Versions"]] == keys
    assert {v["VersionId"] for v in out["Versions"]} == {"null"}
    assert all(v["IsLatest"] for v in out["Versions"])
    head = s3.head_object(Bucket="vers", Key="top")
    top = next(v for v in out["Versions"] if v["Key"] == "top")
    assert top["ETag"] == head["ETag"] and top["Size"] == 3
    assert top["Owner"]["ID"] and top["StorageClass"] == "STANDARD"
    assert "DeleteMarkers" not in out and out["IsTruncated"] is False


def test_pages_with_key_and_version_markers(filled):
    s3, keys = filled
    seen, kwargs = [], {}
    while True:
        out = s3.list_object_versions(Bucket="vers", MaxKeys=3, **kwargs)
        seen += [v["Key"] for v in out.get("Versions", [])]
        if not out["IsTruncated"]:
            break
        assert out["NextVersionIdMarker"] == "null"
        kwargs = {"KeyMarker": out["NextKeyMarker"], "VersionIdMarker": "null"}
    assert seen == keys
    paginator = s3.get_paginator("list_object_versions")
    pages = list(paginator.paginate(Bucket="vers", PaginationConfig={"PageSize": 4}))
    assert [v["Key"] for p in pages for v in p.get("Versions", [])] == keys


def test_prefix_delimiter_and_url_encoding(filled):
    s3, _ = filled
    out = s3.list_object_versions(Bucket="vers", Delimiter="/")
    assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["a/", "b/"]
    assert [v["Key"] for v in out["Versions"]] == ["sp ace+é", "top"]
    out = s3.list_object_versions(Bucket="vers", Prefix="a/", MaxKeys=2)
    assert [v["Key"] for v in out["Versions"]] == ["a/00", "a/01"] and out["IsTruncated"]
    # boto3 asks for encoding-type=url and decodes it: the key comes back whole
    out = s3.list_object_versions(Bucket="vers", Prefix="sp")
    assert [v["Key"] for v in out["Versions"]] == ["sp ace+é"]
    raw = s3.list_object_versions(Bucket="vers", Prefix="sp", EncodingType="url")
    assert raw["Versions"][0]["Key"] in ("sp ace+é", "sp%20ace%2B%C3%A9")


def test_delete_every_version_empties_the_bucket(filled):
    """What boto3's bucket.object_versions.delete() and test suites' cleanups do."""
    s3, keys = filled
    out = s3.list_object_versions(Bucket="vers")
    objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in out["Versions"]]
    res = s3.delete_objects(Bucket="vers", Delete={"Objects": objects})
    assert sorted(d["Key"] for d in res["Deleted"]) == keys
    assert "Versions" not in s3.list_object_versions(Bucket="vers")
    s3.delete_bucket(Bucket="vers")


def test_bad_markers_and_missing_bucket(filled):
    s3, _ = filled
    for kwargs, message in [
        ({"VersionIdMarker": "null"}, "cannot be specified without a key marker"),
        ({"KeyMarker": "a/01", "VersionIdMarker": "3HL4kqtJlcpXroDTDmJ"}, "Invalid version id"),
    ]:
        with pytest.raises(ClientError) as info:
            s3.list_object_versions(Bucket="vers", **kwargs)
        assert info.value.response["Error"]["Code"] == "InvalidArgument"
        assert message in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        s3.list_object_versions(Bucket="no-such-bucket-here")
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"
