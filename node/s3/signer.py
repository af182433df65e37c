"""A SigV4 signer for our own command-line tools (the runtime does not depend on botocore).

It reuses the verifier's canonical forms, so what we sign is what we verify.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import urlsplit

from shardfleet.node.s3.context import split_query
from shardfleet.node.s3.sigv4 import (
    ALGORITHM,
    EMPTY_SHA256,
    SERVICE,
    TERMINATOR,
    canonical_query,
    canonical_uri,
    signing_key,
)


def sign(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    *,
    region: str = "us-east-1",
    now: datetime | None = None,
    body: bytes = b"",
) -> dict[str, str]:
    """Headers (host, x-amz-date, x-amz-content-sha256, authorization) for a request."""
    parts = urlsplit(url)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            canonical_uri(parts.path or "/"),
            canonical_query(split_query(parts.query)),
            "".join(f"{n}:{headers[n]}\n" for n in names),
            ";".join(names),
            payload,
        ]
    )
    scope = f"{stamp[:8]}/{region}/{SERVICE}/{TERMINATOR}"
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(
        signing_key(secret_key, stamp[:8], region), to_sign.encode(), "sha256"
    ).hexdigest()
    headers["authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers
