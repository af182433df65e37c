"""Generated from node/s3/semantics.py: every refusal the table promises, sent for real.

For each rule, a signed raw request carrying it goes to a real node, on an operation where
the rule is not honored (and, for a rule honored only with some values, with a value it
refuses). Each must be refused with an S3 error document, and the bucket (keys, ETags,
sizes, bytes) and the bucket list must be exactly as before: a refused request stores and
deletes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from urllib.parse import quote

import pytest

from shardfleet.node.s3 import semantics
from tests.support.raw_http import RawClient, expect_error, s3, server  # noqa: F401

BUCKET = "semantics"
#: the operations the generated requests know how to send, in the order tried
SENDABLE = (
    "PutObject",
    "DeleteObject",
    "CopyObject",
    "GetObject",
    "ListObjects",
    "DeleteObjects",
    "HeadObject",
    "CreateBucket",
)
#: honored on every sendable operation with any value: their behaviour is tested elsewhere
HONORED_EVERYWHERE = {
    "authorization": "every signed request",
    "x-amz-date": "every signed request",
    "x-amz-content-sha256": "every signed request; test_bad_bodies",
    "x-amz-user-agent": "informational",
    "x-amz-request-payer": "test_conditional_ops (a no-op, as on AWS without Requester Pays)",
    "x-id": "boto3 sends it on every call",
    **dict.fromkeys(semantics.PRESIGN_PARAMS, "presigned URLs: test_sigv4, test_sigv2"),
}


def _cases() -> list[tuple[semantics.Rule, str, str, str]]:
    """(rule, op, value, why) for every refusal the table defines."""
    cases = []
    for rule in semantics.RULES:
        if rule.check is not None and rule.sample is not None and rule.ops:
            op = rule.sample_op if rule.sample_op in rule.ops else None
            op = op or next((o for o in SENDABLE if o in rule.ops), None)
            if op is not None:
                cases.append((rule, op, rule.sample, "value"))
        outside = [o for o in SENDABLE if o not in rule.ops]
        if outside:
            op = rule.sample_op if rule.sample_op in outside else outside[0]
            cases.append((rule, op, rule.sample if rule.sample is not None else "x", "scope"))
    return cases


CASES = _cases()


def test_every_rule_has_a_refusal_case_or_is_honored_everywhere():
    covered = {r.name for r, *_ in CASES}
    for rule in semantics.RULES:
        assert rule.name in covered or rule.name in HONORED_EVERYWHERE, rule


def _header_name(rule: semantics.Rule) -> str:
    return rule.name + "test" if rule.prefix and rule.name.endswith("-") else rule.name


def _request(rule: semantics.Rule, op: str, value: str) -> tuple[str, str, dict[str, str], bytes]:
    headers: dict[str, str] = {}
    query = ""
    if rule.kind == "header":
        headers[_header_name(rule)] = value
    else:
        query = quote(rule.name, safe="") + (f"={quote(value, safe='')}" if value else "")
    body = b""
    if op == "PutObject":
        method, target, body = "PUT", f"/{BUCKET}/keep", b"new bytes"
    elif op == "CopyObject":
        method, target = "PUT", f"/{BUCKET}/keep"
        headers.setdefault("x-amz-copy-source", f"/{BUCKET}/small")
        headers.setdefault("x-amz-metadata-directive", "REPLACE")
    elif op == "GetObject":
        method, target = "GET", f"/{BUCKET}/keep"
    elif op == "HeadObject":
        method, target = "HEAD", f"/{BUCKET}/keep"
    elif op == "DeleteObject":
        method, target = "DELETE", f"/{BUCKET}/keep"
    elif op == "ListObjects":
        method, target = "GET", f"/{BUCKET}"
    elif op == "DeleteObjects":
        method, target = "POST", f"/{BUCKET}?delete"
        body = b"<Delete><Object><Key>keep</Key></Object><Object><Key>small</Key></Object></Delete>"
        headers.setdefault("Content-MD5", base64.b64encode(hashlib.md5(body).digest()).decode())
    elif op == "CreateBucket":
        method, target = "PUT", f"/{BUCKET}-new"
    else:  # pragma: no cover - SENDABLE lists the ones above
        raise AssertionError(op)
    if query:
        target += ("&" if "?" in target else "?") + query
    return method, target, headers, body


def _state(s3) -> tuple[object, ...]:
    listing = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    objects = [(o["Key"], o["ETag"], o["Size"]) for o in listing]
    data = [
        hashlib.md5(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()).hexdigest()
        for o in listing
    ]
    buckets = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    return objects, data, buckets


@pytest.fixture(scope="module")
def stocked(s3):
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="keep", Body=b"k" * 300_000, Metadata={"m": "1"})
    s3.put_object(Bucket=BUCKET, Key="small", Body=b"small object")
    return _state(s3)


@pytest.mark.parametrize(
    ("rule", "op", "value", "why"),
    CASES,
    ids=[f"{r.kind}:{r.name}@{op}:{why}" for r, op, _, why in CASES],
)
def test_refused_rule_changes_nothing(server, s3, stocked, rule, op, value, why):
    raw = RawClient(server.endpoint)
    method, target, headers, body = _request(rule, op, value)
    reply = raw.request(method, target, body, headers)
    if method == "HEAD":
        assert reply.status >= 400, (reply.status, reply.headers)
    else:
        root = expect_error(reply, reply.status, None, method)
        assert reply.status >= 400, reply.body
        if why == "scope":
            assert reply.status == 501 and root is not None
            assert root.findtext("Code") == "NotImplemented", reply.body
    assert _state(s3) == stocked


@pytest.mark.parametrize(
    ("kind", "name"),
    [("header", "x-amz-something-new"), ("header", "x-amz-fancy"), ("query", "frobnicate")],
)
def test_unknown_names_are_refused_not_ignored(server, s3, stocked, kind, name):
    raw = RawClient(server.endpoint)
    headers, target = {}, f"/{BUCKET}/keep"
    if kind == "header":
        headers[name] = "1"
    else:
        target += f"?{name}=1"
    reply = raw.request("PUT", target, b"overwrite?", headers)
    root = expect_error(reply, 501, "NotImplemented", "PUT")
    assert root is not None and name in (root.findtext("Message") or "")
    assert _state(s3) == stocked


def test_a_fresh_key_is_not_created_by_a_refused_put(server, s3, stocked):
    raw = RawClient(server.endpoint)
    key = f"fresh-{uuid.uuid4().hex}"
    reply = raw.request("PUT", f"/{BUCKET}/{key}", b"x", {"x-amz-storage-class": "GLACIER"})
    expect_error(reply, 501, "NotImplemented", "PUT")
    reply = raw.request("PUT", f"/{BUCKET}/{key}", b"x", {"x-amz-storage-class": "WARM"})
    expect_error(reply, 400, "InvalidStorageClass", "PUT")
    assert _state(s3) == stocked
