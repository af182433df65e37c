"""Bucket operations: thin handlers over the object layer."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib

from aiohttp import web

from shardfleet.cluster.errors import BucketExists
from shardfleet.node.s3 import xml
from shardfleet.node.s3.bucketconf import SYSTEM_BUCKET
from shardfleet.node.s3.context import S3Request, body_chunks
from shardfleet.node.s3.errors import BadDigest, BucketAlreadyExists, InvalidArgument, MalformedXML
from shardfleet.node.s3.names import check_bucket_name
from shardfleet.node.s3.payload import BodyDecoder, content_md5

MAX_XML_BODY = 1 << 20


async def read_small_body(req: S3Request, limit: int = MAX_XML_BODY) -> bytes:
    """Reads a request body that is XML configuration, never object data: capped in size."""
    assert req.auth is not None
    decoder = BodyDecoder(req.auth, req.http.headers)  # verifies the payload hash/signatures
    data = bytearray()
    async for chunk in body_chunks(req):
        for piece in decoder.feed(chunk):
            data += piece
        if len(data) > limit:
            raise MalformedXML(f"The XML body is larger than {limit} bytes.")
    decoder.finish()
    want = content_md5(req.http.headers)
    if want is not None and hashlib.md5(data).digest() != want:
        raise BadDigest()
    return bytes(data)


MAX_BUCKETS_PAGE = 10_000


async def list_buckets(req: S3Request) -> web.Response:
    """ListBuckets with AWS's paging: `max-buckets` (1..10,000), `continuation-token` (from
    the previous page), `prefix`, `bucket-region` (every bucket is in this node's region)."""
    q = req.query
    limit = None
    if "max-buckets" in q:
        text = q["max-buckets"].strip()
        if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= MAX_BUCKETS_PAGE:
            raise InvalidArgument(
                "max-buckets must be an integer between 1 and 10000", ArgumentName="max-buckets"
            )
        limit = int(text)
    after = _decode_token(q["continuation-token"]) if "continuation-token" in q else ""
    prefix = q.get("prefix", "")
    region = q.get("bucket-region")
    buckets = await req.layer.list_buckets()
    buckets.pop(SYSTEM_BUCKET, None)
    if region is not None and region != req.services.region:
        buckets = {}
    if not req.identity.root:  # each user lists the buckets it owns
        mine = req.identity.canonical_id
        owners = await asyncio.gather(*(req.services.confs.get(n) for n in buckets))
        buckets = {n: c for (n, c), conf in zip(buckets.items(), owners, strict=True)
                   if conf.owner == mine}  # fmt: skip
    names = [n for n in sorted(buckets) if n > after and n.startswith(prefix)]
    page = names if limit is None else names[:limit]
    token = _encode_token(page[-1]) if limit is not None and len(names) > limit else None
    body = xml.list_buckets(
        {n: buckets[n] for n in page},
        req.identity,
        token=token,
        prefix=prefix if "prefix" in q else None,
        region=req.services.region,
    )
    return xml_response(body)


async def create_bucket(req: S3Request) -> web.Response:
    check_bucket_name(req.bucket)
    body = await read_small_body(req)
    if body.strip():
        root = xml.parse(body, "CreateBucketConfiguration")
        location = xml.child_text(root, "LocationConstraint")
        if location and location != req.services.region:
            raise InvalidArgument(
                f"The location constraint {location!r} is not this server's region "
                f"{req.services.region!r}.",
                ArgumentName="LocationConstraint",
            )
    me = req.identity
    try:
        await req.layer.make_bucket(req.bucket)
    except BucketExists:
        conf = await req.services.confs.get(req.bucket)
        if (conf.owner or req.services.users.root.canonical_id) == me.canonical_id:
            raise
        raise BucketAlreadyExists(BucketName=req.bucket) from None
    # (a bucket without a record, made before there were users, is the root's)
    taken = BucketAlreadyExists(BucketName=req.bucket)
    await req.services.confs.claim(req.bucket, me.canonical_id, taken)
    return web.Response(status=200, headers={"Location": f"/{req.bucket}"})


async def head_bucket(req: S3Request) -> web.Response:
    from shardfleet.node.s3.errors import NoSuchBucket

    if not await req.layer.bucket_exists(req.bucket):
        raise NoSuchBucket(BucketName=req.bucket)
    return web.Response(
        status=200,
        headers={"x-amz-bucket-region": req.services.region, "x-amz-access-point-alias": "false"},
    )


async def delete_bucket(req: S3Request) -> web.Response:
    await req.layer.delete_bucket(req.bucket)
    await req.services.confs.forget(req.bucket)  # its owner and policy go with it
    return web.Response(status=204)


async def get_location(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    return xml_response(xml.location(req.services.region))


async def get_versioning(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    return xml_response(xml.document("VersioningConfiguration", []))


def _max_keys(req: S3Request) -> int:
    raw = req.query.get("max-keys", "1000")
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument("max-keys must be an integer.", ArgumentName="max-keys") from None
    if value < 0:
        raise InvalidArgument("max-keys must not be negative.", ArgumentName="max-keys")
    return min(value, 1000)


def _listing_params(req: S3Request) -> tuple[str, str, int, bool]:
    """prefix, delimiter, max-keys and whether to url-encode: what every listing takes."""
    q = req.query
    if q.get("encoding-type") not in (None, "url"):
        raise InvalidArgument(
            "Invalid Encoding Method specified in Request", ArgumentName="encoding-type"
        )
    return q.get("prefix", ""), q.get("delimiter", ""), _max_keys(req), "encoding-type" in q


def _encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8", "surrogatepass")).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogatepass")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(
            "The continuation token provided is incorrect", ArgumentName="continuation-token"
        ) from None


async def list_objects(req: S3Request) -> web.Response:
    q = req.query
    v2 = q.get("list-type") == "2"
    if "list-type" in q and not v2:
        raise InvalidArgument("list-type must be 2.", ArgumentName="list-type")
    prefix, delimiter, max_keys, encode = _listing_params(req)
    if v2:
        token = q.get("continuation-token")
        start = _decode_token(token) if token is not None else q.get("start-after", "")
    else:
        start = _past_common_prefix(q.get("marker", ""), prefix, delimiter)
    page = await req.layer.list_objects(
        req.bucket, prefix=prefix, delimiter=delimiter, start_after=start, max_keys=max_keys
    )
    if v2:
        fields = {}
        if "continuation-token" in q:
            fields["ContinuationToken"] = q["continuation-token"]
        if page.truncated:
            fields["NextContinuationToken"] = _encode_token(page.next_marker)
        if "start-after" in q:
            fields["StartAfter"] = q["start-after"]
        owner = req.bucket_owner if q.get("fetch-owner") == "true" else None
    else:
        fields = {"Marker": q.get("marker", "")}
        if page.truncated:
            fields["NextMarker"] = page.next_marker.rstrip("\U0010ffff")
        owner = req.bucket_owner  # V1 always lists owners
    body = xml.list_objects(
        bucket=req.bucket,
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        objects=page.objects,
        prefixes=page.prefixes,
        truncated=page.truncated,
        encode=encode,
        owner_id=owner,
        fields=fields,
        key_count=v2,
    )
    return xml_response(body)


async def list_versions(req: S3Request) -> web.Response:
    """ListObjectVersions. Buckets are never versioned here, so every object is its one
    version, `null`, and the latest; tools and test suites list versions to empty a bucket."""
    q = req.query
    prefix, delimiter, max_keys, encode = _listing_params(req)
    key_marker, vid_marker = q.get("key-marker", ""), q.get("version-id-marker")
    if vid_marker is not None:
        if not key_marker:
            raise InvalidArgument(
                "A version-id marker cannot be specified without a key marker.",
                ArgumentName="version-id-marker", ArgumentValue=vid_marker,
            )  # fmt: skip
        if vid_marker not in ("", "null"):
            raise InvalidArgument(
                "Invalid version id specified",
                ArgumentName="version-id-marker", ArgumentValue=vid_marker,
            )  # fmt: skip
    # the key marker's own (null) version was listed already: go on after it
    start = _past_common_prefix(key_marker, prefix, delimiter)
    page = await req.layer.list_objects(
        req.bucket, prefix=prefix, delimiter=delimiter, start_after=start, max_keys=max_keys
    )
    fields = {"KeyMarker": key_marker, "VersionIdMarker": vid_marker or ""}
    next_marker = None
    if page.truncated:
        next_marker = page.next_marker.rstrip("\U0010ffff")
    body = xml.list_versions(
        bucket=req.bucket,
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        objects=page.objects,
        prefixes=page.prefixes,
        next_key_marker=next_marker,
        encode=encode,
        owner_id=req.bucket_owner,
        fields=fields,
    )
    return xml_response(body)


def _past_common_prefix(marker: str, prefix: str, delimiter: str) -> str:
    """A V1 NextMarker (or a versions NextKeyMarker) that is a common prefix: continue past
    everything under it."""
    if delimiter and marker.startswith(prefix) and delimiter in marker[len(prefix) :]:
        cut = marker.index(delimiter, len(prefix)) + len(delimiter)
        return marker[:cut] + "\U0010ffff"
    return marker


def xml_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml")
