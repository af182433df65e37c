"""SigV2 verification (header and presigned forms) against botocore as the oracle, plus the
AWS documentation vectors."""

from __future__ import annotations

import base64
import hashlib
import time
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest
from botocore.auth import HmacV1Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from multidict import CIMultiDict, CIMultiDictProxy

from shardfleet.node.s3 import errors
from shardfleet.node.s3.context import split_query
from shardfleet.node.s3.sigv2 import canonical_amz_headers, canonical_resource, sign
from shardfleet.node.s3.sigv4 import AuthResult, RequestView, verify_request

AK, SECRET = "AKIDSHARDFLEET", "s3cr3t/with+odd=chars"
DOC_AK, DOC_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS = {AK: SECRET, DOC_AK: DOC_SECRET}
ENDPOINT = "http://127.0.0.1:9000"

OBJECT_KEYS = [
    "plain.txt",
    "dir/with space/file name.txt",
    "unicode/ünïcödé/日本語.txt",
    "plus+sign+key",
    "tilde~key~",
    "equals=key=value",
    "percent%20literal%key",
    "punct!$&'()*,;:@[]{}^`|\\\"<>#?.bin",
]


def view_of(method: str, url: str, headers: dict[str, str | bytes] | None = None) -> RequestView:
    """What node.s3.router builds from the request line and headers a client sends."""
    parts = urlsplit(url)
    hdrs = {
        k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in (headers or {}).items()
    }
    hdrs.setdefault("host", parts.netloc)
    return RequestView(method, parts.path, split_query(parts.query), hdrs)


def verify(view: RequestView, **kw: object) -> AuthResult:
    kw.setdefault("now", time.time())
    return verify_request(view, KEYS.get, **kw)  # type: ignore[arg-type]


def client(config: Config | None, access_key: str = AK, secret: str = SECRET) -> object:
    extra = {"config": config} if config is not None else {}
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        **extra,
    )


CONFIGS = pytest.mark.parametrize(
    "config", [None, Config(signature_version="s3")], ids=["default", "s3"]
)


def header_signed(
    method: str,
    path_and_query: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    secret: str = SECRET,
    access_key: str = AK,
) -> RequestView:
    """The query goes in the URL as botocore's serializer puts it (`?delete`, not `?delete=`)."""
    req = AWSRequest(method=method, url=ENDPOINT + path_and_query, data=body, headers=headers or {})
    HmacV1Auth(Credentials(access_key, secret)).add_auth(req)
    prepared = req.prepare()
    return view_of(method, prepared.url, dict(prepared.headers))


def with_headers(view: RequestView, **changes: str | None) -> RequestView:
    headers = dict(view.headers)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return RequestView(view.method, view.raw_path, view.query, headers)


# --- presigned (query) form ------------------------------------------------------------


@CONFIGS
def test_boto3_presigns_v2_for_us_east_1(config: Config | None) -> None:
    """Documents the premise: this botocore's default presigner emits V2 for us-east-1."""
    url = client(config).generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    names = {n for n, _ in parse_qsl(urlsplit(url).query)}
    assert {"AWSAccessKeyId", "Signature", "Expires"} <= names
    assert not any(n.startswith("X-Amz-") for n in names)


@CONFIGS
@pytest.mark.parametrize("key", OBJECT_KEYS)
def test_presigned_get_and_put_verify(config: Config | None, key: str) -> None:
    s3 = client(config)
    for method, op in (("GET", "get_object"), ("PUT", "put_object"), ("HEAD", "head_object")):
        url = s3.generate_presigned_url(op, Params={"Bucket": "bucket", "Key": key})
        result = verify(view_of(method, url))
        assert result == AuthResult(AK, "UNSIGNED", None, b"", "", "", "", True)


@CONFIGS
def test_presigned_response_overrides_verify(config: Config | None) -> None:
    params = {
        "Bucket": "bucket",
        "Key": "dir/ä b+c.txt",
        "ResponseContentType": "text/plain; charset=utf-8",
        "ResponseContentDisposition": 'attachment; filename="a b&c.txt"',
        "ResponseCacheControl": "no-cache",
        "ResponseExpires": "Thu, 01 Dec 1994 16:00:00 GMT",
        "VersionId": "v+1/2=",
    }
    url = client(config).generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    view = view_of("GET", url)
    assert verify(view).presigned
    # the overrides are signed: changing one breaks the signature
    query = [(n, "text/html" if n == "response-content-type" else v) for n, v in view.query]
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", view.raw_path, query, view.headers))
    # ... and so is their presence
    query = [*view.query, ("response-content-language", "de")]
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("GET", view.raw_path, query, view.headers))
    # unsigned, unknown parameters do not take part
    query = [*view.query, ("x-id", "GetObject")]
    assert verify(RequestView("GET", view.raw_path, query, view.headers)).access_key == AK


@CONFIGS
def test_presigned_put_with_signed_headers(config: Config | None) -> None:
    """botocore moves the signed Content-Type and x-amz-* into the query string."""
    params = {
        "Bucket": "bucket",
        "Key": "up load.bin",
        "ContentType": "application/x-thing",
        "Metadata": {"colour": "blue", "Owner": "me"},
    }
    url = client(config).generate_presigned_url("put_object", Params=params)
    view = view_of("PUT", url)
    assert verify(view).presigned
    assert verify(with_headers(view, content_type="application/x-thing")).access_key == AK
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(with_headers(view, content_type="text/html"))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(with_headers(view, x_amz_meta_colour="red"))


def test_presigned_expiry() -> None:
    url = client(None).generate_presigned_url(
        "get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=30
    )
    view = view_of("GET", url)
    expires = int(dict(view.query)["Expires"])
    assert verify(view, now=expires).presigned
    with pytest.raises(errors.AccessDenied, match="Request has expired") as exc:
        verify(view, now=expires + 1)
    assert type(exc.value) is errors.AccessDenied
    assert set(exc.value.extra) == {"Expires", "ServerTime"}


def test_presigned_tampering() -> None:
    s3 = client(None)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "bucket", "Key": "a b"})
    view = view_of("GET", url)
    q = dict(view.query)

    def requery(**changes: str) -> list[tuple[str, str]]:
        return [(n, changes.get(n, v)) for n, v in view.query]

    cases = [
        RequestView("GET", "/bucket/a%20c", view.query, view.headers),
        RequestView("GET", "/bucket/a+b", view.query, view.headers),  # V2 signs the wire form
        RequestView("PUT", view.raw_path, view.query, view.headers),
        RequestView("GET", view.raw_path, requery(Expires=str(int(q["Expires"]) + 1)), {}),
        RequestView("GET", view.raw_path, requery(Signature=q["Signature"][::-1]), {}),
        RequestView("GET", view.raw_path, [*view.query, ("acl", "")], {}),
        with_headers(view, content_md5="1B2M2Y8AsgTpgAmY7PhCfg=="),
    ]
    for bad in cases:
        with pytest.raises(errors.SignatureDoesNotMatch) as exc:
            verify(bad)
        assert exc.value.extra["AWSAccessKeyId"] == AK
        assert "StringToSign" in exc.value.extra
    other = client(None, secret="wrong").generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": "a b"}
    )
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(view_of("GET", other))
    unknown = client(None, access_key="AKUNKNOWN").generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": "a b"}
    )
    with pytest.raises(errors.InvalidAccessKeyId):
        verify(view_of("GET", unknown))


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ([("AWSAccessKeyId", AK), ("Signature", "x")], "requires the Signature, Expires"),
        ([("AWSAccessKeyId", AK), ("Expires", "9999999999")], "requires the Signature"),
        ([("Signature", "x"), ("Expires", "9999999999")], "requires the Signature"),
        ([("AWSAccessKeyId", AK), ("Signature", "x"), ("Expires", "soon")], "Invalid date"),
        ([("AWSAccessKeyId", AK), ("Signature", "x"), ("Expires", "-5")], "Invalid date"),
    ],
)
def test_presigned_malformed(query: list[tuple[str, str]], match: str) -> None:
    with pytest.raises(errors.AccessDenied, match=match):
        verify(RequestView("GET", "/b/k", query, {"host": "h"}))


def test_doc_vector_query_string() -> None:
    """RESTAuthentication.html, query string request authentication example."""
    query = [
        ("AWSAccessKeyId", DOC_AK),
        ("Expires", "1175139620"),
        ("Signature", "NpgCjnDzrM+WFzoENXmpNDUsSn8="),
    ]
    view = RequestView("GET", "/johnsmith/photos/puppy.jpg", query, {"host": "h"})
    assert verify(view, now=1175139000).access_key == DOC_AK
    with pytest.raises(errors.AccessDenied, match="expired"):
        verify(view, now=1175139621)


# --- Authorization header form ---------------------------------------------------------


@pytest.mark.parametrize("key", OBJECT_KEYS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_header_signed_keys_verify(method: str, key: str) -> None:
    view = header_signed(method, "/bucket/" + quote(key, safe="/~"), body=b"x" * (method == "PUT"))
    assert view.headers["authorization"].startswith(f"AWS {AK}:")
    assert verify(view) == AuthResult(AK, "UNSIGNED", None, b"", "", "", "", False)


def test_header_signed_put_with_md5_type_and_meta() -> None:
    body = b"hello world"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    headers = {
        "Content-MD5": md5,
        "Content-Type": "text/plain; charset=utf-8",
        "x-amz-meta-Colour": "  blue  ",
        "x-amz-meta-z": "last",
        "X-Amz-Acl": "private",
        "Cache-Control": "no-store",  # not part of the V2 string to sign
    }
    view = header_signed("PUT", "/bucket/dir/a%20b.txt", headers=headers, body=body)
    assert verify(view).payload_mode == "UNSIGNED"
    assert verify(with_headers(view, cache_control="max-age=1")).access_key == AK
    for change in (
        {"content_md5": base64.b64encode(hashlib.md5(b"other").digest()).decode()},
        {"content_md5": None},
        {"content_type": "text/html"},
        {"x_amz_meta_colour": "red"},
        {"x_amz_meta_extra": "sneaky"},
        {"x_amz_acl": None},
    ):
        with pytest.raises(errors.SignatureDoesNotMatch):
            verify(with_headers(view, **change))


@pytest.mark.parametrize(
    ("method", "path_and_query", "body"),
    [
        ("POST", "/bucket?delete", b"<Delete><Object><Key>k</Key></Object></Delete>"),
        ("POST", "/bucket/big%20file?uploads", b""),
        ("PUT", "/bucket/big%20file?partNumber=2&uploadId=up%2Bid%2F~x", b"part"),
        ("POST", "/bucket/big%20file?uploadId=up%2Bid", b"<CompleteMultipartUpload/>"),
        ("GET", "/bucket?location", b""),
        ("GET", "/bucket?versioning", b""),
        ("GET", "/bucket?versions&prefix=a%20b&key-marker=x", b""),
        ("GET", "/bucket?list-type=2&prefix=a%2Fb&continuation-token=t%2B%3D", b""),
        ("GET", "/bucket/k?acl", b""),
        ("GET", "/bucket/k?versionId=v%2B1&response-content-type=text%2Fplain", b""),
        ("PUT", "/bucket/k?tagging", b"<Tagging/>"),
        ("GET", "/bucket?object-lock", b""),  # botocore signs it; fallback list
        ("GET", "/", b""),
    ],
)
def test_header_signed_subresources_verify(method: str, path_and_query: str, body: bytes) -> None:
    view = header_signed(method, path_and_query, body=body)
    assert verify(view).access_key == AK


def test_header_subresources_are_signed() -> None:
    view = header_signed("POST", "/bucket?delete", body=b"<Delete/>")
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("POST", view.raw_path, [("uploads", "")], view.headers))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("POST", view.raw_path, [], view.headers))
    view = header_signed("PUT", "/bucket/k?partNumber=1&uploadId=abc", body=b"x")
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(
            RequestView(
                "PUT", view.raw_path, [("partNumber", "2"), ("uploadId", "abc")], view.headers
            )
        )
    # non-sub-resource parameters are not signed in V2
    view = header_signed("GET", "/bucket?prefix=a", body=b"")
    assert verify(RequestView("GET", view.raw_path, [("prefix", "b")], view.headers))


def test_header_tampering() -> None:
    view = header_signed("GET", "/bucket/key", headers={"x-amz-meta-a": "1"})
    ak, _, sig = view.headers["authorization"][4:].partition(":")
    for bad in (
        RequestView("GET", "/bucket/key2", view.query, view.headers),
        RequestView("DELETE", view.raw_path, view.query, view.headers),
        with_headers(view, x_amz_meta_a="2"),
        with_headers(view, authorization=f"AWS {ak}:{('B' if sig[0] == 'A' else 'A') + sig[1:]}"),
        with_headers(view, authorization=f"AWS {ak}:ünïcode"),
        with_headers(view, date=formatdate(time.time() + 5, usegmt=True)),
    ):
        with pytest.raises(errors.SignatureDoesNotMatch):
            verify(bad)
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(header_signed("GET", "/bucket/key", secret="wrong"))
    with pytest.raises(errors.InvalidAccessKeyId):
        verify(header_signed("GET", "/bucket/key", access_key="AKUNKNOWN"))


def test_header_date_rules() -> None:
    view = header_signed("GET", "/bucket/key")
    verify(view, now=time.time() + 800)
    with pytest.raises(errors.RequestTimeTooSkewed):
        verify(view, now=time.time() + 1000)
    with pytest.raises(errors.RequestTimeTooSkewed):
        verify(view, now=time.time() - 1000)
    with pytest.raises(errors.AccessDenied, match="Date or x-amz-date"):
        verify(with_headers(view, date=None))
    with pytest.raises(errors.AccessDenied, match="Date or x-amz-date"):
        verify(with_headers(view, date="not a date"))


@pytest.mark.parametrize(
    "amz_date", [formatdate(usegmt=True), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())]
)
def test_header_x_amz_date_empties_the_date_line(amz_date: str) -> None:
    sts = f"GET\n\n\n\nx-amz-date:{amz_date}\n/bucket/key"
    headers = {
        "host": "h",
        "x-amz-date": amz_date,
        "authorization": f"AWS {AK}:{sign(SECRET, sts)}",
    }
    view = RequestView("GET", "/bucket/key", [], headers)
    assert verify(view).access_key == AK
    # x-amz-date wins over Date for the clock check as well
    stale = formatdate(time.time() - 86400, usegmt=True)
    assert verify(with_headers(view, date=stale)).access_key == AK
    with pytest.raises(errors.RequestTimeTooSkewed):
        verify(view, now=time.time() + 3600)


def test_header_botocore_signed_date_with_x_amz_date() -> None:
    """botocore's HmacV1Auth signs its Date header even if the caller added x-amz-date."""
    view = header_signed("GET", "/bucket/key", headers={"x-amz-date": formatdate(usegmt=True)})
    assert verify(view).access_key == AK


def test_repeated_amz_headers_from_a_multidict() -> None:
    """aiohttp hands a CIMultiDictProxy; repeats are joined with ',' as botocore does."""
    date = formatdate(usegmt=True)
    sts = f"PUT\n\n\n{date}\nx-amz-meta-list:a,b  c\nx-amz-meta-one:1\n/bucket/key"
    md = CIMultiDict(
        [
            ("Host", "h"),
            ("Date", date),
            ("X-Amz-Meta-List", " a "),
            ("x-amz-meta-one", "1"),
            ("x-amz-meta-list", "b  c"),
            ("Authorization", f"AWS {AK}:{sign(SECRET, sts)}"),
        ]
    )
    assert verify(RequestView("PUT", "/bucket/key", [], CIMultiDictProxy(md))).access_key == AK
    md["x-amz-meta-one"] = "2"
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(RequestView("PUT", "/bucket/key", [], CIMultiDictProxy(md)))


@pytest.mark.parametrize("authz", ["AWS ", "AWS nocolon", f"AWS {AK}:", "AWS :c2ln", "AWS  "])
def test_malformed_header(authz: str) -> None:
    view = RequestView(
        "GET", "/b", [], {"host": "h", "date": formatdate(usegmt=True), "authorization": authz}
    )
    with pytest.raises(errors.InvalidArgument, match="Expected AwsAccessKeyId:signature"):
        verify(view)


def test_only_one_auth_mechanism() -> None:
    view = header_signed("GET", "/bucket/key")
    query = [("AWSAccessKeyId", AK), ("Signature", "c2ln"), ("Expires", "9999999999")]
    with pytest.raises(errors.InvalidArgument, match="Only one auth mechanism"):
        verify(RequestView("GET", view.raw_path, query, view.headers))


@pytest.mark.parametrize(
    ("method", "path", "date", "headers", "signature"),
    [
        (
            "GET",
            "/johnsmith/photos/puppy.jpg",
            "Tue, 27 Mar 2007 19:36:42 +0000",
            {},
            "bWq2s1WEIj+Ydj0vQ697zp+IXMU=",
        ),
        (
            "PUT",
            "/johnsmith/photos/puppy.jpg",
            "Tue, 27 Mar 2007 21:15:45 +0000",
            {"content-type": "image/jpeg", "content-length": "94328"},
            "MyyxeRY7whkBe+bq8fHCL/2kKUg=",
        ),
        (
            "GET",
            "/johnsmith/",
            "Tue, 27 Mar 2007 19:42:41 +0000",
            {},
            "htDYFYduRNen8P9ZfE/s9SuKy0U=",
        ),
        (
            "GET",
            "/johnsmith/?acl",
            "Tue, 27 Mar 2007 19:44:46 +0000",
            {},
            "c2WLPFtWHVgbEmeEG93a4cG37dM=",
        ),
    ],
)
def test_doc_vectors_header(
    method: str, path: str, date: str, headers: dict[str, str], signature: str
) -> None:
    """RESTAuthentication.html examples, path-style (the resource is the same)."""
    hdrs = {"host": "h", "date": date, "authorization": f"AWS {DOC_AK}:{signature}", **headers}
    view = view_of(method, "http://h" + path, hdrs)
    now = parsedate_to_datetime(date).timestamp() + 60
    assert verify(view, now=now).access_key == DOC_AK


def test_canonical_helpers() -> None:
    query = [("uploadId", "u p"), ("partNumber", "3"), ("prefix", "x"), ("acl", "")]
    assert canonical_resource("/b/k%20", query) == "/b/k%20?acl&partNumber=3&uploadId=u p"
    assert canonical_resource("", []) == "/"
    headers = {"X-Amz-B": " 2 ", "x-amz-a": "1", "content-type": "t"}
    assert canonical_amz_headers(headers) == "x-amz-a:1\nx-amz-b:2\n"
    assert canonical_amz_headers(headers, [("x-amz-a", "q"), ("x-amz-c", "3")]) == (
        "x-amz-a:1\nx-amz-b:2\nx-amz-c:3\n"
    )
