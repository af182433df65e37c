"""Unfinished multipart uploads expire: the upload sweep (healing/uploads.py) aborts uploads
older than `multipart_expiry`, their shards with them, and forgets completed uploads'
tombstones after `multipart_tombstone_ttl`; young uploads and objects stay untouched."""

from __future__ import annotations

import os
import time

from botocore.exceptions import ClientError

from tests.support.shards import staged_files


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def part_dirs(node, bucket: str) -> list:
    found = []
    for i in range(1, node.drives + 1):
        base = node.drive_path(i) / "data" / f"{bucket}+mp"
        if base.exists():
            found += [v for fan in base.iterdir() for v in fan.iterdir()]
    return found


def test_expired_uploads_are_aborted_with_their_shards(node_factory, tmp_path):
    config = tmp_path / "node.toml"
    config.write_text(
        "multipart_expiry = 3\nmultipart_sweep_interval = 0.5\nmultipart_tombstone_ttl = 3\n"
    )
    node = node_factory("expiry", args=["--config", str(config)])
    s3 = node.client()
    s3.create_bucket(Bucket="exp")
    s3.put_object(Bucket="exp", Key="plain", Body=b"stays")
    old = s3.create_multipart_upload(Bucket="exp", Key="old")["UploadId"]
    s3.upload_part(Bucket="exp", Key="old", UploadId=old, PartNumber=1, Body=os.urandom(300_000))
    done = s3.create_multipart_upload(Bucket="exp", Key="done")["UploadId"]
    r = s3.upload_part(Bucket="exp", Key="done", UploadId=done, PartNumber=1, Body=b"whole")
    parts = {"Parts": [{"PartNumber": 1, "ETag": r["ETag"]}]}
    s3.complete_multipart_upload(Bucket="exp", Key="done", UploadId=done, MultipartUpload=parts)
    time.sleep(1.5)
    young = s3.create_multipart_upload(Bucket="exp", Key="young")["UploadId"]
    s3.upload_part(Bucket="exp", Key="young", UploadId=young, PartNumber=1, Body=b"y" * 1000)

    def listed() -> set[str]:
        return {u["Key"] for u in s3.list_multipart_uploads(Bucket="exp").get("Uploads", [])}

    assert listed() == {"old", "young"}
    assert wait_for(lambda: listed() == {"young"}), listed()
    try:
        s3.list_parts(Bucket="exp", Key="old", UploadId=old)
        raise AssertionError("the expired upload still answers")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchUpload"
    # the expired upload's part is gone from every drive; the completed object's and the
    # young upload's parts stay
    assert wait_for(lambda: len(part_dirs(node, "exp")) == 2 * node.drives)
    assert s3.get_object(Bucket="exp", Key="done")["Body"].read() == b"whole"
    assert s3.get_object(Bucket="exp", Key="plain")["Body"].read() == b"stays"
    # the completed upload's tombstone answers a repeated Complete until it is forgotten
    assert wait_for(lambda: listed() == set(), 20)  # the young one expires in turn
    time.sleep(2)
    try:
        s3.complete_multipart_upload(Bucket="exp", Key="done", UploadId=done, MultipartUpload=parts)
        raise AssertionError("a forgotten upload still completes")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchUpload"
    assert s3.get_object(Bucket="exp", Key="done")["Body"].read() == b"whole"
    assert len(part_dirs(node, "exp")) == node.drives
    assert all(not staged_files(node.drive_path(i)) for i in range(1, node.drives + 1))
