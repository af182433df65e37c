"""The bucket-policy engine (node.s3.policy): every condition operator with its IfExists and
set forms, the deny/allow/implicit decision, Principal/Action/Resource and their Not forms,
wildcards, every MalformedPolicy path, IsPublic, and hypothesis properties of the decision
(a Deny copy of an applying Allow denies, statement order is irrelevant, "*" matches all)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardfleet.node.s3.errors import S3Error
from shardfleet.node.s3.policy import (
    MAX_POLICY_BYTES,
    MalformedPolicy,
    Policy,
    Request,
    bucket_arn,
    compile_wildcard,
    evaluate,
    object_arn,
    parse,
    public_status,
)

BUCKET = "b"
OWNER = "AKIDOWNER"
ALICE = "arn:aws:iam::111122223333:user/alice"
MISSING = object()  # the condition key is absent from the request


def stmt(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::b/*",
    }
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


def policy(*statements: dict[str, Any], **top: Any) -> Policy:
    return parse(
        json.dumps({"Version": "2012-10-17", "Statement": list(statements), **top}), BUCKET
    )


def req(
    principal: str | None = ALICE,
    action: str = "s3:GetObject",
    resource: str = "arn:aws:s3:::b/k",
    **context: Any,
) -> Request:
    return Request(principal, action, resource, context)


def holds(condition: dict[str, Any], key: str, value: Any) -> bool:
    ctx = {} if value is MISSING else {key: value}
    decision = evaluate(
        policy(stmt(Condition=condition)), Request(ALICE, "s3:GetObject", "arn:aws:s3:::b/k", ctx)
    )
    assert decision in ("allow", "none")
    return decision == "allow"


# --- condition operators --------------------------------------------------------------------

T, F = True, False
D0 = "2024-01-01T00:00:00Z"  # = epoch 1704067200
CASES: list[tuple[str, Any, Any, bool]] = [
    # (operator, policy value(s), request value or MISSING, condition holds?)
    ("StringEquals", ["a", "b"], "a", T),
    ("StringEquals", ["a", "b"], "b", T),
    ("StringEquals", ["a", "b"], "c", F),
    ("StringEquals", "a", "A", F),
    ("StringEquals", "a", MISSING, F),
    ("StringEquals", "", "", T),
    ("StringNotEquals", ["a", "b"], "a", F),  # NOR over the policy's values
    ("StringNotEquals", ["a", "b"], "c", T),
    ("StringNotEquals", "a", MISSING, T),  # a negated operator holds for a missing key
    ("StringEqualsIgnoreCase", "AbC", "aBc", T),
    ("StringEqualsIgnoreCase", "AbC", "abd", F),
    ("StringEqualsIgnoreCase", "AbC", MISSING, F),
    ("StringNotEqualsIgnoreCase", "AbC", "ABC", F),
    ("StringNotEqualsIgnoreCase", "AbC", "x", T),
    ("StringNotEqualsIgnoreCase", "AbC", MISSING, T),
    ("StringLike", "a*c?", "abbbcd", T),
    ("StringLike", "a*c?", "abc", F),
    ("StringLike", "a*c?", "acx", T),
    ("StringLike", "home/*", "home/", T),
    ("StringLike", "home/*", "Home/x", F),
    ("StringLike", "*", "", T),
    ("StringLike", ["x", "y*"], "yes", T),
    ("StringLike", "a.c", "abc", F),  # regex metacharacters are literal
    ("StringLike", "a*", MISSING, F),
    ("StringNotLike", "home/*", "home/x", F),
    ("StringNotLike", "home/*", "other", T),
    ("StringNotLike", "home/*", MISSING, T),
    ("NumericEquals", "10", "10", T),
    ("NumericEquals", "10", "10.0", T),
    ("NumericEquals", 10, "10", T),  # JSON numbers are accepted as values
    ("NumericEquals", "10", "11", F),
    ("NumericEquals", "10", "ten", F),
    ("NumericEquals", "10", MISSING, F),
    ("NumericNotEquals", "10", "10", F),
    ("NumericNotEquals", "10", "11", T),
    ("NumericNotEquals", "10", MISSING, T),
    ("NumericLessThan", "10", "9", T),
    ("NumericLessThan", "10", "10", F),
    ("NumericLessThan", "10", MISSING, F),
    ("NumericLessThanEquals", "10", "10", T),
    ("NumericLessThanEquals", "10", "11", F),
    ("NumericGreaterThan", "10", "11", T),
    ("NumericGreaterThan", "10", "10", F),
    ("NumericGreaterThanEquals", "10", "10", T),
    ("NumericGreaterThanEquals", "10", "9", F),
    ("NumericGreaterThanEquals", "-1.5e1", "-15", T),
    ("DateEquals", D0, D0, T),
    ("DateEquals", D0, "1704067200", T),  # epoch and ISO 8601 are one clock
    ("DateEquals", D0, "2024-01-01T01:00:00+01:00", T),
    ("DateEquals", D0, "2024-01-01T00:00:01Z", F),
    ("DateEquals", D0, "yesterday", F),
    ("DateEquals", D0, MISSING, F),
    ("DateNotEquals", D0, D0, F),
    ("DateNotEquals", D0, "2025-01-01T00:00:00Z", T),
    ("DateNotEquals", D0, MISSING, T),
    ("DateLessThan", D0, "2023-12-31T23:59:59Z", T),
    ("DateLessThan", D0, D0, F),
    ("DateLessThanEquals", D0, D0, T),
    ("DateLessThanEquals", D0, "2024-01-01T00:00:01Z", F),
    ("DateGreaterThan", "1704067200", "2024-06-01T00:00:00+02:00", T),
    ("DateGreaterThan", D0, D0, F),
    ("DateGreaterThanEquals", D0, D0, T),
    ("DateGreaterThanEquals", "2024-01-01", "2023-12-31T23:59:59Z", F),  # naive is UTC
    ("Bool", "true", True, T),
    ("Bool", "true", "TRUE", T),
    ("Bool", True, "true", T),
    ("Bool", "true", "false", F),
    ("Bool", "false", False, T),
    ("Bool", "true", MISSING, F),
    ("IpAddress", "192.0.2.0/24", "192.0.2.7", T),
    ("IpAddress", "192.0.2.0/24", "192.0.3.1", F),
    ("IpAddress", "192.0.2.0/24", "2001:db8::1", F),
    ("IpAddress", ["192.0.2.0/24", "2001:db8::/32"], "2001:db8::1", T),
    ("IpAddress", "203.0.113.5", "203.0.113.5", T),  # a bare address is its /32
    ("IpAddress", "192.0.2.1/24", "192.0.2.200", T),  # host bits are ignored
    ("IpAddress", "192.0.2.0/24", "not-an-ip", F),
    ("IpAddress", "192.0.2.0/24", MISSING, F),
    ("NotIpAddress", "192.0.2.0/24", "192.0.2.7", F),
    ("NotIpAddress", "192.0.2.0/24", "10.0.0.1", T),
    ("NotIpAddress", "192.0.2.0/24", MISSING, T),
    ("ArnEquals", "arn:aws:s3:::src", "arn:aws:s3:::src", T),
    ("ArnEquals", "arn:aws:s3:::src", "arn:aws:s3:::other", F),
    ("ArnEquals", "arn:aws:s3:::SRC", "arn:aws:s3:::src", F),  # case-sensitive
    ("ArnEquals", "arn:aws:iam::*:root", "arn:aws:iam::123:root", T),  # wildcards too
    ("ArnEquals", "arn:aws:s3:::src", "not-an-arn", F),
    ("ArnEquals", "arn:aws:s3:::src", MISSING, F),
    ("ArnLike", "arn:aws:iam::*:role/ops-*", "arn:aws:iam::123456789012:role/ops-a", T),
    ("ArnLike", "arn:aws:iam::*:role/ops-*", "arn:aws:iam::123456789012:user/ops-a", F),
    ("ArnLike", "arn:aws:iam::*:root", "arn:aws:iam::1:2:root", F),  # * stays in its part
    ("ArnLike", "arn:aws:s3:::*", "arn:aws:s3:::b/k:with:colons", T),
    ("ArnLike", "arn:*", "arn:aws:sqs:us-east-1:1:q", T),  # not six parts: whole-string
    ("ArnLike", "arn:aws:sqs:*:123456789012:q?", "arn:aws:sqs:eu-west-1:123456789012:q1", T),
    ("ArnNotEquals", "arn:aws:s3:::x", "arn:aws:s3:::y", T),
    ("ArnNotEquals", "arn:aws:s3:::x", "arn:aws:s3:::x", F),
    ("ArnNotEquals", "arn:aws:s3:::x", MISSING, T),
    ("ArnNotLike", "arn:aws:s3:::x*", "arn:aws:s3:::xy", F),
    ("ArnNotLike", "arn:aws:s3:::x*", "arn:aws:s3:::y", T),
    ("ArnNotLike", "arn:aws:s3:::x*", MISSING, T),
    ("Null", "true", MISSING, T),
    ("Null", "true", "v", F),
    ("Null", "false", MISSING, F),
    ("Null", "false", "v", T),
    ("Null", True, [], T),  # an empty list is no value
    ("Null", ["true", "false"], "v", T),
    # ...IfExists: a missing key holds, a present one is checked as without the suffix
    ("StringEqualsIfExists", "a", MISSING, T),
    ("StringEqualsIfExists", "a", "a", T),
    ("StringEqualsIfExists", "a", "b", F),
    ("StringNotEqualsIfExists", "a", MISSING, T),
    ("StringNotEqualsIfExists", "a", "a", F),
    ("StringEqualsIgnoreCaseIfExists", "a", "A", T),
    ("StringNotEqualsIgnoreCaseIfExists", "a", "A", F),
    ("StringLikeIfExists", "a*", MISSING, T),
    ("StringLikeIfExists", "a*", "ba", F),
    ("StringNotLikeIfExists", "a*", "ab", F),
    ("NumericLessThanIfExists", "10", MISSING, T),
    ("NumericLessThanIfExists", "10", "5", T),
    ("NumericLessThanIfExists", "10", "50", F),
    ("NumericEqualsIfExists", "1", "2", F),
    ("NumericNotEqualsIfExists", "1", "1", F),
    ("NumericLessThanEqualsIfExists", "1", "1", T),
    ("NumericGreaterThanIfExists", "1", "0", F),
    ("NumericGreaterThanEqualsIfExists", "1", MISSING, T),
    ("DateEqualsIfExists", D0, MISSING, T),
    ("DateNotEqualsIfExists", D0, D0, F),
    ("DateLessThanIfExists", D0, "2030-01-01T00:00:00Z", F),
    ("DateLessThanEqualsIfExists", D0, D0, T),
    ("DateGreaterThanIfExists", D0, MISSING, T),
    ("DateGreaterThanEqualsIfExists", D0, "2000-01-01T00:00:00Z", F),
    ("BoolIfExists", "false", MISSING, T),
    ("BoolIfExists", "false", "true", F),
    ("IpAddressIfExists", "10.0.0.0/8", MISSING, T),
    ("IpAddressIfExists", "10.0.0.0/8", "11.0.0.1", F),
    ("NotIpAddressIfExists", "10.0.0.0/8", "10.0.0.1", F),
    ("ArnEqualsIfExists", "arn:aws:s3:::x", MISSING, T),
    ("ArnLikeIfExists", "arn:aws:s3:::x*", "arn:aws:s3:::y", F),
    ("ArnNotEqualsIfExists", "arn:aws:s3:::x", "arn:aws:s3:::x", F),
    ("ArnNotLikeIfExists", "arn:aws:s3:::x*", MISSING, T),
    # set qualifiers, for multivalued keys
    ("ForAnyValue:StringEquals", ["a", "b"], ["c", "a"], T),
    ("ForAnyValue:StringEquals", ["a", "b"], ["c", "d"], F),
    ("ForAnyValue:StringEquals", ["a", "b"], [], F),
    ("ForAnyValue:StringEquals", ["a", "b"], MISSING, F),
    ("ForAnyValue:StringEqualsIfExists", ["a"], MISSING, F),  # ForAnyValue ignores IfExists
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "b"], T),
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "c"], F),
    ("ForAllValues:StringEquals", ["a", "b"], [], T),
    ("ForAllValues:StringEquals", ["a", "b"], MISSING, T),
    ("ForAllValues:StringEqualsIfExists", ["a"], MISSING, T),
    ("ForAnyValue:StringNotEquals", ["a", "b"], ["a", "b"], F),
    ("ForAnyValue:StringNotEquals", ["a", "b"], ["a", "c"], T),
    ("ForAnyValue:StringNotEquals", ["a", "b"], MISSING, F),
    ("ForAllValues:StringNotEquals", ["a", "b"], ["c", "d"], T),
    ("ForAllValues:StringNotEquals", ["a", "b"], ["c", "a"], F),
    ("ForAllValues:StringNotEquals", ["a", "b"], MISSING, T),
    ("ForAllValues:StringLike", "Created*", ["CreatedBy", "CreatedAt"], T),
    ("ForAllValues:StringLike", "Created*", ["CreatedBy", "Owner"], F),
    ("ForAnyValue:StringLike", "Created*", ["CreatedBy", "Owner"], T),
    ("ForAnyValue:NumericLessThan", "10", ["50", "5"], T),
    ("ForAllValues:NumericLessThan", "10", ["50", "5"], F),
    ("ForAnyValue:IpAddress", "10.0.0.0/8", ["192.0.2.1", "10.1.1.1"], T),
    ("ForAllValues:ArnLike", "arn:aws:s3:::x*", ["arn:aws:s3:::x1", "arn:aws:s3:::x2"], T),
    ("forallvalues:stringequals", ["a"], ["a"], T),  # operator names: any case
    # a multivalued key without a qualifier: any of its values matching counts
    ("StringEquals", "a", ["b", "a"], T),
    ("StringNotEquals", "a", ["b", "a"], F),
]


@pytest.mark.parametrize(("op", "wanted", "got", "expected"), CASES)
def test_condition_operator(op: str, wanted: Any, got: Any, expected: bool) -> None:
    assert holds({op: {"test:key": wanted}}, "test:key", got) is expected


def test_every_operator_and_its_if_exists_form_is_covered() -> None:
    bases = {op.split(":")[-1].lower().removesuffix("ifexists") for op, *_ in CASES}
    if_exists = {op.lower() for op, *_ in CASES if op.lower().endswith("ifexists")}
    assert len(bases) == 26  # 6 String, 6 Numeric, 6 Date, Bool, 2 Ip, 4 Arn, Null
    assert {b + "ifexists" for b in bases if b != "null"} <= {op.split(":")[-1] for op in if_exists}


def test_condition_key_names_are_case_insensitive() -> None:
    block = {"IpAddress": {"AWS:SourceIP": "10.0.0.0/8"}}
    assert holds(block, "aws:sourceip", "10.1.2.3")
    assert holds(block, "Aws:SourceIp", "10.1.2.3")
    assert not holds({"StringEquals": {"s3:prefix": "Home/"}}, "S3:PREFIX", "home/")


def test_keys_and_operators_are_anded_values_ored() -> None:
    block = {
        "StringEquals": {"s3:prefix": ["home/", "docs/"], "s3:delimiter": "/"},
        "NumericLessThanEquals": {"s3:max-keys": "100"},
    }
    p = policy(stmt(Action="s3:ListBucket", Resource="arn:aws:s3:::b", Condition=block))

    def ask(**ctx: Any) -> str:
        return evaluate(p, req(action="s3:ListBucket", resource=bucket_arn(BUCKET), **ctx))

    ok = {"s3:prefix": "docs/", "s3:delimiter": "/", "s3:max-keys": "50"}
    assert ask(**ok) == "allow"
    assert ask(**{**ok, "s3:prefix": "tmp/"}) == "none"
    assert ask(**{**ok, "s3:delimiter": "-"}) == "none"
    assert ask(**{**ok, "s3:max-keys": "1000"}) == "none"
    assert ask(**{k: v for k, v in ok.items() if k != "s3:delimiter"}) == "none"


def test_context_values_of_every_type() -> None:
    assert holds({"NumericEquals": {"k": 5}}, "k", 5)
    assert holds({"NumericEquals": {"k": 2.5}}, "k", 2.5)
    assert holds({"Bool": {"k": False}}, "k", False)
    assert holds({"ForAllValues:StringEquals": {"k": ["a"]}}, "k", ("a", "a"))


def test_existing_object_tag_and_time_keys() -> None:
    p = policy(
        stmt(
            Condition={
                "StringEquals": {"s3:ExistingObjectTag/classification": "public"},
                "DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"},
                "NumericGreaterThan": {"aws:EpochTime": "1700000000"},
            }
        )
    )
    ctx = {
        "s3:ExistingObjectTag/classification": "public",
        "aws:CurrentTime": "2025-05-01T12:00:00Z",
        "aws:EpochTime": "1746100800",
    }
    assert evaluate(p, req(**ctx)) == "allow"
    assert evaluate(p, req(**{**ctx, "s3:ExistingObjectTag/classification": "secret"})) == "none"


# --- decisions -----------------------------------------------------------------------------


def test_explicit_deny_beats_allow_and_no_match_is_none() -> None:
    allow, deny = stmt(), stmt(Effect="Deny", Condition={"Bool": {"aws:SecureTransport": "false"}})
    p = policy(allow, deny)
    assert evaluate(p, req(**{"aws:SecureTransport": False})) == "deny"
    assert evaluate(p, req(**{"aws:SecureTransport": True})) == "allow"
    assert evaluate(p, req(action="s3:PutObject", **{"aws:SecureTransport": True})) == "none"
    assert evaluate(policy(deny, allow), req(**{"aws:SecureTransport": False})) == "deny"


def test_principals() -> None:
    p = policy(
        stmt(Principal={"AWS": [ALICE, "444455556666"], "CanonicalUser": OWNER}),
        stmt(Principal={"Service": "logging.s3.amazonaws.com"}, Action="s3:PutObject"),
    )
    assert evaluate(p, req(ALICE)) == "allow"
    assert evaluate(p, req(OWNER)) == "allow"
    assert evaluate(p, req("arn:aws:iam::444455556666:root")) == "allow"  # account = root
    assert evaluate(p, req("444455556666")) == "allow"
    assert evaluate(p, req("arn:aws:iam::444455556666:user/bob")) == "none"  # no delegation
    assert evaluate(p, req("arn:aws:iam::111122223333:user/alicex")) == "none"
    assert evaluate(p, req(None)) == "none"  # anonymous matches only "*"
    assert evaluate(p, req("logging.s3.amazonaws.com", "s3:PutObject")) == "allow"
    for everyone in ("*", {"AWS": "*"}, {"AWS": ["*", ALICE]}):
        assert evaluate(policy(stmt(Principal=everyone)), req(None)) == "allow"
        assert evaluate(policy(stmt(Principal=everyone)), req(OWNER)) == "allow"


def test_not_principal() -> None:
    p = policy(stmt(), stmt(Effect="Deny", Principal=None, NotPrincipal={"AWS": ALICE}))
    assert evaluate(p, req(ALICE)) == "allow"
    assert evaluate(p, req(OWNER)) == "deny"
    assert evaluate(p, req(None)) == "deny"  # anonymous is not Alice
    nobody = policy(stmt(Principal=None, NotPrincipal="*"))
    assert evaluate(nobody, req(None)) == evaluate(nobody, req(ALICE)) == "none"


def test_not_action_and_action_case() -> None:
    p = policy(stmt(Action=None, NotAction=["s3:Delete*", "s3:PutObjectAcl"]))
    assert evaluate(p, req(action="s3:GetObject")) == "allow"
    assert evaluate(p, req(action="s3:PutObject")) == "allow"
    assert evaluate(p, req(action="s3:DeleteObject")) == "none"
    assert evaluate(p, req(action="S3:DELETEOBJECT")) == "none"
    assert evaluate(p, req(action="s3:putobjectacl")) == "none"
    q = policy(stmt(Action=["S3:getobject", "s3:Get?bjectTagging"]))
    assert evaluate(q, req(action="s3:GetObject")) == "allow"
    assert evaluate(q, req(action="s3:GetObjectTagging")) == "allow"
    assert evaluate(q, req(action="s3:GetObjectAcl")) == "none"


def test_not_resource_and_resource_case() -> None:
    p = policy(
        stmt(Action="*"), stmt(Effect="Deny", Resource=None, NotResource="arn:aws:s3:::b/pub/*")
    )
    assert evaluate(p, req(resource=object_arn(BUCKET, "pub/x"))) == "allow"
    assert evaluate(p, req(resource=object_arn(BUCKET, "priv/x"))) == "deny"
    assert evaluate(p, req(resource=object_arn(BUCKET, "PUB/x"))) == "deny"  # keys: case-sensitive
    assert evaluate(p, req(resource=bucket_arn(BUCKET))) == "deny"


WILDCARDS = [
    # (pattern, text, matches?)
    ("*", "", T),
    ("*", "any/thing\nwith newline", T),
    ("?", "", F),
    ("?", "x", T),
    ("?", "xy", F),
    ("a?c", "a/c", T),
    ("a*", "a", T),
    ("*a", "ba", T),
    ("*a", "ab", F),
    ("a**b", "ab", T),
    ("a*b*c", "aXbYc", T),
    ("a*b*c", "acb", F),
    ("*ab*ab*", "abab", T),
    ("*ab*ab*", "aba", F),
    ("a.b", "axb", F),
    ("[ab]", "a", F),
    ("[ab]", "[ab]", T),
    ("x+y", "x+y", T),
    ("(?i)a", "A", F),
    ("arn:aws:s3:::b", "arn:aws:s3:::b/x", F),
    ("arn:aws:s3:::b*", "arn:aws:s3:::b/x", T),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), WILDCARDS)
def test_wildcards(pattern: str, text: str, expected: bool) -> None:
    assert (compile_wildcard([pattern]).fullmatch(text) is not None) is expected


def test_wildcard_cannot_backtrack_exponentially() -> None:
    # a naive translation (.*a.*a...) takes astronomically long on this; it must not
    pattern, key = "*a" * 12 + "*b", "a" * 1024
    assert compile_wildcard([pattern]).fullmatch(key) is None
    p = policy(stmt(Resource=f"arn:aws:s3:::b/{pattern}"))
    assert evaluate(p, req(resource=object_arn(BUCKET, key))) == "none"


def test_accepted_shapes() -> None:
    single = parse(json.dumps({"Statement": stmt()}), BUCKET)  # no Version; one object
    assert single.version is None and len(single.statements) == 1
    old = parse(json.dumps({"Version": "2008-10-17", "Id": "p1", "Statement": [stmt()]}), BUCKET)
    assert old.version == "2008-10-17" and old.id == "p1"
    for resource in ("arn:aws:s3:::b", "arn:aws:s3:::*", "arn:aws:s3:::b*", "arn:aws:s3:::?/*"):
        policy(stmt(Resource=resource))
    policy(stmt(Sid=""), stmt(Sid=""), stmt(Sid="a"))  # only given Sids must be unique
    policy(stmt(Condition={}), stmt(Condition={"StringEquals": {}}))
    assert parse(json.dumps({"Statement": stmt()}).encode(), BUCKET) == single  # bytes too


def test_size_limit_is_twenty_kilobytes() -> None:
    def sized(n: int) -> str:
        text = json.dumps({"Id": "", "Statement": stmt()})
        return text.replace('"Id": ""', '"Id": "' + "x" * (n - len(text)) + '"')

    assert len(sized(MAX_POLICY_BYTES).encode()) == MAX_POLICY_BYTES
    parse(sized(MAX_POLICY_BYTES), BUCKET)
    with pytest.raises(MalformedPolicy, match="maximum allowed document size"):
        parse(sized(MAX_POLICY_BYTES + 1), BUCKET)


# --- MalformedPolicy -------------------------------------------------------------------------

BAD_DOCUMENTS: list[tuple[Any, str]] = [
    # (the document, or a statement's replacement fields as a dict under "stmt"; message)
    ("{", "invalid Json"),
    ("not json", "invalid Json"),
    (b'{"Statement": "\xff"}', "invalid Json"),
    ("[" * 5000 + "]" * 5000, "invalid Json|first byte"),
    ('{"Statement": {}, "Statement": {}}', "invalid Json"),  # duplicate field
    ("[]", "first byte must be '{'"),
    ('"policy"', "first byte must be '{'"),
    ({"Foo": 1, "Statement": [stmt()]}, "Unknown field Foo"),
    ({"Version": "2020-01-01", "Statement": [stmt()]}, "valid version string"),
    ({"Version": 2012, "Statement": [stmt()]}, "valid version string"),
    ({"Id": 7, "Statement": [stmt()]}, "invalid Id"),
    ({"Version": "2012-10-17"}, "Missing required field Statement"),
    ({"Statement": []}, "Statement is empty"),
    ({"Statement": "x"}, "invalid statement"),
    ({"Statement": None}, "invalid statement"),
    ({"Statement": ["x"]}, "invalid statement"),
    ({"Statement": [{**stmt(), "Condition": None}]}, "invalid condition"),
    ({"Statement": [stmt(Sid="a"), stmt(Sid="a")]}, "must be unique"),
]
BAD_STATEMENTS: list[tuple[dict[str, Any], str]] = [
    ({"Actions": "s3:*"}, "Unknown field Actions"),
    ({"Sid": 5}, "invalid Sid"),
    ({"Effect": None}, "Missing required field Effect"),
    ({"Effect": "allow"}, "Invalid effect"),
    ({"Effect": "Maybe"}, "Invalid effect"),
    ({"Principal": None}, "Missing required field Principal"),
    ({"NotPrincipal": "*"}, "both Principal and NotPrincipal"),
    ({"Principal": "someone"}, "Invalid principal"),
    ({"Principal": ["*"]}, "Invalid principal"),
    ({"Principal": {}}, "Invalid principal"),
    ({"Principal": {"Foo": "x"}}, "Invalid principal"),
    ({"Principal": {"AWS": "arn:aws:iam::*:root"}}, "Invalid principal"),
    ({"Principal": {"AWS": "arn:aws:iam::123456789012:user/a?"}}, "Invalid principal"),
    ({"Principal": {"CanonicalUser": "*"}}, "Invalid principal"),
    ({"Principal": {"AWS": []}}, "Invalid principal"),
    ({"Principal": {"AWS": [1]}}, "Invalid principal"),
    ({"Principal": {"AWS": ""}}, "Invalid principal"),
    ({"Action": None}, "Missing required field Action"),
    ({"NotAction": "s3:*"}, "both Action and NotAction"),
    ({"Action": "iam:CreateUser"}, "invalid action"),
    ({"Action": "GetObject"}, "invalid action"),
    ({"Action": "s3:"}, "invalid action"),
    ({"Action": "s3:Get Object"}, "invalid action"),
    ({"Action": []}, "invalid action"),
    ({"Action": 5}, "invalid action"),
    ({"Action": ["s3:GetObject", None]}, "invalid action"),
    ({"Resource": None}, "Missing required field Resource"),
    ({"NotResource": "arn:aws:s3:::b"}, "both Resource and NotResource"),
    ({"Resource": "arn:aws:s3:::other/*"}, "invalid resource"),  # another bucket
    ({"Resource": ["arn:aws:s3:::b/*", "arn:aws:s3:::bb"]}, "invalid resource"),
    ({"Resource": "arn:aws:s3:::c*"}, "invalid resource"),
    ({"Resource": "*"}, "invalid resource"),
    ({"Resource": "arn:aws:iam::123456789012:root"}, "invalid resource"),
    ({"Resource": "arn:aws:s3:::"}, "invalid resource"),
    ({"Resource": "arn:aws:s3:::/k"}, "invalid resource"),
    ({"Resource": []}, "invalid resource"),
    ({"Condition": "x"}, "invalid condition"),
    ({"Condition": []}, "invalid condition"),
    ({"Condition": {"StringEqualz": {"k": "v"}}}, "Invalid Condition type : StringEqualz"),
    ({"Condition": {"ForSomeValues:StringEquals": {"k": "v"}}}, "Invalid Condition type"),
    ({"Condition": {"IfExists": {"k": "v"}}}, "Invalid Condition type"),
    ({"Condition": {"NullIfExists": {"k": "true"}}}, "Invalid Condition type"),
    ({"Condition": {"ForAnyValue:Null": {"k": "true"}}}, "Invalid Condition type"),
    ({"Condition": {"BinaryEquals": {"k": "AA=="}}}, "Invalid Condition type"),
    ({"Condition": {"StringEquals": "k"}}, "invalid condition block"),
    ({"Condition": {"StringEquals": {"": "v"}}}, "invalid condition key"),
    ({"Condition": {"StringEquals": {"k": {"nested": 1}}}}, "Invalid value"),
    ({"Condition": {"StringEquals": {"k": None}}}, "Invalid value"),
    ({"Condition": {"StringEquals": {"k": []}}}, "Invalid value"),
    ({"Condition": {"StringEquals": {"k": [["a"]]}}}, "Invalid value"),
    ({"Condition": {"NumericEquals": {"k": "abc"}}}, "Invalid value"),
    ({"Condition": {"NumericEquals": {"k": "1_000"}}}, "Invalid value"),
    ({"Condition": {"NumericLessThan": {"k": "nan"}}}, "Invalid value"),
    ({"Condition": {"DateLessThan": {"k": "tomorrow"}}}, "Invalid value"),
    ({"Condition": {"Bool": {"k": "yes"}}}, "Invalid value"),
    ({"Condition": {"Null": {"k": "maybe"}}}, "Invalid value"),
    ({"Condition": {"IpAddress": {"k": "300.1.1.1/8"}}}, "Invalid value"),
    ({"Condition": {"NotIpAddress": {"k": "10.0.0.0/33"}}}, "Invalid value"),
]


def _document(doc: Any) -> str | bytes:
    return doc if isinstance(doc, str | bytes) else json.dumps(doc)


@pytest.mark.parametrize(("doc", "message"), BAD_DOCUMENTS)
def test_malformed_documents(doc: Any, message: str) -> None:
    with pytest.raises(MalformedPolicy, match=message) as caught:
        parse(_document(doc), BUCKET)
    assert isinstance(caught.value, S3Error)
    assert (caught.value.code, caught.value.status) == ("MalformedPolicy", 400)


@pytest.mark.parametrize(("fields", "message"), BAD_STATEMENTS)
def test_malformed_statements(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedPolicy, match=message):
        policy(stmt(**fields))


# --- IsPublic ------------------------------------------------------------------------------

PUBLIC: list[tuple[dict[str, Any], bool]] = [
    (stmt(), T),
    (stmt(Principal={"AWS": "*"}), T),
    (stmt(Principal={"AWS": ALICE}), F),
    (stmt(Effect="Deny"), F),
    (stmt(Principal=None, NotPrincipal={"AWS": ALICE}), T),
    (stmt(Principal=None, NotPrincipal="*"), F),
    (stmt(Condition={"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}), F),
    (stmt(Condition={"IpAddress": {"aws:SourceIp": ["192.0.2.0/24", "0.0.0.0/0"]}}), T),
    (stmt(Condition={"IpAddress": {"aws:SourceIp": "::/0"}}), T),
    (stmt(Condition={"NotIpAddress": {"aws:SourceIp": "192.0.2.0/24"}}), T),
    (stmt(Condition={"IpAddressIfExists": {"aws:SourceIp": "192.0.2.0/24"}}), T),
    (stmt(Condition={"StringEquals": {"aws:SourceArn": "arn:aws:s3:::src"}}), F),
    (stmt(Condition={"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::src"}}), F),
    (stmt(Condition={"StringLike": {"aws:SourceArn": "arn:*"}}), T),
    (stmt(Condition={"StringEquals": {"aws:SourceVpce": "vpce-1a2b"}}), F),
    (stmt(Condition={"StringEquals": {"aws:SourceVpc": "vpc-1a2b"}}), F),
    (stmt(Condition={"StringEquals": {"aws:SourceAccount": "111122223333"}}), F),
    (stmt(Condition={"StringEquals": {"aws:SourceOwner": "111122223333"}}), F),
    (stmt(Condition={"StringNotEquals": {"aws:SourceVpce": "vpce-1a2b"}}), T),
    (stmt(Condition={"ForAllValues:StringEquals": {"aws:SourceVpce": "vpce-1"}}), T),
    (stmt(Condition={"StringLike": {"aws:userid": "AROLEID:*"}}), T),
    (stmt(Condition={"StringEquals": {"aws:userid": "AIDAEXAMPLE"}}), F),
    (stmt(Condition={"Bool": {"aws:SecureTransport": "true"}}), T),
]


@pytest.mark.parametrize(("statement", "public"), PUBLIC)
def test_public_status(statement: dict[str, Any], public: bool) -> None:
    assert public_status(policy(statement)) is public
    assert public_status(policy(stmt(Principal={"AWS": ALICE}), statement)) is public


# --- properties ----------------------------------------------------------------------------

IDS = [ALICE, OWNER, "arn:aws:iam::444455556666:root"]
principals = st.one_of(
    st.just("*"),
    st.just({"AWS": "*"}),
    st.lists(st.sampled_from(IDS), min_size=1, max_size=2).map(lambda ids: {"AWS": ids}),
    st.sampled_from(IDS).map(lambda i: {"CanonicalUser": i}),
)
actions = st.lists(
    st.sampled_from(
        ["*", "s3:*", "s3:Get*", "s3:GetObject", "s3:PutObject", "s3:?etObject", "s3:List*"]
    ),
    min_size=1,
    max_size=3,
)
resources = st.lists(
    st.sampled_from(
        [
            "arn:aws:s3:::b",
            "arn:aws:s3:::b/*",
            "arn:aws:s3:::b/a*",
            "arn:aws:s3:::b/a/?",
            "arn:aws:s3:::*",
        ]
    ),
    min_size=1,
    max_size=3,
)
conditions = st.sampled_from(
    [
        None,
        {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"Bool": {"aws:SecureTransport": "true"}},
        {"BoolIfExists": {"aws:SecureTransport": "false"}},
        {"StringLike": {"s3:prefix": "a*"}, "Null": {"aws:Referer": "true"}},
        {"StringNotEquals": {"aws:Referer": "https://example.com/"}},
        {"ForAllValues:StringEquals": {"s3:tags": ["x", "y"]}},
    ]
)


@st.composite
def statements(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"Effect": draw(st.sampled_from(["Allow", "Deny"]))}
    out["NotPrincipal" if draw(st.booleans()) and draw(st.booleans()) else "Principal"] = draw(
        principals
    )
    out["NotAction" if draw(st.integers(0, 4)) == 0 else "Action"] = draw(actions)
    out["NotResource" if draw(st.integers(0, 4)) == 0 else "Resource"] = draw(resources)
    if (condition := draw(conditions)) is not None:
        out["Condition"] = condition
    return out


contexts = st.fixed_dictionaries(
    {},
    optional={
        "aws:SourceIp": st.sampled_from(["10.1.2.3", "192.0.2.1", "2001:db8::1"]),
        "aws:SecureTransport": st.booleans(),
        "s3:prefix": st.sampled_from(["", "a", "ab/", "b"]),
        "aws:Referer": st.sampled_from(["https://example.com/", "https://evil.test/"]),
        "s3:tags": st.lists(st.sampled_from(["x", "y", "z"]), max_size=3),
    },
)
requests = st.builds(
    Request,
    principal=st.sampled_from([*IDS, None, "arn:aws:iam::999999999999:user/eve"]),
    action=st.sampled_from(
        ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject", "S3:getobject"]
    ),
    resource=st.sampled_from(
        ["arn:aws:s3:::b", "arn:aws:s3:::b/a", "arn:aws:s3:::b/a/x", "arn:aws:s3:::b/zz"]
    ),
    context=contexts,
)


def decide(stmts: list[dict[str, Any]], request: Request) -> str:
    return evaluate(policy(*stmts), request)


@given(st.lists(statements(), max_size=4), statements(), requests)
def test_a_deny_copy_of_an_applying_allow_denies(
    others: list[dict[str, Any]], s: dict[str, Any], request: Request
) -> None:
    allow, deny = {**s, "Effect": "Allow"}, {**s, "Effect": "Deny"}
    before = decide([*others, allow], request)
    after = decide([*others, allow, deny], request)
    if decide([allow], request) == "allow":
        assert after == "deny"
    else:
        assert after == before  # the copy does not apply either
    assert after != "allow" or before == "allow"  # adding a Deny never creates an allow


@given(
    st.lists(statements(), min_size=1, max_size=6).flatmap(
        lambda s: st.tuples(st.just(s), st.permutations(s))
    ),
    requests,
)
def test_statement_order_does_not_matter(
    pair: tuple[list[dict[str, Any]], list[dict[str, Any]]], request: Request
) -> None:
    stmts, shuffled = pair
    assert decide(stmts, request) == decide(shuffled, request)


@given(st.lists(statements(), min_size=1, max_size=5), requests)
def test_effects_bound_the_decision(stmts: list[dict[str, Any]], request: Request) -> None:
    assert decide([{**s, "Effect": "Deny"} for s in stmts], request) in ("deny", "none")
    assert decide([{**s, "Effect": "Allow"} for s in stmts], request) in ("allow", "none")


@given(
    st.one_of(st.none(), st.text(max_size=20)),
    st.text(min_size=1, max_size=30),
    st.text(max_size=60),
)
def test_a_grant_of_everything_allows_everything(who: str | None, action: str, key: str) -> None:
    p = policy(stmt(Action="*", Resource="arn:aws:s3:::*"))
    assert evaluate(p, Request(who, action, object_arn(BUCKET, key))) == "allow"
    assert evaluate(p, Request(who, action, bucket_arn(BUCKET))) == "allow"


def _reference_match(pattern: str, text: str) -> bool:
    """Plain dynamic programming over (pattern, text) prefixes: the oracle for wildcards."""
    row = [True] + [False] * len(text)
    for p in pattern:
        if p == "*":
            nxt = [row[0]] + [False] * len(text)
            for j in range(1, len(text) + 1):
                nxt[j] = nxt[j - 1] or row[j]
        else:
            nxt = [False] * (len(text) + 1)
            for j in range(1, len(text) + 1):
                nxt[j] = row[j - 1] and (p == "?" or p == text[j - 1])
        row = nxt
    return row[-1]


@given(st.text("ab*?/.\n", max_size=10), st.text("ab/.\n", max_size=14))
def test_wildcards_agree_with_the_reference(pattern: str, text: str) -> None:
    assert (compile_wildcard([pattern]).fullmatch(text) is not None) == _reference_match(
        pattern, text
    )


@given(st.text(max_size=30), st.text(max_size=30))
def test_star_matches_all_and_a_literal_only_itself(literal: str, text: str) -> None:
    assert compile_wildcard(["*"]).fullmatch(text)
    plain = literal.replace("*", "").replace("?", "")
    assert (compile_wildcard([plain]).fullmatch(text) is not None) == (plain == text)


NEGATIONS = [
    ("StringEquals", "StringNotEquals"),
    ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"),
    ("StringLike", "StringNotLike"),
    ("ArnEquals", "ArnNotEquals"),
    ("ArnLike", "ArnNotLike"),
]


@given(
    st.sampled_from(NEGATIONS),
    st.lists(st.text("aA*?:", max_size=8), min_size=1, max_size=3),
    st.text("aA:", max_size=8),
)
def test_a_negated_operator_is_the_opposite_for_a_present_key(
    ops: tuple[str, str], wanted: list[str], got: str
) -> None:
    positive, negated = ops
    assert holds({positive: {"k": wanted}}, "k", got) != holds({negated: {"k": wanted}}, "k", got)


@given(st.text("aAsS:pPrR", min_size=1, max_size=12), st.data())
def test_condition_key_case_never_matters(key: str, data: st.DataObject) -> None:
    flip = data.draw(st.lists(st.booleans(), min_size=len(key), max_size=len(key)))
    other = "".join(c.swapcase() if f else c for c, f in zip(key, flip, strict=True))
    assert holds({"StringEquals": {key: "v"}}, other, "v")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
FIELDS = [
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
]


@settings(max_examples=300)
@given(
    st.one_of(
        json_values,
        st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(
            lambda s: {"Statement": [s]}
        ),
    )
)
def test_parse_refuses_garbage_only_with_malformed_policy(doc: Any) -> None:
    try:
        parsed = parse(json.dumps(doc), BUCKET)
    except MalformedPolicy:
        return
    assert isinstance(parsed, Policy)


@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6), statements(), requests)
def test_a_statement_that_parses_evaluates(
    junk: dict[str, Any], s: dict[str, Any], request: Request
) -> None:
    try:
        p = policy({**s, **junk})
    except MalformedPolicy:
        return
    assert evaluate(p, request) in ("allow", "deny", "none")


def test_many_evaluations_of_a_ten_statement_policy() -> None:
    """A sanity check that evaluation is a cheap, repeatable pure function (not timed)."""
    stmts = [
        stmt(
            Sid=f"s{i}",
            Principal={"AWS": f"arn:aws:iam::11112222333{i}:user/u"},
            Action=["s3:Get*", "s3:List*"],
            Resource=f"arn:aws:s3:::b/p{i}/*",
            Condition={
                "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                "StringLike": {"s3:prefix": "a*"},
            },
        )
        for i in range(9)
    ]
    p = policy(
        *stmts,
        stmt(Effect="Deny", Action="s3:*", Condition={"Bool": {"aws:SecureTransport": "false"}}),
    )
    ask = req(
        "arn:aws:iam::111122223338:user/u",
        resource=object_arn(BUCKET, "p8/k"),
        **{"aws:SourceIp": "10.1.2.3", "aws:SecureTransport": True, "s3:prefix": "abc"},
    )
    assert {evaluate(p, ask) for _ in range(5000)} == {"allow"}


@given(st.lists(statements(), min_size=1, max_size=5), requests)
def test_only_the_keys_a_policy_tests_matter(stmts: list[dict[str, Any]], request: Request) -> None:
    """The node builds a request's context from `Policy.keys` alone (node/s3/access.py):
    dropping every other key must never change a decision."""
    compiled = policy(*stmts)
    kept = {k: v for k, v in request.context.items() if k.lower() in compiled.keys}
    trimmed = Request(request.principal, request.action, request.resource, kept, request.aliases)
    assert evaluate(compiled, trimmed) == evaluate(compiled, request)
    for stmt in compiled.statements:
        assert {c.key for c in stmt.conditions} <= compiled.keys
