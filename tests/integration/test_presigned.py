"""Presigned URLs against a real node, answered as S3 answers them.

X-Amz-Expires runs 1..604800. Outside it S3 says (and so must we, status, Code and Message):

    not a number      400 AuthorizationQueryParametersError  X-Amz-Expires should be a number
    negative          400 AuthorizationQueryParametersError  X-Amz-Expires must be non-negative
    over a week       400 AuthorizationQueryParametersError  X-Amz-Expires must be less than
                                                             a week (in seconds); that is, ...
    0, or expired     403 AccessDenied  Request has expired   + X-Amz-Expires, Expires, ServerTime
    signed in future  403 AccessDenied  Request is not yet valid + X-Amz-Date, Expires, ServerTime
    other method      403 SignatureDoesNotMatch (the method is signed)
    SigV2, expired    403 AccessDenied  Request has expired   + Expires, ServerTime

and a refused request changes nothing: a refused PUT stores no object and leaves an existing
one as it was, a refused DELETE deletes nothing.

URLs with values boto3 will not sign (its CRT signer refuses ExpiresIn <= 0) are signed with
botocore's pure-Python query signer, so the signature itself is always right and only the
value under test is wrong.
"""

from __future__ import annotations

import http.client
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.support.nodeproc import NodeProcess

BUCKET = "presigned"
ORIGINAL = b"the original bytes"
NOT_A_NUMBER = "X-Amz-Expires should be a number"
NEGATIVE = "X-Amz-Expires must be non-negative"
TOO_LARGE = (
    "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires "
    "must be less than 604800 seconds"
)
ISO = "%Y-%m-%dT%H:%M:%SZ"
SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for the module (as tests/conftest.py's, but started once: every test here
    only reads it or writes keys of its own)."""
    proc = NodeProcess(tmp_path_factory.mktemp("presigned") / "node")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def s3(node: NodeProcess):
    client = node.client()
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def key(s3) -> str:
    """A key of this test's own holding ORIGINAL."""
    name = f"k-{uuid.uuid4().hex[:12]}"
    s3.put_object(Bucket=BUCKET, Key=name, Body=ORIGINAL)
    return name


# -- requests ------------------------------------------------------------------------------
class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def xml(self) -> ET.Element:
        assert self.body.startswith(b"<?xml"), self.body
        return ET.fromstring(self.body)

    def field(self, name: str) -> str | None:
        return self.xml.findtext(name)

    def tags(self) -> list[str]:
        return [child.tag for child in self.xml]


def send(method: str, url: str, body: bytes | None = None) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=15)
    try:
        target = parts.path + ("?" + parts.query if parts.query else "")
        headers = {} if body is None else {"Content-Length": str(len(body))}
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def hand_signed(
    node: NodeProcess, method: str, key: str, expires: str, at: datetime | None = None
) -> str:
    """A presigned URL for `method` on `key` carrying `expires` verbatim, signed at `at`."""
    req = AWSRequest(method=method, url=f"{node.endpoint}/{BUCKET}/{key}")
    auth = S3SigV4QueryAuth(
        Credentials(DEV_ACCESS_KEY, DEV_SECRET_KEY), "s3", "us-east-1", expires=expires
    )
    if at is None:
        auth.add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            auth.add_auth(req)
    return req.prepare().url


def boto3_url(node: NodeProcess, method: str, key: str, expires: int, sig: str = "s3v4") -> str:
    op = {"GET": "get_object", "PUT": "put_object", "HEAD": "head_object"}[method]
    client = node.client(signature_version=sig)
    return client.generate_presigned_url(
        op, Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires, HttpMethod=method
    )


def utc_naive(delta: timedelta) -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0) + delta


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(ISO)


def assert_error(reply: Reply, status: int, code: str, message: str) -> None:
    assert reply.status == status, reply.body
    assert reply.headers.get("content-type", "").startswith("application/xml")
    assert reply.field("Code") == code
    assert reply.field("Message") == message
    assert reply.field("RequestId") == reply.headers["x-amz-request-id"]


def assert_unchanged(s3, key: str) -> None:
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == ORIGINAL


def assert_absent(s3, key: str) -> None:
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=BUCKET, Key=key)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# -- in range: the URL works ---------------------------------------------------------------
@pytest.mark.parametrize("expires", [30, 604800])
def test_in_range_urls_work_for_get_put_and_head(node, s3, key, expires):
    got = send("GET", boto3_url(node, "GET", key, expires))
    assert (got.status, got.body) == (200, ORIGINAL)
    assert send("HEAD", boto3_url(node, "HEAD", key, expires)).status == 200
    put = send("PUT", boto3_url(node, "PUT", key, expires), b"new bytes")
    assert put.status == 200, put.body
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"new bytes"


# -- out of range: S3's errors, nothing stored ---------------------------------------------
REFUSED = [
    ("abc", 400, "AuthorizationQueryParametersError", NOT_A_NUMBER),
    ("", 400, "AuthorizationQueryParametersError", NOT_A_NUMBER),
    ("1.5", 400, "AuthorizationQueryParametersError", NOT_A_NUMBER),
    ("-1", 400, "AuthorizationQueryParametersError", NEGATIVE),
    ("-3600", 400, "AuthorizationQueryParametersError", NEGATIVE),
    ("604801", 400, "AuthorizationQueryParametersError", TOO_LARGE),
    ("0", 403, "AccessDenied", "Request has expired"),
]


@pytest.mark.parametrize(("expires", "status", "code", "message"), REFUSED)
def test_out_of_range_get(node, s3, key, expires, status, code, message):
    reply = send("GET", hand_signed(node, "GET", key, expires))
    assert_error(reply, status, code, message)
    assert ORIGINAL not in reply.body
    assert send("GET", hand_signed(node, "GET", key, "60")).body == ORIGINAL  # else good


@pytest.mark.parametrize(("expires", "status", "code", "message"), REFUSED)
def test_out_of_range_put_stores_nothing(node, s3, key, expires, status, code, message):
    overwrite = send("PUT", hand_signed(node, "PUT", key, expires), b"overwritten")
    assert_error(overwrite, status, code, message)
    assert_unchanged(s3, key)
    fresh = key + "-new"
    create = send("PUT", hand_signed(node, "PUT", fresh, expires), b"created")
    assert_error(create, status, code, message)
    assert_absent(s3, fresh)


@pytest.mark.parametrize(("expires", "status", "code", "message"), REFUSED)
def test_out_of_range_head_and_delete(node, s3, key, expires, status, code, message):
    head = send("HEAD", hand_signed(node, "HEAD", key, expires))
    assert (head.status, head.body) == (status, b"")
    delete = send("DELETE", hand_signed(node, "DELETE", key, expires))
    assert_error(delete, status, code, message)
    assert_unchanged(s3, key)


def test_zero_expires_error_body(node, s3, key):
    url = hand_signed(node, "GET", key, "0")
    signed = datetime.strptime(query_of(url)["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    reply = send("GET", url)
    assert_error(reply, 403, "AccessDenied", "Request has expired")
    assert reply.field("X-Amz-Expires") == "0"
    assert reply.field("Expires") == signed.strftime(ISO)


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_boto3_expires_in_over_a_week(node, s3, key, method):
    """boto3 signs ExpiresIn=604801 without complaint; the server is where it is refused."""
    url = boto3_url(node, method, key, 604801)
    assert query_of(url)["X-Amz-Expires"] == "604801"
    reply = send(method, url, b"overwritten" if method == "PUT" else None)
    assert_error(reply, 400, "AuthorizationQueryParametersError", TOO_LARGE)
    assert_unchanged(s3, key)


# -- expired and not yet valid -------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_expired(node, s3, key, method):
    """Signed two hours ago for an hour."""
    url = hand_signed(node, method, key, "3600", at=utc_naive(timedelta(hours=-2)))
    signed = datetime.strptime(query_of(url)["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    before = time.time()
    reply = send(method, url, b"overwritten" if method == "PUT" else None)
    assert_error(reply, 403, "AccessDenied", "Request has expired")
    assert reply.tags() == [
        "Code",
        "Message",
        "X-Amz-Expires",
        "Expires",
        "ServerTime",
        "Resource",
        "RequestId",
    ]
    assert reply.field("X-Amz-Expires") == "3600"
    assert reply.field("Expires") == (signed + timedelta(hours=1)).strftime(ISO)
    server = datetime.strptime(reply.field("ServerTime") or "", ISO).replace(tzinfo=UTC)
    assert abs(server.timestamp() - before) < 5
    assert_unchanged(s3, key)


def test_boto3_url_expires_in_real_time(node, s3, key):
    url = boto3_url(node, "GET", key, 2)  # X-Amz-Date is whole seconds: 2 leaves >= 1
    assert send("GET", url).body == ORIGINAL
    time.sleep(3.1)
    reply = send("GET", url)
    assert_error(reply, 403, "AccessDenied", "Request has expired")
    assert reply.field("X-Amz-Expires") == "2"


def test_expired_head_has_no_body(node, s3, key):
    url = hand_signed(node, "HEAD", key, "60", at=utc_naive(timedelta(hours=-1)))
    reply = send("HEAD", url)
    assert (reply.status, reply.body) == (403, b"")
    assert reply.headers.get("x-amz-request-id")


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_signed_in_the_future(node, s3, key, method):
    """A signer whose clock is a day fast: S3's "Request is not yet valid", X-Amz-Date as
    epoch milliseconds; a few minutes fast is within the allowed skew and works."""
    url = hand_signed(node, method, key, "3600", at=utc_naive(timedelta(days=1)))
    signed = datetime.strptime(query_of(url)["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    reply = send(method, url, b"overwritten" if method == "PUT" else None)
    assert_error(reply, 403, "AccessDenied", "Request is not yet valid")
    assert reply.field("X-Amz-Date") == str(int(signed.timestamp()) * 1000)
    assert reply.field("Expires") == iso(signed.timestamp() + 3600)
    assert reply.field("ServerTime") is not None
    assert_unchanged(s3, key)
    slightly_fast = hand_signed(node, "GET", key, "3600", at=utc_naive(timedelta(minutes=5)))
    assert send("GET", slightly_fast).body == ORIGINAL


# -- a URL used with another method --------------------------------------------------------
@pytest.mark.parametrize("used_with", ["PUT", "DELETE", "POST"])
def test_get_url_used_to_write(node, s3, key, used_with):
    url = boto3_url(node, "GET", key, 300)
    reply = send(used_with, url, b"overwritten" if used_with in ("PUT", "POST") else None)
    assert_error(reply, 403, "SignatureDoesNotMatch", SIGNATURE_MESSAGE)
    assert (reply.field("CanonicalRequest") or "").startswith(used_with + "\n")
    assert_unchanged(s3, key)
    assert send("GET", url).body == ORIGINAL  # the URL still does what it was made for


def test_get_url_used_with_head(node, s3, key):
    reply = send("HEAD", boto3_url(node, "GET", key, 300))
    assert (reply.status, reply.body) == (403, b"")


@pytest.mark.parametrize("used_with", ["GET", "DELETE"])
def test_put_url_used_otherwise(node, s3, key, used_with):
    url = boto3_url(node, "PUT", key, 300)
    reply = send(used_with, url)
    assert_error(reply, 403, "SignatureDoesNotMatch", SIGNATURE_MESSAGE)
    assert ORIGINAL not in reply.body
    assert_unchanged(s3, key)


def test_put_url_for_one_key_used_for_another(node, s3, key):
    url = boto3_url(node, "PUT", key, 300)
    other = url.replace(f"/{BUCKET}/{key}?", f"/{BUCKET}/{key}-other?")
    assert_error(send("PUT", other, b"x"), 403, "SignatureDoesNotMatch", SIGNATURE_MESSAGE)
    assert_absent(s3, key + "-other")


# -- SigV2 (Expires=<epoch seconds>) -------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_sigv2_expired(node, s3, key, method):
    url = boto3_url(node, method, key, -10, sig="s3")
    expires = int(query_of(url)["Expires"])
    reply = send(method, url, b"overwritten" if method == "PUT" else None)
    assert_error(reply, 403, "AccessDenied", "Request has expired")
    assert reply.tags()[:4] == ["Code", "Message", "Expires", "ServerTime"]
    assert reply.field("Expires") == iso(expires)
    assert_unchanged(s3, key)
    good = boto3_url(node, method, key, 60, sig="s3")
    assert send(method, good, b"v2 bytes" if method == "PUT" else None).status == 200


def test_sigv2_get_url_used_with_put(node, s3, key):
    url = boto3_url(node, "GET", key, 60, sig="s3")
    reply = send("PUT", url, b"overwritten")
    assert_error(reply, 403, "SignatureDoesNotMatch", SIGNATURE_MESSAGE)
    assert_unchanged(s3, key)
