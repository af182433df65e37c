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

import base64
import hashlib
import hmac
import socket
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
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


# -- authentication ----------------------------------------------------------------------------
def _mutate_authorization(headers: dict[str, str], how: str) -> dict[str, str]:
    auth = headers["Authorization"]
    scheme, _, rest = auth.partition(" ")
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    date = headers["X-Amz-Date"][:8]
    if how == "garbage":
        auth = "AWS4-HMAC-SHA256 garbage"
    elif how == "no-signature":
        auth = (
            f"{scheme} Credential={fields['Credential']}, SignedHeaders={fields['SignedHeaders']}"
        )
    elif how == "no-credential":
        auth = f"{scheme} SignedHeaders={fields['SignedHeaders']}, Signature={fields['Signature']}"
    elif how == "short-signature":
        auth = auth.replace(fields["Signature"], fields["Signature"][:40])
    elif how == "bad-terminator":
        auth = auth.replace("/aws4_request", "/aws4_reqest")
    elif how == "bad-service":
        auth = auth.replace("/s3/aws4_request", "/ec2/aws4_request")
    elif how == "bad-scope-date":
        auth = auth.replace(f"/{date}/", "/19990101/")
    elif how == "wrong-region":
        auth = auth.replace(f"/{REGION}/", "/eu-west-1/")
    elif how == "host-not-signed":
        signed = ";".join(h for h in fields["SignedHeaders"].split(";") if h != "host")
        auth = auth.replace(fields["SignedHeaders"], signed)
    elif how == "uppercase-signed-headers":
        auth = auth.replace(fields["SignedHeaders"], fields["SignedHeaders"].upper())
    else:
        raise AssertionError(how)
    return {**headers, "Authorization": auth}


@pytest.mark.parametrize(
    "how",
    [
        "garbage",
        "no-signature",
        "no-credential",
        "short-signature",
        "bad-terminator",
        "bad-service",
        "bad-scope-date",
        "wrong-region",
        "host-not-signed",
        "uppercase-signed-headers",
    ],
)
def test_malformed_authorization_header(server, s3, raw, bucket, how):
    body = b"should not be stored"
    target = path(bucket, "k")
    headers = raw.sign("PUT", target, {"Content-Length": str(len(body))}, body)
    reply = raw.send("PUT", target, _mutate_authorization(headers, how), [body])
    expect_error(reply, 400, "AuthorizationHeaderMalformed")
    assert_stored_nothing(server, s3, bucket, "k")


def test_wrong_secret_key(server, s3, raw, bucket):
    reply = raw.request("PUT", path(bucket, "k"), b"data", secret_key="not-the-secret")
    root = expect_error(reply, 403, "SignatureDoesNotMatch")
    assert root is not None and root.findtext("AWSAccessKeyId") == DEV_ACCESS_KEY
    assert_stored_nothing(server, s3, bucket, "k")


def test_unknown_access_key(server, s3, raw, bucket):
    reply = raw.request("PUT", path(bucket, "k"), b"data", access_key="AKIDNOSUCHKEY")
    root = expect_error(reply, 403, "InvalidAccessKeyId")
    assert root is not None and root.findtext("AWSAccessKeyId") == "AKIDNOSUCHKEY"
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD", "DELETE"])
def test_no_authentication_at_all(server, s3, raw, bucket, method):
    s3.put_object(Bucket=bucket, Key="k", Body=b"old")
    body = b"new bytes" if method == "PUT" else b""
    headers = {"Host": raw.netloc}
    if method == "PUT":
        headers["Content-Length"] = str(len(body))
    reply = raw.send(method, path(bucket, "k"), headers, [body] if body else [])
    expect_error(reply, 403, "AccessDenied", method)
    assert get_bytes(s3, bucket, "k") == b"old"
    assert keys_in(s3, bucket) == ["k"]


def test_unsupported_authorization_scheme(server, s3, raw, bucket):
    headers = {"Host": raw.netloc, "Content-Length": "4", "Authorization": "AWS AKID:c2lnbmF0dXJl"}
    reply = raw.send("PUT", path(bucket, "k"), headers, [b"data"])
    expect_error(reply, 403, "AccessDenied")
    assert_stored_nothing(server, s3, bucket, "k")


def _flip_hex(sig: str, at: int = 10) -> str:
    return sig[:at] + ("0" if sig[at] != "0" else "1") + sig[at + 1 :]


@pytest.mark.parametrize("how", ["signature", "signed-header", "path", "query", "method"])
def test_tampered_request(server, s3, raw, bucket, how):
    body = b"tampered"
    target = path(bucket, "k")
    headers = raw.sign(
        "PUT", target, {"Content-Length": str(len(body)), "x-amz-meta-owner": "alice"}, body
    )
    method = "PUT"
    if how == "signature":
        sig = headers["Authorization"].rsplit("Signature=", 1)[1]
        headers["Authorization"] = headers["Authorization"].replace(sig, _flip_hex(sig))
    elif how == "signed-header":
        headers["x-amz-meta-owner"] = "mallory"
    elif how == "path":
        target = path(bucket, "other")
    elif how == "query":
        target += "?x-id=PutObject"
    elif how == "method":
        method = "POST"  # POST /bucket/key is not an S3 operation, but auth runs first
    reply = raw.send(method, target, headers, [body])
    expect_error(reply, 403, "SignatureDoesNotMatch")
    assert_stored_nothing(server, s3, bucket, "k")
    assert_absent(s3, bucket, "other")


def test_signed_header_missing_from_request(server, s3, raw, bucket):
    headers = raw.sign(
        "PUT", path(bucket, "k"), {"Content-Length": "4", "x-amz-meta-a": "b"}, b"data"
    )
    del headers["x-amz-meta-a"]
    reply = raw.send("PUT", path(bucket, "k"), headers, [b"data"])
    expect_error(reply, 403, "SignatureDoesNotMatch")
    assert_stored_nothing(server, s3, bucket, "k")


def test_request_time_too_skewed(server, s3, raw, bucket, monkeypatch):
    an_hour_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: an_hour_ago)
    reply = raw.request("PUT", path(bucket, "k"), b"data")
    expect_error(reply, 403, "RequestTimeTooSkewed")
    monkeypatch.undo()
    assert_stored_nothing(server, s3, bucket, "k")


def test_missing_content_sha256_header(server, s3, raw, bucket):
    headers = raw.sign("PUT", path(bucket, "k"), {"Content-Length": "4"}, b"data")
    del headers["X-Amz-Content-SHA256"]
    reply = raw.send("PUT", path(bucket, "k"), headers, [b"data"])
    expect_error(reply, 400, "InvalidRequest")
    assert_stored_nothing(server, s3, bucket, "k")


def test_invalid_content_sha256_value(server, s3, raw, bucket):
    reply = raw.request("PUT", path(bucket, "k"), b"data", payload_hash="not-a-sha256")
    expect_error(reply, 400, "InvalidArgument")
    assert_stored_nothing(server, s3, bucket, "k")


# -- buckets -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["ab", "UPPER", "a..b", "192.168.1.1", "-abc", "abc-", "a" * 64, "a_b", "a.-b", "xn--abc"],
)
def test_create_bucket_invalid_name(s3, raw, name):
    reply = raw.request("PUT", f"/{name}")
    root = expect_error(reply, 400, "InvalidBucketName")
    assert root is not None and root.findtext("BucketName") == name
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert name not in names and name.lower() not in names
    expect_error(raw.request("HEAD", f"/{name}"), 404, "NoSuchBucket", "HEAD")


def test_bucket_name_limits_are_inclusive(s3, raw):
    for name in ("abc", "b" * 63):
        assert raw.request("PUT", f"/{name}").status == 200
        assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        s3.delete_bucket(Bucket=name)


def test_create_existing_bucket(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    reply = raw.request("PUT", f"/{bucket}")
    expect_error(reply, 409, "BucketAlreadyOwnedByYou")
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket=bucket)
    assert info.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    assert get_bytes(s3, bucket, "k") == b"kept"


def test_delete_non_empty_bucket(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    reply = raw.request("DELETE", f"/{bucket}")
    expect_error(reply, 409, "BucketNotEmpty")
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert get_bytes(s3, bucket, "k") == b"kept"


def test_missing_bucket(s3, raw):
    name = f"missing-{uuid.uuid4().hex[:12]}"
    expect_error(raw.request("GET", path(name, "k")), 404, "NoSuchBucket")
    expect_error(raw.request("GET", f"/{name}?list-type=2"), 404, "NoSuchBucket")
    expect_error(raw.request("PUT", path(name, "k"), b"data"), 404, "NoSuchBucket")
    expect_error(raw.request("PUT", path(name, "big"), payload(STREAMED)), 404, "NoSuchBucket")
    expect_error(raw.request("HEAD", path(name, "k")), 404, "NoSuchBucket", "HEAD")
    expect_error(raw.request("DELETE", f"/{name}"), 404, "NoSuchBucket")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=name, Key="k", Body=b"data")
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_missing_key(s3, raw, bucket):
    root = expect_error(raw.request("GET", path(bucket, "nope")), 404, "NoSuchKey")
    assert root is not None
    reply = raw.request("HEAD", path(bucket, "nope"))
    expect_error(reply, 404, "NoSuchKey", "HEAD")
    assert reply.header("content-length") in (None, "0")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="nope")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"


# -- keys --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["k" * 1025, "é" * 512 + "x", "€" * 342])
def test_key_too_long(server, s3, raw, bucket, key):
    assert len(key.encode()) > 1024
    reply = raw.request("PUT", path(bucket, key), b"data")
    expect_error(reply, 400, "KeyTooLongError")
    assert keys_in(s3, bucket) == []
    assert_nothing_staged(server, bucket)
    expect_error(raw.request("GET", path(bucket, key)), 400, "KeyTooLongError")


@pytest.mark.parametrize("key", ["k" * 1024, "é" * 512, "dir/" * 255 + "file"])
def test_key_of_exactly_1024_bytes(s3, raw, bucket, key):
    assert len(key.encode()) == 1024
    assert raw.request("PUT", path(bucket, key), b"fits").status == 200
    assert keys_in(s3, bucket) == [key]
    assert get_bytes(s3, bucket, key) == b"fits"
    s3.put_object(Bucket=bucket, Key=key, Body=b"boto3 too")
    assert get_bytes(s3, bucket, key) == b"boto3 too"


# -- ranges ------------------------------------------------------------------------------------
@pytest.fixture
def ten(s3, bucket) -> str:
    s3.put_object(Bucket=bucket, Key="ten", Body=b"0123456789")
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    return bucket


@pytest.mark.parametrize("rng", ["bytes=100-", "bytes=10-", "bytes=10-20", "bytes=-0"])
def test_unsatisfiable_range(raw, ten, rng):
    root = expect_error(
        raw.request("GET", path(ten, "ten"), headers={"Range": rng}), 416, "InvalidRange"
    )
    assert root is not None
    expect_error(
        raw.request("HEAD", path(ten, "ten"), headers={"Range": rng}), 416, "InvalidRange", "HEAD"
    )




@pytest.mark.parametrize(
    "rng",
    [
        "bytes=0-0",
        "bytes=0-",
        "bytes=5-9",
        "bytes=-1",
        "bytes=-5",
    ],
)
def test_any_range_on_empty_object(raw, ten, rng):
    expect_error(
        raw.request("GET", path(ten, "empty"), headers={"Range": rng}), 416, "InvalidRange"
    )
    expect_error(
        raw.request("HEAD", path(ten, "empty"), headers={"Range": rng}), 416, "InvalidRange", "HEAD"
    )


@pytest.mark.parametrize(
    ("rng", "body", "content_range"),
    [
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=-100", b"0123456789", "bytes 0-9/10"),
        ("bytes=9-", b"9", "bytes 9-9/10"),
        ("bytes=2-4", b"234", "bytes 2-4/10"),
        ("bytes=8-100", b"89", "bytes 8-9/10"),
    ],
)
def test_satisfiable_range(s3, raw, ten, rng, body, content_range):
    reply = raw.request("GET", path(ten, "ten"), headers={"Range": rng})
    assert reply.status == 206
    assert reply.body == body
    assert reply.header("content-range") == content_range
    assert reply.header("content-length") == str(len(body))
    head = raw.request("HEAD", path(ten, "ten"), headers={"Range": rng})
    assert (head.status, head.header("content-range")) == (206, content_range)
    got = s3.get_object(Bucket=ten, Key="ten", Range=rng)
    assert got["Body"].read() == body and got["ContentRange"] == content_range


def test_range_on_streamed_object(s3, raw, bucket):
    data = payload(STREAMED, seed=7)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    reply = raw.request("GET", path(bucket, "big"), headers={"Range": "bytes=-3"})
    assert (reply.status, reply.body) == (206, data[-3:])
    assert reply.header("content-range") == f"bytes {STREAMED - 3}-{STREAMED - 1}/{STREAMED}"
    reply = raw.request("GET", path(bucket, "big"), headers={"Range": f"bytes={STREAMED}-"})
    expect_error(reply, 416, "InvalidRange")


# -- x-amz-content-sha256 ----------------------------------------------------------------------
@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_content_sha256_mismatch(server, s3, raw, bucket, size, existing):
    old = payload(size, seed=1)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    body = payload(size, seed=2)
    wrong = hashlib.sha256(body + b"!").hexdigest()
    root = expect_error(
        raw.request("PUT", path(bucket, "k"), body, payload_hash=wrong),
        400,
        "XAmzContentSHA256Mismatch",
    )
    assert root is not None
    assert root.findtext("ClientComputedContentSHA256") == wrong
    assert root.findtext("S3ComputedContentSHA256") == hashlib.sha256(body).hexdigest()
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


def test_content_sha256_match_is_accepted(s3, raw, bucket):
    body = payload(STREAMED, seed=3)
    reply = raw.request(
        "PUT", path(bucket, "k"), body, payload_hash=hashlib.sha256(body).hexdigest()
    )
    assert reply.status == 200
    assert get_bytes(s3, bucket, "k") == body


# -- aws-chunked bodies ------------------------------------------------------------------------
CHUNK = 64 * 1024


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def unsigned_trailer_body(data: bytes, checksum: str | None = None) -> tuple[bytes, bytes]:
    """(everything before the final 0-chunk, the final chunk + trailer + end)."""
    chunks = b"".join(
        f"{len(data[i : i + CHUNK]):x}\r\n".encode() + data[i : i + CHUNK] + b"\r\n"
        for i in range(0, len(data), CHUNK)
    )
    tail = f"0\r\nx-amz-checksum-crc32:{checksum or crc32_b64(data)}\r\n\r\n".encode()
    return chunks, tail


def unsigned_trailer_headers(data: bytes, content_length: int) -> dict[str, str]:
    return {
        "Content-Encoding": "aws-chunked",
        "Content-Length": str(content_length),
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }


def put_unsigned_trailer(raw, target, data, parts, content_length, *, half_close=False):
    headers = raw.sign(
        "PUT",
        target,
        unsigned_trailer_headers(data, content_length),
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    )
    return raw.send("PUT", target, headers, parts, half_close=half_close)


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
def test_unsigned_trailer_upload_is_accepted(s3, raw, bucket, size):
    data = payload(size, seed=4)
    chunks, tail = unsigned_trailer_body(data)
    reply = put_unsigned_trailer(
        raw, path(bucket, "k"), data, [chunks, tail], len(chunks) + len(tail)
    )
    assert reply is not None and reply.status == 200, reply
    assert get_bytes(s3, bucket, "k") == data


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_aws_chunked_cut_off_before_final_chunk(server, s3, raw, bucket, size, existing):
    """Content-Length announces the whole framing; the client stops before the 0-chunk and
    half-closes: the HTTP body is short, so IncompleteBody or a dropped connection."""
    old = payload(size, seed=5)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    data = payload(size, seed=6)
    chunks, tail = unsigned_trailer_body(data)
    reply = put_unsigned_trailer(
        raw, path(bucket, "k"), data, [chunks], len(chunks) + len(tail), half_close=True
    )
    if reply is not None:
        expect_error(reply, 400, "IncompleteBody")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
def test_stalled_body_gets_request_timeout(server, s3, raw, bucket, size):
    """A client that stops sending mid-body (without closing) is answered once the stall
    timeout passes (2 s for this node), and nothing is stored. A client that half-closes
    its socket instead just loses the connection (aiohttp closes on EOF): covered above."""
    data = payload(size, seed=6)
    chunks, tail = unsigned_trailer_body(data)
    reply = put_unsigned_trailer(raw, path(bucket, "k"), data, [chunks], len(chunks) + len(tail))
    expect_error(reply, 400, "RequestTimeout")
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
def test_aws_chunked_framing_without_final_chunk(server, s3, raw, bucket, size):
    """The HTTP body is complete (Content-Length matches) but the aws-chunked framing inside
    it never reaches the 0-chunk: the decoder, not the transport, must refuse it."""
    data = payload(size, seed=8)
    chunks, _ = unsigned_trailer_body(data)
    reply = put_unsigned_trailer(raw, path(bucket, "k"), data, [chunks], len(chunks))
    expect_error(reply, 400, "IncompleteBody")
    assert_stored_nothing(server, s3, bucket, "k")


def test_aws_chunked_fewer_bytes_than_decoded_length(server, s3, raw, bucket):
    data = payload(1000, seed=9)
    chunks, tail = unsigned_trailer_body(data[:600], checksum=crc32_b64(data[:600]))
    reply = put_unsigned_trailer(
        raw, path(bucket, "k"), data, [chunks, tail], len(chunks) + len(tail)
    )
    expect_error(reply, 400, "IncompleteBody")
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_aws_chunked_bad_trailer_checksum(server, s3, raw, bucket, size, existing):
    old = payload(size, seed=10)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    data = payload(size, seed=11)
    chunks, tail = unsigned_trailer_body(data, checksum=crc32_b64(data + b"x"))
    reply = put_unsigned_trailer(
        raw, path(bucket, "k"), data, [chunks, tail], len(chunks) + len(tail)
    )
    expect_error(reply, 400, "BadDigest")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


def _signing_key(secret: str, date: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def signed_chunked_body(
    pieces: list[bytes], *, amz_date: str, seed: str, secret: str, corrupt: int | None = None
) -> bytes:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD framing (AWS SigV4 chunked upload): each chunk,
    then the final empty one, signed over the previous signature and the chunk's SHA-256.
    `corrupt` is the index of a chunk whose signature is sent wrong (len(pieces) = final)."""
    key = _signing_key(secret, amz_date[:8])
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    previous, out = seed, bytearray()
    for i, piece in enumerate([*pieces, b""]):
        sts = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(piece).hexdigest(),
            )
        )
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        sent = _flip_hex(sig) if i == corrupt else sig
        out += f"{len(piece):x};chunk-signature={sent}\r\n".encode() + piece + b"\r\n"
        previous = sig
    return bytes(out)


def put_signed_chunked(raw, target, data, *, corrupt=None, chunk=CHUNK):
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    # Every signature is 64 hex digits, so the framing's length is known before signing.
    length = len(
        signed_chunked_body(pieces, amz_date="20000101T000000Z", seed="0" * 64, secret="x")
    )
    headers = raw.sign(
        "PUT",
        target,
        {
            "Content-Encoding": "aws-chunked",
            "Content-Length": str(length),
            "x-amz-decoded-content-length": str(len(data)),
        },
        payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    )
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    body = signed_chunked_body(
        pieces, amz_date=headers["X-Amz-Date"], seed=seed, secret=DEV_SECRET_KEY, corrupt=corrupt
    )
    assert len(body) == length
    return raw.send("PUT", target, headers, [body])


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
def test_signed_chunked_upload_is_accepted(s3, raw, bucket, size):
    data = payload(size, seed=12)
    reply = put_signed_chunked(raw, path(bucket, "k"), data)
    assert reply is not None and reply.status == 200, reply
    assert get_bytes(s3, bucket, "k") == data


@pytest.mark.parametrize(
    ("size", "corrupt"),
    [(11, 0), (11, 1), (STREAMED, 0), (STREAMED, 3), (STREAMED, 5)],
    ids=["inline-first", "inline-final", "streamed-first", "streamed-middle", "streamed-final"],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_signed_chunked_wrong_chunk_signature(server, s3, raw, bucket, size, corrupt, existing):
    old = payload(size, seed=13)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    data = payload(size, seed=14)
    assert corrupt <= -(-size // CHUNK)  # STREAMED is 5 chunks: index 5 is the final 0-chunk
    reply = put_signed_chunked(raw, path(bucket, "k"), data, corrupt=corrupt)
    expect_error(reply, 403, "SignatureDoesNotMatch")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


# -- bodies shorter than Content-Length ----------------------------------------------------------
@pytest.mark.parametrize(
    ("declared", "sent"),
    [(1000, 400), (3 << 20, 1 << 20)],
    ids=["inline", "streamed"],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_body_shorter_than_content_length(server, s3, raw, bucket, declared, sent, existing):
    old = payload(declared, seed=15)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    target = path(bucket, "k")
    headers = raw.sign(
        "PUT", target, {"Content-Length": str(declared)}, payload_hash="UNSIGNED-PAYLOAD"
    )
    reply = raw.send("PUT", target, headers, [payload(sent, seed=16)], half_close=True)
    if reply is not None:
        expect_error(reply, 400, "IncompleteBody")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


def test_signed_body_shorter_than_content_length(server, s3, raw, bucket):
    body = payload(1000, seed=17)
    target = path(bucket, "k")
    headers = raw.sign("PUT", target, {"Content-Length": "1000"}, body)
    reply = raw.send("PUT", target, headers, [body[:400]], half_close=True)
    if reply is not None:
        expect_error(reply, 400, "IncompleteBody")
    assert_stored_nothing(server, s3, bucket, "k")


# -- Content-MD5 -------------------------------------------------------------------------------
def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_content_md5_mismatch(server, s3, raw, bucket, size, existing):
    old = payload(size, seed=18)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    body = payload(size, seed=19)
    reply = raw.request("PUT", path(bucket, "k"), body, {"Content-MD5": md5_b64(body + b"!")})
    expect_error(reply, 400, "BadDigest")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        base64.b64encode(b"x" * 15).decode(),
        base64.b64encode(b"x" * 17).decode(),
        "",
        hashlib.md5(b"hex is not base64").hexdigest(),
    ],
    ids=["not-base64", "15-bytes", "17-bytes", "empty", "hex"],
)
def test_malformed_content_md5(server, s3, raw, bucket, value):
    reply = raw.request("PUT", path(bucket, "k"), b"some data", {"Content-MD5": value})
    expect_error(reply, 400, "InvalidDigest")
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("size", [0, 11, STREAMED], ids=["empty", "inline", "streamed"])
def test_content_md5_match_is_accepted(s3, raw, bucket, size):
    body = payload(size, seed=20)
    reply = raw.request("PUT", path(bucket, "k"), body, {"Content-MD5": md5_b64(body)})
    assert reply.status == 200
    assert reply.header("etag") == f'"{hashlib.md5(body).hexdigest()}"'
    assert get_bytes(s3, bucket, "k") == body


# -- DeleteObjects -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"<Delete><Object><Key>a</Key></Object>",
        b"this is not xml",
        b"",
        b"<NotDelete><Object><Key>a</Key></Object></NotDelete>",
        b"<Delete><Object><VersionId>x</VersionId></Object></Delete>",
        b"<Delete></Delete>",
        b'<!DOCTYPE x [<!ENTITY e "a">]><Delete><Object><Key>&e;</Key></Object></Delete>',
    ],
    ids=["unclosed", "not-xml", "empty", "wrong-root", "no-key", "no-objects", "dtd"],
)
def test_delete_objects_malformed_xml(s3, raw, bucket, body):
    s3.put_object(Bucket=bucket, Key="a", Body=b"kept")
    headers = {"Content-MD5": md5_b64(body)}
    expect_error(raw.request("POST", f"/{bucket}?delete", body, headers), 400, "MalformedXML")
    assert keys_in(s3, bucket) == ["a"]
    assert get_bytes(s3, bucket, "a") == b"kept"


_DELETE_A = b"<Delete><Object><Key>a</Key></Object></Delete>"


def test_delete_objects_content_md5_mismatch(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"kept")
    reply = raw.request("POST", f"/{bucket}?delete", _DELETE_A, {"Content-MD5": md5_b64(b"other")})
    try:
        expect_error(reply, 400, "BadDigest")
    finally:
        assert keys_in(s3, bucket) == ["a"]


def test_delete_objects_malformed_content_md5(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"kept")
    reply = raw.request("POST", f"/{bucket}?delete", _DELETE_A, {"Content-MD5": "garbage!"})
    try:
        expect_error(reply, 400, "InvalidDigest")
    finally:
        assert keys_in(s3, bucket) == ["a"]


def test_delete_objects_content_sha256_mismatch(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"kept")
    wrong = hashlib.sha256(_DELETE_A + b" ").hexdigest()
    reply = raw.request("POST", f"/{bucket}?delete", _DELETE_A, payload_hash=wrong)
    expect_error(reply, 400, "XAmzContentSHA256Mismatch")
    assert keys_in(s3, bucket) == ["a"]


def test_delete_objects_well_formed_control(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"gone")
    body = b"<Delete><Object><Key>a</Key></Object></Delete>"
    reply = raw.request("POST", f"/{bucket}?delete", body, {"Content-MD5": md5_b64(body)})
    assert reply.status == 200
    assert keys_in(s3, bucket) == []


# -- other refusals: lengths, metadata, unsupported operations ---------------------------------
def test_put_without_content_length(server, s3, raw, bucket):
    target = path(bucket, "k")
    headers = raw.sign("PUT", target, payload_hash="UNSIGNED-PAYLOAD")
    expect_error(raw.send("PUT", target, headers), 411, "MissingContentLength")
    headers = raw.sign(
        "PUT", target, {"Transfer-Encoding": "chunked"}, payload_hash="UNSIGNED-PAYLOAD"
    )
    reply = raw.send("PUT", target, headers, [b"4\r\ndata\r\n0\r\n\r\n"])
    expect_error(reply, 411, "MissingContentLength")
    assert_stored_nothing(server, s3, bucket, "k")


def test_user_metadata_too_large(server, s3, raw, bucket):
    reply = raw.request("PUT", path(bucket, "k"), b"data", {"x-amz-meta-big": "v" * 2100})
    expect_error(reply, 400, "MetadataTooLarge")
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [
        ("PUT", "/{bucket}/k?acl", 501, "NotImplemented"),
        ("PUT", "/{bucket}/k?tagging", 501, "NotImplemented"),
        ("POST", "/{bucket}/k?uploads", 501, "NotImplemented"),
        ("PATCH", "/{bucket}/k", 405, "MethodNotAllowed"),
        ("DELETE", "/", 405, "MethodNotAllowed"),
    ],
)
def test_unsupported_operations(server, s3, raw, bucket, method, target, status, code):
    body = b"<x/>" if method in ("PUT", "POST") else b""
    reply = raw.request(method, target.format(bucket=bucket), body)
    expect_error(reply, status, code)
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("how", ["header-too-long", "bad-content-length"])
def test_http_level_errors_are_s3_errors(server, s3, raw, bucket, how):
    target = path(bucket, "k")
    if how == "header-too-long":
        headers = raw.sign(
            "PUT", target, {"Content-Length": "4", "x-amz-meta-big": "v" * 9000}, b"data"
        )
    else:
        headers = raw.sign("PUT", target, {"Content-Length": "four"}, b"data")
    expect_error(raw.send("PUT", target, headers, [b"data"]), 400, None)
    assert_stored_nothing(server, s3, bucket, "k")
