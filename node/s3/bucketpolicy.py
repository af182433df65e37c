"""Put/Get/DeleteBucketPolicy and GetBucketPolicyStatus.

A policy is validated in full (node/s3/policy.parse: MalformedPolicy for anything S3 would
refuse) before it is stored, and stored as sent, so GetBucketPolicy returns the owner's own
document byte for byte. It lives with the bucket's configuration (node/s3/bucketconf.py)
and goes when the bucket goes.
"""

from __future__ import annotations

from aiohttp import web

from shardfleet.node.s3 import policy, xml
from shardfleet.node.s3.buckets import read_small_body, xml_response
from shardfleet.node.s3.context import S3Request
from shardfleet.node.s3.errors import MalformedPolicy, MalformedXML, NoSuchBucketPolicy


async def put_bucket_policy(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    try:
        body = await read_small_body(req)
    except MalformedXML:  # over the 1 MiB every configuration body may have
        body = b"x" * (policy.MAX_POLICY_BYTES + 1)
    if len(body) > policy.MAX_POLICY_BYTES:
        raise MalformedPolicy("Policies cannot exceed the maximum allowed document size.")
    policy.parse(body, req.bucket)  # MalformedPolicy unless S3 would take it
    await req.services.confs.set(req.bucket, "policy", body)
    return web.Response(status=204)


async def get_bucket_policy(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    conf = await req.services.confs.get(req.bucket)
    if conf.policy is None:
        raise NoSuchBucketPolicy(BucketName=req.bucket)
    return web.Response(status=200, body=conf.policy, content_type="application/json")


async def delete_bucket_policy(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    await req.services.confs.set(req.bucket, "policy", None)
    return web.Response(status=204)


async def get_bucket_policy_status(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    conf = await req.services.confs.get(req.bucket)
    if conf.policy is None:
        raise NoSuchBucketPolicy(BucketName=req.bucket)
    public = conf.compiled is not None and policy.public_status(conf.compiled)
    body = xml.document("PolicyStatus", [xml.el("IsPublic", "true" if public else "false")])
    return xml_response(body)
