"""SigV4 verification against botocore as the oracle, plus the AWS documentation vectors."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from shardfleet.node.s3 import errors
from shardfleet.node.s3.sigv4 import (
    EMPTY_SHA256,
    RequestView,
    canonical_query,
    canonical_uri,
    verify_request,
)

AK, SECRET = "AKIDSHARDFLEET", "s3cr3t/with+odd=chars"
KEYS = {AK: SECRET, "AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
ENDPOINT = "http://127.0.0.1:9000"


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
    with pytest.raises(errors.AccessDenied):
        verify(RequestView("GET", "/bucket", [], {"host": "h"}))
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


def test_presigned_expiry_and_tampering() -> None:
    url = presigner().generate_presigned_url(  # type: ignore[attr-defined]
        "get_object", Params={"Bucket": "bk", "Key": "k"}, ExpiresIn=60
    )
    view = view_of("GET", url, {})
    verify(view, now=time.time() + 30)
    with pytest.raises(errors.ExpiredToken):
        verify(view, now=time.time() + 120)
    with pytest.raises(errors.RequestTimeTooSkewed):
        verify(view, now=time.time() - 3600)
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", "/bk/other", view.query, view.headers))
    tampered = [(n, "120" if n == "X-Amz-Expires" else v) for n, v in view.query]
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", view.raw_path, tampered, view.headers))
    extra = [*view.query, ("response-content-type", "text/evil")]
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", view.raw_path, extra, view.headers))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Amz-Expires", "0"),
        ("X-Amz-Expires", "604801"),
        ("X-Amz-Expires", "abc"),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA1"),
        ("X-Amz-Date", "2013-05-24"),
        ("X-Amz-Credential", "AK/20130524/us-east-1/s3"),
        ("X-Amz-Signature", "zz"),
    ],
)
def test_presigned_malformed(name: str, value: str) -> None:
    url = presigner().generate_presigned_url(  # type: ignore[attr-defined]
        "get_object", Params={"Bucket": "bk", "Key": "k"}, ExpiresIn=60
    )
    view = view_of("GET", url, {})
    query = [(n, value if n == name else v) for n, v in view.query]
    with pytest.raises(errors.AuthorizationQueryParametersError):
        verify(RequestView("GET", view.raw_path, query, view.headers))


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
