"""Healing on a real standalone node: the scanner (started through `shardfleet admin heal`)
rebuilds deleted and rotten shards, the MRF queue heals a write that missed a drive as
soon as the drive takes writes again; each time, the healed drive alone with one other
serves every object byte-exact (so its shards really are back)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.support.shards import flip_bytes, shard_files

MiB = 1 << 20


def admin(node, *args: str) -> dict:
    env = dict(
        os.environ, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY, SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY
    )
    cmd = [
        sys.executable,
        "-m",
        "shardfleet.node.main",
        "admin",
        *args,
        "--endpoint",
        node.endpoint,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def wait_done(node, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = admin(node, "heal", "status", "--json")
        if st["done"]:
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.3)


def only_drives(node, keep: list[int]) -> None:
    """Makes every drive but `keep` (1-based) lose its data: what is left must serve all."""
    for i in range(1, node.drives + 1):
        if i not in keep:
            for sub in ("data",):
                shutil.rmtree(node.drive_path(i) / sub, ignore_errors=True)


def objects(s3) -> dict[str, bytes]:
    data = {f"obj-{n}": os.urandom(n) for n in (5000, 300_000, 3 * MiB + 1, 9 * MiB + 5)}
    for key, value in data.items():
        s3.put_object(Bucket="heal", Key=key, Body=value)
    return data


def test_scanner_rebuilds_deleted_and_rotten_shards(node):
    s3 = node.client()
    s3.create_bucket(Bucket="heal")
    data = objects(s3)
    for path in shard_files(node.drive_path(2), "heal"):
        path.unlink()  # drive 2 loses every shard file
    for path in shard_files(node.drive_path(3), "heal"):
        flip_bytes(path, [path.stat().st_size - 10])  # and drive 3's last blocks rot
    started = admin(node, "heal", "start", "--deep")
    assert started["started"] and started["deep"]
    st = wait_done(node)
    [me] = st["nodes"]
    assert me["scanner"]["healed"] >= 3 and me["scanner"]["failed"] == 0, me
    assert me["scanner"]["bytes"] > 0
    # drives 2 and 3 alone now hold every object
    s3.put_object(Bucket="heal", Key="marker", Body=b"x")  # (nothing cached anywhere)
    only_drives(node, [2, 3])
    for key, value in data.items():
        assert s3.get_object(Bucket="heal", Key=key)["Body"].read() == value, key
    text = subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", "admin", "heal", "status",
         "--endpoint", node.endpoint],
        env=dict(os.environ, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY,
                 SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY),
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert "healing: done" in text and "MRF depth 0" in text


def test_mrf_heals_a_write_that_missed_a_drive(node):
    s3 = node.client()
    s3.create_bucket(Bucket="heal")
    tmp: Path = node.drive_path(4) / "tmp"
    shutil.rmtree(tmp)
    tmp.write_text("not a directory")  # drive 4 cannot stage a shard: writes miss it
    value = os.urandom(2 * MiB + 3)
    s3.put_object(Bucket="heal", Key="missed", Body=value)  # acknowledged by 3 drives
    st = admin(node, "heal", "status", "--json")
    assert st["nodes"][0]["mrf"]["depth"] == 1 and not st["done"]
    tmp.unlink()
    tmp.mkdir()  # the drive takes writes again: the queue heals it within its retries
    st = wait_done(node, 60)
    assert st["nodes"][0]["mrf"]["healed"] == 1, st
    only_drives(node, [1, 4])
    assert s3.get_object(Bucket="heal", Key="missed")["Body"].read() == value


def test_a_wiped_drive_is_formatted_and_healed_while_the_node_runs(node):
    s3 = node.client()
    s3.create_bucket(Bucket="heal")
    s3.create_bucket(Bucket="other")
    data = objects(s3)
    drive = node.drive_path(2)
    shutil.rmtree(drive)
    drive.mkdir()  # a new, empty disk in the slot
    deadline = time.monotonic() + 30
    while not (drive / "format.json").exists():
        assert time.monotonic() < deadline, "the empty drive was not formatted into its slot"
        time.sleep(0.2)
    st = wait_done(node, 60)
    assert st["nodes"][0]["scanner"]["healed"] >= len(data), st
    assert sorted(p.name for p in (drive / "data").iterdir()) == ["heal"]  # shards are back
    only_drives(node, [2, 4])
    for key, value in data.items():
        assert s3.get_object(Bucket="heal", Key=key)["Body"].read() == value, key
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"heal", "other"}


def test_a_wiped_drive_with_leftovers_of_writes_in_flight_is_still_adopted(node):
    s3 = node.client()
    s3.create_bucket(Bucket="heal")
    data = objects(s3)
    drive = node.drive_path(1)  # the first drive: where the MRF queue keeps its file
    shutil.rmtree(drive)
    drive.mkdir()
    (drive / "data" / "heal").mkdir(parents=True)  # as a write in flight would leave it
    (drive / "mrf.msgpack").write_bytes(b"\x90")
    deadline = time.monotonic() + 30
    while not (drive / "format.json").exists():
        assert time.monotonic() < deadline, "the wiped drive was not formatted into its slot"
        time.sleep(0.2)
    wait_done(node, 60)
    only_drives(node, [1, 3])
    for key, value in data.items():
        assert s3.get_object(Bucket="heal", Key=key)["Body"].read() == value, key


def test_mrf_heals_parts_that_missed_a_drive_in_their_objects_set(node_factory):
    """A part lives in its object's set, not in the set its own key would hash to: two
    sets here (8 drives, 2+2), so a queue that looked in the wrong one would miss it."""
    node = node_factory("eight", drives=8)
    s3 = node.client()
    s3.create_bucket(Bucket="heal")
    stuck = [node.drive_path(i) / "tmp" for i in (4, 8)]  # one drive of each set
    for tmp in stuck:
        shutil.rmtree(tmp)
        tmp.write_text("not a directory")  # parts written now miss these drives
    uploads = {}
    for n in range(4):
        key = f"mp-{n}"
        uid = s3.create_multipart_upload(Bucket="heal", Key=key)["UploadId"]
        parts = [os.urandom(5 * MiB), os.urandom(1000 + n)]
        done = [
            {"PartNumber": i, "ETag": s3.upload_part(
                Bucket="heal", Key=key, UploadId=uid, PartNumber=i, Body=body)["ETag"]}
            for i, body in enumerate(parts, 1)
        ]  # fmt: skip
        uploads[key] = (uid, done, b"".join(parts))
    for tmp in stuck:
        tmp.unlink()
        tmp.mkdir()
    st = wait_done(node, 60)  # the queue alone: the scanner's first pass is a minute away
    assert st["nodes"][0]["mrf"]["healed"] >= 8, st
    for key, (uid, done, _) in uploads.items():
        s3.complete_multipart_upload(
            Bucket="heal", Key=key, UploadId=uid, MultipartUpload={"Parts": done}
        )
    only_drives(node, [1, 4, 5, 8])  # the drives the parts missed, and one other per set
    for key, (_, _, value) in uploads.items():
        assert s3.get_object(Bucket="heal", Key=key)["Body"].read() == value, key
