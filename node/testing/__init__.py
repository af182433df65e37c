"""shardfleet as a real S3 endpoint in your tests: `shardfleet.testing`.

    from shardfleet.testing import serve

    with serve() as s3server:              # a real node process, free port, temp drives
        s3 = s3server.client()             # a boto3 client for it (boto3 must be installed)
        s3.create_bucket(Bucket="b")
        ...
        s3server.reset()                   # clean slate: every bucket emptied and removed

    async with serve_async() as s3server:  # the same, from async code
        ...

    with serve(nodes=4) as s3server:       # a dev cluster: 4 node processes, 2 drives each
        s3server.endpoints                 # one S3 endpoint per node

With pytest nothing more is needed: installing shardfleet registers a plugin
(`shardfleet.testing.plugin`) whose `shardfleet_s3` fixture is a boto3 client to a node
started once per session, every bucket emptied before each test (see the plugin).

What runs is the real server, the one `pip install shardfleet` puts in production: the same
erasure coding, durability and S3 semantics, so a test that passes here passes against the
same build deployed. Nothing is mocked; the node stops, and its drives are removed, when
the context ends, whatever happened inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["S3Server", "serve", "serve_async"]

ACCESS_KEY = "shardfleet-test"
SECRET_KEY = "shardfleet-test-secret-key"
REGION = "us-east-1"
_ENDPOINT = re.compile(r"endpoint:\s+(http://\S+)")


@dataclass
class S3Server:
    """A running shardfleet: where it listens and how to sign for it."""

    endpoints: list[str]
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    data: Path | None = None  # the temporary drives (removed when the context ends)
    pids: list[int] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    def client(self, node: int = 0, **config: Any) -> Any:
        """A boto3 S3 client for node `node` (default the first), `config` passed to
        botocore's Config (retries, timeouts, checksum settings...)."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # a test dependency, not one of shardfleet's
            raise RuntimeError("shardfleet.testing's client() needs boto3 installed") from exc
        return boto3.client(
            "s3",
            endpoint_url=self.endpoints[node],
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**config) if config else None,
        )

    def reset(self, *, keep_buckets: bool = False, client: Any = None) -> None:
        """Clean slate: aborts every multipart upload, deletes every object and, unless
        `keep_buckets`, every bucket. Milliseconds for what a test writes (one listing
        and one DeleteObjects per 1,000 keys)."""
        s3 = client or self.client()
        for bucket in s3.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
                for up in page.get("Uploads", []):
                    with contextlib.suppress(Exception):  # completed or aborted meanwhile
                        s3.abort_multipart_upload(
                            Bucket=name, Key=up["Key"], UploadId=up["UploadId"]
                        )
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            if not keep_buckets:
                s3.delete_bucket(Bucket=name)


def _env(access_key: str, secret_key: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SHARDFLEET_ACCESS_KEY"] = access_key
    env["SHARDFLEET_SECRET_KEY"] = secret_key
    return env


def _stop(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def _standalone(
    data: Path, drives: int, ec: str, access_key: str, secret_key: str, timeout: float
) -> Iterator[S3Server]:
    log_path = data / "node.log"
    cmd = [
        sys.executable, "-m", "shardfleet.node.main", "serve",
        "--data", str(data / "drives"), "--drives", str(drives), "--ec", ec,
        "--address", "127.0.0.1:0", "--log-level", "warning",
    ]  # fmt: skip
    with open(log_path, "wb") as log:  # logs go to a file: never an unread pipe
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, env=_env(access_key, secret_key)
        )
    try:
        found: list[str] = []
        ready = threading.Event()

        def drain() -> None:  # reads the banner, then keeps the pipe from filling
            assert proc.stdout is not None
            for raw in proc.stdout:
                if not found and (m := _ENDPOINT.search(raw.decode(errors="replace"))):
                    found.append(m[1])
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True, name="shardfleet-banner").start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.01):
            if time.monotonic() > deadline:
                break
        if not found:
            _stop(proc)
            raise RuntimeError(
                "shardfleet did not start:\n" + log_path.read_text(errors="replace")[-4000:]
            )
        yield S3Server([found[0]], access_key, secret_key, REGION, data, [proc.pid])
    finally:
        _stop(proc)


@contextlib.contextmanager
def _cluster(
    data: Path,
    nodes: int,
    drives: int,
    ec: str,
    access_key: str,
    secret_key: str,
    timeout: float,
) -> Iterator[S3Server]:
    from shardfleet.node.devcluster import DevCluster, DevClusterSpec, free_base_port

    spec = DevClusterSpec(
        nodes=nodes,
        drives_per_node=drives,
        ec=ec,
        data=data / "cluster",
        base_port=free_base_port(nodes),
        heartbeat=0.5,
        offline_after=5.0,
    )
    cluster = DevCluster(spec, env=_env(access_key, secret_key))
    try:
        cluster.start(timeout=timeout)
        yield S3Server(list(cluster.endpoints), access_key, secret_key, REGION, data, cluster.pids)
    finally:
        cluster.stop()


@contextlib.contextmanager
def serve(
    *,
    nodes: int = 0,
    drives: int | None = None,
    ec: str = "2+2",
    data: Path | str | None = None,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    timeout: float = 60.0,
) -> Iterator[S3Server]:
    """A real shardfleet for the body of the `with`: a standalone node (`nodes=0`, the
    default: `drives` drives, 4 unless given) or a dev cluster of `nodes` processes with
    `drives` drives each (2 unless given). Drives live in `data` (kept) or a temporary
    directory (removed at the end). Raises RuntimeError with the node's log if it does
    not start within `timeout` seconds."""
    own = data is None
    root = Path(tempfile.mkdtemp(prefix="shardfleet-")) if own else Path(data)  # type: ignore[arg-type]
    root.mkdir(parents=True, exist_ok=True)
    try:
        if nodes:
            with _cluster(root, nodes, drives or 2, ec, access_key, secret_key, timeout) as srv:
                yield srv
        else:
            with _standalone(root, drives or 4, ec, access_key, secret_key, timeout) as srv:
                yield srv
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def serve_async(**kwargs: Any) -> AsyncIterator[S3Server]:
    """`serve` for async code: starting and stopping run in a thread, so the event loop
    (and an aiohttp or aiobotocore client on it) keeps running meanwhile."""
    cm = serve(**kwargs)
    server = await asyncio.to_thread(cm.__enter__)
    try:
        yield server
    except BaseException:
        if not await asyncio.to_thread(cm.__exit__, *sys.exc_info()):
            raise
    else:
        await asyncio.to_thread(cm.__exit__, None, None, None)
