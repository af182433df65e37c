"""Multipart uploads: the S3 handlers over cluster/multipart.py.

CreateMultipartUpload, UploadPart, UploadPartCopy, ListParts, CompleteMultipartUpload,
AbortMultipartUpload and ListMultipartUploads, with AWS's limits and errors: part numbers
1..10,000, parts up to 5 GiB, every part but the last at least 5 MiB, objects up to 5 TiB.
The ETag of the result is the MD5 of the parts' binary MD5s, a dash and the part count.

Checksums: an upload created with x-amz-checksum-algorithm gets that checksum for every
part (verified when the client sends it, header or trailer; computed as the part streams
past when it does not) and for the object: COMPOSITE (the algorithm over the parts' raw
checksums, then -N) or FULL_OBJECT (the CRC of the whole object, combined from the parts'
CRCs without reading a byte again), as AWS defines them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from shardfleet.cluster.meta import ObjectMeta
from shardfleet.cluster.multipart import Completed, Completion, list_digest
from shardfleet.cluster.parts import multipart_etag
from shardfleet.node.s3 import checksums, multipart_xml, usermeta
from shardfleet.node.s3.access import may
from shardfleet.node.s3.buckets import read_small_body, xml_response
from shardfleet.node.s3.context import S3Request
from shardfleet.node.s3.copy import parse_copy_source, source_condition
from shardfleet.node.s3.errors import (
    BadDigest,
    EntityTooLarge,
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    MissingContentLength,
    NoSuchUpload,
)
from shardfleet.node.s3.keepalive import respond_slowly
from shardfleet.node.s3.names import check_key
from shardfleet.node.s3.objects import decoded_body, parse_part_number, stored_headers
from shardfleet.node.s3.payload import BodyDecoder, content_md5

MIN_PART = 5 << 20
MAX_PART = 5 << 30
MAX_OBJECT = 5 << 40
MAX_PARTS = 10_000
MAX_COMPLETE_BODY = 4 << 20  # 10,000 parts with checksums are ~1.5 MB of XML
ALGORITHM = "x-amz-checksum-algorithm"  # the upload's, kept in its record's headers
KIND = "x-amz-checksum-type"
COMPOSITE, FULL_OBJECT = "COMPOSITE", "FULL_OBJECT"


def _int_param(req: S3Request, name: str, default: int, *, cap: int | None = None) -> int:
    value = req.query.get(name)
    if value is None:
        return default
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidArgument(
            f"Provided {name} not an integer or within integer range",
            ArgumentName=name,
            ArgumentValue=value,
        )
    number = int(text)
    return min(number, cap) if cap is not None else number


def _upload_id(req: S3Request) -> str:
    return req.query.get("uploadId", "")


def _checksum_kind(algorithm: str, kind: str | None) -> str:
    """The upload's checksum type, defaulted and checked as AWS: CRC64NVME is FULL_OBJECT
    only, the SHAs COMPOSITE only, the CRC32s either (COMPOSITE by default)."""
    if kind is None:
        return FULL_OBJECT if algorithm == "CRC64NVME" else COMPOSITE
    kind = kind.strip().upper()
    if kind not in (COMPOSITE, FULL_OBJECT):
        raise InvalidRequest(f"Value for x-amz-checksum-type header is invalid: {kind!r}.")
    if (kind == FULL_OBJECT and algorithm in ("SHA1", "SHA256")) or (
        kind == COMPOSITE and algorithm == "CRC64NVME"
    ):
        raise InvalidRequest(
            f"The {kind} checksum type cannot be used with the {algorithm.lower()} checksum "
            "algorithm."
        )
    return kind


def _upload_checksum(record: ObjectMeta) -> tuple[str, str]:
    return record.headers.get(ALGORITHM, ""), record.headers.get(KIND, "")


# -- create ---------------------------------------------------------------------------------
async def create_upload(req: S3Request) -> web.Response:
    check_key(req.key)
    if (await read_small_body(req)).strip():
        raise InvalidRequest("CreateMultipartUpload takes no request body.")
    h = req.http.headers
    headers = stored_headers(h)
    algorithm = h.get(ALGORITHM)
    kind = h.get(KIND)
    if algorithm is not None:
        algorithm = checksums.normalize(algorithm)
        headers[ALGORITHM] = algorithm
        headers[KIND] = _checksum_kind(algorithm, kind)
    elif kind is not None:
        raise InvalidRequest(
            "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm "
            "header."
        )
    user = usermeta.parse(h)
    await req.layer.precheck_bucket(req.bucket)
    uid = await req.layer.create_upload(
        req.bucket,
        req.key,
        content_type=h.get("Content-Type", "binary/octet-stream"),
        user=user,
        headers=headers,
    )
    response = xml_response(multipart_xml.initiate_result(req.bucket, req.key, uid))
    if algorithm is not None:
        response.headers[ALGORITHM] = algorithm
        response.headers[KIND] = headers[KIND]
    return response


# -- parts ----------------------------------------------------------------------------------
def _sent_algorithms(h: dict[str, str] | object) -> set[str]:
    """The checksum algorithms a part request carries (as a header, or announced as a
    trailer), so a mismatch with the upload's is refused before the body is read."""
    found = set()
    for name in h:  # type: ignore[attr-defined]
        alg = checksums.algorithm_of_header(name)
        if alg is not None:
            found.add(alg)
    for name in h.get("x-amz-trailer", "").split(","):  # type: ignore[attr-defined]
        alg = checksums.algorithm_of_header(name.strip())
        if alg is not None:
            found.add(alg)
    return found


async def _tapped(
    body: AsyncIterator[bytes | memoryview], algorithm: str, stored: dict[str, str]
) -> AsyncIterator[bytes | memoryview]:
    """The part's bytes, with the upload's checksum computed on the way past (the client
    sent none): stored with the part once the body is whole, before it commits."""
    hasher = checksums.new_checksum(algorithm)
    async with contextlib.aclosing(body):  # type: ignore[type-var]
        async for piece in body:
            hasher.update(piece)
            yield piece
    stored[checksums.header_name(algorithm)] = hasher.b64digest()


def _part_checksums(meta: ObjectMeta) -> dict[str, str]:
    return {
        n.removeprefix(checksums.HEADER_PREFIX).upper(): v
        for n, v in meta.headers.items()
        if n.startswith(checksums.HEADER_PREFIX) and n != KIND
    }


async def upload_part(req: S3Request) -> web.Response:
    check_key(req.key)
    number = parse_part_number(req.query.get("partNumber"))
    uid = _upload_id(req)
    assert req.auth is not None
    decoder = BodyDecoder(req.auth, req.http.headers)
    size = decoder.content_length
    if size is None:
        raise MissingContentLength()
    if size > MAX_PART:
        raise EntityTooLarge(
            f"A part is limited to {MAX_PART} bytes.", MaxSizeAllowed=str(MAX_PART)
        )
    record = await req.layer.upload_record(req.bucket, req.key, uid)
    algorithm, _ = _upload_checksum(record)
    sent = _sent_algorithms(req.http.headers)
    if algorithm and sent and algorithm not in sent:
        raise InvalidRequest(
            f"Checksum Type mismatch occurred, expected checksum Type: {algorithm.lower()}, "
            f"actual checksum Type: {sorted(sent)[0].lower()}"
        )
    stored: dict[str, str] = {}
    body = decoded_body(req, decoder, stored)
    if algorithm and not sent:
        body = _tapped(body, algorithm, stored)
    meta = await req.layer.upload_part(
        req.bucket,
        req.key,
        uid,
        number,
        body,
        size=size,
        content_md5=content_md5(req.http.headers),
        headers=stored,
        opened=record,
    )
    reply = {"ETag": f'"{meta.etag}"'}
    reply.update((checksums.header_name(a), v) for a, v in _part_checksums(meta).items())
    return web.Response(status=200, headers=reply)


def _copy_range(value: str | None, size: int) -> tuple[int, int]:
    """x-amz-copy-source-range 'bytes=first-last' -> [start, end); the whole source without it."""
    if value is None:
        if size > MAX_PART:
            raise InvalidRequest(
                "The specified copy source is larger than the maximum allowable size for a copy "
                f"source: {MAX_PART}"
            )
        return 0, size
    text = value.strip()
    unit, _, spec = text.partition("=")
    first, dash, last = spec.partition("-")
    if (
        unit != "bytes"
        or not dash
        or not first.isdigit()
        or not last.isdigit()
        or int(first) > int(last)
    ):
        raise InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first "
            "and last are the zero-based offsets of the first and last bytes to copy",
            ArgumentName="x-amz-copy-source-range",
            ArgumentValue=value,
        )
    start, end = int(first), int(last) + 1
    if end > size:
        raise InvalidRange(
            f"The requested range is not satisfiable: {value} of a {size}-byte source",
            RangeRequested=value,
            ActualObjectSize=str(size),
        )
    if end - start > MAX_PART:
        raise InvalidRequest(f"A part is limited to {MAX_PART} bytes.")
    return start, end


async def upload_part_copy(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    number = parse_part_number(req.query.get("partNumber"))
    uid = _upload_id(req)
    if req.http.content_length or req.http.headers.get("Transfer-Encoding"):
        raise InvalidRequest("An UploadPartCopy request carries no body.")
    src_bucket, src_key = parse_copy_source(req.http.headers["x-amz-copy-source"])
    record = await req.layer.upload_record(req.bucket, req.key, uid)
    await may(req, "s3:GetObject", src_bucket, src_key)  # the source's own owner and policy
    handle = await req.layer.open_object(src_bucket, src_key)
    source_condition(req, handle.meta)
    start, end = _copy_range(req.http.headers.get("x-amz-copy-source-range"), handle.meta.size)
    algorithm, _ = _upload_checksum(record)
    stored: dict[str, str] = {}

    async def body() -> AsyncIterator[bytes | memoryview]:
        source = req.layer.read_object(handle, start, end)
        async with contextlib.aclosing(source):
            async for piece in source:
                yield piece

    stream: AsyncIterator[bytes | memoryview] = body()
    if algorithm:
        stream = _tapped(stream, algorithm, stored)
    task = asyncio.ensure_future(
        req.layer.upload_part(
            req.bucket,
            req.key,
            uid,
            number,
            stream,
            size=end - start,
            content_md5=None,
            headers=stored,
            opened=record,
        )  # fmt: skip
    )
    return await respond_slowly(
        req,
        task,
        lambda meta: multipart_xml.copy_part_result(meta.mtime, meta.etag, _part_checksums(meta)),
    )


# -- list parts -----------------------------------------------------------------------------
async def list_parts(req: S3Request) -> web.Response:
    check_key(req.key)
    uid = _upload_id(req)
    max_parts = _int_param(req, "max-parts", 1000, cap=1000)
    marker = _int_param(req, "part-number-marker", 0)
    record, parts, truncated = await req.layer.list_parts(
        req.bucket, req.key, uid, after=marker, limit=max_parts
    )
    algorithm, kind = _upload_checksum(record)
    rows = [
        multipart_xml.PartRow(n, pm.mtime, pm.etag, pm.size, _part_checksums(pm)) for n, pm in parts
    ]
    return xml_response(
        multipart_xml.list_parts(
            bucket=req.bucket,
            key=req.key,
            uid=uid,
            owner_id=req.bucket_owner,
            marker=marker,
            max_parts=max_parts,
            rows=rows,
            truncated=truncated,
            algorithm=algorithm,
            kind=kind,
        )
    )


# -- complete -------------------------------------------------------------------------------
def _chooser(req: S3Request, listed: list[multipart_xml.ListedPart], digest: bytes) -> object:
    h = req.http.headers
    uid = _upload_id(req)
    want_kind = h.get(KIND)
    want_size = h.get("x-amz-mp-object-size")
    full_sums = {
        alg: checksums.validate_value(alg, v)
        for n, v in h.items()
        if (alg := checksums.algorithm_of_header(n)) is not None
    }

    def choose(record: ObjectMeta, current: dict[int, ObjectMeta]) -> Completion:
        previous = 0
        for part in listed:
            if part.number <= previous:
                raise InvalidPartOrder(UploadId=uid)
            previous = part.number
        chosen: list[ObjectMeta] = []
        for part in listed:
            meta = current.get(part.number)
            stored = _part_checksums(meta) if meta is not None else {}
            if (
                meta is None
                or meta.etag != part.etag
                or any(stored.get(alg) != v for alg, v in part.checksums.items())
            ):
                raise InvalidPart(UploadId=uid, PartNumber=str(part.number), ETag=part.etag)
            chosen.append(meta)
        for part, meta in zip(listed[:-1], chosen[:-1], strict=True):
            if meta.size < MIN_PART:
                raise EntityTooSmall(
                    ProposedSize=str(meta.size),
                    MinSizeAllowed=str(MIN_PART),
                    PartNumber=str(part.number),
                    ETag=part.etag,
                )
        total = sum(m.size for m in chosen)
        if total > MAX_OBJECT:
            raise EntityTooLarge(f"Objects are limited to {MAX_OBJECT} bytes.")
        if want_size is not None and (not want_size.strip().isdigit() or int(want_size) != total):
            raise InvalidRequest(
                f"The provided x-amz-mp-object-size {want_size!r} does not match the object's "
                f"size {total}."
            )
        headers = {n: v for n, v in record.headers.items() if n not in (ALGORITHM, KIND)}
        algorithm, kind = _upload_checksum(record)
        raws: list[bytes] = []
        if algorithm:
            if want_kind is not None and want_kind.strip().upper() != kind:
                raise InvalidRequest(
                    f"The upload was created using the {kind} checksum mode. The complete "
                    f"request must use the same checksum mode."
                )
            for part, meta in zip(listed, chosen, strict=True):
                value = _part_checksums(meta).get(algorithm)
                if value is None:
                    raise InvalidPart(UploadId=uid, PartNumber=str(part.number), ETag=part.etag)
                raws.append(base64.b64decode(value))
            if kind == FULL_OBJECT:
                pairs = [(raw, m.size) for raw, m in zip(raws, chosen, strict=True)]
                value = base64.b64encode(checksums.combine_crc(algorithm, pairs)).decode()
            else:
                value = checksums.composite(algorithm, raws)
            given = full_sums.get(algorithm)
            if given is not None and given != value.split("-")[0]:
                raise BadDigest(
                    f"The {algorithm} you specified did not match the calculated checksum."
                )
            headers[checksums.header_name(algorithm)] = value
            headers[KIND] = kind
        elif full_sums or want_kind is not None:
            raise InvalidRequest(
                "The upload was created without a checksum algorithm: the complete request "
                "cannot name one."
            )
        etag = multipart_etag([bytes.fromhex(m.etag) for m in chosen])
        return Completion(
            parts=chosen,
            numbers=[p.number for p in listed],
            etag=etag,
            headers=headers,
            checksums=raws,
            list_digest=digest,
        )

    return choose


async def complete_upload(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    uid = _upload_id(req)
    listed = multipart_xml.parse_complete(await read_small_body(req, MAX_COMPLETE_BODY))
    digest = list_digest([(p.number, p.etag) for p in listed])
    choose = _chooser(req, listed, digest)
    task = asyncio.ensure_future(
        req.layer.complete_upload(req.bucket, req.key, uid, choose)  # type: ignore[arg-type]
    )
    host = req.http.headers.get("Host", "localhost")
    location = f"http://{host}/{req.bucket}/{req.key}"

    def render(done: Completed) -> bytes:
        if done.repeated and done.list_digest != digest:
            raise NoSuchUpload(UploadId=uid)
        meta = done.meta
        found = {
            n.removeprefix(checksums.HEADER_PREFIX).upper(): v
            for n, v in meta.headers.items()
            if n.startswith(checksums.HEADER_PREFIX) and n != KIND
        }
        return multipart_xml.complete_result(
            location, req.bucket, req.key, meta.etag, found, meta.headers.get(KIND, "")
        )

    return await respond_slowly(req, task, render)


# -- abort and list uploads -----------------------------------------------------------------
async def abort_upload(req: S3Request) -> web.Response:
    check_key(req.key)
    await req.layer.abort_upload(req.bucket, req.key, _upload_id(req))
    return web.Response(status=204)


async def list_uploads(req: S3Request) -> web.Response:
    q = req.query
    if q.get("encoding-type") not in (None, "url"):
        raise InvalidArgument(
            "Invalid Encoding Method specified in Request", ArgumentName="encoding-type"
        )
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker = q.get("key-marker", "")
    uid_marker = q.get("upload-id-marker", "") if key_marker else ""
    max_uploads = _int_param(req, "max-uploads", 1000, cap=1000)
    page = await req.layer.list_uploads(
        req.bucket,
        prefix=prefix,
        delimiter=delimiter,
        key_marker=key_marker,
        uid_marker=uid_marker,
        max_uploads=max_uploads,
    )
    rows = [multipart_xml.UploadRow(u.key, u.uid, u.initiated) for u in page.uploads]
    return xml_response(
        multipart_xml.list_uploads(
            bucket=req.bucket,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            uid_marker=uid_marker,
            next_key=page.next_key if page.truncated else "",
            next_uid=page.next_uid if page.truncated else "",
            max_uploads=max_uploads,
            truncated=page.truncated,
            rows=rows,
            prefixes=page.prefixes,
            encode="encoding-type" in q,
            owner_id=req.bucket_owner,
        )
    )
