"""Object operations: thin handlers that stream between aiohttp and the object layer.

Bodies are never read whole: PutObject feeds the raw body through the payload decoder
(aws-chunked framing, signatures, checksums) into the object layer's stripe pipeline, and
GetObject writes the layer's pieces to the response as they come, with aiohttp's drain
providing backpressure.
"""

from __future__ import annotations

import calendar
import contextlib
import email.utils
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from cluster.get import ReadHandle
from cluster.meta import ObjectMeta
from cluster.put import PutRequest
from node.s3 import xml
from node.s3.buckets import read_small_body, xml_response
from node.s3.context import S3Request, body_chunks
from node.s3.errors import (
    EntityTooLarge,
    IncompleteBody,
    MetadataTooLarge,
    MissingContentLength,
    PreconditionFailed,
    S3Error,
    from_internal,
)
from node.s3.names import check_key
from node.s3.payload import BodyDecoder, content_md5
from node.s3.ranges import parse_range

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # status recorded (access log, metrics) when the client left mid-body

STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
MAX_USER_META = 2048
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


# -- PUT ----------------------------------------------------------------------------------
def _user_meta(req: S3Request) -> dict[str, str]:
    user = {
        name[len("x-amz-meta-") :].lower(): value
        for name, value in req.http.headers.items()
        if name.lower().startswith("x-amz-meta-")
    }
    if sum(len(k) + len(v) for k, v in user.items()) > MAX_USER_META:
        raise MetadataTooLarge(f"User metadata is limited to {MAX_USER_META} bytes.")
    return user


async def _decoded_body(req: S3Request, decoder: BodyDecoder) -> AsyncIterator[bytes | memoryview]:
    try:
        async for raw in body_chunks(req):
            for piece in decoder.feed(raw):
                yield piece
    except (HttpProcessingError, ConnectionError) as exc:
        raise IncompleteBody(f"The request body ended early: {exc}") from exc
    decoder.finish()


async def put_object(req: S3Request) -> web.Response:
    check_key(req.key)
    assert req.auth is not None
    decoder = BodyDecoder(req.auth, req.http.headers)
    size = decoder.content_length
    if size is None:
        raise MissingContentLength()
    if size > req.services.max_object_size:
        raise EntityTooLarge(f"Objects are limited to {req.services.max_object_size} bytes.")
    headers = {h: v for h in STORED_HEADERS if (v := req.http.headers.get(h)) is not None}
    if "content-encoding" in headers:  # aws-chunked is transport framing, not the object's
        codings = [c.strip() for c in headers["content-encoding"].split(",")]
        kept = ", ".join(c for c in codings if c and c.lower() != "aws-chunked")
        if kept:
            headers["content-encoding"] = kept
        else:
            del headers["content-encoding"]
    put = PutRequest(
        bucket=req.bucket,
        key=req.key,
        size=size,
        content_type=req.http.headers.get("Content-Type", "binary/octet-stream"),
        user=_user_meta(req),
        headers=headers,
        content_md5=content_md5(req.http.headers),
    )
    await req.layer.precheck_bucket(req.bucket)
    meta = await req.layer.put_object(put, _decoded_body(req, decoder))
    return web.Response(status=200, headers={"ETag": f'"{meta.etag}"'})


# -- GET / HEAD ---------------------------------------------------------------------------
def _object_headers(meta: ObjectMeta) -> dict[str, str]:
    headers = {
        "ETag": f'"{meta.etag}"',
        "Last-Modified": xml.http_date(meta.mtime),
        "Content-Type": meta.content_type,
        "Accept-Ranges": "bytes",
    }
    for name, value in meta.headers.items():
        headers[name.title()] = value
    for name, value in meta.user.items():
        headers[f"x-amz-meta-{name}"] = value
    return headers


def _parse_http_date(value: str) -> int | None:
    parsed = email.utils.parsedate(value)
    return calendar.timegm(parsed) if parsed else None


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.strip('"') == etag for t in tags)


def _check_conditions(req: S3Request, meta: ObjectMeta) -> int | None:
    """304 or 412 per RFC 9110 / S3's reading of the conditional headers, else None."""
    h = req.http.headers
    modified = meta.mtime // 1_000_000_000
    if (v := h.get("If-Match")) is not None:
        if not _etag_matches(v, meta.etag):
            return 412
    elif (v := h.get("If-Unmodified-Since")) is not None:
        since = _parse_http_date(v)
        if since is not None and modified > since:
            return 412
    if (v := h.get("If-None-Match")) is not None:
        if _etag_matches(v, meta.etag):
            return 304
    elif (v := h.get("If-Modified-Since")) is not None:
        since = _parse_http_date(v)
        if since is not None and modified <= since:
            return 304
    return None


async def _open(req: S3Request) -> ReadHandle:
    check_key(req.key)
    handle = await req.layer.open_object(req.bucket, req.key)
    status = _check_conditions(req, handle.meta)
    if status == 412:
        raise PreconditionFailed(Condition="If-Match/If-Unmodified-Since")
    if status == 304:
        raise _NotModified(handle.meta)
    return handle


class _NotModified(Exception):
    def __init__(self, meta: ObjectMeta) -> None:
        self.meta = meta


def _not_modified(meta: ObjectMeta) -> web.Response:
    headers = _object_headers(meta)
    headers.pop("Content-Type", None)
    return web.Response(status=304, headers=headers)


async def head_object(req: S3Request) -> web.StreamResponse:
    try:
        handle = await _open(req)
    except _NotModified as nm:
        return _not_modified(nm.meta)
    meta = handle.meta
    headers = _object_headers(meta)
    status, length = 200, meta.size
    rng = req.http.headers.get("Range")
    if rng and (span := parse_range(rng, meta.size)) is not None:
        status, length = 206, span[1] - span[0]
        headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{meta.size}"
    headers["Content-Length"] = str(length)
    return web.Response(status=status, headers=headers)


async def get_object(req: S3Request) -> web.StreamResponse:
    try:
        handle = await _open(req)
    except _NotModified as nm:
        return _not_modified(nm.meta)
    meta = handle.meta
    headers = _object_headers(meta)
    for param, header in RESPONSE_OVERRIDES.items():
        if param in req.query:
            headers[header] = req.query[param]
    start, end, status = 0, meta.size, 200
    rng = req.http.headers.get("Range")
    if rng and (span := parse_range(rng, meta.size)) is not None:
        start, end, status = span[0], span[1], 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{meta.size}"
    body = req.layer.read_object(handle, start, end)
    # closed on every way out: a GET that stops early (client gone) stops its reads now,
    # not whenever the garbage collector finds the generator
    async with contextlib.aclosing(body):
        if meta.inline:
            data = b"".join([bytes(p) async for p in body])
            return web.Response(status=status, headers=headers, body=data)
        # Read the first run before answering, so a read that cannot even start (quorum lost,
        # every copy of the first stripe rotten) still gets a proper S3 error.
        first = await anext(body, None)
        headers["x-amz-request-id"] = headers["x-amz-id-2"] = req.request_id
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        await response.prepare(req.http)
        sent = 0
        try:
            if first is not None:
                await response.write(first)
                sent = len(first)
            async for piece in body:
                await response.write(piece)
                sent += len(piece)
        except Exception as exc:
            # Headers are gone: cut the connection so the client sees a short body, never
            # wrong bytes, and never waits for bytes that will not come. (aiohttp's own
            # write_eof then meets the closed transport and lets it be.)
            if isinstance(exc, ConnectionError):  # the client went away: routine, not a fault
                log.info("request %s: GET %s: the client went away", req.request_id, req.resource)
                req.http["s3_cut"] = (CLIENT_CLOSED, sent)
            else:
                err = from_internal(exc)
                req.http["s3_cut"] = (err.status, sent)
                internal = err.code == "InternalError"
                log.log(
                    logging.ERROR if internal else logging.WARNING,
                    "request %s: GET %s cut short: %s",
                    req.request_id,
                    req.resource,
                    exc,
                    exc_info=internal,
                )
            if req.http.transport is not None:
                req.http.transport.close()
            return response
        await response.write_eof()
        return response


# -- DELETE -------------------------------------------------------------------------------
async def delete_object(req: S3Request) -> web.Response:
    check_key(req.key)
    await req.layer.delete_object(req.bucket, req.key)
    return web.Response(status=204)


async def delete_objects(req: S3Request) -> web.Response:
    body = await read_small_body(req)
    keys, quiet = xml.parse_delete(body)
    await req.layer.require_bucket(req.bucket)
    valid, failed = [], []
    for key in keys:
        try:
            valid.append(check_key(key))
        except S3Error as exc:
            failed.append((key, exc.code, exc.message))
    outcomes = await req.layer.delete_objects(req.bucket, valid)
    deleted = []
    for key, exc in zip(valid, outcomes, strict=True):
        if exc is None:
            deleted.append(key)
        else:
            err = from_internal(exc)
            failed.append((key, err.code, err.message))
    return xml_response(xml.delete_result([] if quiet else deleted, failed))
