"""What every S3 handler gets: the parsed request target and the node's services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web

from shardfleet.cluster.objects import ObjectLayer
from shardfleet.node.metrics import Metrics
from shardfleet.node.s3.errors import RequestTimeout
from shardfleet.node.s3.identity import ANONYMOUS, Identity
from shardfleet.node.s3.sigv4 import AuthResult

if TYPE_CHECKING:
    from shardfleet.node.s3.bucketconf import BucketConfigs
    from shardfleet.node.s3.cors import Rule
    from shardfleet.node.s3.identity import Users
    from shardfleet.node.s3.limits import Limits


@dataclass(slots=True)
class S3Services:
    layer: ObjectLayer
    region: str
    owner_id: str
    lookup_secret: Callable[[str], str | None]
    users: Users
    confs: BucketConfigs
    max_object_size: int = 5 << 30
    body_stall_timeout: float = 60.0
    metrics: Metrics | None = None
    limits: Limits | None = None  # per-requester rate and upload limits (node/s3/limits.py)
    tls_enabled: bool = False  # S3 is served over HTTPS (aws:SecureTransport, HSTS)
    cors_default: tuple[Rule, ...] | None = None  # rules for buckets without their own


@dataclass(slots=True)
class S3Request:
    http: web.Request
    services: S3Services
    bucket: str
    key: str
    query: dict[str, str]  # first value of each name, decoded ('+' is not a space in S3)
    request_id: str
    auth: AuthResult | None = None
    bytes_in: int = 0
    identity: Identity = ANONYMOUS  # who signed it (node/s3/identity.py)
    owner: Identity | None = None  # the bucket's owner, once authorized (node/s3/access.py)

    @property
    def bucket_owner(self) -> Identity:
        return self.owner if self.owner is not None else self.services.users.root

    @property
    def layer(self) -> ObjectLayer:
        return self.services.layer

    @property
    def resource(self) -> str:
        return (
            f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}" if self.bucket else "/"
        )


def split_query(raw: str) -> list[tuple[str, str]]:
    """Query pairs in wire order, percent-decoded without turning '+' into a space."""
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def split_target(raw_path: str) -> tuple[str, str]:
    """Path-style '/bucket/key' -> (bucket, key); the key keeps every character as sent."""
    path = raw_path[1:] if raw_path.startswith("/") else raw_path
    bucket, _, key = path.partition("/")
    return unquote(bucket), unquote(key)


async def body_chunks(req: S3Request) -> AsyncIterator[bytes]:
    """The raw request body as it arrives; a client silent for longer than the stall
    timeout gets RequestTimeout instead of holding the request (and its buffers) forever."""
    await send_continue(req.http)
    content = req.http.content
    stall = req.services.body_stall_timeout
    while True:
        try:
            async with asyncio.timeout(stall):  # a timer, not a task per chunk like wait_for
                chunk = await content.readany()
        except TimeoutError:
            raise RequestTimeout() from None
        if not chunk:
            return
        req.bytes_in += len(chunk)
        yield chunk


async def send_continue(request: web.Request) -> None:
    """Answers `Expect: 100-continue` when the body is about to be read, not before: a
    request refused earlier (auth, missing bucket) gets its error without the client ever
    sending the body. boto3 sends the header on every PutObject and waits a second for it."""
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        if not request.get("continued"):
            request["continued"] = True
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
