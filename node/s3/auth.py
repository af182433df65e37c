"""What both request-signature versions share: the request they verify (`RequestView`), the
result they hand the body decoder (`AuthResult`), and the checks that read the same in
each (access key -> secret, request time: parsing and allowed skew).

`node.s3.sigv4` verifies SigV4 and routes SigV2 requests to `node.s3.sigv2`; both import
from here, neither from the other. Pure and synchronous, like them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from shardfleet.node.s3.errors import InvalidAccessKeyId, RequestTimeTooSkewed

PayloadMode = Literal[
    "UNSIGNED",
    "SHA256",
    "STREAMING-SIGNED",
    "STREAMING-SIGNED-TRAILER",
    "STREAMING-UNSIGNED-TRAILER",
]

_AMZ_DATE = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z", re.ASCII)


@dataclass(frozen=True, slots=True)
class RequestView:
    method: str
    raw_path: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class AuthResult:
    access_key: str
    payload_mode: PayloadMode
    expected_sha256: str | None
    signing_key: bytes
    seed_signature: str
    amz_date: str
    scope: str
    presigned: bool


def parse_amz_date(value: str) -> float | None:
    """ISO 8601 basic (``20130524T000000Z``, as x-amz-date) to a timestamp; None if not."""
    m = _AMZ_DATE.fullmatch(value)
    if m is None:
        return None
    try:
        return datetime(*(int(g) for g in m.groups()), tzinfo=UTC).timestamp()
    except ValueError:
        return None


def secret_for(lookup_secret: Callable[[str], str | None], access_key: str) -> str:
    """The secret of `access_key`; an unknown key is InvalidAccessKeyId."""
    secret = lookup_secret(access_key)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
    return secret


def skew_error(request_time: str, now: float, max_skew: float) -> RequestTimeTooSkewed:
    """The error for a request signed at `request_time` (as the client wrote it), too far
    from `now`."""
    server = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return RequestTimeTooSkewed(
        RequestTime=request_time,
        ServerTime=server,
        MaxAllowedSkewMilliseconds=str(int(max_skew * 1000)),
    )
