"""CORS on a real node: Put/Get/DeleteBucketCors with boto3, OPTIONS preflights and the
headers of actual answers (success, error, presigned) with plain HTTP, and the server-wide
default (`[cors_default]`) for buckets without rules of their own."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.support.nodeproc import NodeProcess

pytestmark = pytest.mark.timeout(120)

APP = "https://app.example"
DEFAULT = "https://default.example"
RULES = {
    "CORSRules": [
        {
            "ID": "uploads",
            "AllowedOrigins": [APP],
            "AllowedMethods": ["PUT", "POST"],
            "AllowedHeaders": ["content-type", "x-amz-*"],
            "ExposeHeaders": ["ETag", "x-amz-request-id"],
            "MaxAgeSeconds": 600,
        },
        {"AllowedOrigins": ["http://*.read.example"], "AllowedMethods": ["GET", "HEAD"]},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
    ]
}


@pytest.fixture(scope="module")
def cors_node(tmp_path_factory) -> NodeProcess:
    root = tmp_path_factory.mktemp("cors")
    config = root / "node.toml"
    config.write_text(f'[cors_default]\nallowed_origins = ["{DEFAULT}"]\nmax_age_seconds = 60\n')
    node = NodeProcess(root / "node", args=["--config", str(config)]).start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def s3(cors_node):
    return cors_node.client(retries={"max_attempts": 1})


def http(
    method: str, url: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def preflight(node, target: str, origin: str | None, method: str | None, headers: str = ""):
    h = {}
    if origin is not None:
        h["Origin"] = origin
    if method is not None:
        h["Access-Control-Request-Method"] = method
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return http("OPTIONS", node.endpoint + target, h)


def fresh(s3) -> str:
    name = f"cors-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def test_put_get_delete_bucket_cors(s3):
    bucket = fresh(s3)
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_cors(Bucket=bucket)
    assert caught.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    got = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert got == RULES["CORSRules"]
    # a bad configuration is refused with S3's error and the stored one stays
    bad = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]}
    with pytest.raises(ClientError) as caught:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=bad)
    assert caught.value.response["Error"]["Code"] == "InvalidRequest"
    assert "Unsupported method is PATCH" in caught.value.response["Error"]["Message"]
    two_stars = {"CORSRules": [{"AllowedOrigins": ["https://*.*"], "AllowedMethods": ["GET"]}]}
    with pytest.raises(ClientError) as caught:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=two_stars)
    assert caught.value.response["Error"]["Code"] == "InvalidRequest"
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == got
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_cors(Bucket=bucket)
    assert caught.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    with pytest.raises(ClientError) as caught:
        s3.put_bucket_cors(Bucket=f"{bucket}-none", CORSConfiguration=RULES)
    assert caught.value.response["Error"]["Code"] == "NoSuchBucket"


def test_rules_go_with_their_bucket(s3):
    bucket = fresh(s3)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    s3.delete_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_cors(Bucket=bucket)
    assert caught.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"


def test_preflight_matches_rules_in_order(cors_node, s3):
    bucket = fresh(s3)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    status, headers, _ = preflight(
        cors_node, f"/{bucket}/k", APP, "PUT", "Content-Type, X-Amz-Meta-Tag"
    )
    assert status == 200
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-allow-methods"] == "PUT, POST"
    assert headers["access-control-allow-headers"] == "content-type, x-amz-meta-tag"
    assert headers["access-control-expose-headers"] == "ETag, x-amz-request-id"
    assert headers["access-control-max-age"] == "600"
    assert "Access-Control-Request-Method" in headers["vary"]
    # the wildcard-origin rule: '*' and no credentials
    status, headers, _ = preflight(cors_node, f"/{bucket}/k", "https://any.example", "GET")
    assert status == 200
    assert headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in headers
    # one '*' inside an origin
    status, headers, _ = preflight(cors_node, f"/{bucket}", "http://a.b.read.example", "HEAD")
    assert status == 200 and headers["access-control-allow-origin"] == "http://a.b.read.example"


@pytest.mark.parametrize(
    ("origin", "method", "req_headers", "status", "code", "text"),
    [
        (APP, "DELETE", "", 403, "AccessForbidden", "This CORS request is not allowed"),
        (APP, "PUT", "x-other", 403, "AccessForbidden", "This CORS request is not allowed"),
        ("https://evil.example", "PUT", "", 403, "AccessForbidden", "not allowed"),
        (None, "PUT", "", 400, "BadRequest", "Origin request header needed"),
        (APP, None, "", 400, "BadRequest", "Invalid Access-Control-Request-Method: null"),
        (APP, "PATCH", "", 400, "BadRequest", "Invalid Access-Control-Request-Method: PATCH"),
    ],
)
def test_preflight_refusals(cors_node, s3, origin, method, req_headers, status, code, text):
    bucket = fresh(s3)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    got, headers, body = preflight(cors_node, f"/{bucket}/k", origin, method, req_headers)
    assert got == status, body
    assert f"<Code>{code}</Code>".encode() in body and text.encode() in body
    assert "access-control-allow-origin" not in headers
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"


def test_preflight_without_rules_and_on_missing_bucket(cors_node, s3):
    bucket = fresh(s3)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES["CORSRules"][:1]})
    # the bucket's own rules replace the server default
    status, _, body = preflight(cors_node, f"/{bucket}/k", DEFAULT, "GET")
    assert status == 403 and b"AccessForbidden" in body
    status, _, body = preflight(cors_node, f"/{bucket}-missing/k", APP, "GET")
    assert status == 404 and b"<Code>NoSuchBucket</Code>" in body


def test_server_default_applies_to_buckets_without_rules(cors_node, s3):
    bucket = fresh(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    status, headers, _ = preflight(cors_node, f"/{bucket}/k", DEFAULT, "PUT", "content-type")
    assert status == 200
    assert headers["access-control-allow-origin"] == DEFAULT
    assert headers["access-control-max-age"] == "60"
    status, _, body = preflight(cors_node, f"/{bucket}/k", APP, "PUT")
    assert status == 403 and b"AccessForbidden" in body
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    status, headers, body = http("GET", url, {"Origin": DEFAULT})
    assert status == 200 and body == b"data"
    assert headers["access-control-allow-origin"] == DEFAULT
    assert "ETag" in headers["access-control-expose-headers"]


def test_actual_answers_carry_the_headers(cors_node, s3):
    bucket = fresh(s3)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    reader = "http://x.read.example"
    # presigned GET: the matching rule's headers
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    status, headers, body = http("GET", url, {"Origin": reader})
    assert status == 200 and body == b"data"
    assert headers["access-control-allow-origin"] == reader
    assert headers["access-control-allow-methods"] == "GET, HEAD"
    assert "Origin" in headers["vary"]
    # an error answer too (the browser shows the page the S3 error)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "absent"})
    status, headers, body = http("GET", url, {"Origin": reader})
    assert status == 404 and b"NoSuchKey" in body
    assert headers["access-control-allow-origin"] == reader
    # an unsigned request (AccessDenied) also gets them
    status, headers, body = http("GET", f"{cors_node.endpoint}/{bucket}/k", {"Origin": reader})
    assert status == 403 and b"AccessDenied" in body
    assert headers["access-control-allow-origin"] == reader
    # presigned PUT from the upload rule's origin
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "up", "ContentType": "text/plain"}
    )
    status, headers, body = http(
        "PUT", url, {"Origin": APP, "Content-Type": "text/plain"}, b"uploaded"
    )
    assert status == 200, body
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-expose-headers"] == "ETag, x-amz-request-id"
    assert s3.get_object(Bucket=bucket, Key="up")["Body"].read() == b"uploaded"
    # an origin no rule allows for HEAD: no Access-Control-* headers, still Vary
    url = s3.generate_presigned_url("head_object", Params={"Bucket": bucket, "Key": "k"})
    status, headers, _ = http("HEAD", url, {"Origin": "https://evil.example"})
    assert status == 200
    assert not any(h.startswith("access-control-") for h in headers)
    assert "Origin" in headers["vary"]
    # no Origin: no CORS headers at all (what non-browser clients see is unchanged)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    status, headers, _ = http("GET", url, {})
    assert status == 200 and not any(h.startswith("access-control-") for h in headers)


def test_cors_management_needs_permission(cors_node, s3, tmp_path):
    bucket = fresh(s3)
    anonymous = http("GET", f"{cors_node.endpoint}/{bucket}?cors", {})
    assert anonymous[0] == 403 and b"AccessDenied" in anonymous[2]
    request = urllib.request.Request(
        f"{cors_node.endpoint}/{bucket}?cors", data=b"<CORSConfiguration/>", method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_cors(Bucket=bucket)
    assert caught.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
