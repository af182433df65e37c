"""SigV4 verification against botocore as the oracle, plus the AWS documentation vectors."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from shardfleet.node.s3 import errors, xml
from shardfleet.node.s3.auth import parse_amz_date
from shardfleet.node.s3.sigv4 import (
    EMPTY_SHA256,
    EXPIRES_NEGATIVE,
    EXPIRES_NOT_A_NUMBER,
    EXPIRES_TOO_LARGE,
    RequestView,
    canonical_query,
    canonical_uri,
    check_presign_window,
    parse_presign_expires,
    verify_request,
)

AK, SECRET = "AKIDSHARDFLEET", "s3cr3t/with+odd=chars"
KEYS = {AK: SECRET, "AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
ENDPOINT = "http://127.0.0.1:9000"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def view_of(method: str, url: str, headers: dict[str, str | bytes]) -> RequestView:
    """What the HTTP layer would build from the request botocore puts on the wire."""
    parts = urlsplit(url)
    hdrs = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}
    hdrs.setdefault("host", parts.netloc)
    return RequestView(method, parts.path, parse_qsl(parts.query, keep_blank_values=True), hdrs)


def signed(
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    secret: str = SECRET,
    access_key: str = AK,
) -> RequestView:
    req = AWSRequest(
        method=method, url=ENDPOINT + path, params=params or {}, data=body, headers=headers or {}
    )
    S3SigV4Auth(Credentials(access_key, secret), "s3", "us-east-1").add_auth(req)
    prepared = req.prepare()
    return view_of(method, prepared.url, dict(prepared.headers))


def verify(view: RequestView, **kw: object) -> object:
    kw.setdefault("now", time.time())
    return verify_request(view, KEYS.get, **kw)  # type: ignore[arg-type]


def replace_header(view: RequestView, name: str, value: str) -> RequestView:
    return RequestView(view.method, view.raw_path, view.query, {**view.headers, name: value})


KEYS_TO_TRY = [
    "plain.txt",
    "dir/with space/file name.txt",
    "unicode/ünïcödé/日本語.txt",
    "plus+sign+key",
    "tilde~key~",
    "equals=key=value",
    "percent%20literal%key",
    "punct!$&'()*,;:@[]{}^`|\\\"<>#?.bin",
]


@pytest.mark.parametrize("key", KEYS_TO_TRY)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_botocore_signed_keys_verify(method: str, key: str) -> None:
    body = b"payload" if method == "PUT" else b""
    view = signed(method, "/bucket/" + quote(key, safe="/~"), body=body)
    result = verify(view)
    assert result.access_key == AK
    assert result.payload_mode == "SHA256"
    assert result.scope.endswith("/us-east-1/s3/aws4_request")
    assert not result.presigned


@pytest.mark.parametrize(
    ("method", "params"),
    [
        (
            "GET",
            {
                "list-type": "2",
                "prefix": "a/b",
                "continuation-token": "tok/+=en==",
                "delimiter": "/",
                "start-after": "ä ö",
            },
        ),
        ("POST", {"delete": ""}),
        ("POST", {"uploads": ""}),
        ("PUT", {"partNumber": "3", "uploadId": "up+id/~x"}),
        ("GET", {"versions": "", "key-marker": "a b", "max-keys": "1000"}),
    ],
)
def test_botocore_signed_query_strings_verify(method: str, params: dict[str, str]) -> None:
    view = signed(method, "/bucket", params, body=b"<Delete/>" if method == "POST" else b"")
    assert verify(view).access_key == AK


def test_real_boto3_client_requests_verify() -> None:
    """End to end: whatever the actual client serializer emits must verify."""
    captured: list[RequestView] = []

    class Captured(Exception):
        pass

    def grab(request: AWSRequest, **_: object) -> None:
        captured.append(view_of(request.method, request.url, dict(request.headers)))
        raise Captured

    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=AK,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}
        ),
    )
    client.meta.events.register("before-send.s3.*", grab)
    calls = [
        lambda: client.list_objects_v2(Bucket="bk", Prefix="a/b c+", ContinuationToken="x/y=="),
        lambda: client.put_object(Bucket="bk", Key="k ü+~=%/x", Body=b"data"),
        lambda: client.delete_objects(Bucket="bk", Delete={"Objects": [{"Key": "a"}]}),
        lambda: client.create_multipart_upload(Bucket="bk", Key="big file"),
        lambda: client.get_object(Bucket="bk", Key="r", Range="bytes=0-9"),
    ]
    for call in calls:
        with pytest.raises(Captured):
            call()
    for view in captured:
        assert verify(view).access_key == AK


def test_aws_documented_get_object_vector() -> None:
    headers = {
        "host": "examplebucket.s3.amazonaws.com",
        "range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
        "authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
            "aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature="
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        ),
    }
    view = RequestView("GET", "/test.txt", [], headers)
    result = verify(view, now=1369353600.0, region="us-east-1")
    assert result.seed_signature.startswith("f0e8bdb8")
    assert result.amz_date == "20130524T000000Z"
    assert result.scope == "20130524/us-east-1/s3/aws4_request"
    assert result.expected_sha256 == EMPTY_SHA256
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(replace_header(view, "range", "bytes=0-10"), now=1369353600.0)
    with pytest.raises(errors.AuthorizationHeaderMalformed) as exc:
        verify(view, now=1369353600.0, region="eu-west-1")
    assert "eu-west-1" in exc.value.message


def test_tampering_is_detected() -> None:
    view = signed("GET", "/bucket/key", {"prefix": "p"}, headers={"x-amz-meta-a": "1"})
    verify(view)
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(replace_header(view, "x-amz-meta-a", "2"))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", "/bucket/other", view.query, view.headers))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", view.raw_path, [("prefix", "q")], view.headers))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("PUT", view.raw_path, view.query, view.headers))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(signed("GET", "/bucket/key", secret="wrong"))


def test_unknown_key_and_missing_auth() -> None:
    with pytest.raises(errors.InvalidAccessKeyId):
        verify(signed("GET", "/bucket", access_key="AKUNKNOWN"))
    # no signature at all: an anonymous request (node/s3/access.py decides what it may do)
    anon = verify(RequestView("GET", "/bucket", [], {"host": "h"}))
    assert anon.access_key == "" and anon.payload_mode == "UNSIGNED"
    with pytest.raises(errors.AccessDenied):  # signed chunks, with nothing to sign them
        verify(RequestView("PUT", "/b/k", [], {"x-amz-content-sha256":
                                              "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}))  # fmt: skip
    # SigV2 is routed to node.s3.sigv2 (tests/unit/test_sigv2.py); without a Date it is denied.
    with pytest.raises(errors.AccessDenied, match="Date or x-amz-date"):
        verify(RequestView("GET", "/b", [], {"host": "h", "authorization": "AWS AK:c2ln"}))
    with pytest.raises(errors.AccessDenied):
        verify(RequestView("GET", "/b", [("AWSAccessKeyId", AK), ("Signature", "x")], {}))


def test_clock_skew() -> None:
    view = signed("GET", "/bucket")
    verify(view, now=time.time() + 800)
    with pytest.raises(errors.RequestTimeTooSkewed):
        verify(view, now=time.time() + 1000)
    with pytest.raises(errors.RequestTimeTooSkewed):
        verify(view, now=time.time() - 1000)


@pytest.mark.parametrize(
    "authz",
    [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3, SignedHeaders=host, Signature="
        + "a" * 64,
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/ec2/aws4_request, SignedHeaders=host"
        ", Signature=" + "a" * 64,
        "AWS4-HMAC-SHA256 Credential=AK/20130525/us-east-1/s3/aws4_request, SignedHeaders=host"
        ", Signature=" + "a" * 64,
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, SignedHeaders=date"
        ", Signature=" + "a" * 64,
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, SignedHeaders=host"
        ", Signature=xyz",
        "AWS4-HMAC-SHA256 garbage",
    ],
)
def test_malformed_authorization(authz: str) -> None:
    headers = {
        "host": "h",
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": EMPTY_SHA256,
        "authorization": authz,
    }
    with pytest.raises(errors.AuthorizationHeaderMalformed):
        verify(RequestView("GET", "/", [], headers), now=1369353600.0)


def test_content_sha256_header_rules() -> None:
    view = signed("GET", "/bucket")
    headers = {k: v for k, v in view.headers.items() if k != "x-amz-content-sha256"}
    with pytest.raises(errors.InvalidRequest, match="x-amz-content-sha256"):
        verify(RequestView("GET", "/bucket", [], headers))
    with pytest.raises(errors.InvalidArgument):
        verify(replace_header(view, "x-amz-content-sha256", "NOT-A-MODE"))


def test_signed_header_missing_from_request() -> None:
    view = signed("GET", "/bucket", headers={"x-amz-meta-a": "1"})
    headers = {k: v for k, v in view.headers.items() if k != "x-amz-meta-a"}
    with pytest.raises(errors.SignatureDoesNotMatch, match="x-amz-meta-a"):
        verify(RequestView("GET", "/bucket", [], headers))


def test_date_header_instead_of_x_amz_date() -> None:
    """botocore signs `Date` (and sends no x-amz-date) when the caller sets Date; the
    string-to-sign still carries the ISO8601 form of that time."""
    view = signed("GET", "/bucket", headers={"Date": "Fri, 24 May 2013 00:00:00 GMT"})
    assert "x-amz-date" not in view.headers and "date" in view.headers
    assert verify(view).amz_date.endswith("Z")
    with pytest.raises(errors.RequestTimeTooSkewed):
        verify(view, now=time.time() + 3600)
    headers = {k: v for k, v in view.headers.items() if k != "date"}
    with pytest.raises(errors.AccessDenied, match="Date"):
        verify(RequestView("GET", "/bucket", [], headers))


def presigner(region: str = "us-east-1") -> object:
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=AK,
        aws_secret_access_key=SECRET,
        region_name=region,
        config=Config(signature_version="s3v4"),
    )


@pytest.mark.parametrize("key", ["plain", "a b/c+d~e=f%g/ü", "x?y#z"])
def test_presigned_urls_verify(key: str) -> None:
    client = presigner()
    url = client.generate_presigned_url(  # type: ignore[attr-defined]
        "get_object", Params={"Bucket": "bk", "Key": key}, ExpiresIn=300
    )
    result = verify(view_of("GET", url, {}))
    assert result.presigned and result.payload_mode == "UNSIGNED"
    put = client.generate_presigned_url(  # type: ignore[attr-defined]
        "put_object", Params={"Bucket": "bk", "Key": key}, ExpiresIn=300, HttpMethod="PUT"
    )
    assert verify(view_of("PUT", put, {})).presigned


def presigned_view(
    method: str = "GET", expires: int = 60, key: str = "k", region: str = "us-east-1"
) -> RequestView:
    """What botocore puts on the wire for a presigned `method` URL, used with `method`."""
    op = {"GET": "get_object", "PUT": "put_object", "HEAD": "head_object"}[method]
    url = presigner(region).generate_presigned_url(  # type: ignore[attr-defined]
        op, Params={"Bucket": "bk", "Key": key}, ExpiresIn=expires, HttpMethod=method
    )
    return view_of(method, url, {})


def signed_at(view: RequestView) -> float:
    when = parse_amz_date(dict(view.query)["X-Amz-Date"])
    assert when is not None
    return when


def test_presigned_expiry_and_tampering() -> None:
    view = presigned_view(expires=60)
    when = signed_at(view)
    verify(view, now=when + 30)
    verify(view, now=when + 60)  # the last second is still good
    with pytest.raises(errors.AccessDenied, match="^AccessDenied: Request has expired$"):
        verify(view, now=when + 61)
    # signed in the past, used later: a presigned URL has no 15-minute window, only Expires
    verify(presigned_view(expires=604800), now=when + 604000)
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", "/bk/other", view.query, view.headers))
    tampered = [(n, "120" if n == "X-Amz-Expires" else v) for n, v in view.query]
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", view.raw_path, tampered, view.headers))
    extra = [*view.query, ("response-content-type", "text/evil")]
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", view.raw_path, extra, view.headers))


def test_presigned_expired_error_reads_as_s3s() -> None:
    """<X-Amz-Expires>, <Expires> (X-Amz-Date + X-Amz-Expires) and <ServerTime>, in S3's
    order and format, and the class is AccessDenied itself (code AccessDenied, 403)."""
    view = presigned_view(expires=60)
    when = signed_at(view)
    with pytest.raises(errors.AccessDenied) as exc:
        verify(view, now=when + 3600.5)
    err = exc.value
    assert type(err) is errors.AccessDenied and (err.code, err.status) == ("AccessDenied", 403)
    assert err.message == "Request has expired"
    assert list(err.extra) == ["X-Amz-Expires", "Expires", "ServerTime"]
    assert err.extra["X-Amz-Expires"] == "60"
    assert err.extra["Expires"] == iso(when + 60)
    assert err.extra["ServerTime"] == iso(when + 3600)
    body = ET.fromstring(xml.error(err.code, err.message, "/bk/k", "RID", err.extra))
    assert [c.tag for c in body] == [
        "Code",
        "Message",
        "X-Amz-Expires",
        "Expires",
        "ServerTime",
        "Resource",
        "RequestId",
    ]
    assert body.findtext("Code") == "AccessDenied"
    assert body.findtext("Expires") == iso(when + 60)


def test_presigned_not_yet_valid() -> None:
    """X-Amz-Date ahead of the server by more than the allowed skew: S3's AccessDenied
    "Request is not yet valid", with X-Amz-Date written as epoch milliseconds."""
    view = presigned_view(expires=3600)
    when = signed_at(view)
    verify(view, now=when - 800)  # a client clock a little fast is tolerated
    with pytest.raises(errors.AccessDenied) as exc:
        verify(view, now=when - 86400)
    err = exc.value
    assert type(err) is errors.AccessDenied
    assert err.message == "Request is not yet valid"
    assert err.extra == {
        "X-Amz-Date": str(int(when) * 1000),
        "Expires": iso(when + 3600),
        "ServerTime": iso(when - 86400),
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1", 1), ("0", 0), ("-0", 0), ("604800", 604800), ("+5", 5), ("007", 7), ("0" * 40 + "9", 9)],
)
def test_parse_presign_expires_accepts(text: str, seconds: int) -> None:
    assert parse_presign_expires(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", EXPIRES_NOT_A_NUMBER),
        ("", EXPIRES_NOT_A_NUMBER),
        ("1.5", EXPIRES_NOT_A_NUMBER),
        ("1e3", EXPIRES_NOT_A_NUMBER),
        ("0x10", EXPIRES_NOT_A_NUMBER),
        (" 5", EXPIRES_NOT_A_NUMBER),
        ("5 ", EXPIRES_NOT_A_NUMBER),
        ("5\n", EXPIRES_NOT_A_NUMBER),
        ("1_000", EXPIRES_NOT_A_NUMBER),
        ("+-5", EXPIRES_NOT_A_NUMBER),
        ("-abc", EXPIRES_NOT_A_NUMBER),
        ("\u0663", EXPIRES_NOT_A_NUMBER),  # a non-ASCII digit
        ("9223372036854775808", EXPIRES_NOT_A_NUMBER),  # past a 64-bit integer
        ("-9223372036854775809", EXPIRES_NOT_A_NUMBER),
        ("9" * 5000, EXPIRES_NOT_A_NUMBER),
        ("-1", EXPIRES_NEGATIVE),
        ("-604801", EXPIRES_NEGATIVE),
        ("-9223372036854775808", EXPIRES_NEGATIVE),
        ("604801", EXPIRES_TOO_LARGE),
        ("9223372036854775807", EXPIRES_TOO_LARGE),
    ],
)
def test_parse_presign_expires_refuses(text: str, message: str) -> None:
    with pytest.raises(errors.AuthorizationQueryParametersError) as exc:
        parse_presign_expires(text)
    assert exc.value.message == message and exc.value.status == 400


def test_aws_wording_of_expires_errors() -> None:
    assert EXPIRES_NOT_A_NUMBER == "X-Amz-Expires should be a number"
    assert EXPIRES_NEGATIVE == "X-Amz-Expires must be non-negative"
    assert EXPIRES_TOO_LARGE == (
        "X-Amz-Expires must be less than a week (in seconds); that is, the given "
        "X-Amz-Expires must be less than 604800 seconds"
    )


def test_check_presign_window() -> None:
    t = 1_700_000_000.0
    check_presign_window(t, 1, t + 1, 900)
    check_presign_window(t, 1, t - 900, 900)
    with pytest.raises(errors.AccessDenied, match="^AccessDenied: Request has expired$"):
        check_presign_window(t, 1, t + 1.001, 900)
    with pytest.raises(errors.AccessDenied, match="^AccessDenied: Request is not yet valid$"):
        check_presign_window(t, 1, t - 900.5, 900)
    # 0 seconds is never valid, not even in the second it was signed, nor a bit before
    for now in (t - 10, t, t + 0.5):
        with pytest.raises(errors.AccessDenied, match="^AccessDenied: Request has expired$") as exc:
            check_presign_window(t, 0, now, 900)
        assert exc.value.extra["X-Amz-Expires"] == "0"
        assert exc.value.extra["Expires"] == iso(t)


def hand_presigned(method: str, expires: str, at: datetime | None = None) -> RequestView:
    """A correctly signed presigned URL with any X-Amz-Expires text, signed at `at`:
    botocore's own query signer (boto3's CRT signer refuses ExpiresIn <= 0 client-side)."""
    req = AWSRequest(method=method, url=ENDPOINT + "/bk/k")
    auth = S3SigV4QueryAuth(Credentials(AK, SECRET), "s3", "us-east-1", expires=expires)
    if at is None:
        auth.add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            auth.add_auth(req)
    return view_of(method, req.prepare().url, {})


EXPIRES_CASES = [
    ("0", errors.AccessDenied, "Request has expired"),
    ("-1", errors.AuthorizationQueryParametersError, EXPIRES_NEGATIVE),
    ("-3600", errors.AuthorizationQueryParametersError, EXPIRES_NEGATIVE),
    ("604801", errors.AuthorizationQueryParametersError, EXPIRES_TOO_LARGE),
    ("1000000000", errors.AuthorizationQueryParametersError, EXPIRES_TOO_LARGE),
    ("abc", errors.AuthorizationQueryParametersError, EXPIRES_NOT_A_NUMBER),
    ("", errors.AuthorizationQueryParametersError, EXPIRES_NOT_A_NUMBER),
]


@pytest.mark.parametrize(("expires", "error", "message"), EXPIRES_CASES)
@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD", "DELETE"])
def test_signed_urls_with_out_of_range_expires(
    method: str, expires: str, error: type[errors.S3Error], message: str
) -> None:
    view = hand_presigned(method, expires)
    assert dict(view.query)["X-Amz-Expires"] == expires
    with pytest.raises(error) as exc:
        verify(view, now=signed_at(view) + 0.5)
    assert type(exc.value) is error and exc.value.message == message
    assert exc.value.status == (403 if error is errors.AccessDenied else 400)
    assert verify(hand_presigned(method, "60")).presigned  # the same URL, in range, is good


@pytest.mark.parametrize("expires", [604801, 10**9])
def test_boto3_signs_over_a_week_and_gets_s3s_answer(expires: int) -> None:
    for method in ("GET", "PUT", "HEAD"):
        view = presigned_view(method, expires=expires)
        assert dict(view.query)["X-Amz-Expires"] == str(expires)
        with pytest.raises(
            errors.AuthorizationQueryParametersError, match=re.escape(EXPIRES_TOO_LARGE)
        ):
            verify(view)


def test_hand_signed_expired_url() -> None:
    """Signed two hours ago for an hour: expired, with S3's elements."""
    at = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=2)
    view = hand_presigned("GET", "3600", at=at)
    when = signed_at(view)
    now = time.time()
    with pytest.raises(errors.AccessDenied) as exc:
        verify(view, now=now)
    assert exc.value.extra == {
        "X-Amz-Expires": "3600",
        "Expires": iso(when + 3600),
        "ServerTime": iso(now),
    }


@pytest.mark.parametrize("expires", [1, 604800])
def test_boto3_urls_at_the_edges_verify(expires: int) -> None:
    for method in ("GET", "PUT", "HEAD"):
        view = presigned_view(method, expires=expires)
        assert verify(view, now=signed_at(view) + expires).presigned


@pytest.mark.parametrize(
    ("signed_for", "used_with"),
    [
        ("GET", "PUT"),
        ("GET", "DELETE"),
        ("GET", "HEAD"),
        ("PUT", "GET"),
        ("PUT", "POST"),
        ("HEAD", "GET"),
    ],
)
def test_presigned_url_used_with_another_method(signed_for: str, used_with: str) -> None:
    """The method is the first line of the canonical request: SignatureDoesNotMatch, and
    the CanonicalRequest S3 echoes back carries the method actually used."""
    view = presigned_view(signed_for)
    other = RequestView(used_with, view.raw_path, view.query, view.headers)
    with pytest.raises(errors.SignatureDoesNotMatch) as exc:
        verify(other)
    assert exc.value.extra["CanonicalRequest"].startswith(used_with + "\n")
    assert verify(view).presigned


def test_presigned_checks_run_before_the_signature() -> None:
    """A bad X-Amz-Expires is reported as such even though changing it also broke the
    signature; an expired URL is "expired" whichever method it is used with."""
    view = presigned_view(expires=60)
    for value, message in [
        ("abc", EXPIRES_NOT_A_NUMBER),
        ("-1", EXPIRES_NEGATIVE),
        ("604801", EXPIRES_TOO_LARGE),
    ]:
        query = [(n, value if n == "X-Amz-Expires" else v) for n, v in view.query]
        with pytest.raises(errors.AuthorizationQueryParametersError, match=re.escape(message)):
            verify(RequestView("PUT", view.raw_path, query, view.headers))
    with pytest.raises(errors.AccessDenied, match="^AccessDenied: Request has expired$"):
        verify(
            RequestView("PUT", view.raw_path, view.query, view.headers), now=signed_at(view) + 61
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Amz-Expires", "604801"),
        ("X-Amz-Expires", "abc"),
        ("X-Amz-Expires", "-5"),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA1"),
        ("X-Amz-Date", "2013-05-24"),
        ("X-Amz-Credential", "AK/20130524/us-east-1/s3"),
        ("X-Amz-Signature", "zz"),
    ],
)
def test_presigned_malformed(name: str, value: str) -> None:
    view = presigned_view()
    query = [(n, value if n == name else v) for n, v in view.query]
    with pytest.raises(errors.AuthorizationQueryParametersError) as exc:
        verify(RequestView("GET", view.raw_path, query, view.headers))
    assert exc.value.status == 400


def test_presigned_wrong_region_and_double_auth() -> None:
    url = presigner("eu-west-1").generate_presigned_url(  # type: ignore[attr-defined]
        "get_object", Params={"Bucket": "bk", "Key": "k"}, ExpiresIn=60
    )
    view = view_of("GET", url, {})
    assert verify(view).scope.split("/")[1] == "eu-west-1"
    with pytest.raises(errors.AuthorizationQueryParametersError, match="us-east-1"):
        verify(view, region="us-east-1")
    with pytest.raises(errors.InvalidArgument):
        verify(replace_header(view, "authorization", "AWS4-HMAC-SHA256 x"))


def test_canonical_helpers_match_aws_rules() -> None:
    assert canonical_uri("") == "/"
    assert canonical_uri("/a b/ü") == "/a%20b/%C3%BC"
    assert canonical_uri("/a%20b/%c3%bc") == "/a%20b/%C3%BC"
    assert canonical_uri("/a+b=c!") == "/a%2Bb%3Dc%21"
    assert canonical_uri("/a%2Fb") == "/a/b"  # S3 decodes then encodes once, keeping '/'
    assert canonical_query([("b", "2"), ("a", "x/y z"), ("a", "1"), ("c", "")]) == (
        "a=1&a=x%2Fy%20z&b=2&c="
    )


def test_client_that_signs_its_wire_path_verbatim() -> None:
    """Some clients leave RFC 3986 sub-delims unencoded and sign the path as sent; the
    request is still authentic, so it must verify (canonical form first, then verbatim)."""
    view = signed("GET", "/bucket/a!b(c)*d'e")
    assert canonical_uri(view.raw_path) != view.raw_path
    assert verify(view).access_key == AK
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", "/bucket/a!b(c)*d'f", view.query, view.headers))


def test_botocore_paths_are_already_canonical() -> None:
    for key in KEYS_TO_TRY:
        view = signed("GET", "/bucket/" + quote(key, safe="/~"))
        assert canonical_uri(view.raw_path) == view.raw_path
