"""Everyday tools that copy server side, run for real against a real node: `aws s3 mv`,
`rclone touch` of an existing object (a copy onto itself) and `rclone sync` after a local
touch (a metadata-only update, also a copy onto itself). No object may ever end with fewer
bytes than it had. The tools must be installed (`make test` installs rclone): a missing one
fails the test rather than skipping it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY

SIZES = [7, 300_000, 3 * 1024 * 1024 + 5]


def _env(node) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update(
        AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=DEV_SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        RCLONE_CONFIG_SF_TYPE="s3",
        RCLONE_CONFIG_SF_PROVIDER="Other",
        RCLONE_CONFIG_SF_ENDPOINT=node.endpoint,
        RCLONE_CONFIG_SF_ACCESS_KEY_ID=DEV_ACCESS_KEY,
        RCLONE_CONFIG_SF_SECRET_ACCESS_KEY=DEV_SECRET_KEY,
        RCLONE_CONFIG_SF_REGION="us-east-1",
        RCLONE_CONFIG_SF_FORCE_PATH_STYLE="true",
    )
    return env  # AWS_CA_BUNDLE is left out: rclone fails on plain-HTTP loopback with it


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def _aws() -> list[str]:
    found = shutil.which("aws", path=str(Path(sys.executable).parent))
    assert found, "the AWS CLI (awscli, a test dependency) is not installed"
    return [found]


def _rclone() -> str:
    found = shutil.which("rclone")
    assert found, "rclone is not installed (make test installs it from the Debian packages)"
    return found


@pytest.mark.parametrize("size", SIZES)
def test_aws_s3_mv_moves_every_byte(node, s3, size):
    s3.create_bucket(Bucket="mv-bucket")
    data = os.urandom(size)
    s3.put_object(Bucket="mv-bucket", Key="x", Body=data, Metadata={"k": "v"})
    out = _run(
        [
            *_aws(),
            "s3",
            "mv",
            "s3://mv-bucket/x",
            "s3://mv-bucket/y",
            "--endpoint-url",
            node.endpoint,
        ],
        _env(node),
    )
    assert out.returncode == 0, out.stderr
    got = s3.get_object(Bucket="mv-bucket", Key="y")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"k": "v"}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mv-bucket")["Contents"]]
    assert keys == ["y"]


def test_rclone_touch_and_sync_never_shrink_an_object(node, s3, tmp_path):
    rclone = _rclone()
    env = _env(node)
    s3.create_bucket(Bucket="rc-bucket")
    local = tmp_path / "local"
    local.mkdir()
    files = {f"f{size}.bin": os.urandom(size) for size in SIZES}
    for name, data in files.items():
        (local / name).write_bytes(data)
    out = _run([rclone, "sync", str(local), "sf:rc-bucket"], env)
    assert out.returncode == 0, out.stderr

    def check() -> None:
        for name, data in files.items():
            assert s3.get_object(Bucket="rc-bucket", Key=name)["Body"].read() == data, name

    check()
    for name in files:  # a copy onto itself, with new metadata (the modification time)
        out = _run([rclone, "touch", f"sf:rc-bucket/{name}"], env)
        assert out.returncode == 0, out.stderr
    check()
    later = time.time() + 3600
    for name in files:  # same bytes, new mtime: rclone updates the remote's metadata only
        os.utime(local / name, (later, later))
    out = _run([rclone, "sync", str(local), "sf:rc-bucket", "-v"], env)
    assert out.returncode == 0, out.stderr
    check()
    out = _run([rclone, "check", str(local), "sf:rc-bucket"], env)
    assert out.returncode == 0, out.stderr + out.stdout
