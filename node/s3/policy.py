"""Bucket policies: parse IAM policy JSON the way S3 validates it, and decide requests.

Pure: no I/O and no HTTP here, so the handlers (PutBucketPolicy, GetBucketPolicyStatus)
and the authorizer share one engine that the unit tests drive exhaustively.

    policy = parse(json_text, bucket)             # MalformedPolicy when S3 would refuse it
    evaluate(policy, Request(principal, "s3:GetObject", object_arn(bucket, key), ctx))
        -> "deny" | "allow" | "none"              # explicit deny, allow, implicit (no match)
    public_status(policy) -> bool                 # GetBucketPolicyStatus' IsPublic

Everything a request is matched against (wildcards, condition values, CIDRs, dates) is
compiled at parse time, so `evaluate` only runs precompiled regexes and set lookups.
The AWS semantics each rule follows is cited where it is chosen (IAM User Guide:
"Condition operators", "Conditions with multiple context keys or values", "Single-valued vs.
multivalued context keys"; S3 User Guide: "The meaning of public").

Not modelled: policy variables (${aws:username} is matched literally), BinaryEquals, the
service's list of real action names (an action is checked for its form `s3:Name`, not
looked up), and delegation to an account (a principal `123456789012` or its root ARN matches
that principal only, never the account's users: shardfleet has no IAM to delegate to).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from shardfleet.node.s3.errors import MalformedPolicy

Decision = Literal["allow", "deny", "none"]
ContextValue = str | bool | int | float | Sequence[str]

MAX_POLICY_BYTES = 20 * 1024  # S3's bucket-policy size limit
VERSIONS = ("2012-10-17", "2008-10-17")
ARN_PREFIX = "arn:aws:s3:::"


def bucket_arn(bucket: str) -> str:
    return ARN_PREFIX + bucket


def object_arn(bucket: str, key: str) -> str:
    return f"{ARN_PREFIX}{bucket}/{key}"


# --- wildcards ---------------------------------------------------------------------------


def _glob(pattern: str) -> str:
    """`*` (any run) and `?` (one character) as a regex that cannot backtrack badly.

    Each segment between stars is found leftmost inside an atomic group: a later placement
    never helps a glob, so `*a*a*a*b` against a 1024-byte key stays linear rather than the
    exponential search a naive `.*a.*a.*` can take (the same trick as fnmatch.translate).
    """
    parts = ["".join("." if c == "?" else re.escape(c) for c in p) for p in pattern.split("*")]
    if len(parts) == 1:
        return parts[0]
    head, *middle, tail = parts
    return head + "".join(f"(?>.*?{m})" for m in middle if m) + ".*" + tail


def compile_wildcard(patterns: Iterable[str], *, ignore_case: bool = False) -> re.Pattern[str]:
    """One regex for a list of IAM wildcard patterns (OR'ed); use it with `fullmatch`."""
    globs = [_glob(p) for p in patterns]
    body = "|".join(globs) if globs else "(?!)"  # no patterns: nothing matches, not ""
    return re.compile(f"(?:{body})", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


# --- conditions --------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_Test = Callable[[str], bool]


def _epoch(value: str) -> float | None:
    """A date as S3 accepts one: epoch seconds or ISO 8601 (naive times are UTC)."""
    if _NUMBER.fullmatch(value):
        return float(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _number(value: str) -> float | None:
    return float(value) if _NUMBER.fullmatch(value) else None


def _bad(op: str, key: str, value: str) -> MalformedPolicy:
    return MalformedPolicy(f"Invalid value for {op} condition key {key}: {value!r}")


def _string_test(op: str, key: str, values: tuple[str, ...]) -> _Test:
    return frozenset(values).__contains__


def _ignore_case_test(op: str, key: str, values: tuple[str, ...]) -> _Test:
    folded = frozenset(v.casefold() for v in values)
    return lambda v: v.casefold() in folded


def _like_test(op: str, key: str, values: tuple[str, ...]) -> _Test:
    match = compile_wildcard(values).fullmatch
    return lambda v: match(v) is not None  # a bool: Condition.holds compares it to `negated`


def _ordered_test(
    parse: Callable[[str], float | None], cmp: Callable[[float, float], bool]
) -> Callable[[str, str, tuple[str, ...]], _Test]:
    def build(op: str, key: str, values: tuple[str, ...]) -> _Test:
        wanted = []
        for v in values:
            if (parsed := parse(v)) is None:
                raise _bad(op, key, v)
            wanted.append(parsed)

        def test(v: str) -> bool:
            got = parse(v)
            return got is not None and any(cmp(got, w) for w in wanted)

        return test

    return build


def _bool_test(op: str, key: str, values: tuple[str, ...]) -> _Test:
    for v in values:
        if v.lower() not in ("true", "false"):
            raise _bad(op, key, v)
    wanted = frozenset(v.lower() for v in values)
    return lambda v: v.lower() in wanted


@functools.lru_cache(maxsize=4096)  # the same few clients ask again and again
def _address(v: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        return None


def _ip_test(op: str, key: str, values: tuple[str, ...]) -> _Test:
    networks = []
    for v in values:
        try:
            networks.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise _bad(op, key, v) from None

    def test(v: str) -> bool:
        address = _address(v)
        if address is None:
            return False
        return any(address in n for n in networks)  # another IP version is simply not in

    return test


def _arn_test(op: str, key: str, values: tuple[str, ...]) -> _Test:
    """ArnEquals and ArnLike alike: AWS checks each of the six colon-delimited components
    separately, each may hold `*` and `?`, and matching is case-sensitive."""
    whole = [compile_wildcard([v]).fullmatch for v in values if v.count(":") < 5]
    split = [
        tuple(compile_wildcard([part]).fullmatch for part in v.split(":", 5))
        for v in values
        if v.count(":") >= 5
    ]

    def test(v: str) -> bool:
        if any(m(v) for m in whole):
            return True
        parts = v.split(":", 5)
        return len(parts) == 6 and any(
            all(m(p) for m, p in zip(ms, parts, strict=True)) for ms in split
        )

    return test


def _null_test(op: str, key: str, values: tuple[str, ...]) -> _Test:
    _bool_test(op, key, values)  # validates: the values are "true" / "false"
    return lambda v: True  # unused: Condition.holds answers Null from presence alone


_Builder = Callable[[str, str, tuple[str, ...]], _Test]
#: operator -> (its positive form, negated?, builder of the positive per-value test)
_OPERATORS: dict[str, tuple[str, bool, _Builder]] = {}


def _op(name: str, builder: _Builder, negation: str | None = None) -> None:
    _OPERATORS[name.lower()] = (name, False, builder)
    if negation:
        _OPERATORS[negation.lower()] = (name, True, builder)


_op("StringEquals", _string_test, "StringNotEquals")
_op("StringEqualsIgnoreCase", _ignore_case_test, "StringNotEqualsIgnoreCase")
_op("StringLike", _like_test, "StringNotLike")
_op("Bool", _bool_test)
_op("IpAddress", _ip_test, "NotIpAddress")
_op("ArnEquals", _arn_test, "ArnNotEquals")
_op("ArnLike", _arn_test, "ArnNotLike")
_op("Null", _null_test)
for _family, _parse in (("Numeric", _number), ("Date", _epoch)):
    _op(f"{_family}Equals", _ordered_test(_parse, operator.eq), f"{_family}NotEquals")
    for _suffix, _cmp in (
        ("LessThan", operator.lt),
        ("LessThanEquals", operator.le),
        ("GreaterThan", operator.gt),
        ("GreaterThanEquals", operator.ge),
    ):
        _op(f"{_family}{_suffix}", _ordered_test(_parse, _cmp))


@dataclass(frozen=True, slots=True)
class Condition:
    """One (operator, key, values) triple of a Condition block, its test compiled."""

    operator: str  # as the policy spells it, e.g. "ForAnyValue:StringLikeIfExists"
    base: str  # the positive operator, e.g. "StringLike" (for StringNotLike too)
    key: str  # lower-cased: condition key names are case-insensitive
    values: tuple[str, ...]
    negated: bool
    if_exists: bool
    qualifier: str | None  # "ForAnyValue" | "ForAllValues" | None
    test: _Test = field(repr=False, compare=False)

    def holds(self, ctx: Mapping[str, tuple[str, ...]]) -> bool:
        got = ctx.get(self.key)
        if self.base == "Null":  # "true": the key is absent; "false": it is present
            return any((v.lower() == "true") == (not got) for v in self.values)
        if not got:
            # ForAllValues is true for a missing key, ForAnyValue false (IAM "Single-valued
            # vs. multivalued context keys"); ForAnyValue ignores IfExists, which is what
            # AWS does (re:Post "ForAnyValue:StringEqualsIfExists behaving unexpectedly").
            # Otherwise (IAM "Condition operators"): "If the key that you specify in a policy
            # condition is not present in the request context, the values do not match and
            # the condition is false. If the policy condition requires that the key is not
            # matched, such as StringNotLike or ArnNotLike, and the right key is not present,
            # the condition is true" - except ...IfExists, which is true when it is absent.
            if self.qualifier is not None:
                return self.qualifier == "ForAllValues"
            return self.if_exists or self.negated
        test, negated = self.test, self.negated
        if self.qualifier == "ForAllValues":
            return all(test(v) != negated for v in got)
        if self.qualifier == "ForAnyValue":
            return any(test(v) != negated for v in got)
        # a policy's values for one key are OR'ed, and NOR'ed under a negated operator
        return any(test(v) for v in got) != negated


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)  # what json.dumps writes, at a tenth of the cost (per request)
    if isinstance(value, float):
        return json.dumps(value)
    return None


def _parse_conditions(block: Any) -> tuple[Condition, ...]:
    if not isinstance(block, dict):
        raise MalformedPolicy("Policy has an invalid condition block")
    out = []
    for name, pairs in block.items():
        qualifier, _, rest = name.rpartition(":") if ":" in name else (None, "", name)
        if qualifier is not None:
            qualifier = {"foranyvalue": "ForAnyValue", "forallvalues": "ForAllValues"}.get(
                qualifier.lower()
            )
            if qualifier is None:
                raise MalformedPolicy(f"Invalid Condition type : {name}")
        if_exists = rest.lower().endswith("ifexists") and rest.lower() != "ifexists"
        known = _OPERATORS.get(rest[: -len("IfExists")].lower() if if_exists else rest.lower())
        if known is None or (known[0] == "Null" and (if_exists or qualifier)):
            raise MalformedPolicy(f"Invalid Condition type : {name}")
        base, negated, build = known
        if not isinstance(pairs, dict):
            raise MalformedPolicy(f"Policy has an invalid condition block for {name}")
        for key, raw in pairs.items():
            if not key:
                raise MalformedPolicy("Policy has an invalid condition key")
            items = raw if isinstance(raw, list) else [raw]
            values = tuple(_scalar(v) for v in items)
            if not values or None in values:
                raise MalformedPolicy(f"Invalid value for {name} condition key {key}")
            strs: tuple[str, ...] = values  # type: ignore[assignment]
            test = build(name, key, strs)
            out.append(
                Condition(name, base, key.lower(), strs, negated, if_exists, qualifier, test)
            )
    return tuple(out)


# --- statements --------------------------------------------------------------------------

_ACTION = re.compile(r"\*|s3:[A-Za-z0-9*?]+", re.IGNORECASE)
_ACCOUNT = re.compile(r"\d{12}")
_PRINCIPAL_TYPES = ("AWS", "CanonicalUser", "Service", "Federated")


@functools.lru_cache(maxsize=4096)  # asked for every name of every requester
def _account_root(principal: str) -> str:
    """A bare account ID and its root ARN name the same principal (IAM: "Principal")."""
    return f"arn:aws:iam::{principal}:root" if _ACCOUNT.fullmatch(principal) else principal


def _strings(value: Any, message: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, str) and i for i in items):
        raise MalformedPolicy(message)
    return items


def _parse_principal(value: Any) -> tuple[bool, frozenset[str]]:
    """(matches everyone?, the identifiers it names)."""
    if value == "*":
        return True, frozenset()
    if not isinstance(value, dict) or not value:
        raise MalformedPolicy("Invalid principal in policy")
    everyone, names = False, set()
    for kind, ids in value.items():
        if kind not in _PRINCIPAL_TYPES:
            raise MalformedPolicy("Invalid principal in policy")
        for i in _strings(ids, "Invalid principal in policy"):
            if i == "*" and kind == "AWS":
                everyone = True  # {"AWS": "*"} is "*", anonymous requests included
            elif "*" in i or "?" in i:  # IAM: no partial wildcards in a principal
                raise MalformedPolicy("Invalid principal in policy")
            else:
                names.add(_account_root(i))
    return everyone, frozenset(() if everyone else names)


def _parse_resources(value: Any, bucket: str) -> list[str]:
    out = _strings(value, "Policy has invalid resource")
    for r in out:
        # a bucket policy names only its own bucket: "Policy has invalid resource" otherwise
        name = r[len(ARN_PREFIX) :].split("/", 1)[0] if r.startswith(ARN_PREFIX) else ""
        if not name or not compile_wildcard([name]).fullmatch(bucket):
            raise MalformedPolicy("Policy has invalid resource")
    return out


@dataclass(frozen=True, slots=True)
class Statement:
    sid: str | None
    effect: Literal["Allow", "Deny"]
    any_principal: bool  # Principal "*" / {"AWS": "*"}
    principals: frozenset[str]
    not_principal: bool
    actions: re.Pattern[str]  # case-insensitive, as IAM action names are
    not_action: bool
    resources: re.Pattern[str]  # case-sensitive, as object keys are
    not_resource: bool
    conditions: tuple[Condition, ...]
    #: action name -> whether `actions` matches it: the names are the few dozen S3 actions
    #: (so this stays small) and asking a regex again for every request is most of the cost
    action_hits: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def applies(self, req: Request) -> bool:
        named = self.any_principal or not self.principals.isdisjoint(req.who)
        if named == self.not_principal:
            return False
        hit = self.action_hits.get(req.action)
        if hit is None:
            hit = self.actions.fullmatch(req.action) is not None
            if len(self.action_hits) < 512:
                self.action_hits[req.action] = hit
        return (
            hit != self.not_action
            and (self.resources.fullmatch(req.resource) is None) == self.not_resource
            and all(c.holds(req.ctx) for c in self.conditions)  # operators and keys AND'ed
        )


_STATEMENT_FIELDS = frozenset(
    "Sid Effect Principal NotPrincipal Action NotAction Resource NotResource Condition".split()
)


def _exactly_one(stmt: dict[str, Any], name: str) -> tuple[Any, bool]:
    if name in stmt and "Not" + name in stmt:
        raise MalformedPolicy(f"Policy statement has both {name} and Not{name}")
    if name not in stmt and "Not" + name not in stmt:
        raise MalformedPolicy(f"Missing required field {name}")
    return (stmt[name], False) if name in stmt else (stmt["Not" + name], True)


def _parse_statement(stmt: Any, bucket: str) -> Statement:
    if not isinstance(stmt, dict):
        raise MalformedPolicy("Policy has an invalid statement")
    for name in stmt:
        if name not in _STATEMENT_FIELDS:
            raise MalformedPolicy(f"Unknown field {name}")
    sid = stmt.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise MalformedPolicy("Policy has an invalid Sid")
    if "Effect" not in stmt:
        raise MalformedPolicy("Missing required field Effect")
    effect = stmt["Effect"]
    if effect not in ("Allow", "Deny"):
        raise MalformedPolicy(f"Invalid effect: {effect}")
    principal, not_principal = _exactly_one(stmt, "Principal")
    any_principal, principals = _parse_principal(principal)
    action, not_action = _exactly_one(stmt, "Action")
    actions = _strings(action, "Policy has invalid action")
    if not all(_ACTION.fullmatch(a) for a in actions):
        raise MalformedPolicy("Policy has invalid action")
    resource, not_resource = _exactly_one(stmt, "Resource")
    return Statement(
        sid=sid,
        effect=effect,
        any_principal=any_principal,
        principals=principals,
        not_principal=not_principal,
        actions=compile_wildcard(actions, ignore_case=True),
        not_action=not_action,
        resources=compile_wildcard(_parse_resources(resource, bucket)),
        not_resource=not_resource,
        conditions=_parse_conditions(stmt.get("Condition", {})),
    )


# --- policies and requests ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    version: str | None
    id: str | None
    statements: tuple[Statement, ...]
    #: the same statements split by effect, so a deny is found without scanning allows
    denies: tuple[Statement, ...] = field(repr=False, compare=False)
    allows: tuple[Statement, ...] = field(repr=False, compare=False)
    #: the condition keys its statements test (lower-cased): the only ones a request's
    #: context needs (building the others costs every request for nothing)
    keys: frozenset[str] = field(default=frozenset(), repr=False, compare=False)


def _context(raw: Mapping[str, ContextValue]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for key, value in raw.items():
        one = _scalar(value)
        out[key.lower()] = (one,) if one is not None else tuple(str(v) for v in value)  # type: ignore[union-attr]
    return out


@dataclass(frozen=True, slots=True)
class Request:
    """What is asked: by whom (canonical ID or ARN; None when anonymous), which action
    ("s3:GetObject"), on which resource ARN, with which condition keys (names are
    case-insensitive; a value is a string, a bool, a number or a list of strings)."""

    principal: str | None
    action: str
    resource: str
    context: Mapping[str, ContextValue] = field(default_factory=dict)
    #: other names of the same principal (a user is named by its canonical id, its ARN
    #: or its access key alike)
    aliases: tuple[str, ...] = ()
    #: computed once here rather than again for every statement
    ctx: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    who: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ctx", _context(self.context))
        names = () if self.principal is None else (self.principal, *self.aliases)
        object.__setattr__(self, "who", _who(names))


@functools.lru_cache(maxsize=4096)  # the same few requesters ask again and again
def _who(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_account_root(n) for n in names)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise MalformedPolicy("This policy contains invalid Json (a duplicate field)")
    return out


_TOP_FIELDS = frozenset(("Version", "Id", "Statement"))


def parse(text: str | bytes, bucket: str) -> Policy:
    """The policy a PutBucketPolicy body holds for `bucket`, or MalformedPolicy."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_POLICY_BYTES:
        raise MalformedPolicy("Policy exceeds the maximum allowed document size.")
    try:
        doc = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise MalformedPolicy("This policy contains invalid Json") from None
    if not isinstance(doc, dict):
        raise MalformedPolicy()
    for name in doc:
        if name not in _TOP_FIELDS:
            raise MalformedPolicy(f"Unknown field {name}")
    version, pid = doc.get("Version"), doc.get("Id")
    if version is not None and version not in VERSIONS:
        raise MalformedPolicy("The policy must contain a valid version string")
    if pid is not None and not isinstance(pid, str):
        raise MalformedPolicy("Policy has an invalid Id")
    if "Statement" not in doc:
        raise MalformedPolicy("Missing required field Statement")
    raw_statements = doc["Statement"]
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list):
        raise MalformedPolicy("Policy has an invalid statement")
    if not raw_statements:
        raise MalformedPolicy("Could not parse the policy: Statement is empty!")
    statements = tuple(_parse_statement(s, bucket) for s in raw_statements)
    sids = [s.sid for s in statements if s.sid]
    if len(sids) != len(set(sids)):
        raise MalformedPolicy("Statement IDs (SID) in a single policy must be unique")
    return Policy(
        version=version,
        id=pid,
        statements=statements,
        denies=tuple(s for s in statements if s.effect == "Deny"),
        allows=tuple(s for s in statements if s.effect == "Allow"),
        keys=frozenset(c.key for st in statements for c in st.conditions),
    )


def evaluate(policy: Policy, request: Request) -> Decision:
    """The decision: `deny` if any Deny statement applies (an explicit deny overrides every
    allow), else `allow` if any Allow statement does, else `none`, the implicit deny (which
    the caller may still overturn, e.g. for the bucket owner)."""
    if any(s.applies(request) for s in policy.denies):
        return "deny"
    return "allow" if any(s.applies(request) for s in policy.allows) else "none"


# --- public status -----------------------------------------------------------------------

#: condition keys that, compared to fixed values, make a grant to "*" non-public
#: (S3 User Guide, "The meaning of public")
_RESTRICTING_KEYS = frozenset(
    k.lower()
    for k in (
        "aws:SourceArn",
        "aws:SourceVpc",
        "aws:SourceVpce",
        "aws:SourceOwner",
        "aws:SourceAccount",
        "s3:x-amz-server-side-encryption-aws-kms-key-id",
        "aws:userid",
    )
)
_FIXING_OPERATORS = frozenset(("StringEquals", "StringEqualsIgnoreCase", "StringLike"))
_FIXING_OPERATORS |= {"ArnEquals", "ArnLike"}


def _restricts(c: Condition) -> bool:
    """Whether a condition pins the requester down the way S3 counts as non-public: a set
    of CIDRs (not 0.0.0.0/0 or ::/0) for aws:SourceIp, or wildcard-free values for one of
    the source keys, under a positive operator that is false when the key is missing."""
    if c.negated or c.if_exists or c.qualifier == "ForAllValues":
        return False
    if c.key == "aws:sourceip":
        return c.base == "IpAddress" and all(
            ipaddress.ip_network(v, strict=False).prefixlen > 0 for v in c.values
        )
    return (
        c.key in _RESTRICTING_KEYS
        and c.base in _FIXING_OPERATORS
        and not any("*" in v or "?" in v for v in c.values)
    )


def public_status(policy: Policy) -> bool:
    """IsPublic: some Allow grants to everyone ("*", {"AWS": "*"}, or all but a NotPrincipal
    list) without a condition that restricts who or where the requester is."""
    return any(
        s.any_principal != s.not_principal  # NotPrincipal "*" names nobody
        and not any(_restricts(c) for c in s.conditions)
        for s in policy.allows
    )
