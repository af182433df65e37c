"""The AWS CLI (v1) against a real node: `aws s3` and `aws s3api`, bytes compared exactly.

The CLI runs as a subprocess with only environment credentials (no config or credentials
files), so what it does is what any user's `aws --endpoint-url` would do. Files here stay
below the CLI's 8 MiB multipart threshold (one PUT each); the multipart path at default
settings is tests/integration/test_tools_multipart.py's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.support.nodeproc import NodeProcess

_SIBLING = Path(sys.executable).with_name("aws")
AWS = _SIBLING if _SIBLING.exists() else Path(__file__).resolve().parents[2] / ".venv/bin/aws"

# "2024-01-02 03:04:05       1234 some/key" and "                           PRE dir/"
_LS_OBJECT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +(\d+) (.+)$")
_LS_PREFIX = re.compile(r"^ +PRE (.+)$")
_LS_BUCKET = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (.+)$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("awscli") / "node")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def s3(server: NodeProcess):
    return server.client()


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_")
        and k not in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    }
    env.update(
        AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=DEV_SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_PAGER="",
        HOME=str(tmp_path_factory.mktemp("awscli-home")),
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


class Cli:
    def __init__(self, endpoint: str, env: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.env = env

    def _start(self, args: Sequence[str], cwd: Path | None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(AWS), "--endpoint-url", self.endpoint, *args],
            env=self.env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def _finish(
        proc: subprocess.Popen[str], args: Sequence[str], ok: bool
    ) -> subprocess.CompletedProcess[str]:
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"aws {' '.join(args)} timed out:\n{err}") from None
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if ok:
            assert done.returncode == 0, f"aws {' '.join(args)}: rc={done.returncode}\n{err}"
        else:
            assert done.returncode != 0, f"aws {' '.join(args)} unexpectedly succeeded:\n{out}"
        return done

    def run(
        self, *args: str, ok: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self._finish(self._start(args, cwd), args, ok)

    def run_many(
        self,
        *commands: Sequence[str],
        ok: bool | Sequence[bool] = True,
        cwd: Path | None = None,
    ) -> list[subprocess.CompletedProcess[str]]:
        """Independent commands run side by side: CLI start-up is most of their cost."""
        oks = [ok] * len(commands) if isinstance(ok, bool) else list(ok)
        procs = [self._start(args, cwd) for args in commands]
        return [
            self._finish(p, args, good) for p, args, good in zip(procs, commands, oks, strict=True)
        ]

    def json(self, *args: str) -> dict:
        out = self.run(*args, "--output", "json").stdout
        return json.loads(out) if out.strip() else {}

    def json_many(self, *commands: Sequence[str]) -> list[dict]:
        done = self.run_many(*[[*c, "--output", "json"] for c in commands])
        return [json.loads(d.stdout) if d.stdout.strip() else {} for d in done]


@pytest.fixture(scope="module")
def aws(server: NodeProcess, cli_env: dict[str, str]) -> Cli:
    return Cli(server.endpoint, cli_env)


@pytest.fixture
def bucket(s3) -> str:
    name = f"cli-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def data_of(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"awscli-{seed}".encode()).digest() * 16  # 512 distinct-ish bytes
    return (block * (size // len(block) + 1))[:size]


def ls_entries(stdout: str) -> tuple[dict[str, int], list[str]]:
    """`aws s3 ls` output -> ({key: size}, [prefixes])."""
    objects: dict[str, int] = {}
    prefixes: list[str] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        if m := _LS_PREFIX.match(line):
            prefixes.append(m[1])
        elif m := _LS_OBJECT.match(line):
            objects[m[2]] = int(m[1])
        else:
            raise AssertionError(f"unexpected `aws s3 ls` line: {line!r}")
    return objects, prefixes


def bucket_names(stdout: str) -> list[str]:
    """`aws s3 ls` (no argument) output -> bucket names."""
    names = []
    for line in stdout.splitlines():
        m = _LS_BUCKET.match(line)
        assert m, f"unexpected `aws s3 ls` line: {line!r}"
        names.append(m[1])
    return names


def keys_in(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


# -- aws s3 ------------------------------------------------------------------------------------
def test_mb_ls_rb(aws, s3):
    name = f"cli-mb-{uuid.uuid4().hex[:12]}"
    out = aws.run("s3", "mb", f"s3://{name}").stdout
    assert out.strip() == f"make_bucket: {name}"
    s3.head_bucket(Bucket=name)

    listing, again, inside = aws.run_many(
        ["s3", "ls"],
        ["s3", "mb", f"s3://{name}"],
        ["s3", "ls", f"s3://{name}"],
        ok=[True, False, True],
    )
    assert name in bucket_names(listing.stdout)
    assert "BucketAlreadyOwnedByYou" in again.stderr
    assert inside.stdout == ""

    out = aws.run("s3", "rb", f"s3://{name}").stdout
    assert out.strip() == f"remove_bucket: {name}"
    assert name not in bucket_names(aws.run("s3", "ls").stdout)
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=name)


def test_rb_non_empty_bucket_then_force(aws, s3, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"1")
    s3.put_object(Bucket=bucket, Key="d/b", Body=b"22")
    failed = aws.run("s3", "rb", f"s3://{bucket}", ok=False)
    assert "BucketNotEmpty" in failed.stderr
    assert sorted(keys_in(s3, bucket)) == ["a", "d/b"]

    aws.run("s3", "rb", f"s3://{bucket}", "--force")
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


CP_SIZES = {
    "one-byte": 1,
    "empty": 0,
    "five-mib-plus-7": (5 << 20) + 7,
    "inline-limit": 128 * 1024,
    "inline-limit-plus-1": 128 * 1024 + 1,
}


def test_cp_up_and_down(aws, s3, bucket, tmp_path):
    """One file per size, uploaded side by side, checked with boto3, downloaded side by side."""
    up, down = tmp_path / "up", tmp_path / "down"
    up.mkdir()
    down.mkdir()
    files = {name: data_of(size, seed=size) for name, size in CP_SIZES.items()}
    for name, data in files.items():
        (up / name).write_bytes(data)

    done = aws.run_many(*[["s3", "cp", name, f"s3://{bucket}/cp/{name}"] for name in files], cwd=up)
    for name, proc in zip(files, done, strict=True):
        lines = [line.strip() for line in proc.stdout.splitlines()]
        assert f"upload: ./{name} to s3://{bucket}/cp/{name}" in lines, proc.stdout

    for name, data in files.items():
        head = s3.head_object(Bucket=bucket, Key=f"cp/{name}")
        assert head["ContentLength"] == len(data), name
        assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"', name  # one PUT, no multipart
        assert s3.get_object(Bucket=bucket, Key=f"cp/{name}")["Body"].read() == data, name

    written_by_boto3 = data_of((3 << 20) + 333, seed=42)
    s3.put_object(Bucket=bucket, Key="cp/boto3", Body=written_by_boto3)
    files["boto3"] = written_by_boto3

    done = aws.run_many(
        *[["s3", "cp", f"s3://{bucket}/cp/{name}", name] for name in files], cwd=down
    )
    for name, proc in zip(files, done, strict=True):
        lines = [line.strip() for line in proc.stdout.splitlines()]
        assert f"download: s3://{bucket}/cp/{name} to ./{name}" in lines, proc.stdout
        assert (down / name).read_bytes() == files[name], name


def test_cp_to_stdout_and_from_stdin(aws, s3, bucket):
    data = data_of(70_001, seed=3)
    proc = subprocess.run(
        [str(AWS), "--endpoint-url", aws.endpoint, "s3", "cp", "-", f"s3://{bucket}/piped"],
        env=aws.env,
        input=data,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert s3.get_object(Bucket=bucket, Key="piped")["Body"].read() == data
    proc = subprocess.run(
        [str(AWS), "--endpoint-url", aws.endpoint, "s3", "cp", f"s3://{bucket}/piped", "-"],
        env=aws.env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


def test_cp_missing_source_fails(aws, bucket, tmp_path):
    failed = aws.run("s3", "cp", f"s3://{bucket}/nope", str(tmp_path / "x"), ok=False)
    assert "404" in failed.stderr or "Not Found" in failed.stderr
    assert not (tmp_path / "x").exists()


def test_ls_and_ls_recursive(aws, s3, bucket):
    objects = {
        "a.txt": b"a",
        "dir/b.txt": b"bb",
        "dir/sub/c.txt": b"ccc",
        "dir/sub/d.txt": b"",
        "dirt.txt": b"dddd",
        "z/e.bin": data_of(1000),
    }
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    top, inside, partial, everything, under = (
        ls_entries(p.stdout)
        for p in aws.run_many(
            ["s3", "ls", f"s3://{bucket}"],
            ["s3", "ls", f"s3://{bucket}/dir/"],
            ["s3", "ls", f"s3://{bucket}/dir"],  # not a "directory": dir/ and dirt.txt
            ["s3", "ls", "--recursive", f"s3://{bucket}"],
            ["s3", "ls", "--recursive", f"s3://{bucket}/dir/"],
        )
    )
    assert top == ({"a.txt": 1, "dirt.txt": 4}, ["dir/", "z/"])
    assert inside == ({"b.txt": 2}, ["sub/"])
    assert partial == ({"dirt.txt": 4}, ["dir/"])
    assert everything == ({k: len(v) for k, v in objects.items()}, [])
    assert under == ({"dir/b.txt": 2, "dir/sub/c.txt": 3, "dir/sub/d.txt": 0}, [])


def test_ls_recursive_across_pages(aws, s3, bucket):
    """More keys than one ListObjectsV2 page, so the CLI follows continuation tokens."""
    keys = [f"k/{i:03d}" for i in range(31)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    out = aws.run("s3", "ls", "--recursive", "--page-size", "7", f"s3://{bucket}").stdout
    everything, _ = ls_entries(out)
    assert list(everything) == keys


def test_rm_and_rm_recursive(aws, s3, bucket):
    for key in ("keep.txt", "gone.txt", "tree/1", "tree/2/3", "treehouse"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    single, recursive = aws.run_many(
        ["s3", "rm", f"s3://{bucket}/gone.txt"],
        ["s3", "rm", "--recursive", f"s3://{bucket}/tree/"],
    )
    assert single.stdout.strip() == f"delete: s3://{bucket}/gone.txt"
    assert sorted(line.strip() for line in recursive.stdout.strip().splitlines()) == [
        f"delete: s3://{bucket}/tree/1",
        f"delete: s3://{bucket}/tree/2/3",
    ]
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="gone.txt")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert sorted(keys_in(s3, bucket)) == ["keep.txt", "treehouse"]
    assert s3.get_object(Bucket=bucket, Key="treehouse")["Body"].read() == b"treehouse"


# -- aws s3api ---------------------------------------------------------------------------------
def test_s3api_put_get_head(aws, s3, bucket, tmp_path):
    data = data_of(200_003, seed=9)
    src = tmp_path / "body.bin"
    src.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    empty_md5 = hashlib.md5(b"").hexdigest()

    put, put_empty = aws.json_many(
        [
            "s3api",
            "put-object",
            "--bucket",
            bucket,
            "--key",
            "api/obj.bin",
            "--body",
            str(src),
            "--content-type",
            "application/x-test",
            "--metadata",
            "colour=blue,shape=round",
        ],
        ["s3api", "put-object", "--bucket", bucket, "--key", "api/marker/"],  # no --body
    )
    assert put["ETag"] == f'"{md5}"'
    assert put_empty["ETag"] == f'"{empty_md5}"'

    dst, part = tmp_path / "got.bin", tmp_path / "part.bin"
    head, got, ranged, head_empty = aws.json_many(
        ["s3api", "head-object", "--bucket", bucket, "--key", "api/obj.bin"],
        ["s3api", "get-object", "--bucket", bucket, "--key", "api/obj.bin", str(dst)],
        [
            "s3api",
            "get-object",
            "--bucket",
            bucket,
            "--key",
            "api/obj.bin",
            "--range",
            "bytes=-5",
            str(part),
        ],
        ["s3api", "head-object", "--bucket", bucket, "--key", "api/marker/"],
    )
    for reply in (head, got):
        assert reply["ContentLength"] == len(data)
        assert reply["ETag"] == f'"{md5}"'
        assert reply["ContentType"] == "application/x-test"
        assert reply["Metadata"] == {"colour": "blue", "shape": "round"}
    assert dst.read_bytes() == data
    assert ranged["ContentRange"] == f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"
    assert ranged["ContentLength"] == 5
    assert part.read_bytes() == data[-5:]
    assert head_empty["ContentLength"] == 0
    assert head_empty["ETag"] == f'"{empty_md5}"'


def test_s3api_errors(aws, bucket, tmp_path):
    head, get, nobucket = aws.run_many(
        ["s3api", "head-object", "--bucket", bucket, "--key", "missing"],
        ["s3api", "get-object", "--bucket", bucket, "--key", "missing", str(tmp_path / "o")],
        ["s3api", "list-objects-v2", "--bucket", f"{bucket}-nope"],
        ok=False,
    )
    assert "404" in head.stderr
    assert "NoSuchKey" in get.stderr
    assert not (tmp_path / "o").exists()
    assert "NoSuchBucket" in nobucket.stderr


def test_s3api_list_objects_v2_prefix_delimiter(aws, s3, bucket):
    keys = [
        "photos/2023/a.jpg",
        "photos/2023/b.jpg",
        "photos/2024/c.jpg",
        "photos/top.jpg",
        "photosynthesis.txt",
        "readme",
        "videos/v.mp4",
    ]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    root, photos, prefix_only, nothing, paged = aws.json_many(
        ["s3api", "list-objects-v2", "--bucket", bucket, "--delimiter", "/"],
        [
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            "photos/",
            "--delimiter",
            "/",
            "--no-paginate",
        ],
        ["s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "photos"],
        [
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            "nothing/",
            "--delimiter",
            "/",
        ],
        # --page-size makes the CLI follow the server's continuation tokens
        ["s3api", "list-objects-v2", "--bucket", bucket, "--page-size", "2", "--prefix", "photos/"],
    )
    assert [c["Key"] for c in root["Contents"]] == ["photosynthesis.txt", "readme"]
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["photos/", "videos/"]

    assert [c["Key"] for c in photos["Contents"]] == ["photos/top.jpg"]
    assert [c["Size"] for c in photos["Contents"]] == [len(b"photos/top.jpg")]
    assert [p["Prefix"] for p in photos["CommonPrefixes"]] == ["photos/2023/", "photos/2024/"]
    assert photos["Prefix"] == "photos/" and photos["Delimiter"] == "/"
    assert photos["KeyCount"] == 3 and photos["IsTruncated"] is False

    assert [c["Key"] for c in prefix_only["Contents"]] == keys[:5]
    assert "CommonPrefixes" not in prefix_only

    assert nothing.get("KeyCount", 0) == 0 and "Contents" not in nothing

    assert [c["Key"] for c in paged["Contents"]] == keys[:4]


def test_s3api_bucket_policy_and_cors(aws, s3, bucket, tmp_path):
    """The CLI's own requests for policies and CORS (its bodies, its checksums), then curl
    as the anonymous browser-less client: a public-read policy lets it GET, not PUT; a
    preflight answers from the CORS rules the CLI set."""
    s3.put_object(Bucket=bucket, Key="public.txt", Body=b"for everyone")
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    rules = {
        "CORSRules": [
            {"AllowedOrigins": ["https://page.example"], "AllowedMethods": ["GET", "PUT"]}
        ]
    }
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    (tmp_path / "cors.json").write_text(json.dumps(rules))
    aws.run_many(
        ["s3api", "put-bucket-policy", "--bucket", bucket, "--policy", "file://policy.json"],
        [
            "s3api",
            "put-bucket-cors",
            "--bucket",
            bucket,
            "--cors-configuration",
            "file://cors.json",
        ],
        cwd=tmp_path,
    )
    policy, status, cors = aws.json_many(
        ["s3api", "get-bucket-policy", "--bucket", bucket],
        ["s3api", "get-bucket-policy-status", "--bucket", bucket],
        ["s3api", "get-bucket-cors", "--bucket", bucket],
    )
    assert json.loads(policy["Policy"]) == doc
    assert status["PolicyStatus"]["IsPublic"] is True
    assert cors["CORSRules"] == rules["CORSRules"]

    url = f"{aws.endpoint}/{bucket}/public.txt"
    curl = ["curl", "-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]
    got = subprocess.run([*curl, url], capture_output=True, text=True, timeout=30, check=True)
    assert got.stdout.splitlines() == ["for everyone", "200"]
    put = subprocess.run(
        [*curl, "-X", "PUT", "--data-binary", "overwritten", url],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert put.stdout.endswith("\n403") and "<Code>AccessDenied</Code>" in put.stdout
    pre = subprocess.run(
        [*curl, "-X", "OPTIONS", "-D", "-", "-H", "Origin: https://page.example",
         "-H", "Access-Control-Request-Method: PUT", url],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert pre.stdout.endswith("\n200")
    assert "access-control-allow-origin: https://page.example" in pre.stdout.lower()
    assert s3.get_object(Bucket=bucket, Key="public.txt")["Body"].read() == b"for everyone"

    aws.run_many(
        ["s3api", "delete-bucket-policy", "--bucket", bucket],
        ["s3api", "delete-bucket-cors", "--bucket", bucket],
    )
    missing = aws.run_many(
        ["s3api", "get-bucket-policy", "--bucket", bucket],
        ["s3api", "get-bucket-cors", "--bucket", bucket],
        ok=False,
    )
    assert "NoSuchBucketPolicy" in missing[0].stderr
    assert "NoSuchCORSConfiguration" in missing[1].stderr
    got = subprocess.run([*curl, url], capture_output=True, text=True, timeout=30, check=True)
    assert got.stdout.endswith("\n403")
