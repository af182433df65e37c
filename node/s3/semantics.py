"""THE table of what changes a request's meaning: every such header and query parameter S3
defines, each honored or refused, screened by the router before any handler runs.

A server may leave features out but must never pretend: a header that asks for encryption,
a lock, a storage class or a condition, accepted and then ignored, is a silent wrong answer
(a "locked" object that deletes, an "encrypted" one stored in clear, a conditional DELETE
that deletes). So the rule is a whitelist: an `x-amz-*` header or a query parameter that is
not in this table is refused as well, with 501 NotImplemented naming it, before a byte is
read, stored or deleted. Ordinary HTTP headers (Content-Type, Cache-Control...) are not
screened, except the ones S3 gives a meaning (the conditionals, Content-MD5, Range).

    Rule(name, kind, ops, check)
      ops     the operations where the name is honored; anywhere else it is refused
      check   for honored names whose values we only partly support (x-amz-acl: only
              "private"; x-amz-storage-class: only STANDARD): raises for the rest

Refusals use AWS's own error where AWS has one for the case (InvalidStorageClass for an
unknown class, AccessDenied for a wrong expected owner) and NotImplemented otherwise. Each
refused rule carries a `sample` value: tests/integration/test_semantics.py sends every
refused rule against a real node and checks nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from shardfleet.node.s3.errors import (
    AccessDenied,
    InvalidArgument,
    InvalidRequest,
    InvalidStorageClass,
    NotImplementedError_,
    S3Error,
)

#: every operation the router serves (router.OP_NAMES' values)
BUCKET_READS = frozenset(
    {"ListObjects", "ListObjectVersions", "HeadBucket", "GetBucketLocation", "GetBucketVersioning"}
)
LISTINGS = ("ListObjects", "ListObjectVersions")
ACL_OPS = frozenset({"GetBucketAcl", "PutBucketAcl", "GetObjectAcl", "PutObjectAcl"})
OBJECT_READS = frozenset({"GetObject", "HeadObject"})
OBJECT_WRITES = frozenset({"PutObject", "CopyObject"})
MULTIPART_OPS = frozenset(
    {
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "ListParts",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "ListMultipartUploads",
    }
)
POLICY_OPS = frozenset({"PutBucketPolicy", "GetBucketPolicy", "DeleteBucketPolicy"})
CORS_OPS = frozenset({"PutBucketCors", "GetBucketCors", "DeleteBucketCors"})
ALL_OPS = (
    BUCKET_READS
    | OBJECT_READS
    | OBJECT_WRITES
    | ACL_OPS
    | MULTIPART_OPS
    | POLICY_OPS
    | CORS_OPS
    | {"ListBuckets", "CreateBucket", "DeleteBucket", "DeleteObjects", "DeleteObject"}
    | {"GetBucketPolicyStatus"}
)
BODY_OPS = frozenset(
    {
        "PutObject",
        "CreateBucket",
        "DeleteObjects",
        "PutBucketAcl",
        "PutObjectAcl",
        "PutBucketPolicy",
        "PutBucketCors",
        "UploadPart",
        "CompleteMultipartUpload",
        "CreateMultipartUpload",
    }
)
BUCKET_OPS = ALL_OPS - {"ListBuckets"}

Check = Callable[[str, "Screen"], None]


@dataclass(frozen=True, slots=True)
class Screen:
    """What a value check may need to know about the request."""

    op: str
    owner_id: str


@dataclass(frozen=True, slots=True)
class Rule:
    name: str  # lower-case header name or query parameter name (prefix when `prefix`)
    kind: str  # "header" or "query"
    ops: frozenset[str] = frozenset()  # where honored; empty: refused everywhere
    check: Check | None = None
    prefix: bool = False
    #: for the generated test: a value, and an operation, that get this rule refused (by
    #: default "x", on an operation outside `ops`)
    sample: str | None = None
    sample_op: str | None = None
    note: str = ""

    @property
    def refused(self) -> bool:
        return not self.ops


# -- value checks ---------------------------------------------------------------------------
def _only(allowed: Iterable[str], *, error: type[S3Error] = NotImplementedError_) -> Check:
    values = frozenset(v.lower() for v in allowed)

    def check(value: str, screen: Screen) -> None:
        if value.strip().lower() not in values:
            raise error(f"The value {value!r} is not supported here (only {sorted(values)}).")

    return check


STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "OUTPOSTS",
        "GLACIER_IR",
        "SNOW",
        "EXPRESS_ONEZONE",
    }
)


def _storage_class(value: str, screen: Screen) -> None:
    if value not in STORAGE_CLASSES:
        raise InvalidStorageClass(StorageClassRequested=value)
    if value != "STANDARD":
        raise NotImplementedError_(
            f"Storage class {value} is not implemented: every object is stored as STANDARD."
        )


def _expected_owner(value: str, screen: Screen) -> None:
    if value != screen.owner_id:
        raise AccessDenied("The bucket is not owned by the expected bucket owner.")


def _version_id(value: str, screen: Screen) -> None:
    if value != "null":
        raise InvalidArgument("Invalid version id specified", ArgumentName="versionId")


def _false(value: str, screen: Screen) -> None:
    if value.strip().lower() != "false":
        raise NotImplementedError_("Object Lock is not implemented.")


def _checksum_type(value: str, screen: Screen) -> None:
    """A PUT's checksum is of the whole object; a multipart upload's may be COMPOSITE."""
    allowed = ("FULL_OBJECT",) if screen.op == "PutObject" else ("FULL_OBJECT", "COMPOSITE")
    if value.strip().upper() not in allowed:
        raise NotImplementedError_(f"Checksum type {value} is not implemented for this call.")


def _range_ok(value: str, screen: Screen) -> None:
    if not value.strip():
        raise InvalidArgument("The Range header is empty.", ArgumentName="Range")


def H(name: str, ops: Iterable[str] = (), check: Check | None = None, **kw: object) -> Rule:  # noqa: N802 - table syntax
    return Rule(name, "header", frozenset(ops), check, **kw)  # type: ignore[arg-type]


def Q(name: str, ops: Iterable[str] = (), check: Check | None = None, **kw: object) -> Rule:  # noqa: N802
    return Rule(name, "query", frozenset(ops), check, **kw)  # type: ignore[arg-type]


#: presigned-URL authentication parameters (SigV4, then SigV2)
PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "AWSAccessKeyId",
    "Signature",
    "Expires",
)
PUT_LIKE = OBJECT_WRITES
#: what an object gets when it is created: by a PUT, a copy, or a multipart upload's start
CREATES = OBJECT_WRITES | {"CreateMultipartUpload"}
DELETE = ("DeleteObject",)
COPY = ("CopyObject",)
COPY_SOURCE = ("CopyObject", "UploadPartCopy")
UPLOAD_ID = ("UploadPart", "UploadPartCopy", "ListParts", "CompleteMultipartUpload",
             "AbortMultipartUpload")  # fmt: skip

RULES: tuple[Rule, ...] = (
    # -- authentication and framing: verified by sigv4 / payload.BodyDecoder -----------------
    H("authorization", ALL_OPS, note="SigV4 or SigV2, always verified"),
    H("x-amz-date", ALL_OPS, note="signed request time, checked for skew"),
    H("x-amz-content-sha256", ALL_OPS, note="payload hash or streaming mode, verified"),
    H("x-amz-decoded-content-length", BODY_OPS, note="aws-chunked object length, enforced"),
    H("x-amz-trailer", BODY_OPS, note="aws-chunked trailer checksums, verified"),
    H("x-amz-user-agent", ALL_OPS, note="informational"),
    H("x-amz-security-token", sample="token", note="no session credentials exist (no STS)"),
    H("x-amz-request-payer", ALL_OPS, note="no bucket is Requester Pays: nothing to confirm"),
    H("x-amz-expected-bucket-owner", BUCKET_OPS, _expected_owner, sample="999999999999"),
    H("x-amz-source-expected-bucket-owner", COPY_SOURCE, _expected_owner, sample="999999999999"),
    # -- integrity: verified before the write is acknowledged, never stored unverified -------
    H("content-md5", BODY_OPS, note="MD5 of the body, verified (BadDigest)"),
    H("x-amz-checksum-", BODY_OPS, prefix=True, note="verified; stored and returned on GET"),
    H("x-amz-checksum-algorithm", ("CreateMultipartUpload",), sample="CRC32"),
    H(
        "x-amz-checksum-type",
        ("PutObject", "CreateMultipartUpload", "CompleteMultipartUpload"),
        _checksum_type,
        sample="COMPOSITE",
        sample_op="PutObject",
    ),
    H("x-amz-checksum-mode", OBJECT_READS, _only(["ENABLED"], error=InvalidArgument)),
    H("x-amz-sdk-checksum-algorithm", BODY_OPS, note="the named checksum must be sent"),
    H("x-amz-mp-object-size", ("CompleteMultipartUpload",), note="checked against the parts"),
    # -- conditions ------------------------------------------------------------------------
    H("if-match", OBJECT_READS | PUT_LIKE | {"DeleteObject"}, note="412, checked under a key lock"),
    H("if-none-match", OBJECT_READS | PUT_LIKE, note="writes: only '*', checked under a key lock"),
    H("if-modified-since", OBJECT_READS, sample="Wed, 01 Jan 2020 00:00:00 GMT"),
    H("if-unmodified-since", OBJECT_READS, sample="Wed, 01 Jan 2020 00:00:00 GMT"),
    H("x-amz-if-match-size", DELETE, sample="1", sample_op="PutObject"),
    H("x-amz-if-match-last-modified-time", DELETE, sample="Wed, 01 Jan 2020 00:00:00 GMT"),
    H(
        "x-amz-if-match-initiated-time",
        sample="Wed, 01 Jan 2020 00:00:00 GMT",
        sample_op="DeleteObject",
    ),
    H("range", ("GetObject", "HeadObject"), _range_ok),
    # -- copy ------------------------------------------------------------------------------
    H("x-amz-copy-source", COPY_SOURCE, sample_op="DeleteObject"),
    H("x-amz-copy-source-if-match", COPY_SOURCE, sample='"abc"'),
    H("x-amz-copy-source-if-none-match", COPY_SOURCE, sample='"abc"'),
    H("x-amz-copy-source-if-modified-since", COPY_SOURCE, sample="Wed, 01 Jan 2020 00:00:00 GMT"),
    H("x-amz-copy-source-if-unmodified-since", COPY_SOURCE, sample="Wed, 01 Jan 2020 00:00:00 GMT"),
    H("x-amz-copy-source-range", ("UploadPartCopy",), sample="bytes=0-1"),
    H("x-amz-copy-source-server-side-encryption-customer-", prefix=True, sample="AES256"),
    H("x-amz-metadata-directive", COPY, _only(["COPY", "REPLACE"], error=InvalidArgument)),
    H("x-amz-tagging-directive", COPY, _only(["COPY"]), sample="REPLACE", sample_op="CopyObject"),
    # -- stored object attributes ------------------------------------------------------------
    H("x-amz-meta-", CREATES, prefix=True, note="user metadata, 2 KB at most"),
    H("x-amz-storage-class", CREATES, _storage_class, sample="GLACIER"),
    H(
        "x-amz-acl",
        CREATES | {"CreateBucket", "PutBucketAcl", "PutObjectAcl"},
        _only(["private"]),
        sample="public-read",
    ),  # fmt: skip
    H("x-amz-grant-", prefix=True, sample='id="someone"', note="ACL grants: no ACLs"),
    H("x-amz-object-ownership", ("CreateBucket",), _only(["BucketOwnerEnforced"])),
    H("x-amz-bucket-object-lock-enabled", ("CreateBucket",), _false, sample="true"),
    H("x-amz-server-side-encryption", prefix=True, sample="AES256", note="no SSE"),
    H("x-amz-object-lock-", prefix=True, sample="GOVERNANCE", note="no Object Lock"),
    H("x-amz-bypass-governance-retention", sample="true", sample_op="DeleteObject"),
    H("x-amz-mfa", sample="123 456", sample_op="DeleteObject", note="no MFA delete"),
    H("x-amz-tagging", sample="a=b", note="no object tags"),
    H("x-amz-website-redirect-location", sample="/elsewhere", note="no website hosting"),
    H("x-amz-write-offset-bytes", sample="0", note="appends: directory buckets only"),
    H("x-amz-optional-object-attributes", sample="RestoreStatus", sample_op="ListObjects"),
    # -- query parameters --------------------------------------------------------------------
    Q("x-id", ALL_OPS, note="the SDK's operation name, informational"),
    Q("versionId", OBJECT_READS | {"DeleteObject"}, _version_id, sample="3HL4kqtJlcpXroDTDmJ"),
    Q("prefix", LISTINGS + ("ListMultipartUploads", "ListBuckets")),
    Q("max-buckets", ("ListBuckets",)),
    Q("bucket-region", ("ListBuckets",)),
    Q("delimiter", LISTINGS + ("ListMultipartUploads",)),
    Q("marker", ("ListObjects",)),
    Q("max-keys", LISTINGS),
    Q("encoding-type", LISTINGS + ("ListMultipartUploads",)),
    Q("versions", ("ListObjectVersions",), note="unversioned: every object is version null"),
    Q("key-marker", ("ListObjectVersions", "ListMultipartUploads")),
    Q("version-id-marker", ("ListObjectVersions",)),
    Q("list-type", ("ListObjects",)),
    Q("continuation-token", ("ListObjects", "ListBuckets")),
    Q("start-after", ("ListObjects",)),
    Q("fetch-owner", ("ListObjects",)),
    Q("response-content-type", ("GetObject",)),
    Q("response-content-language", ("GetObject",)),
    Q("response-expires", ("GetObject",)),
    Q("response-cache-control", ("GetObject",)),
    Q("response-content-disposition", ("GetObject",)),
    Q("response-content-encoding", ("GetObject",)),
    Q("delete", ("DeleteObjects",)),
    Q("location", ("GetBucketLocation",)),
    Q("acl", ACL_OPS, sample_op="DeleteObject", note="the private ACL only: read, or set private"),
    Q("versioning", ("GetBucketVersioning",), note="reads only: never enabled"),
    Q("policy", POLICY_OPS, sample_op="GetObject", note="bucket policies (node/s3/policy.py)"),
    Q("policyStatus", ("GetBucketPolicyStatus",), sample_op="GetObject"),
    Q("cors", CORS_OPS, sample_op="GetObject", note="CORS rules (node/s3/cors.py)"),
    Q("uploads", ("CreateMultipartUpload", "ListMultipartUploads"), sample_op="DeleteObject"),
    Q("upload-id-marker", ("ListMultipartUploads",)),
    Q("max-uploads", ("ListMultipartUploads",)),
    Q("uploadId", UPLOAD_ID, sample_op="DeleteObjects"),
    Q("partNumber", OBJECT_READS | {"UploadPart", "UploadPartCopy"}, sample_op="DeleteObject"),
    Q("max-parts", ("ListParts",)),
    Q("part-number-marker", ("ListParts",)),
    # presigned-URL authentication (SigV4, then SigV2), verified
    *(Q(n, ALL_OPS) for n in PRESIGN_PARAMS),
    Q("X-Amz-Security-Token", sample="token", sample_op="GetObject"),
)

#: subresources S3 defines that we do not serve: each is refused with 501 (a PUT ?acl must
#: not overwrite an object, a GET ?tagging must not return its bytes)
REFUSED_SUBRESOURCES = (
    "accelerate",
    "analytics",
    "attributes",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "publicAccessBlock",
    "renameObject",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "session",
    "tagging",
    "torrent",
    "website",
)
RULES += tuple(Q(name, sample="", sample_op="GetObject") for name in REFUSED_SUBRESOURCES)

_HEADERS = {r.name: r for r in RULES if r.kind == "header" and not r.prefix}
_HEADER_PREFIXES = sorted(
    (r for r in RULES if r.kind == "header" and r.prefix), key=lambda r: -len(r.name)
)
_QUERY = {r.name: r for r in RULES if r.kind == "query"}
#: ordinary HTTP request headers S3 gives a meaning to; all others pass unscreened
_SCREENED_HTTP = frozenset(n for n in _HEADERS if not n.startswith("x-amz-")) - {"authorization"}


def header_rule(name: str) -> Rule | None:
    """The rule for a lower-case header name; None when S3 gives it no meaning of its own."""
    rule = _HEADERS.get(name)
    if rule is not None:
        return rule
    for r in _HEADER_PREFIXES:
        if name.startswith(r.name):
            return r
    return None


def _refuse(rule: Rule, name: str, op: str) -> S3Error:
    what = "parameter" if rule.kind == "query" else "header"
    why = f" ({rule.note})" if rule.note else ""
    where = "is not implemented" if rule.refused else f"is not supported by {op}"
    return NotImplementedError_(
        f"The {what} {name!r} {where}{why}.",
        **{"Header" if rule.kind == "header" else "Parameter": name},
    )


def _apply(rule: Rule, name: str, value: str, screen: Screen) -> None:
    if screen.op not in rule.ops:
        raise _refuse(rule, name, screen.op)
    if rule.check is not None:
        rule.check(value, screen)


def screen(
    op: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    *,
    owner_id: str,
) -> None:
    """Raises the refusal for the first header or parameter `op` does not honor as sent."""
    s = Screen(op, owner_id)
    for name, value in headers.items():
        lname = name.lower()
        if not lname.startswith("x-amz-") and lname not in _SCREENED_HTTP:
            continue
        rule = header_rule(lname)
        if rule is None:
            raise NotImplementedError_(
                f"The header {name!r} is not known to this server, so it cannot be honored.",
                Header=name,
            )
        _apply(rule, lname, value, s)
    for name, value in query.items():
        rule = _QUERY.get(name)
        if rule is None and (name.lower().startswith("x-amz-") or name.lower() == "content-type"):
            # presigned URLs carry signed headers here (SigV2 ones Content-Type too: botocore
            # puts it in the query, and the signature covers it, node/s3/sigv2.py)
            rule = header_rule(name.lower())
            if rule is None and name.lower() == "content-type":
                continue  # signed, never stored: the Content-Type header is
        if rule is None:
            raise NotImplementedError_(
                f"The query parameter {name!r} is not known to this server, so it cannot be "
                "honored.",
                Parameter=name,
            )
        _apply(rule, name, value, s)
    if op in BODY_OPS:
        _sdk_checksum(headers)


def _sdk_checksum(headers: Mapping[str, str]) -> None:
    """x-amz-sdk-checksum-algorithm promises a checksum: it must come (header or trailer)."""
    alg = headers.get("x-amz-sdk-checksum-algorithm")
    if alg is None:
        return
    want = "x-amz-checksum-" + alg.strip().lower()
    trailer = [n.strip().lower() for n in headers.get("x-amz-trailer", "").split(",")]
    if want not in {n.lower() for n in headers} and want not in trailer:
        raise InvalidRequest(
            "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* "
            "or x-amz-trailer headers were found."
        )
