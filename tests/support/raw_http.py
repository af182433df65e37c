"""Every bad input gets its S3 error code and XML body, and stores nothing.

Requests boto3 would refuse to build (or would fix up for us) are signed here with
botocore's S3SigV4Auth and written byte for byte to a raw socket, so each test controls
exactly what reaches the server: headers, framing, and how much of the body arrives. Every
error reply is checked for the shape S3 clients rely on (status, x-amz-request-id, an
<Error> document with Code, Message and the same RequestId; no body for HEAD), and every
rejected write is followed by a look at the bucket: no new key, the old bytes still there on
an overwrite, and no staged shards left behind on any drive.
"""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.support.nodeproc import NodeProcess

REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STREAMED = 300 * 1024  # above the 128 KiB inline limit: the striped, staged write path


# -- raw HTTP ------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Signer(S3SigV4Auth):
    """S3SigV4Auth that signs whatever x-amz-content-sha256 value the test chooses."""

    def __init__(self, credentials: Credentials, region: str, payload_hash: str | None) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        if self._payload_hash is not None:
            return self._payload_hash
        return super().payload(request)


def _parse_reply(method: str, data: bytes) -> Reply:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"incomplete HTTP response head: {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert "chunked" not in headers.get("transfer-encoding", ""), headers
    if method == "HEAD":
        assert body == b"", f"HEAD response carried a body: {body[:200]!r}"
    elif (length := headers.get("content-length")) is not None:
        assert len(body) == int(length), (len(body), length)
    return Reply(status, headers, body)


class RawClient:
    def __init__(self, endpoint: str) -> None:
        parts = urlsplit(endpoint)
        assert parts.hostname is not None and parts.port is not None
        self.endpoint = endpoint
        self.netloc = parts.netloc
        self.address = (parts.hostname, parts.port)

    def sign(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        *,
        payload_hash: str | None = None,
        access_key: str = DEV_ACCESS_KEY,
        secret_key: str = DEV_SECRET_KEY,
        region: str = REGION,
    ) -> dict[str, str]:
        """Headers (Host, X-Amz-Date, x-amz-content-sha256, Authorization) for the request."""
        all_headers = {"Host": self.netloc, **(headers or {})}
        req = AWSRequest(method=method, url=self.endpoint + target, data=body, headers=all_headers)
        _Signer(Credentials(access_key, secret_key), region, payload_hash).add_auth(req)
        return dict(req.headers.items())

    def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        parts: Sequence[bytes] = (),
        *,
        half_close: bool = False,
        timeout: float = 20.0,
    ) -> Reply | None:
        """Writes exactly these bytes; None when the server closed without answering."""
        head = f"{method} {target} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "connection")
        head += "Connection: close\r\n\r\n"
        data = bytearray()
        with socket.create_connection(self.address, timeout=timeout) as sock:
            try:
                sock.sendall(head.encode("latin-1"))
                for part in parts:
                    sock.sendall(part)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early and stopped reading; its answer may be queued
            try:
                while chunk := sock.recv(1 << 16):
                    data += chunk
            except ConnectionResetError:
                pass
        if not data:
            return None
        return _parse_reply(method, bytes(data))

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        **sign_kwargs: object,
    ) -> Reply:
        """A complete, correctly framed request, signed unless the test says otherwise."""
        all_headers = dict(headers or {})
        if body or method in ("PUT", "POST"):
            all_headers.setdefault("Content-Length", str(len(body)))
        signed = self.sign(method, target, all_headers, body, **sign_kwargs)  # type: ignore[arg-type]
        reply = self.send(method, target, signed, [body] if body else [])
        assert reply is not None, f"{method} {target}: connection closed without a response"
        return reply


def path(bucket: str, key: str = "") -> str:
    return f"/{bucket}/{quote(key, safe='/~')}" if key else f"/{bucket}"


def expect_error(
    reply: Reply | None, status: int, code: str | None, method: str = "GET"
) -> ET.Element | None:
    """The S3 error shape: status, request id header, and (not for HEAD) the XML document.
    code=None accepts any Code."""
    assert reply is not None, f"expected {status} {code}, the connection closed without a reply"
    assert reply.status == status, (reply.status, reply.body[:500])
    request_id = reply.header("x-amz-request-id")
    assert request_id, reply.headers
    if method == "HEAD":
        assert reply.body == b""
        return None
    assert (reply.header("content-type") or "").startswith("application/xml"), reply.headers
    root = ET.fromstring(reply.body)
    assert root.tag == "Error", reply.body
    assert root.findtext("Code") == code if code is not None else root.findtext("Code"), reply.body
    assert root.findtext("Message"), reply.body
    assert root.findtext("RequestId") == request_id, reply.body
    return root


# -- fixtures and "stored nothing" checks ------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(
        tmp_path_factory.mktemp("bad-input") / "node", args=["--body-stall-timeout", "2"]
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def s3(server: NodeProcess):
    return server.client()


@pytest.fixture(scope="module")
def raw(server: NodeProcess) -> RawClient:
    return RawClient(server.endpoint)


@pytest.fixture
def bucket(s3) -> str:
    name = f"bad-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def keys_in(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def get_bytes(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def staged_dirs(server: NodeProcess) -> list[Path]:
    return [
        p for i in range(1, server.drives + 1) for p in (server.drive_path(i) / "tmp").iterdir()
    ]


def version_dirs(server: NodeProcess, bucket: str) -> list[Path]:
    found = []
    for i in range(1, server.drives + 1):
        root = server.drive_path(i) / "data" / bucket
        if root.is_dir():
            found += [v for d in root.iterdir() for v in d.iterdir()]
    return found


def assert_nothing_staged(server: NodeProcess, bucket: str, versions: int = 0) -> None:
    """No shards left under tmp/ on any drive, and only the expected committed versions
    (per drive) under data/<bucket>. Aborts finish before the reply, but a request cut off
    by a closed connection may still be unwinding: allow it a few seconds."""
    deadline = time.monotonic() + 10
    while True:
        staged, committed = staged_dirs(server), version_dirs(server, bucket)
        if not staged and len(committed) == versions * server.drives:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left on the drives: staged={staged} committed={committed}")
        time.sleep(0.05)


def assert_absent(s3, bucket: str, key: str) -> None:
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key=key)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert key not in keys_in(s3, bucket)


def assert_stored_nothing(server: NodeProcess, s3, bucket: str, key: str) -> None:
    assert_absent(s3, bucket, key)
    assert keys_in(s3, bucket) == []
    assert_nothing_staged(server, bucket)


def assert_still_old(server: NodeProcess, s3, bucket: str, key: str, old: bytes) -> None:
    assert keys_in(s3, bucket) == [key]
    assert get_bytes(s3, bucket, key) == old
    assert_nothing_staged(server, bucket, versions=1 if len(old) > 128 * 1024 else 0)


def payload(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"{seed}".encode()).digest() * 8  # 256 bytes, not all one value
    return (block * (size // len(block) + 1))[:size]


def _flip_hex(sig: str, at: int = 10) -> str:
    return sig[:at] + ("0" if sig[at] != "0" else "1") + sig[at + 1 :]
