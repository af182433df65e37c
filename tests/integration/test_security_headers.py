"""Browser security headers on every response of a real node: S3 answers (200, 206, 404
errors, HEAD, streamed GETs), parse errors, the admin API, /health, /metrics; HSTS only
over HTTPS."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError

from shardfleet.transport.tls import create_ca, issue_node_cert
from tests.support.nodeproc import NodeProcess
from tests.support.raw_http import RawClient

pytestmark = pytest.mark.timeout(120)

EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-xss-protection": "1; mode=block",
    "vary": "Origin",
}
HSTS = "max-age=31536000; includeSubDomains"


def check(headers: dict[str, str], *, https: bool = False) -> None:
    lower = {k.lower(): v for k, v in headers.items()}
    for name, value in EXPECTED.items():
        assert lower.get(name) == value, (name, headers)
    if https:
        assert lower.get("strict-transport-security") == HSTS, headers
    else:
        assert "strict-transport-security" not in lower, headers


def http_get(url: str, *, method: str = "GET", context: ssl.SSLContext | None = None):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items())


@pytest.fixture
def bucket(s3) -> str:
    name = f"sec-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


def test_s3_answers(s3, bucket) -> None:
    put = s3.put_object(Bucket=bucket, Key="small", Body=b"hello")
    check(put["ResponseMetadata"]["HTTPHeaders"])
    big = bytes(range(256)) * 2048  # 512 KiB: striped, streamed from the drives
    s3.put_object(Bucket=bucket, Key="big", Body=big)

    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["Body"].read() == big
    check(got["ResponseMetadata"]["HTTPHeaders"])

    ranged = s3.get_object(Bucket=bucket, Key="big", Range="bytes=1000-299999")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["Body"].read() == big[1000:300000]
    check(ranged["ResponseMetadata"]["HTTPHeaders"])

    head = s3.head_object(Bucket=bucket, Key="small")
    check(head["ResponseMetadata"]["HTTPHeaders"])
    check(s3.list_objects_v2(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"])


def test_errors(s3, bucket, node) -> None:
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="missing")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    check(info.value.response["ResponseMetadata"]["HTTPHeaders"])

    with pytest.raises(ClientError) as info:  # HEAD: an error without a body
        s3.head_object(Bucket=bucket, Key="missing")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    check(info.value.response["ResponseMetadata"]["HTTPHeaders"])

    status, headers = http_get(f"{node.endpoint}/{bucket}/x?torrent")  # unsigned
    assert status in (403, 501)
    check(headers)


def test_parse_errors_before_any_handler(node) -> None:
    """A head aiohttp's parser rejects is answered by the server, not the router."""
    raw = RawClient(node.endpoint)
    with socket.create_connection(raw.address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    assert head[0].split(" ")[1] == "400", head
    check(dict(line.split(": ", 1) for line in head[1:]))


def test_health_metrics_and_admin(node) -> None:
    for path in ("/health/live", "/health/ready", "/metrics", "/_shardfleet/admin/status"):
        for method in ("GET", "HEAD"):
            status, headers = http_get(node.endpoint + path, method=method)
            assert status in (200, 403), (path, method, status)
            check(headers)
    signed = RawClient(node.endpoint).request("GET", "/_shardfleet/admin/status")
    assert signed.status == 200
    check(signed.headers)


def test_a_handlers_vary_is_kept() -> None:
    from multidict import CIMultiDict

    from shardfleet.node.s3.server import add_security_headers

    for before, after in [
        (None, "Origin"),
        ("Accept-Encoding", "Accept-Encoding, Origin"),
        ("origin", "origin"),
        ("Origin, Access-Control-Request-Method", "Origin, Access-Control-Request-Method"),
        ("*", "*"),
    ]:
        headers: CIMultiDict[str] = CIMultiDict()
        if before is not None:
            headers["Vary"] = before
        add_security_headers(headers, https=False)
        assert headers.getall("Vary") == [after]
        assert "Strict-Transport-Security" not in headers
    headers = CIMultiDict()
    add_security_headers(headers, https=True)
    assert headers["Strict-Transport-Security"] == HSTS


def test_hsts_over_https(node_factory, tmp_path) -> None:
    create_ca(tmp_path / "ca", "sec-test")
    files = issue_node_cert(tmp_path / "ca", "node", ["127.0.0.1"], tmp_path / "node")
    conf = tmp_path / "tls.toml"
    conf.write_text(f'tls_cert = "{files.cert}"\ntls_key = "{files.key}"\n')
    node: NodeProcess = node_factory("tls", args=["--config", str(conf)])
    assert node.endpoint.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca" / "ca.crt"))
    for path in ("/health/live", "/metrics", "/nosuchbucket"):
        status, headers = http_get(node.endpoint + path, context=ctx)
        assert status in (200, 403, 404), (path, status)
        check(headers, https=True)
