"""CopyObject: the source's bytes streamed through the erasure code into a new version.

A copy is a PUT whose body is another object's GET: the same stripe pipeline, the same
crash safety (a new version directory, committed only once a write quorum has it), the same
bounded memory. Nothing is copied shard to shard, because the destination may live in
another set, and a version is never shared between keys.

A long copy keeps its connection alive the way AWS does (node/s3/keepalive.py): spaces
after the 200 status until the result is known, then the CopyObjectResult or an <Error>.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import unquote

from aiohttp import web

from shardfleet.cluster.get import ReadHandle
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.cluster.put import PutRequest
from shardfleet.node.s3 import usermeta, xml
from shardfleet.node.s3.access import may
from shardfleet.node.s3.context import S3Request
from shardfleet.node.s3.errors import (
    InvalidArgument,
    InvalidRequest,
    PreconditionFailed,
)
from shardfleet.node.s3.keepalive import respond_slowly
from shardfleet.node.s3.names import check_bucket_name, check_key
from shardfleet.node.s3.objects import STORED_HEADERS, read_condition, write_condition

log = logging.getLogger(__name__)

MAX_COPY_SOURCE = 5 << 30  # CopyObject's limit; larger sources need UploadPartCopy


def parse_copy_source(value: str) -> tuple[str, str]:
    """'/bucket/key[?versionId=null]' (URL-encoded, leading slash optional) -> (bucket, key)."""
    path, _, query = value.partition("?")
    if query:
        name, _, version = query.partition("=")
        if name != "versionId":
            raise InvalidArgument("Unsupported copy source parameter.", ArgumentName=name)
        if unquote(version) != "null":
            raise InvalidArgument("Invalid version id specified", ArgumentName="versionId")
    path = unquote(path).removeprefix("/")
    bucket, _, key = path.partition("/")
    if not bucket or not key or bucket.startswith("arn:"):
        raise InvalidArgument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.",
            ArgumentName="x-amz-copy-source",
        )
    return check_bucket_name(bucket), check_key(key)


def source_condition(req: S3Request, meta: ObjectMeta) -> None:
    h = req.http.headers
    status = read_condition(
        meta,
        h.get("x-amz-copy-source-if-match"),
        h.get("x-amz-copy-source-if-none-match"),
        h.get("x-amz-copy-source-if-modified-since"),
        h.get("x-amz-copy-source-if-unmodified-since"),
    )
    if status is not None:  # for a copy, "not modified" is a failed precondition too
        raise PreconditionFailed(Condition="x-amz-copy-source-If-*")


def _destination(req: S3Request, source: ObjectMeta, same_key: bool) -> PutRequest:
    h = req.http.headers
    directive = h.get("x-amz-metadata-directive", "COPY").strip().upper()
    if same_key and directive != "REPLACE":
        raise InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes."
        )
    checksums = {n: v for n, v in source.headers.items() if n.startswith("x-amz-checksum-")}
    if directive == "REPLACE":
        content_type = h.get("Content-Type", "binary/octet-stream")
        user = usermeta.parse(h)
        headers = {n: v for n in STORED_HEADERS if (v := h.get(n)) is not None}
    else:  # COPY, as AWS: the source's metadata, whatever else the request carries
        content_type, user, headers = source.content_type, dict(source.user), {}
        headers.update((n, v) for n, v in source.headers.items() if n not in checksums)
    headers.update(checksums)  # the bytes are the source's: so are their checksums
    return PutRequest(
        bucket=req.bucket,
        key=req.key,
        size=source.size,
        content_type=content_type,
        user=user,
        headers=headers,
        condition=write_condition(h.get("If-Match"), h.get("If-None-Match")),
    )


async def _copy(req: S3Request, handle: ReadHandle, put: PutRequest) -> ObjectMeta:
    source = req.layer.read_object(handle, 0, handle.meta.size)

    async def body() -> AsyncIterator[bytes | memoryview]:
        async with contextlib.aclosing(source):
            async for piece in source:
                yield piece

    return await req.layer.put_object(put, body())


def _result(meta: ObjectMeta) -> bytes:
    parts = [xml.el("LastModified", xml.iso8601(meta.mtime))]
    parts.append(f"<ETag>&quot;{meta.etag}&quot;</ETag>")
    for name, value in meta.headers.items():
        if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-type":
            parts.append(xml.el("Checksum" + name.removeprefix("x-amz-checksum-").upper(), value))
    return xml.document("CopyObjectResult", parts)


async def copy_object(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    if req.http.content_length or req.http.headers.get("Transfer-Encoding"):
        raise InvalidRequest("A CopyObject request carries no body.")
    src_bucket, src_key = parse_copy_source(req.http.headers["x-amz-copy-source"])
    await req.layer.precheck_bucket(req.bucket)
    await may(req, "s3:GetObject", src_bucket, src_key)  # the source's own owner and policy
    handle = await req.layer.open_object(src_bucket, src_key)
    source_condition(req, handle.meta)
    if handle.meta.size > MAX_COPY_SOURCE:
        raise InvalidRequest(
            "The specified copy source is larger than the maximum allowable size for a copy "
            f"source: {MAX_COPY_SOURCE}"
        )
    put = _destination(req, handle.meta, (src_bucket, src_key) == (req.bucket, req.key))
    return await respond_slowly(req, asyncio.ensure_future(_copy(req, handle, put)), _result)
