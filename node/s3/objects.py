"""Object operations: thin handlers that stream between aiohttp and the object layer.

Bodies are never read whole: PutObject feeds the raw body through the payload decoder
(aws-chunked framing, signatures, checksums) into the object layer's stripe pipeline, and
GetObject writes the layer's pieces to the response as they come, with aiohttp's drain
providing backpressure.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import email.utils
import logging
from collections.abc import AsyncIterator, Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from shardfleet.cluster.get import ReadHandle
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.cluster.put import Condition, PutRequest
from shardfleet.node.s3 import usermeta, xml
from shardfleet.node.s3.access import may
from shardfleet.node.s3.buckets import read_small_body, xml_response
from shardfleet.node.s3.context import S3Request, body_chunks
from shardfleet.node.s3.errors import (
    EntityTooLarge,
    IncompleteBody,
    InvalidArgument,
    InvalidPartNumber,
    InvalidRequest,
    MissingContentLength,
    NoSuchKey,
    NotImplementedError_,
    PreconditionFailed,
    S3Error,
    from_internal,
)
from shardfleet.node.s3.names import check_key
from shardfleet.node.s3.payload import BodyDecoder, content_md5
from shardfleet.node.s3.ranges import parse_range

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # status recorded (access log, metrics) when the client left mid-body

STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


# -- PUT ----------------------------------------------------------------------------------
async def decoded_body(
    req: S3Request, decoder: BodyDecoder, stored: dict[str, str]
) -> AsyncIterator[bytes | memoryview]:
    """The verified object bytes. Once the body is whole and verified (before the object
    layer commits, which it does only after the last piece), the checksums the client sent
    join the headers stored with the version, `stored`, so GET can return them."""
    try:
        async for raw in body_chunks(req):
            for piece in decoder.feed(raw):
                yield piece
    except (HttpProcessingError, ConnectionError) as exc:
        raise IncompleteBody(f"The request body ended early: {exc}") from exc
    decoder.finish()
    stored.update(checksum_headers(decoder.checksums))


def stored_headers(h: Mapping[str, str]) -> dict[str, str]:
    """The request headers an object keeps (Cache-Control...); aws-chunked, which is
    transport framing and not the object's, leaves Content-Encoding."""
    headers = {name: v for name in STORED_HEADERS if (v := h.get(name)) is not None}
    if "content-encoding" in headers:
        codings = [c.strip() for c in headers["content-encoding"].split(",")]
        kept = ", ".join(c for c in codings if c and c.lower() != "aws-chunked")
        if kept:
            headers["content-encoding"] = kept
        else:
            del headers["content-encoding"]
    return headers


def checksum_headers(found: dict[str, str]) -> dict[str, str]:
    """{x-amz-checksum-<alg>: value} for storing; a whole-object checksum is FULL_OBJECT."""
    out = {f"x-amz-checksum-{alg.lower()}": value for alg, value in found.items()}
    if out:
        out["x-amz-checksum-type"] = "FULL_OBJECT"
    return out


def _etag_list(header: str) -> list[str]:
    return [t.strip().removeprefix("W/").strip('"') for t in header.split(",") if t.strip()]


def write_condition(
    if_match: str | None, if_none_match: str | None, what: str = "If-None-Match"
) -> Condition | None:
    """If-Match / If-None-Match of a write (PUT, copy destination), as AWS: If-None-Match
    takes only '*' (412 when the key exists), If-Match an ETag list or '*' (404 NoSuchKey
    when the key is absent, 412 when no tag matches)."""
    if if_match is None and if_none_match is None:
        return None
    if if_none_match is not None and if_none_match.strip() != "*":
        raise NotImplementedError_(
            f"{what} on a write supports only '*' (create only if absent).", Header=what
        )

    def check(current: ObjectMeta | None) -> None:
        if if_none_match is not None and current is not None:
            raise PreconditionFailed(Condition="If-None-Match")
        if if_match is not None:
            if current is None:
                raise NoSuchKey()
            tags = _etag_list(if_match)
            if "*" not in tags and current.etag not in tags:
                raise PreconditionFailed(Condition="If-Match")

    return check


async def put_object(req: S3Request) -> web.Response:
    check_key(req.key)
    assert req.auth is not None
    decoder = BodyDecoder(req.auth, req.http.headers)
    size = decoder.content_length
    if size is None:
        # Transfer-Encoding: chunked without a length (curl -T -): the inline/striped choice
        # and the size limit are made before the body is read, so the length is required
        raise MissingContentLength()
    if size > req.services.max_object_size:
        raise EntityTooLarge(f"Objects are limited to {req.services.max_object_size} bytes.")
    headers = stored_headers(req.http.headers)
    put = PutRequest(
        bucket=req.bucket,
        key=req.key,
        size=size,
        content_type=req.http.headers.get("Content-Type", "binary/octet-stream"),
        user=usermeta.parse(req.http.headers),
        headers=headers,
        content_md5=content_md5(req.http.headers),
        condition=write_condition(
            req.http.headers.get("If-Match"), req.http.headers.get("If-None-Match")
        ),
    )
    await req.layer.precheck_bucket(req.bucket)
    meta = await req.layer.put_object(put, decoded_body(req, decoder, put.headers))
    reply = {"ETag": f'"{meta.etag}"'}
    reply.update(_checksum_reply(meta))
    return web.Response(status=200, headers=reply)


def _checksum_reply(meta: ObjectMeta) -> dict[str, str]:
    return {n: v for n, v in meta.headers.items() if n.startswith("x-amz-checksum-")}


# -- GET / HEAD ---------------------------------------------------------------------------
def _object_headers(meta: ObjectMeta, checksums: bool = False) -> dict[str, str]:
    """The stored object's response headers; its checksums only when asked for them
    (x-amz-checksum-mode: ENABLED), as AWS."""
    headers = {
        "ETag": f'"{meta.etag}"',
        "Last-Modified": xml.http_date(meta.mtime),
        "Content-Type": meta.content_type,
        "Accept-Ranges": "bytes",
    }
    for name, value in meta.headers.items():
        if name.startswith("x-amz-checksum-"):
            if checksums:
                headers[name] = value
        else:
            headers[name.title()] = value
    for name, value in meta.user.items():
        headers[f"x-amz-meta-{name}"] = usermeta.encode_value(value)
    return headers


def _wants_checksums(req: S3Request) -> bool:
    """Checksums describe the whole object: a ranged read gets none (as AWS), since a client
    would check the part it got against them and fail."""
    return (
        req.http.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"
        and "Range" not in req.http.headers
    )


def _parse_http_date(value: str) -> int | None:
    parsed = email.utils.parsedate(value)
    return calendar.timegm(parsed) if parsed else None


def _etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """RFC 9110 entity-tag comparison: strong for If-Match (a W/ tag never matches), weak
    for If-None-Match (W/"x" matches "x"). Our ETags are all strong."""
    for tag in (t.strip() for t in header.split(",")):
        if tag == "*":
            return True
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        if tag.strip('"') == etag:
            return True
    return False


def read_condition(
    meta: ObjectMeta,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
) -> int | None:
    """304 or 412 per RFC 9110 / S3's reading of the conditional headers, else None: a
    true If-Match overrides a false If-Unmodified-Since, and a present If-None-Match
    makes If-Modified-Since irrelevant, as AWS does."""
    modified = meta.mtime // 1_000_000_000
    if if_match is not None:
        if not _etag_matches(if_match, meta.etag, weak=False):
            return 412
    elif if_unmodified_since is not None:
        since = _parse_http_date(if_unmodified_since)
        if since is not None and modified > since:
            return 412
    if if_none_match is not None:
        if _etag_matches(if_none_match, meta.etag, weak=True):
            return 304
    elif if_modified_since is not None:
        since = _parse_http_date(if_modified_since)
        if since is not None and modified <= since:
            return 304
    return None


def _check_conditions(req: S3Request, meta: ObjectMeta) -> int | None:
    h = req.http.headers
    return read_condition(
        meta,
        h.get("If-Match"),
        h.get("If-None-Match"),
        h.get("If-Modified-Since"),
        h.get("If-Unmodified-Since"),
    )


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


MAX_PART_NUMBER = 10_000


def parse_part_number(value: str | None) -> int:
    text = (value or "").strip()
    if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= MAX_PART_NUMBER:
        raise InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive",
            ArgumentName="partNumber",
            ArgumentValue=value or "",
        )
    return int(text)


def _span(req: S3Request, handle: ReadHandle, headers: dict[str, str]) -> tuple[int, int, int]:
    """(start, end, status) of a GET or HEAD: the whole object, a Range, or a part.

    partNumber=N reads part N of a multipart object (206, with its Content-Range and the
    object's part count); of a single-part object only part 1 exists, the whole object.
    A part's own checksum is returned only for a COMPOSITE object, whose checksum is made
    of the parts' (a FULL_OBJECT checksum describes bytes a part read does not have)."""
    meta = handle.meta
    value = req.query.get("partNumber")
    if value is None:
        rng = req.http.headers.get("Range")
        if rng and (span := parse_range(rng, meta.size)) is not None:
            headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{meta.size}"
            return span[0], span[1], 206
        return 0, meta.size, 200
    number = parse_part_number(value)
    if "Range" in req.http.headers:
        raise InvalidRequest("Cannot specify both Range header and partNumber query parameter")
    for name in [n for n in headers if n.startswith("x-amz-checksum-")]:
        del headers[name]
    table = handle.parts
    if table is None:
        if number != 1:
            raise InvalidPartNumber()
        start, end = 0, meta.size
    else:
        index = next((i for i, p in enumerate(table.parts) if p.number == number), None)
        if index is None:
            raise InvalidPartNumber()
        part = table.parts[index]
        start, end = table.offsets[index], table.offsets[index] + part.size
        headers["x-amz-mp-parts-count"] = str(len(table.parts))
        if (
            part.checksum
            and _wants_checksums(req)
            and meta.headers.get("x-amz-checksum-type") == "COMPOSITE"
        ):
            for name in meta.headers:
                if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-type":
                    headers[name] = base64.b64encode(part.checksum).decode()
            headers["x-amz-checksum-type"] = "COMPOSITE"
    if end > start:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{meta.size}"
        return start, end, 206
    return start, end, 200


async def head_object(req: S3Request) -> web.StreamResponse:
    try:
        handle = await _open(req)
    except _NotModified as nm:
        return _not_modified(nm.meta)
    meta = handle.meta
    headers = _object_headers(meta, _wants_checksums(req))
    start, end, status = _span(req, handle, headers)
    headers["Content-Length"] = str(end - start)
    return web.Response(status=status, headers=headers)


async def get_object(req: S3Request) -> web.StreamResponse:
    try:
        handle = await _open(req)
    except _NotModified as nm:
        return _not_modified(nm.meta)
    meta = handle.meta
    headers = _object_headers(meta, _wants_checksums(req))
    for param, header in RESPONSE_OVERRIDES.items():
        if param in req.query:
            headers[header] = req.query[param]
    start, end, status = _span(req, handle, headers)
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
def _parse_time(value: str, name: str) -> tuple[int, int]:
    """An HTTP date or an ISO 8601 time -> (ms since the epoch, precision in ms)."""
    from datetime import datetime

    text = value.strip()
    if (seconds := _parse_http_date(text)) is not None:
        return seconds * 1000, 1000
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"{name} is not a valid time: {value!r}", ArgumentName=name) from None
    if when.tzinfo is None:
        raise InvalidArgument(f"{name} needs a time zone: {value!r}", ArgumentName=name)
    ms = int(when.timestamp() * 1000)
    return ms, 1 if when.microsecond else 1000


def _parse_size(value: str, name: str) -> int:
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidArgument(f"{name} must be a non-negative integer.", ArgumentName=name)
    return int(text)


def delete_condition(
    etag: str | None, size: str | None, modified: str | None, *, names: tuple[str, str, str]
) -> Condition | None:
    """If-Match, x-amz-if-match-size and x-amz-if-match-last-modified-time of a delete (or
    ETag, Size and LastModifiedTime of a DeleteObjects entry), as AWS: each must hold for the
    current version (412 otherwise); If-Match also needs the key to exist ('*' asks only
    that), while size and time alone let a missing key delete as a no-op (204)."""
    if etag is None and size is None and modified is None:
        return None
    want_size = _parse_size(size, names[1]) if size is not None else None
    want_time = _parse_time(modified, names[2]) if modified is not None else None

    def check(current: ObjectMeta | None) -> None:
        if current is None:
            if etag is not None:
                raise PreconditionFailed(Condition=names[0])
            return
        if etag is not None:
            tags = _etag_list(etag)
            if "*" not in tags and current.etag not in tags:
                raise PreconditionFailed(Condition=names[0])
        if want_size is not None and current.size != want_size:
            raise PreconditionFailed(Condition=names[1])
        if want_time is not None:
            ms, precision = want_time
            if current.mtime // 1_000_000 // precision != ms // precision:
                raise PreconditionFailed(Condition=names[2])

    return check


_DELETE_HEADERS = ("If-Match", "x-amz-if-match-size", "x-amz-if-match-last-modified-time")
_ENTRY_FIELDS = ("ETag", "Size", "LastModifiedTime")


async def delete_object(req: S3Request) -> web.Response:
    check_key(req.key)
    h = req.http.headers
    condition = delete_condition(*(h.get(n) for n in _DELETE_HEADERS), names=_DELETE_HEADERS)
    await req.layer.delete_object(req.bucket, req.key, condition=condition)
    return web.Response(status=204)


async def delete_objects(req: S3Request) -> web.Response:
    body = await read_small_body(req)
    entries, quiet = xml.parse_delete(body)
    await req.layer.require_bucket(req.bucket)
    valid, conditions, failed = [], [], []
    for entry in entries:
        key = entry["Key"]
        try:
            check_key(key)
            if entry.get("VersionId", "null") != "null":
                raise InvalidArgument("Invalid version id specified", ArgumentName="VersionId")
            condition = delete_condition(
                *(entry.get(f) for f in _ENTRY_FIELDS), names=_ENTRY_FIELDS
            )
            await may(req, "s3:DeleteObject", req.bucket, key)  # each key on its own
            conditions.append(condition)
            valid.append(key)
        except S3Error as exc:
            failed.append((key, exc.code, exc.message))
    outcomes = await req.layer.delete_objects(req.bucket, valid, conditions=conditions)
    deleted = []
    for key, exc in zip(valid, outcomes, strict=True):
        if exc is None:
            deleted.append(key)
        else:
            err = from_internal(exc)
            failed.append((key, err.code, err.message))
    return xml_response(xml.delete_result([] if quiet else deleted, failed))
