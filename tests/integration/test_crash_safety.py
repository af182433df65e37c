"""SIGKILL in the middle of an overwrite: after restart the key holds the complete old or the
complete new object, and start-up leaves no orphan shard files behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import threading
import time

import pytest

from tests.support.shards import (
    index_writes_held,
    staged_files,
    upload_completed_on,
    version_dirs,
)

OLD_SIZE = (5 << 20) + 11
NEW_SIZE = (24 << 20) + 7


def pattern(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def overwrite_in_background(s3, body: bytes) -> threading.Thread:
    def run() -> None:
        try:
            s3.put_object(Bucket="crash", Key="victim", Body=body)
        except Exception:
            pass  # the server dies under it

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def check_recovered(node, old: bytes, new: bytes) -> str:
    node.start()
    s3 = node.client()
    got = s3.get_object(Bucket="crash", Key="victim")["Body"].read()
    digest = hashlib.md5(got).hexdigest()
    assert digest in (hashlib.md5(old).hexdigest(), hashlib.md5(new).hexdigest()), (
        f"key holds neither the old nor the new object ({len(got)} bytes)"
    )

    def clean() -> bool:
        drives = [node.drive_path(i) for i in range(1, node.drives + 1)]
        return all(not staged_files(d) and len(version_dirs(d, "crash")) == 1 for d in drives)

    assert wait_for(clean, 10), "orphan or staged shard files remain after start-up"
    return "new" if got == new else "old"


def crash_once(node, when: str, seed: int) -> str:
    s3 = node.client()
    old = pattern(seed, OLD_SIZE)
    new = pattern(seed + 1, NEW_SIZE)
    s3.put_object(Bucket="crash", Key="victim", Body=old)
    drive = node.drive_path(1)
    if when == "commit":
        # the moment the new version directory has landed in data/ and its metadata commit
        # waits: the index's write lock, held here, keeps that moment open until the kill
        with index_writes_held(drive):
            thread = overwrite_in_background(s3, new)
            assert wait_for(lambda: len(version_dirs(drive, "crash")) >= 2, 30)
            node.kill()
    else:
        thread = overwrite_in_background(s3, new)
        if when == "staging":
            assert wait_for(
                lambda: any(p.is_file() and p.stat().st_size > 0 for p in staged_files(drive))
            )
        else:
            time.sleep(float(when))
        node.kill()
    thread.join(30)
    return check_recovered(node, old, new)


@pytest.fixture
def crash_node(node_factory):
    node = node_factory("crash")
    node.client().create_bucket(Bucket="crash")
    return node


@pytest.mark.parametrize("when", ["staging", "commit"])
def test_kill_during_overwrite(crash_node, when):
    crash_once(crash_node, when, seed=hash(when) & 0xFFFF)


@pytest.mark.chaos_long
def test_kill_during_overwrite_many_times(crash_node):
    """`make chaos`: 40 kills at random moments of the overwrite."""
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    outcomes = {"old": 0, "new": 0}
    for i in range(40):
        outcomes[crash_once(crash_node, f"{rng.uniform(0.02, 0.6):.3f}", seed=i * 2)] += 1
    assert sum(outcomes.values()) == 40


@pytest.mark.parametrize("held", [1, 2])
def test_kill_during_completion(crash_node, held):
    """SIGKILL while a CompleteMultipartUpload commits: `held` drives cannot commit (their
    index write lock is held here), the others can. After restart the key is the old object
    or the new one, whole, and a retried Complete rolls the same completion forward."""
    node, s3 = crash_node, crash_node.client()
    old = pattern(7, OLD_SIZE)
    s3.put_object(Bucket="crash", Key="victim", Body=old)
    parts = [pattern(10 + n, 5 * 1024 * 1024 + n) for n in range(3)]
    uid = s3.create_multipart_upload(Bucket="crash", Key="victim")["UploadId"]
    listed = []
    for n, body in enumerate(parts, 1):
        r = s3.upload_part(Bucket="crash", Key="victim", UploadId=uid, PartNumber=n, Body=body)
        listed.append({"PartNumber": n, "ETag": r["ETag"]})

    def complete():
        return s3.complete_multipart_upload(
            Bucket="crash", Key="victim", UploadId=uid, MultipartUpload={"Parts": listed}
        )

    with contextlib.ExitStack() as stack:
        for i in range(1, held + 1):
            stack.enter_context(index_writes_held(node.drive_path(i)))
        thread = threading.Thread(target=_quietly(complete), daemon=True)
        thread.start()
        free = node.drive_path(node.drives)
        # the completion has committed on a drive that was free: its upload record became
        # a tombstone (the part rows left the "+mp" volume's index with it)
        assert wait_for(lambda: upload_completed_on(free, "crash"), 30)
        node.kill()
    thread.join(30)
    node.start()
    s3 = node.client()
    new = b"".join(parts)
    got = s3.get_object(Bucket="crash", Key="victim")["Body"].read()
    assert got in (old, new), f"key holds neither the old nor the new object ({len(got)} bytes)"
    done = s3.complete_multipart_upload(
        Bucket="crash", Key="victim", UploadId=uid, MultipartUpload={"Parts": listed}
    )
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert done["ETag"] == f'"{etag}-3"'
    assert s3.get_object(Bucket="crash", Key="victim")["Body"].read() == new
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="crash")
    drives = [node.drive_path(i) for i in range(1, node.drives + 1)]
    # every drive now holds the new version: the old one's data went, each part's stayed
    assert wait_for(lambda: all(not version_dirs(d, "crash") for d in drives), 10)
    assert all(len(version_dirs(d, "crash+mp")) == 3 for d in drives)
    # (the MRF queue may be healing the degraded reads of the restart: its staged files go)
    assert wait_for(lambda: all(not staged_files(d) for d in drives), 10)


def _quietly(fn):
    def run() -> None:
        try:
            fn()
        except Exception:
            pass  # the server dies under it

    return run
