"""Put/Get/DeleteBucketCors, the OPTIONS preflight, and the CORS headers of actual responses.

A configuration is validated in full (node/s3/cors.parse: S3's errors for anything S3 would
refuse) before it is stored, and stored as rendered from its parsed rules, so what
GetBucketCors returns is what is enforced. It lives with the bucket's configuration
(node/s3/bucketconf.py): on every node within its cache's TTL, gone with the bucket.

A bucket without rules falls back to the server-wide default (`[cors_default]` in the node's
configuration), when one is set; a bucket's own rules replace the default, never add to it.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from shardfleet.node.s3 import cors
from shardfleet.node.s3.bucketconf import SYSTEM_BUCKET
from shardfleet.node.s3.buckets import read_small_body
from shardfleet.node.s3.context import S3Request, S3Services
from shardfleet.node.s3.errors import (
    AccessForbidden,
    BadRequest,
    MalformedXML,
    NoSuchBucket,
    NoSuchCORSConfiguration,
)


async def put_bucket_cors(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    try:
        body = await read_small_body(req, cors.MAX_CONFIG_BYTES)
    except MalformedXML as exc:
        raise MalformedXML(exc.message) from None
    rules = cors.parse(body)
    await req.services.confs.set(req.bucket, "cors", cors.render(rules))
    return web.Response(status=200)


async def get_bucket_cors(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    conf = await req.services.confs.get(req.bucket)
    if conf.cors is None:
        raise NoSuchCORSConfiguration(BucketName=req.bucket)
    return web.Response(status=200, body=conf.cors, content_type="application/xml")


async def delete_bucket_cors(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    await req.services.confs.set(req.bucket, "cors", None)
    return web.Response(status=204)


async def rules_for(services: S3Services, bucket: str) -> tuple[cors.Rule, ...] | None:
    """The rules a request to `bucket` is matched against: its own, else the server's
    default; None when neither exists (CORS is not enabled there)."""
    if bucket and bucket != SYSTEM_BUCKET:
        conf = await services.confs.get(bucket)
        if conf.cors is not None:
            return conf.cors_rules or ()  # rules stored that no longer parse allow nothing
    return services.cors_default


async def preflight(
    services: S3Services, bucket: str, key: str, headers: Mapping[str, str]
) -> web.Response:
    """An OPTIONS request: a browser asking whether it may send the request it describes.
    Never signed (browsers send no credentials with it), so it reads nothing but rules."""
    origin = headers.get("Origin")
    if not origin:
        raise BadRequest()
    method = headers.get("Access-Control-Request-Method", "")
    if method not in cors.METHODS:
        raise BadRequest(f"Invalid Access-Control-Request-Method: {method or 'null'}")
    if bucket and (bucket == SYSTEM_BUCKET or not await services.layer.bucket_exists(bucket)):
        raise NoSuchBucket(BucketName=bucket)
    rules = await rules_for(services, bucket)
    resource_type = "OBJECT" if key else ("BUCKET" if bucket else "SERVICE")
    if rules is None:
        raise AccessForbidden(
            "CORSResponse: CORS is not enabled for this bucket.",
            Method=method,
            ResourceType=resource_type,
        )
    wanted = cors.request_headers(headers.get("Access-Control-Request-Headers"))
    found = cors.find(rules, origin, method, wanted)
    if found is None:
        raise AccessForbidden(Method=method, ResourceType=resource_type)
    rule, pattern = found
    granted = cors.grant(rule, pattern, origin, preflight_headers=wanted)
    return web.Response(status=200, headers=granted)


async def response_headers(
    services: S3Services, bucket: str, method: str, origin: str
) -> dict[str, str]:
    """The Access-Control-* headers an actual request from `origin` earns (none when no
    rule matches: the browser then withholds the answer from the page)."""
    rules = await rules_for(services, bucket)
    if not rules:
        return {}
    found = cors.find(rules, origin, method)
    if found is None:
        return {}
    return cors.grant(found[0], found[1], origin)
