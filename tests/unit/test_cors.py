"""The CORS rule engine (node/s3/cors.py): parsing as S3 validates, matching as S3 matches."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardfleet.node.s3 import cors
from shardfleet.node.s3.errors import InvalidRequest, MalformedXML

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def doc(*rules: str) -> bytes:
    return f"<CORSConfiguration {NS}>{''.join(rules)}</CORSConfiguration>".encode()


def rule(*fields: str) -> str:
    return f"<CORSRule>{''.join(fields)}</CORSRule>"


def test_parse_reads_every_field():
    rules = cors.parse(
        doc(
            rule(
                "<ID>web</ID>",
                "<AllowedOrigin>https://*.example.com</AllowedOrigin>",
                "<AllowedMethod>PUT</AllowedMethod><AllowedMethod>GET</AllowedMethod>",
                "<AllowedHeader>x-amz-*</AllowedHeader><AllowedHeader>content-type</AllowedHeader>",
                "<ExposeHeader>ETag</ExposeHeader>",
                "<MaxAgeSeconds>3000</MaxAgeSeconds>",
            ),
            rule("<AllowedOrigin>*</AllowedOrigin>", "<AllowedMethod>GET</AllowedMethod>"),
        )
    )
    assert rules == (
        cors.Rule(
            allowed_methods=("PUT", "GET"),
            allowed_origins=("https://*.example.com",),
            allowed_headers=("x-amz-*", "content-type"),
            expose_headers=("ETag",),
            max_age=3000,
            id="web",
        ),
        cors.Rule(allowed_methods=("GET",), allowed_origins=("*",)),
    )
    assert cors.parse(cors.render(rules)) == rules  # what GetBucketCors returns reads back


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (doc(), MalformedXML, None),
        (b"<CORSConfiguration><CORSRule>", MalformedXML, None),
        (doc(rule("<AllowedMethod>GET</AllowedMethod>")), MalformedXML, None),
        (doc(rule("<AllowedOrigin>*</AllowedOrigin>")), MalformedXML, None),
        (
            doc(rule("<AllowedOrigin>*</AllowedOrigin>", "<AllowedMethod>PATCH</AllowedMethod>")),
            InvalidRequest,
            "Found unsupported HTTP method in CORS config. Unsupported method is PATCH",
        ),
        (
            doc(rule("<AllowedOrigin>*.*</AllowedOrigin>", "<AllowedMethod>GET</AllowedMethod>")),
            InvalidRequest,
            'AllowedOrigin "*.*" can not have more than one wildcard.',
        ),
        (
            doc(
                rule(
                    "<AllowedOrigin>*</AllowedOrigin>",
                    "<AllowedMethod>GET</AllowedMethod>",
                    "<AllowedHeader>x-*-*</AllowedHeader>",
                )
            ),
            InvalidRequest,
            'AllowedHeader "x-*-*" can not have more than one wildcard.',
        ),
        (
            doc(
                rule(
                    "<AllowedOrigin>*</AllowedOrigin>",
                    "<AllowedMethod>GET</AllowedMethod>",
                    "<Unknown>1</Unknown>",
                )
            ),
            MalformedXML,
            None,
        ),
        (
            doc(
                rule(
                    "<AllowedOrigin>*</AllowedOrigin>",
                    "<AllowedMethod>GET</AllowedMethod>",
                    "<MaxAgeSeconds>soon</MaxAgeSeconds>",
                )
            ),
            MalformedXML,
            None,
        ),
        (
            doc(
                *[rule("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>")] * 101
            ),
            InvalidRequest,
            "The number of CORS rules should not exceed allowed limit of 100 rules.",
        ),
        (b"<Other/>", MalformedXML, None),
    ],
)
def test_parse_refuses_what_s3_refuses(body, error, message):
    with pytest.raises(error) as caught:
        cors.parse(body)
    if message is not None:
        assert caught.value.message == message


def test_first_matching_rule_wins_and_grants_its_headers():
    rules = (
        cors.Rule(("PUT",), ("https://app.example",), ("content-type",), ("ETag",), 600),
        cors.Rule(("GET", "PUT"), ("*",)),
    )
    found = cors.find(rules, "https://app.example", "PUT", ["content-type"])
    assert found is not None and found[0] is rules[0]
    assert cors.grant(*found, "https://app.example", preflight_headers=["content-type"]) == {
        "Access-Control-Allow-Origin": "https://app.example",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "PUT",
        "Access-Control-Allow-Headers": "content-type",
        "Access-Control-Expose-Headers": "ETag",
        "Access-Control-Max-Age": "600",
    }
    # a header the first rule does not allow: the second (any header? no: none listed)
    assert cors.find(rules, "https://app.example", "PUT", ["x-amz-meta-a"]) is None
    # an actual request's headers are not matched; the wildcard rule grants no credentials
    found = cors.find(rules, "https://other.example", "GET")
    assert found is not None and found[0] is rules[1]
    assert cors.grant(*found, "https://other.example") == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET, PUT",
    }
    assert cors.find(rules, "https://other.example", "DELETE") is None


def test_origins_match_case_sensitively_and_headers_do_not():
    rules = (cors.Rule(("GET",), ("https://*.Example.com",), ("X-Amz-*",)),)
    assert cors.find(rules, "https://a.Example.com", "GET", ["x-amz-date"]) is not None
    assert cors.find(rules, "https://a.example.com", "GET") is None
    assert cors.find(rules, "https://a.Example.com", "GET", ["content-type"]) is None
    assert cors.request_headers(" Content-Type , X-Amz-Date,") == ["content-type", "x-amz-date"]


text = st.text(alphabet="ab.:/-*", max_size=8)


@given(head=text.filter(lambda t: "*" not in t), tail=text.filter(lambda t: "*" not in t),
       value=st.text(alphabet="ab.:/-*", max_size=12), star=st.booleans())  # fmt: skip
def test_wildcard_is_one_star_glob(head, tail, value, star):
    pattern = head + ("*" + tail if star else "")
    # fnmatch's `*` is the same glob; its `[`/`?` do not occur in this alphabet
    assert cors.wildcard_match(pattern, value) == fnmatch.fnmatchcase(value, pattern)
