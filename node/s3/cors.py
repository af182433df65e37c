"""CORS rules: what a bucket's CORS configuration allows, and the headers it earns.

Pure code (no I/O): node/s3/bucketcors.py stores and serves configurations, the router
answers preflights and adds the headers to actual responses.

As S3 evaluates them (AWS S3 User Guide, "How does Amazon S3 evaluate the CORS
configuration on a bucket?"): the rules are tried in order and the first one that matches
wins. A rule matches when the request's Origin matches one of its AllowedOrigin patterns
(case-sensitively; a pattern may hold one `*`, which matches any run of characters), its
method (a preflight's Access-Control-Request-Method) is one of its AllowedMethod values,
and, for a preflight, every header named in Access-Control-Request-Headers matches one of
its AllowedHeader patterns (case-insensitively, one `*` at most). An actual request's
headers are not matched: the browser checked them in its preflight.

The headers a match earns: Access-Control-Allow-Origin (`*` when the matching pattern is
the bare `*`, which grants no credentials; otherwise the request's own Origin, with
Access-Control-Allow-Credentials: true), Access-Control-Allow-Methods (the rule's),
Access-Control-Expose-Headers and Access-Control-Max-Age when the rule has them, and on a
preflight Access-Control-Allow-Headers (the requested headers). Every answer to a request
with an Origin also says `Vary: Origin, Access-Control-Request-Headers,
Access-Control-Request-Method`, as S3 does, matched or not: a cache must not hand one
origin's answer to another.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from shardfleet.node.s3 import xml
from shardfleet.node.s3.errors import InvalidRequest, MalformedXML

#: the methods a CORS rule may allow (S3 refuses any other)
METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_RULES = 100  # S3's limit on rules per configuration
MAX_CONFIG_BYTES = 64 << 10  # S3's limit on a CORS configuration's size
MAX_AGE_LIMIT = 2**31 - 1
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
_RULE_FIELDS = ("ID", "AllowedMethod", "AllowedOrigin", "AllowedHeader", "ExposeHeader",
                "MaxAgeSeconds")  # fmt: skip


@lru_cache(maxsize=1024)
def _pattern(value: str, ignore_case: bool) -> re.Pattern[str]:
    head, star, tail = value.partition("*")
    body = re.escape(head) + (".*" + re.escape(tail) if star else "")
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """`pattern` (one `*` at most, matching any run, the empty one too) against `value`."""
    if "*" not in pattern:
        return pattern.lower() == value.lower() if ignore_case else pattern == value
    return _pattern(pattern, ignore_case).fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Rule:
    allowed_methods: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    id: str | None = None

    def origin_match(self, origin: str) -> str | None:
        """The pattern of this rule that `origin` matches, or None."""
        for pattern in self.allowed_origins:
            if wildcard_match(pattern, origin):
                return pattern
        return None

    def headers_match(self, names: Iterable[str]) -> bool:
        return all(
            any(wildcard_match(p, name, ignore_case=True) for p in self.allowed_headers)
            for name in names
        )


def validate_rule(rule: Rule) -> Rule:
    """InvalidRequest or MalformedXML, with S3's messages, for a rule S3 would refuse."""
    if not rule.allowed_methods or not rule.allowed_origins:
        raise MalformedXML()
    for method in rule.allowed_methods:
        if method not in METHODS:
            raise InvalidRequest(
                f"Found unsupported HTTP method in CORS config. Unsupported method is {method}"
            )
    for origin in rule.allowed_origins:
        if origin.count("*") > 1:
            raise InvalidRequest(f'AllowedOrigin "{origin}" can not have more than one wildcard.')
    for header in rule.allowed_headers:
        if header.count("*") > 1:
            raise InvalidRequest(f'AllowedHeader "{header}" can not have more than one wildcard.')
    for header in rule.expose_headers:
        if "*" in header:
            raise InvalidRequest(f'ExposeHeader "{header}" contains wildcard. We currently do '
                                 "not support wildcard for ExposeHeader.")  # fmt: skip
    if rule.id is not None and len(rule.id) > 255:
        raise InvalidRequest("ID length should not exceed allowed limit of 255")
    if rule.max_age is not None and not 0 <= rule.max_age <= MAX_AGE_LIMIT:
        raise MalformedXML()
    return rule


def parse(body: bytes) -> tuple[Rule, ...]:
    """A PutBucketCors body -> its rules, validated as S3 validates them."""
    if len(body) > MAX_CONFIG_BYTES:
        raise MalformedXML(f"The CORS configuration is larger than {MAX_CONFIG_BYTES} bytes.")
    root = xml.parse(body, "CORSConfiguration")
    rules = []
    for element in root:
        if xml.local_name(element.tag) != "CORSRule":
            raise MalformedXML(
                f"Unknown element {xml.local_name(element.tag)} in CORSConfiguration."
            )
        fields: dict[str, list[str]] = {name: [] for name in _RULE_FIELDS}
        for child in element:
            name = xml.local_name(child.tag)
            if name not in fields or len(child):
                raise MalformedXML(f"Unknown element {name} in CORSRule.")
            fields[name].append((child.text or "").strip())
        for name in ("ID", "MaxAgeSeconds"):
            if len(fields[name]) > 1:
                raise MalformedXML(f"More than one {name} in a CORSRule.")
        max_age = None
        if fields["MaxAgeSeconds"]:
            text = fields["MaxAgeSeconds"][0]
            if not re.fullmatch(r"-?[0-9]{1,12}", text):
                raise MalformedXML()
            max_age = int(text)
        rules.append(
            validate_rule(
                Rule(
                    allowed_methods=tuple(fields["AllowedMethod"]),
                    allowed_origins=tuple(fields["AllowedOrigin"]),
                    allowed_headers=tuple(fields["AllowedHeader"]),
                    expose_headers=tuple(fields["ExposeHeader"]),
                    max_age=max_age,
                    id=fields["ID"][0] if fields["ID"] else None,
                )
            )
        )
    if not rules:
        raise MalformedXML()
    if len(rules) > MAX_RULES:
        raise InvalidRequest(f"The number of CORS rules should not exceed allowed limit of {MAX_RULES} rules.")  # fmt: skip
    return tuple(rules)


def render(rules: Sequence[Rule]) -> bytes:
    """The GetBucketCors document of `rules` (what parse() reads back to the same rules)."""
    parts = []
    for rule in rules:
        fields = [xml.el("ID", rule.id)] if rule.id is not None else []
        fields += [xml.el("AllowedHeader", h) for h in rule.allowed_headers]
        fields += [xml.el("AllowedMethod", m) for m in rule.allowed_methods]
        fields += [xml.el("AllowedOrigin", o) for o in rule.allowed_origins]
        fields += [xml.el("ExposeHeader", h) for h in rule.expose_headers]
        if rule.max_age is not None:
            fields.append(xml.el("MaxAgeSeconds", rule.max_age))
        parts.append(f"<CORSRule>{''.join(fields)}</CORSRule>")
    return xml.document("CORSConfiguration", parts)


def request_headers(value: str | None) -> list[str]:
    """Access-Control-Request-Headers -> the header names it lists, lower-cased."""
    if not value:
        return []
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def find(
    rules: Sequence[Rule], origin: str, method: str, headers: Sequence[str] = ()
) -> tuple[Rule, str] | None:
    """The first rule that allows `origin` to use `method` (with `headers`, a preflight's),
    and the origin pattern it matched; None when no rule does."""
    for rule in rules:
        if method not in rule.allowed_methods:
            continue
        pattern = rule.origin_match(origin)
        if pattern is None:
            continue
        if headers and not rule.headers_match(headers):
            continue
        return rule, pattern
    return None


def grant(
    rule: Rule, pattern: str, origin: str, *, preflight_headers: Sequence[str] | None = None
) -> dict[str, str]:
    """The Access-Control-* headers a match earns (see the module docstring)."""
    out = {}
    if pattern == "*":
        out["Access-Control-Allow-Origin"] = "*"
    else:
        out["Access-Control-Allow-Origin"] = origin
        out["Access-Control-Allow-Credentials"] = "true"
    out["Access-Control-Allow-Methods"] = ", ".join(rule.allowed_methods)
    if preflight_headers:
        out["Access-Control-Allow-Headers"] = ", ".join(preflight_headers)
    if rule.expose_headers:
        out["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
    if rule.max_age is not None:
        out["Access-Control-Max-Age"] = str(rule.max_age)
    return out
