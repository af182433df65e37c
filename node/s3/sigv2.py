"""AWS Signature Version 2 verification (``Authorization: AWS AK:sig`` and presigned
``?AWSAccessKeyId=..&Signature=..&Expires=..`` URLs), for clients that still send it —
notably boto3's ``generate_presigned_url`` without an explicit ``s3v4`` config.

Pure like `node.s3.sigv4`, which routes V2 requests here; `RequestView`, `AuthResult` and
the checks of access key and request time come from `node.s3.auth`. V2 never signs the
payload, so results are always ``payload_mode="UNSIGNED"``; a Content-MD5, if sent, is
checked later against the body by the handler.

    StringToSign = Verb \\n Content-MD5 \\n Content-Type \\n Date-or-Expires \\n
                   CanonicalizedAmzHeaders CanonicalizedResource
    Signature    = base64(HMAC-SHA1(secret, StringToSign))
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from operator import itemgetter

from shardfleet.node.s3.auth import AuthResult, RequestView, parse_amz_date, secret_for, skew_error
from shardfleet.node.s3.errors import AccessDenied, InvalidArgument, SignatureDoesNotMatch

#: Query parameters that are part of the CanonicalizedResource (AWS's documented list).
SUBRESOURCES = frozenset(
    {
        "acl",
        "cors",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "restore",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)
#: Newer sub-resources that some SDKs (botocore among them) also sign; tried only as a
#: fallback when the documented list does not match and one of these is present.
EXTRA_SUBRESOURCES = frozenset(
    {
        "accelerate",
        "analytics",
        "inventory",
        "metrics",
        "object-lock",
        "replication",
        "select",
        "select-type",
    }
)
_ALL_SUBRESOURCES = SUBRESOURCES | EXTRA_SUBRESOURCES

_AUTH_V2_MISSING = (
    "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
)


def canonical_resource(
    raw_path: str, query: Sequence[tuple[str, str]], names: frozenset[str] = SUBRESOURCES
) -> str:
    """The wire path verbatim (V2 signs the client's own encoding) plus the signed
    sub-resources with decoded values, sorted by name: ``/b/k?partNumber=1&uploadId=x``."""
    subs = sorted(((n, v) for n, v in query if n in names), key=itemgetter(0))
    if not subs:
        return raw_path or "/"
    return (raw_path or "/") + "?" + "&".join(f"{n}={v}" if v else n for n, v in subs)


def canonical_amz_headers(headers: Mapping[str, str], extra: Iterable[tuple[str, str]] = ()) -> str:
    """``name:value\\n`` for every x-amz-* header, names lowercased and sorted, values trimmed,
    repeats joined with ','. `extra` (presigned x-amz-* query parameters) fills in names the
    headers lack."""
    found: dict[str, list[str]] = {}
    for name, value in headers.items():  # multidicts yield every repeat
        lname = name.lower()
        if lname.startswith("x-amz-"):
            found.setdefault(lname, []).append(value.strip())
    from_query: dict[str, list[str]] = {}
    for name, value in extra:
        lname = name.lower()
        if lname.startswith("x-amz-") and lname not in found:
            from_query.setdefault(lname, []).append(value.strip())
    found.update(from_query)
    return "".join(f"{name}:{','.join(found[name])}\n" for name in sorted(found))


def sign(secret: str, string_to_sign: str) -> str:
    digest = hmac.digest(secret.encode(), string_to_sign.encode("utf-8", "surrogateescape"), "sha1")
    return base64.b64encode(digest).decode()


def _check_signature(
    req: RequestView,
    *,
    secret: str,
    access_key: str,
    signature: str,
    content_md5: str,
    content_type: str,
    date_lines: Sequence[str],
    amz_block: str,
) -> None:
    resources = [canonical_resource(req.raw_path, req.query)]
    if any(n in EXTRA_SUBRESOURCES for n, _ in req.query):
        resources.append(canonical_resource(req.raw_path, req.query, _ALL_SUBRESOURCES))
    provided = signature.encode("utf-8", "surrogateescape")
    first = ""
    for date_line in date_lines:
        for resource in resources:
            sts = f"{req.method}\n{content_md5}\n{content_type}\n{date_line}\n{amz_block}{resource}"
            if hmac.compare_digest(sign(secret, sts).encode(), provided):
                return
            first = first or sts
    raise SignatureDoesNotMatch(
        AWSAccessKeyId=access_key,
        StringToSign=first,
        SignatureProvided=signature,
        StringToSignBytes=first.encode("utf-8", "surrogateescape").hex(" "),
    )


def _result(access_key: str, presigned: bool) -> AuthResult:
    return AuthResult(access_key, "UNSIGNED", None, b"", "", "", "", presigned)


def _parse_date(value: str) -> float | None:
    """RFC 1123 (what V2 clients send) or, for x-amz-date, ISO 8601 basic."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return parse_amz_date(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    return "" if value is None else value.strip()


def verify_header(
    req: RequestView,
    authz: str,
    lookup_secret: Callable[[str], str | None],
    *,
    now: float,
    max_skew: float = 900.0,
) -> AuthResult:
    """``Authorization: AWS <AccessKeyId>:<base64 signature>``."""
    scheme, _, credential = authz.strip().partition(" ")
    access_key, colon, signature = credential.strip().rpartition(":")
    if scheme != "AWS" or not colon or not access_key or not signature:
        raise InvalidArgument(
            "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
            ArgumentName="Authorization",
            ArgumentValue=authz,
        )
    headers = req.headers
    amz_date = headers.get("x-amz-date")
    date = headers.get("date")
    request_time = amz_date if amz_date is not None else date
    when = _parse_date(request_time.strip()) if request_time is not None else None
    if request_time is None or when is None:
        raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
    secret = secret_for(lookup_secret, access_key)
    if abs(now - when) > max_skew:
        raise skew_error(request_time.strip(), now, max_skew)
    # With x-amz-date the Date line is empty (x-amz-date is signed as an amz header);
    # clients that signed their Date header anyway are tried second.
    if amz_date is None:
        date_lines: tuple[str, ...] = (request_time.strip(),)
    elif date is None:
        date_lines = ("",)
    else:
        date_lines = ("", date.strip())
    _check_signature(
        req,
        secret=secret,
        access_key=access_key,
        signature=signature,
        content_md5=_header(headers, "content-md5"),
        content_type=_header(headers, "content-type"),
        date_lines=date_lines,
        amz_block=canonical_amz_headers(headers),
    )
    return _result(access_key, False)


def verify_query(
    req: RequestView, lookup_secret: Callable[[str], str | None], *, now: float
) -> AuthResult:
    """``?AWSAccessKeyId=..&Expires=<unix time>&Signature=..``. botocore moves the signed
    Content-MD5, Content-Type and x-amz-* headers into the query string; request headers
    win, the query fills in what they lack."""
    params: dict[str, str] = {}
    for name, value in req.query:
        params.setdefault(name, value)
    try:
        access_key, signature, expires = (
            params["AWSAccessKeyId"],
            params["Signature"],
            params["Expires"],
        )
    except KeyError:
        raise AccessDenied(_AUTH_V2_MISSING) from None
    if not access_key or not signature:
        raise AccessDenied(_AUTH_V2_MISSING)
    if not (expires.isascii() and expires.isdigit()):
        raise AccessDenied(f"Invalid date (should be seconds since epoch): {expires}")
    secret = secret_for(lookup_secret, access_key)
    if now > int(expires):
        iso = "%Y-%m-%dT%H:%M:%SZ"
        raise AccessDenied(
            "Request has expired",
            Expires=datetime.fromtimestamp(int(expires), UTC).strftime(iso),
            ServerTime=datetime.fromtimestamp(now, UTC).strftime(iso),
        )
    headers = req.headers
    md5 = headers.get("content-md5", params.get("content-md5"))
    ctype = headers.get("content-type", params.get("content-type"))
    _check_signature(
        req,
        secret=secret,
        access_key=access_key,
        signature=signature,
        content_md5="" if md5 is None else md5.strip(),
        content_type="" if ctype is None else ctype.strip(),
        date_lines=(expires,),
        amz_block=canonical_amz_headers(headers, req.query),
    )
    return _result(access_key, True)
