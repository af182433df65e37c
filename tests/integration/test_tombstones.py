"""Deletes that stay deleted, and honest answers below quorum, on a real standalone node
(4 drives, 2+2, W = 3), with drives taken away, wiped and brought back under it.

- A DELETE leaves a tombstone on the drives it reached: a drive that missed it and comes
  back holding the old version makes no GET, listing or heal bring the key back; the
  scanner carries the tombstone to that drive, then collects it once every drive has it.
- A key some drive still holds but too few can read answers 503, never 404, and a listing
  that cannot prove it is complete answers 503, never a short 200: drives wiped and
  formatted empty (not healed yet) are no evidence that a key is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest
from botocore.exceptions import ClientError

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY

pytestmark = pytest.mark.timeout(180)

BUCKET = "tomb"


def admin(node, *args: str) -> dict:
    env = dict(
        os.environ, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY, SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY
    )
    cmd = [sys.executable, "-m", "shardfleet.node.main", "admin", *args]
    proc = subprocess.run(
        [*cmd, "--endpoint", node.endpoint], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def heal(node, timeout: float = 60.0) -> dict:
    admin(node, "heal", "start")
    deadline = time.monotonic() + timeout
    time.sleep(0.5)
    while True:
        st = admin(node, "heal", "status", "--json")
        if st["done"]:
            return st["nodes"][0]
        assert time.monotonic() < deadline, st
        time.sleep(0.2)


def records(drive: Path, key: str) -> list[bytes]:
    """The drive's index row for `key` (read from the test process, node stopped)."""
    env = lmdb.open(str(drive / "index.lmdb"), max_dbs=8, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            objects = env.open_db(b"objects", txn=txn, create=False)
            row = txn.get(BUCKET.encode() + b"\x00" + key.encode(), db=objects)
        return [] if row is None else [row]
    finally:
        env.close()


def is_tombstone(row: bytes) -> bool:
    return row[:2] == b"\x93\x03"


def code(call) -> str:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return "200"


def make_node(node_factory, tmp_path, name: str, **config: float):
    path = tmp_path / f"{name}.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in config.items()))
    return node_factory(name, args=["--config", str(path)])


def take_away(node, i: int) -> Path:
    """Drive i (1-based) vanishes from under the node (an unplugged disk); returns once the
    node's periodic probe (every 2 s) must have noticed (its open index would otherwise
    still take metadata writes)."""
    away = node.data / f"away{i}"
    node.drive_path(i).rename(away)
    if node.proc is not None and node.proc.poll() is None:
        time.sleep(2.5)
    return away


def test_a_drive_that_missed_a_delete_brings_nothing_back(node_factory, tmp_path):
    node = make_node(node_factory, tmp_path, "n", scan_rate=0, tombstone_min_age=0)
    s3 = node.client(retries={"max_attempts": 1})
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="gone", Body=os.urandom(300_000))  # streamed
    s3.put_object(Bucket=BUCKET, Key="gone-small", Body=b"inline")
    s3.put_object(Bucket=BUCKET, Key="stays", Body=b"still here")
    away = take_away(node, 4)
    s3.put_object(Bucket=BUCKET, Key="probe", Body=b"x")
    for key in ("gone", "gone-small"):
        s3.delete_object(Bucket=BUCKET, Key=key)
    node.stop()
    away.rename(node.drive_path(4))  # the disk comes back, with the old versions
    assert not is_tombstone(records(node.drive_path(4), "gone")[0])
    assert all(is_tombstone(records(node.drive_path(i), "gone")[0]) for i in (1, 2, 3))
    node.start()
    s3 = node.client(retries={"max_attempts": 1})  # a new port
    for key in ("gone", "gone-small"):
        assert code(lambda k=key: s3.get_object(Bucket=BUCKET, Key=k)) == "NoSuchKey"
        assert code(lambda k=key: s3.head_object(Bucket=BUCKET, Key=k)) == "404"
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert listed == ["probe", "stays"]
    # two drives that hold tombstones gone: drive 4's old version meets one tombstone, loses
    node.stop()
    for i in (1, 2):
        take_away(node, i)
    node.start()
    s3 = node.client(retries={"max_attempts": 1})  # a new port
    assert code(lambda: s3.get_object(Bucket=BUCKET, Key="gone")) == "NoSuchKey"
    assert s3.get_object(Bucket=BUCKET, Key="stays")["Body"].read() == b"still here"
    node.stop()
    for i in (1, 2):
        (node.data / f"away{i}").rename(node.drive_path(i))
    node.start()
    s3 = node.client(retries={"max_attempts": 1})  # a new port
    # the scanner carries the tombstone to drive 4, then (every drive has it) collects it
    me = heal(node)
    assert me["scanner"]["failed"] == 0, me
    me = heal(node)
    assert me["scanner"]["collected"] >= 2, me
    assert code(lambda: s3.get_object(Bucket=BUCKET, Key="gone")) == "NoSuchKey"
    node.stop()
    for i in range(1, 5):
        assert records(node.drive_path(i), "gone") == [], i
        assert records(node.drive_path(i), "gone-small") == [], i
        assert records(node.drive_path(i), "stays") != [], i
    node.start()
    s3 = node.client(retries={"max_attempts": 1})  # a new port
    assert s3.get_object(Bucket=BUCKET, Key="stays")["Body"].read() == b"still here"


def test_a_conditional_delete_removes_only_the_version_it_checked(node):
    s3 = node.client(retries={"max_attempts": 1})
    s3.create_bucket(Bucket=BUCKET)
    etag = s3.put_object(Bucket=BUCKET, Key="k", Body=b"one")["ETag"]
    s3.delete_object(Bucket=BUCKET, Key="k", IfMatch=etag)
    assert code(lambda: s3.get_object(Bucket=BUCKET, Key="k")) == "NoSuchKey"
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"two")  # a write after the delete stands
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"two"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["k"]
    s3.delete_object(Bucket=BUCKET, Key="k")
    s3.delete_bucket(Bucket=BUCKET)  # tombstones alone do not keep a bucket


def test_below_quorum_a_key_is_503_and_a_listing_503_never_404_or_short(node_factory, tmp_path):
    # scan_rate tiny: the replacements' healing pass crawls, so they stay "not healed yet"
    node = make_node(node_factory, tmp_path, "n", scan_rate=0.01)
    s3 = node.client(retries={"max_attempts": 1})
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="a-everywhere", Body=os.urandom(200_000))
    away = take_away(node, 4)
    s3.put_object(Bucket=BUCKET, Key="probe", Body=b"x")
    three = {f"b{i}": os.urandom(1000 * i) for i in range(1, 6)}  # on drives 1-3 only
    for key, body in three.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    for i in (2, 3):  # two of them wiped: formatted empty into their slots, not healed yet
        shutil.rmtree(node.drive_path(i))
        node.drive_path(i).mkdir()
    deadline = time.monotonic() + 20
    while not all((node.drive_path(i) / "format.json").exists() for i in (2, 3)):
        assert time.monotonic() < deadline, "wiped drives not formatted again"
        time.sleep(0.2)
    time.sleep(0.5)
    for key in three:  # drive 1 alone holds them: unreadable, but not absent
        assert code(lambda k=key: s3.get_object(Bucket=BUCKET, Key=k)) == "ServiceUnavailable"
        assert code(lambda k=key: s3.head_object(Bucket=BUCKET, Key=k)) == "503"
    assert code(lambda: s3.list_objects_v2(Bucket=BUCKET)) == "ServiceUnavailable"
    assert code(lambda: s3.list_objects(Bucket=BUCKET)) == "ServiceUnavailable"
    # a key no drive ever had: drive 1 says so, the empty ones prove nothing: still 503
    assert code(lambda: s3.get_object(Bucket=BUCKET, Key="never")) == "ServiceUnavailable"
    # the unplugged disk comes back (after a restart): what two drives hold is read and
    # healed; what only drive 1 held is lost beyond the tolerance and stays a 503
    node.stop()
    away.rename(node.drive_path(4))
    node.start()
    s3 = node.client(retries={"max_attempts": 1})  # a new port
    assert s3.head_object(Bucket=BUCKET, Key="a-everywhere")["ContentLength"] == 200_000
    assert code(lambda: s3.get_object(Bucket=BUCKET, Key="b1")) == "ServiceUnavailable"
    assert code(lambda: s3.list_objects_v2(Bucket=BUCKET)) == "ServiceUnavailable"
    assert code(lambda: s3.get_object(Bucket=BUCKET, Key="never")) == "NoSuchKey"


def test_listings_walk_past_many_tombstones(node):
    s3 = node.client(retries={"max_attempts": 1})
    s3.create_bucket(Bucket=BUCKET)
    keys = [f"a/{i:04d}" for i in range(600)]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="z", Body=b"last")
    for i in range(0, len(keys), 500):
        batch = [{"Key": k} for k in keys[i : i + 500]]
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": batch, "Quiet": True})
    started = time.monotonic()
    page = s3.list_objects_v2(Bucket=BUCKET, MaxKeys=1)
    assert [o["Key"] for o in page["Contents"]] == ["z"] and not page["IsTruncated"]
    assert time.monotonic() - started < 5
    assert s3.list_objects_v2(Bucket=BUCKET, Delimiter="/").get("CommonPrefixes") is None
    s3.delete_object(Bucket=BUCKET, Key="z")
    s3.delete_bucket(Bucket=BUCKET)


def test_drives_not_healed_yet_do_not_keep_the_scanner_from_healing_them(node):
    """Three of four drives carry the heal mark (replacements whose passes were cut short):
    their listings prove nothing to clients, but the scanner still reads them, so its pass
    completes and clears the marks (it once failed: no listing quorum, no pass, no end)."""
    s3 = node.client(retries={"max_attempts": 1})
    s3.create_bucket(Bucket=BUCKET)
    data = {f"k{i}": os.urandom(1000 * i) for i in range(1, 6)}
    for key, body in data.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    node.stop()
    for i in (2, 3, 4):
        (node.drive_path(i) / "healing.mark").write_text("formatted empty; healing\n")
    node.start()
    s3 = node.client(retries={"max_attempts": 1})
    deadline = time.monotonic() + 30
    while any((node.drive_path(i) / "healing.mark").exists() for i in (2, 3, 4)):
        assert time.monotonic() < deadline, "the heal marks were never cleared"
        time.sleep(0.3)
    assert len(s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == len(data)
