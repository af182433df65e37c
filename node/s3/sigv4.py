"""AWS Signature Version 4 verification for S3 requests (header and presigned-URL forms).

Pure and synchronous on purpose: the HTTP layer hands in a `RequestView` (wire path, decoded
query pairs, headers) and gets back an `AuthResult` or an S3Error from `node.s3.errors`, so
this can be tested against botocore without a server and called from any handler.

This runs on every request, so the common path avoids per-call allocation beyond the
canonical request itself: patterns are precompiled, derived signing keys are memoised, and
the canonical path is only re-encoded when it contains something that needs it.

`RequestView`, `AuthResult` and `PayloadMode` are defined in `node.s3.auth` (SigV2 shares
them) and are part of this module's interface too: callers of `verify_request` may name
them from here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from shardfleet.node.s3.auth import (
    AuthResult,
    PayloadMode,
    RequestView,
    parse_amz_date,
    secret_for,
    skew_error,
)
from shardfleet.node.s3.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidArgument,
    InvalidRequest,
    S3Error,
    SignatureDoesNotMatch,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: X-Amz-Expires runs 1..604800 (a week: the signing key is valid that long). AWS refuses
#: the rest with these words (each seen in S3 replies; MinIO and versitygw send the same):
#: not a number / negative / over a week are 400 AuthorizationQueryParametersError, and 0
#: parses but has expired on arrival (403 AccessDenied "Request has expired").
MAX_PRESIGN_EXPIRES = 604800
EXPIRES_NOT_A_NUMBER = "X-Amz-Expires should be a number"
EXPIRES_NEGATIVE = "X-Amz-Expires must be non-negative"
EXPIRES_TOO_LARGE = (
    "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires "
    "must be less than 604800 seconds"
)
_ISO_SECONDS = "%Y-%m-%dT%H:%M:%SZ"  # how S3 writes <Expires> and <ServerTime>

_STREAMING_MODES: dict[str, PayloadMode] = {
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD": "STREAMING-SIGNED",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER": "STREAMING-SIGNED-TRAILER",
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER": "STREAMING-UNSIGNED-TRAILER",
}

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SIG64 = re.compile(r"[0-9a-f]{64}")
_SCOPE_DATE = re.compile(r"\d{8}", re.ASCII)
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-_.~/]*")
_SIGNED_DECIMAL = re.compile(r"[+-]?[0-9]+")


@lru_cache(maxsize=64)
def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """Four chained HMACs per request would dominate small-request cost; the key only changes
    per (secret, day, region), so it is memoised. lru_cache is thread-safe for this use."""
    k = hmac.digest(("AWS4" + secret).encode(), date.encode(), "sha256")
    k = hmac.digest(k, region.encode(), "sha256")
    k = hmac.digest(k, service.encode(), "sha256")
    return hmac.digest(k, TERMINATOR.encode(), "sha256")


def canonical_uri(raw_path: str) -> str:
    """S3 signs each path byte once URI-encoded (no double encoding), so decode the wire form
    and re-encode it with AWS rules; clients that encode more or less than AWS still match."""
    if not raw_path:
        return "/"
    if _PLAIN_PATH.fullmatch(raw_path):
        return raw_path
    # surrogateescape: aiohttp hands undecodable request-line bytes through as surrogates.
    return quote(unquote_to_bytes(raw_path.encode("utf-8", "surrogateescape")), safe="/~")


def _aws_quote(text: str) -> str:
    """AWS URI-encoding of one query name/value: only A-Za-z0-9-_.~ stay literal."""
    return quote(text, safe="~", errors="surrogateescape")


def canonical_query(pairs: Sequence[tuple[str, str]], skip: str | None = None) -> str:
    """AWS sorts on the *encoded* name then value, so encode first, then sort."""
    enc = sorted((_aws_quote(k), _aws_quote(v)) for k, v in pairs if k != skip)
    return "&".join(f"{k}={v}" for k, v in enc)


def _header_value(headers: Mapping[str, str], name: str) -> str | None:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values = getall(name, None)
        if not values:
            return None
        return ",".join(" ".join(v.split()) for v in values)
    value = headers.get(name)
    return None if value is None else " ".join(value.split())


def _classify_payload(value: str) -> tuple[PayloadMode, str | None]:
    if value == UNSIGNED_PAYLOAD:
        return "UNSIGNED", None
    mode = _STREAMING_MODES.get(value)
    if mode is not None:
        return mode, None
    if _HEX64.fullmatch(value):
        return "SHA256", value.lower()
    raise InvalidArgument(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, STREAMING-UNSIGNED-PAYLOAD-TRAILER "
        "or a valid sha256 value.",
        ArgumentName="x-amz-content-sha256",
        ArgumentValue=value,
    )


def _parse_credential(
    value: str, amz_date: str, region: str | None, err: type[S3Error]
) -> tuple[str, str, str]:
    """Returns (access_key, scope_region, scope). Split from the right so only the four
    fixed scope fields are structural."""
    parts = value.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or not value.isascii():
        raise err(
            f"Error parsing the Credential parameter {value!r}; expecting "
            "'<AccessKeyId>/<YYYYMMDD>/<region>/s3/aws4_request'."
        )
    access_key, date, scope_region, service, terminal = parts
    if not _SCOPE_DATE.fullmatch(date):
        raise err(f"Invalid credential date {date!r}.")
    if terminal != TERMINATOR:
        raise err(f"Credential terminal must be 'aws4_request', not {terminal!r}.")
    if service != SERVICE:
        raise err(f"The credential service is wrong; expecting 's3', not {service!r}.")
    if not scope_region:
        raise err("The credential region is empty.")
    if region is not None and scope_region != region:
        raise err(f"The region {scope_region!r} is wrong; expecting {region!r}.", Region=region)
    if date != amz_date[:8]:
        raise err("Invalid credential date. Date is not the same as X-Amz-Date.")
    return access_key, scope_region, "/".join(parts[1:])


def _parse_signed_headers(value: str, err: type[S3Error]) -> list[str]:
    names = value.split(";")
    if not all(n and n == n.lower() and n.strip() == n for n in names):
        raise err(f"SignedHeaders {value!r} must be a ';'-separated list of lowercase names.")
    if "host" not in names:
        raise err("SignedHeaders must include 'host'.")
    return names


def _check_signature(
    req: RequestView,
    *,
    secret: str,
    access_key: str,
    amz_date: str,
    scope: str,
    scope_region: str,
    signed_headers: list[str],
    signed_headers_text: str,
    payload_hash: str,
    signature: str,
    skip_query: str | None,
) -> bytes:
    """Rebuilds the canonical request and compares; returns the signing key on success."""
    lines = []
    for name in signed_headers:
        value = _header_value(req.headers, name)
        if value is None:
            raise SignatureDoesNotMatch(
                f"Header {name!r} is listed in SignedHeaders but absent from the request."
            )
        lines.append(f"{name}:{value}\n")
    headers_block = "".join(lines)
    query = canonical_query(req.query, skip_query)
    key = signing_key(secret, scope[:8], scope_region)
    uri = canonical_uri(req.raw_path)
    # Second attempt only on failure: clients that signed the wire path verbatim.
    paths = (uri,) if uri == req.raw_path or not req.raw_path else (uri, req.raw_path)
    failed: list[tuple[str, str]] = []
    for path in paths:
        creq = "\n".join(
            (req.method, path, query, headers_block, signed_headers_text, payload_hash)
        )
        creq_hash = hashlib.sha256(creq.encode("utf-8", "surrogateescape")).hexdigest()
        sts = f"{ALGORITHM}\n{amz_date}\n{scope}\n{creq_hash}"
        expected = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, signature):
            return key
        failed.append((creq, sts))
    creq, sts = failed[0]
    raise SignatureDoesNotMatch(
        AWSAccessKeyId=access_key,
        StringToSign=sts,
        SignatureProvided=signature,
        CanonicalRequest=creq,
    )


def _verify_header(
    req: RequestView,
    authz: str,
    lookup_secret: Callable[[str], str | None],
    now: float,
    region: str | None,
    max_skew: float,
) -> AuthResult:
    err = AuthorizationHeaderMalformed
    scheme, _, rest = authz.strip().partition(" ")
    if scheme != ALGORITHM:
        raise AccessDenied(
            "Unsupported authorization type; only AWS Signature Version 4 "
            "(AWS4-HMAC-SHA256) is supported."
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            raise err(f"Authorization header component {part.strip()!r} is not name=value.")
        fields[name] = value.strip()
    try:
        credential, signed, signature = (
            fields["Credential"],
            fields["SignedHeaders"],
            fields["Signature"],
        )
    except KeyError as exc:
        raise err(f"Authorization header is missing {exc.args[0]}.") from None
    if not _SIG64.fullmatch(signature):
        raise err("Signature must be 64 lowercase hex characters.")
    signed_headers = _parse_signed_headers(signed, err)

    headers = req.headers
    amz_date = headers.get("x-amz-date")
    when = parse_amz_date(amz_date) if amz_date is not None else None
    if amz_date is None and (date_hdr := headers.get("date")) is not None:
        try:
            parsed = parsedate_to_datetime(date_hdr)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            when = parsed.timestamp()
            amz_date = parsed.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    if when is None or amz_date is None:
        raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
    access_key, scope_region, scope = _parse_credential(credential, amz_date, region, err)

    content_sha = headers.get("x-amz-content-sha256")
    if content_sha is None:
        raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
    mode, expected_sha = _classify_payload(content_sha.strip())
    secret = secret_for(lookup_secret, access_key)
    if abs(now - when) > max_skew:
        raise skew_error(amz_date, now, max_skew)
    key = _check_signature(
        req,
        secret=secret,
        access_key=access_key,
        amz_date=amz_date,
        scope=scope,
        scope_region=scope_region,
        signed_headers=signed_headers,
        signed_headers_text=signed,
        payload_hash=content_sha.strip(),
        signature=signature,
        skip_query=None,
    )
    return AuthResult(access_key, mode, expected_sha, key, signature, amz_date, scope, False)


def parse_presign_expires(text: str) -> int:
    """X-Amz-Expires as S3 reads it: a (signed, 64-bit) decimal integer, then non-negative,
    then at most a week; anything else is the AuthorizationQueryParametersError S3 sends.
    0 passes here: a URL that lives 0 seconds is refused as expired (`check_presign_window`)."""
    # the length check first: int() of a many-thousand-digit string is slow, or refused
    if not _SIGNED_DECIMAL.fullmatch(text) or len(text.lstrip("+-").lstrip("0")) > 19:
        raise AuthorizationQueryParametersError(EXPIRES_NOT_A_NUMBER)
    seconds = int(text)
    if not -(2**63) <= seconds < 2**63:
        raise AuthorizationQueryParametersError(EXPIRES_NOT_A_NUMBER)
    if seconds < 0:
        raise AuthorizationQueryParametersError(EXPIRES_NEGATIVE)
    if seconds > MAX_PRESIGN_EXPIRES:
        raise AuthorizationQueryParametersError(EXPIRES_TOO_LARGE)
    return seconds


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(_ISO_SECONDS)


def check_presign_window(when: float, expires: int, now: float, max_skew: float) -> None:
    """A presigned URL is good from its X-Amz-Date (less the allowed clock skew) until
    X-Amz-Date + X-Amz-Expires. Outside that, S3's 403 AccessDenied replies:

        <Message>Request is not yet valid</Message><X-Amz-Date>1473415775000</X-Amz-Date>
            <Expires>2016-09-12T10:09:35Z</Expires><ServerTime>2016-09-08T10:09:44Z</ServerTime>
        <Message>Request has expired</Message><X-Amz-Expires>60</X-Amz-Expires>
            <Expires>2018-03-29T11:17:34Z</Expires><ServerTime>2018-03-29T11:27:42Z</ServerTime>

    (S3 really does write that X-Amz-Date as epoch milliseconds.) X-Amz-Expires=0 is
    always expired: the documented range starts at 1."""
    if when - now > max_skew:
        raise AccessDenied(
            "Request is not yet valid",
            **{"X-Amz-Date": str(int(when) * 1000)},
            Expires=_iso(when + expires),
            ServerTime=_iso(now),
        )
    if expires == 0 or now > when + expires:
        raise AccessDenied(
            "Request has expired",
            **{"X-Amz-Expires": str(expires)},
            Expires=_iso(when + expires),
            ServerTime=_iso(now),
        )


def _verify_presigned(
    req: RequestView,
    params: dict[str, str],
    lookup_secret: Callable[[str], str | None],
    now: float,
    region: str | None,
    max_skew: float,
) -> AuthResult:
    err = AuthorizationQueryParametersError
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise err('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    try:
        credential = params["X-Amz-Credential"]
        amz_date = params["X-Amz-Date"]
        expires_text = params["X-Amz-Expires"]
        signed = params["X-Amz-SignedHeaders"]
        signature = params["X-Amz-Signature"]
    except KeyError:
        raise err(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        ) from None
    when = parse_amz_date(amz_date)
    if when is None:
        raise err("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    expires = parse_presign_expires(expires_text)
    if not _SIG64.fullmatch(signature):
        raise err("X-Amz-Signature must be 64 lowercase hex characters.")
    signed_headers = _parse_signed_headers(signed, err)
    access_key, scope_region, scope = _parse_credential(credential, amz_date, region, err)

    content_sha = req.headers.get("x-amz-content-sha256")
    payload_hash = content_sha.strip() if content_sha is not None else UNSIGNED_PAYLOAD
    mode, expected_sha = _classify_payload(payload_hash)
    secret = secret_for(lookup_secret, access_key)
    # time before signature (MinIO's order): an expired URL is "expired", however used
    check_presign_window(when, expires, now, max_skew)
    key = _check_signature(
        req,
        secret=secret,
        access_key=access_key,
        amz_date=amz_date,
        scope=scope,
        scope_region=scope_region,
        signed_headers=signed_headers,
        signed_headers_text=signed,
        payload_hash=payload_hash,
        signature=signature,
        skip_query="X-Amz-Signature",
    )
    return AuthResult(access_key, mode, expected_sha, key, signature, amz_date, scope, True)


def verify_request(
    req: RequestView,
    lookup_secret: Callable[[str], str | None],
    *,
    now: float,
    region: str | None = None,
    max_skew: float = 900.0,
) -> AuthResult:
    """Authenticate `req`; raise the S3Error a client should see, or return what the body
    decoder needs (payload mode, expected hash, chunk-signing material)."""
    authz = req.headers.get("authorization")
    params: dict[str, str] = {}
    for name, value in req.query:
        if name.startswith("X-Amz-") or name in ("Signature", "AWSAccessKeyId"):
            params.setdefault(name, value)
    if authz is not None and ("X-Amz-Algorithm" in params or "Signature" in params):
        raise InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
            ArgumentName="Authorization",
        )
    if authz is not None and authz.lstrip().startswith("AWS "):
        from shardfleet.node.s3 import (
            sigv2,  # lazy: start-up does not pay for it (V2 clients are rare)
        )

        return sigv2.verify_header(req, authz, lookup_secret, now=now, max_skew=max_skew)
    if authz is not None:
        return _verify_header(req, authz, lookup_secret, now, region, max_skew)
    if "X-Amz-Algorithm" in params:
        return _verify_presigned(req, params, lookup_secret, now, region, max_skew)
    if "Signature" in params or "AWSAccessKeyId" in params:
        from shardfleet.node.s3 import sigv2

        return sigv2.verify_query(req, lookup_secret, now=now)
    return anonymous(req)


def anonymous(req: RequestView) -> AuthResult:
    """A request that carries no signature: allowed only where a bucket policy says so
    (node/s3/access.py; access key ""). Its body is read as it says: unsigned, hashed, or
    aws-chunked without chunk signatures; one claiming signed chunks has nothing to sign
    them with and is refused."""
    value = req.headers.get("x-amz-content-sha256")
    mode, expected = ("UNSIGNED", None) if value is None else _classify_payload(value)
    if mode in ("STREAMING-SIGNED", "STREAMING-SIGNED-TRAILER"):
        raise AccessDenied()
    return AuthResult("", mode, expected, b"", "", "", "", False)
