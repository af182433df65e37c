"""SIGKILL of the node at random moments of multipart completions and of copies: after the
restart every key holds its old or its new bytes, never a mix, a retried completion
succeeds, and once start-up's cleanup has run no orphan part or staged shard remains.

`make test` runs a few rounds of each; `make chaos` runs 30 of each (marker chaos_long)."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

import pytest

from tests.support.shards import staged_files, version_dirs

MiB = 1 << 20


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def in_background(fn) -> threading.Thread:
    def run() -> None:
        try:
            fn()
        except Exception:
            pass  # the server dies under it

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def drives(node) -> list:
    return [node.drive_path(i) for i in range(1, node.drives + 1)]


def completion_round(node, rng: random.Random, i: int) -> str:
    s3 = node.client()
    key = f"mp-{i}"
    old = rng.randbytes(300_000)
    s3.put_object(Bucket="chaos", Key=key, Body=old)
    parts = [rng.randbytes(5 * MiB), rng.randbytes(rng.randrange(1, 2 * MiB))]
    uid = s3.create_multipart_upload(Bucket="chaos", Key=key)["UploadId"]
    listed = []
    for n, body in enumerate(parts, 1):
        r = s3.upload_part(Bucket="chaos", Key=key, UploadId=uid, PartNumber=n, Body=body)
        listed.append({"PartNumber": n, "ETag": r["ETag"]})
    new = b"".join(parts)

    def complete(client) -> dict:
        return client.complete_multipart_upload(
            Bucket="chaos", Key=key, UploadId=uid, MultipartUpload={"Parts": listed}
        )

    thread = in_background(lambda: complete(s3))
    time.sleep(rng.uniform(0, 0.02))
    node.kill()
    thread.join(30)
    node.start()
    s3 = node.client()
    got = s3.get_object(Bucket="chaos", Key=key)["Body"].read()
    assert got in (old, new), f"{key} holds neither its old nor its new bytes"
    outcome = "new" if got == new else "old"
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert complete(s3)["ETag"] == f'"{etag}-2"'  # done before the kill, or now
    assert s3.get_object(Bucket="chaos", Key=key)["Body"].read() == new
    return outcome


def copy_round(node, rng: random.Random, i: int) -> str:
    s3 = node.client()
    key = f"copy-{i}"
    old = rng.randbytes(300_000)
    source = rng.randbytes(6 * MiB + rng.randrange(MiB))
    s3.put_object(Bucket="chaos", Key=key, Body=old)
    s3.put_object(Bucket="chaos", Key=f"src-{i}", Body=source)
    thread = in_background(
        lambda: s3.copy_object(
            Bucket="chaos", Key=key, CopySource={"Bucket": "chaos", "Key": f"src-{i}"}
        )
    )
    time.sleep(rng.uniform(0, 0.08))
    node.kill()
    thread.join(30)
    node.start()
    got = node.client().get_object(Bucket="chaos", Key=key)["Body"].read()
    assert got in (old, source), f"{key} holds neither its old nor its new bytes"
    return "new" if got == source else "old"


def no_orphans(node) -> None:
    s3 = node.client()
    objects = s3.list_objects_v2(Bucket="chaos").get("Contents", [])
    multipart = [o for o in objects if o["ETag"].endswith('-2"')]
    single = [o for o in objects if not o["ETag"].endswith('-2"')]

    def clean() -> bool:
        return all(
            not staged_files(d)
            # one part directory per part of each multipart object, nothing else
            and len(version_dirs(d, "chaos+mp")) == 2 * len(multipart)
            # one version directory per streamed single-part object (300 KB and up)
            and len(version_dirs(d, "chaos")) == len(single)
            for d in drives(node)
        )

    assert wait_for(clean), "orphan parts, versions or staged shards remain after cleanup"
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="chaos")


def run_rounds(node_factory, rounds: int) -> dict[str, int]:
    node = node_factory("chaos")
    node.client().create_bucket(Bucket="chaos")
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    outcomes = {"old": 0, "new": 0}
    for i in range(rounds):
        outcomes[completion_round(node, rng, i)] += 1
        outcomes[copy_round(node, rng, i)] += 1
    no_orphans(node)
    return outcomes


def test_kill_during_completions_and_copies(node_factory):
    assert sum(run_rounds(node_factory, 3).values()) == 6


@pytest.mark.chaos_long
def test_kill_during_thirty_completions_and_thirty_copies(node_factory):
    assert sum(run_rounds(node_factory, 30).values()) == 60
