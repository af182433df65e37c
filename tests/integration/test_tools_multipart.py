"""Everyday tools at their default settings, run for real against a real node, on files big
enough that they upload with multipart: `aws s3 cp` (8 MiB parts) up and down, `aws s3 cp`
bucket to bucket (UploadPartCopy), `aws s3 sync` twice, the CLI's multipart s3api commands,
`rclone copyto` above its 200 MiB upload cutoff (5 MiB parts, 4 at a time), `rclone check`
and `rclone cleanup`, and restic's whole cycle (init, backup, check --read-data, restore)
with its default pack size and with --pack-size 64. Bytes are compared exactly, and the
node's access log shows which requests each tool made (so a test proves the tool went
multipart) and that none of them got a 5xx, which the tools would retry without a word.

restic (0.14 here, and its later releases too) uploads every pack with one PutObject
whatever --pack-size says: it tells its minio-go client to use parts of 200 MiB, and
restic refuses packs above 128 MiB. Its tests are that cycle on big single uploads (up to
~66 MiB) and ranged reads of them.

The tools must be installed (`make test` installs rclone and restic): a missing one fails
the test rather than skipping it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY

MiB = 1 << 20
TIMEOUT = 120  # seconds, for any one command

# "... shardfleet.access: 2DFF32559F141A2B GetObject GET /bucket/key 200 in=0 out=439 ..."
_ACCESS = re.compile(r"shardfleet\.access: \S+ (\w+) [A-Z]+ (\S+) (\d{3}) ")


def _env(node, home: Path) -> dict[str, str]:
    """The tools' environment: the node's endpoint and credentials and none of the caller's
    AWS_*, RCLONE_*, RESTIC_* or XDG_* settings, proxies or config files (HOME is the
    test's own), so every tool runs at its defaults."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "RCLONE_", "RESTIC_", "XDG_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        NO_PROXY="127.0.0.1,localhost",
        AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=DEV_SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_PAGER="",
        RCLONE_CONFIG_SF_TYPE="s3",
        RCLONE_CONFIG_SF_PROVIDER="Other",
        RCLONE_CONFIG_SF_ENDPOINT=node.endpoint,
        RCLONE_CONFIG_SF_ACCESS_KEY_ID=DEV_ACCESS_KEY,
        RCLONE_CONFIG_SF_SECRET_ACCESS_KEY=DEV_SECRET_KEY,
        RCLONE_CONFIG_SF_REGION="us-east-1",
        RCLONE_CONFIG_SF_FORCE_PATH_STYLE="true",
    )
    return env  # AWS_CA_BUNDLE is left out: rclone fails on plain-HTTP loopback with it


def _run(args: list[str], env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(args)} timed out after {TIMEOUT} s:\n{e.stderr}") from None
    if ok:
        assert out.returncode == 0, (
            f"{' '.join(args)}: rc={out.returncode}\n{out.stderr}{out.stdout}"
        )
    else:
        assert out.returncode != 0, f"{' '.join(args)} unexpectedly succeeded:\n{out.stdout}"
    return out


def _aws() -> str:
    found = shutil.which("aws", path=str(Path(sys.executable).parent))
    assert found, "the AWS CLI (awscli, a test dependency) is not installed"
    return found


def _rclone() -> str:
    found = shutil.which("rclone")
    assert found, "rclone is not installed (make test installs it from the Debian packages)"
    return found


def _restic() -> str:
    found = shutil.which("restic")
    assert found, "restic is not installed (make test installs it from the Debian packages)"
    return found


class Requests:
    """The requests the node logs (its access log) between two marks: unsigned HEADs of a
    path of their own, which the node logs after every request answered before them."""

    def __init__(self, node) -> None:
        self.node = node
        self.since = self._mark()

    def _mark(self) -> int:
        """The index in the node's output of a mark's log line, once it is there."""
        path = f"/mark-{uuid.uuid4().hex}"
        try:
            mark = urllib.request.Request(self.node.endpoint + path, method="HEAD")
            urllib.request.urlopen(mark, timeout=10).close()
        except urllib.error.HTTPError:
            pass  # unsigned: 403, and logged
        deadline = time.monotonic() + 10
        while True:
            output = list(self.node.output)
            found = [i for i, line in enumerate(output) if f" {path} " in line]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no {path} logged:\n" + "".join(output)
            time.sleep(0.02)

    def ops(self) -> Counter[str]:
        """The operations logged since this was made, by name; none may have answered 5xx
        (a tool retries those without a word)."""
        until = self._mark()
        found = [
            m for line in self.node.output[self.since + 1 : until] if (m := _ACCESS.search(line))
        ]
        failed = [m[0] for m in found if m[3].startswith("5")]
        assert not failed, failed
        return Counter(m[1] for m in found)


def _random_file(path: Path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _multipart_etag(data: bytes, part_size: int) -> str:
    """The ETag S3 gives an object uploaded in parts of part_size: the MD5 of the parts'
    binary MD5s, then "-" and the number of parts."""
    view = memoryview(data)
    md5s = [hashlib.md5(view[i : i + part_size]).digest() for i in range(0, len(data), part_size)]
    return f'"{hashlib.md5(b"".join(md5s)).hexdigest()}-{len(md5s)}"'


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remote_sha256(s3, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def _no_uploads_left(s3, bucket: str) -> None:
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# -- the AWS CLI --------------------------------------------------------------------------------
def test_aws_s3_cp_up_down_and_bucket_to_bucket(node, s3, tmp_path):
    aws, env = [_aws(), "--endpoint-url", node.endpoint], _env(node, tmp_path / "home")
    s3.create_bucket(Bucket="cli-cp")
    data = _random_file(tmp_path / "big.bin", 200 * MiB - 4321, seed=1)  # 25 parts, last short

    log = Requests(node)
    _run([*aws, "s3", "cp", str(tmp_path / "big.bin"), "s3://cli-cp/big"], env)
    ops = log.ops()
    assert (ops["CreateMultipartUpload"], ops["UploadPart"], ops["PutObject"]) == (1, 25, 0)
    head = s3.head_object(Bucket="cli-cp", Key="big")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-25"'), head["ETag"]
    assert head["ETag"] == _multipart_etag(data, 8 * MiB)

    log = Requests(node)
    _run([*aws, "s3", "cp", "s3://cli-cp/big", str(tmp_path / "down.bin")], env)
    assert log.ops()["GetObject"] == 25  # ranged GETs of 8 MiB, 10 at a time
    assert _sha256((tmp_path / "down.bin").read_bytes()) == _sha256(data)

    log = Requests(node)
    _run([*aws, "s3", "cp", "s3://cli-cp/big", "s3://cli-cp/copy"], env)
    ops = log.ops()
    assert (ops["UploadPartCopy"], ops["CopyObject"], ops["GetObject"]) == (25, 0, 0)
    copy = s3.head_object(Bucket="cli-cp", Key="copy")
    assert copy["ContentLength"] == len(data)
    assert copy["ETag"].endswith('-25"'), copy["ETag"]
    assert _remote_sha256(s3, "cli-cp", "copy") == _sha256(data)
    assert _remote_sha256(s3, "cli-cp", "big") == _sha256(data)  # the source is untouched
    _no_uploads_left(s3, "cli-cp")


def test_aws_s3_sync_uploads_everything_once(node, s3, tmp_path):
    aws, env = [_aws(), "--endpoint-url", node.endpoint], _env(node, tmp_path / "home")
    s3.create_bucket(Bucket="cli-sync")
    local = tmp_path / "local"
    sizes = {"a.txt": 11, "b/c.bin": 300_000, "b/d/e.bin": MiB + 3, "empty": 0}
    files = {
        name: _random_file(local / name, n, seed) for seed, (name, n) in enumerate(sizes.items())
    }
    files["big.bin"] = _random_file(local / "big.bin", 20 * MiB + 17, seed=99)  # 3 parts
    past = time.time() - 3600  # local files clearly older than their uploads
    for name in files:
        os.utime(local / name, (past, past))

    log = Requests(node)
    _run([*aws, "s3", "sync", str(local), "s3://cli-sync"], env)
    ops = log.ops()
    assert (ops["PutObject"], ops["UploadPart"], ops["CompleteMultipartUpload"]) == (4, 3, 1)
    keys = {o["Key"]: o for o in s3.list_objects_v2(Bucket="cli-sync")["Contents"]}
    assert sorted(keys) == sorted(files)
    for name, data in files.items():
        assert s3.get_object(Bucket="cli-sync", Key=name)["Body"].read() == data, name
    assert keys["big.bin"]["ETag"] == _multipart_etag(files["big.bin"], 8 * MiB)

    log = Requests(node)
    again = _run([*aws, "s3", "sync", str(local), "s3://cli-sync"], env)
    assert again.stdout == "", again.stdout  # nothing to upload
    ops = log.ops()
    assert ops["ListObjects"] >= 1, ops
    assert not ops.keys() & {"PutObject", "CreateMultipartUpload", "UploadPart"}, ops
    _no_uploads_left(s3, "cli-sync")

    # and back down: the other way of sync, into an empty directory, byte for byte
    down = tmp_path / "down"
    _run([*aws, "s3", "sync", "s3://cli-sync", str(down)], env)
    assert sorted(str(p.relative_to(down)) for p in down.rglob("*") if p.is_file()) == sorted(files)
    for name, data in files.items():
        assert (down / name).read_bytes() == data, name


def test_aws_s3api_lists_and_aborts_an_upload(node, s3, tmp_path):
    aws, env = [_aws(), "--endpoint-url", node.endpoint], _env(node, tmp_path / "home")
    s3.create_bucket(Bucket="cli-api")
    where = ["--bucket", "cli-api", "--key", "some/key"]
    (tmp_path / "part").write_bytes(b"a part that will never be completed")

    def api(*args: str) -> dict:
        out = _run([*aws, "s3api", *args, "--output", "json"], env).stdout
        return json.loads(out) if out.strip() else {}

    upload = api("create-multipart-upload", *where)
    assert (upload["Bucket"], upload["Key"]) == ("cli-api", "some/key")
    uid = upload["UploadId"]
    listed = api("list-multipart-uploads", "--bucket", "cli-api").get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("some/key", uid)]
    assert listed[0]["Initiated"], listed
    part = ["--upload-id", uid, "--part-number", "1", "--body", str(tmp_path / "part")]
    etag = api("upload-part", *where, *part)["ETag"]
    parts = api("list-parts", *where, "--upload-id", uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, etag, 35)]

    api("abort-multipart-upload", *where, "--upload-id", uid)
    assert api("list-multipart-uploads", "--bucket", "cli-api").get("Uploads", []) == []
    gone = _run([*aws, "s3api", "list-parts", *where, "--upload-id", uid], env, ok=False)
    assert "NoSuchUpload" in gone.stderr, gone.stderr
    assert "Contents" not in s3.list_objects_v2(Bucket="cli-api")

    # s3api's copies: copy-object, and upload-part-copy of a range into a new upload
    s3.put_object(Bucket="cli-api", Key="src", Body=b"0123456789" * 1000)
    api("copy-object", "--bucket", "cli-api", "--key", "dst", "--copy-source", "cli-api/src")
    assert s3.get_object(Bucket="cli-api", Key="dst")["Body"].read() == b"0123456789" * 1000
    uid = api("create-multipart-upload", "--bucket", "cli-api", "--key", "ranged")["UploadId"]
    copied = api(
        "upload-part-copy", "--bucket", "cli-api", "--key", "ranged", "--upload-id", uid,
        "--part-number", "1", "--copy-source", "cli-api/src", "--copy-source-range", "bytes=5-14",
    )["CopyPartResult"]  # fmt: skip
    (tmp_path / "parts.json").write_text(
        json.dumps({"Parts": [{"PartNumber": 1, "ETag": copied["ETag"]}]})
    )
    api(
        "complete-multipart-upload", "--bucket", "cli-api", "--key", "ranged", "--upload-id", uid,
        "--multipart-upload", f"file://{tmp_path / 'parts.json'}",
    )  # fmt: skip
    assert s3.get_object(Bucket="cli-api", Key="ranged")["Body"].read() == b"5678901234"


# -- rclone -------------------------------------------------------------------------------------
def test_rclone_copyto_above_the_upload_cutoff(node, s3, tmp_path):
    rclone, env = _rclone(), _env(node, tmp_path / "home")
    s3.create_bucket(Bucket="rclone")
    local = tmp_path / "up"
    data = _random_file(local / "big.bin", 210 * MiB + 7, seed=2)  # 43 parts of 5 MiB

    log = Requests(node)
    _run([rclone, "copyto", str(local / "big.bin"), "sf:rclone/big.bin"], env)
    ops = log.ops()
    assert (ops["CreateMultipartUpload"], ops["UploadPart"], ops["PutObject"]) == (1, 43, 0)
    head = s3.head_object(Bucket="rclone", Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == _multipart_etag(data, 5 * MiB)
    # the MD5 rclone keeps in a multipart object's metadata, which `rclone check` compares
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert head["Metadata"].get("md5chksum") == md5, head["Metadata"]
    check = _run([rclone, "check", str(local), "sf:rclone"], env)
    assert "0 differences found" in check.stderr, check.stderr
    assert "1 matching files" in check.stderr, check.stderr
    assert "could not be checked" not in check.stderr, check.stderr
    assert _remote_sha256(s3, "rclone", "big.bin") == _sha256(data)

    listed = json.loads(_run([rclone, "lsjson", "--hash", "sf:rclone"], env).stdout)
    assert [(e["Path"], e["Size"]) for e in listed] == [("big.bin", len(data))]
    assert listed[0]["Hashes"]["md5"] == hashlib.md5(data).hexdigest()  # from md5chksum

    log = Requests(node)
    _run([rclone, "cleanup", "sf:rclone"], env)
    assert log.ops()["ListMultipartUploads"] == 1
    _no_uploads_left(s3, "rclone")
    assert s3.head_object(Bucket="rclone", Key="big.bin")["ETag"] == head["ETag"]


# -- restic -------------------------------------------------------------------------------------
def _restic_cycle(node, s3, tmp_path: Path, bucket: str, sizes: list[int], *backup_args: str):
    """init (restic makes the bucket), backup, check --read-data, restore; the restored
    tree must be the backed-up one byte for byte. Returns the sizes of the data packs."""
    restic = _restic()
    env = _env(node, tmp_path / "home")
    env.update(
        RESTIC_REPOSITORY=f"s3:{node.endpoint}/{bucket}",
        RESTIC_PASSWORD="correct horse battery staple",
        RESTIC_CACHE_DIR=str(tmp_path / "restic-cache"),
    )
    src = tmp_path / "src"
    files = {
        f"dir{i % 3}/file{i}.bin": _random_file(src / f"dir{i % 3}/file{i}.bin", size, seed=i)
        for i, size in enumerate(sizes)
    }
    log = Requests(node)
    _run([restic, "init"], env)
    _run([restic, "backup", *backup_args, str(src)], env)
    _run([restic, "check", "--read-data"], env)
    target = tmp_path / "restored"
    _run([restic, "restore", "latest", "--target", str(target)], env)
    ops = log.ops()  # and no request had a 5xx
    assert ops["PutObject"] > 0 and ops["GetObject"] > 0, ops
    restored = target / src.relative_to(src.anchor)
    found = sorted(str(p.relative_to(restored)) for p in restored.rglob("*") if p.is_file())
    assert found == sorted(files)
    for name, data in files.items():
        assert (restored / name).read_bytes() == data, name
    _no_uploads_left(s3, bucket)
    return [o["Size"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]]


def test_restic_backup_check_and_restore(node, s3, tmp_path):
    sizes = [0, 1, 4096, 300_000, 5 * MiB + 1, 15 * MiB, 19 * MiB + 11, 20 * MiB - 1]
    packs = _restic_cycle(node, s3, tmp_path, "restic", sizes)
    assert len(packs) >= 4 and max(packs) < 32 * MiB, packs  # the default 16 MiB packs


def test_restic_with_64_mib_packs(node, s3, tmp_path):
    sizes = [7, 1 * MiB, 30 * MiB + 5, 40 * MiB, 39 * MiB + 3, 40 * MiB - 9]
    packs = _restic_cycle(node, s3, tmp_path, "restic-big", sizes, "--pack-size", "64")
    assert max(packs) > 60 * MiB, packs
