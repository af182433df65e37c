"""Bucket and object ACLs, as far as shardfleet has them: the owner's FULL_CONTROL.

There is one owner and no grants, so every bucket and object has the canned `private` ACL.
Reading it answers that; setting it to `private` (the canned header, or a body granting
the owner FULL_CONTROL and nothing else) succeeds and changes nothing; anything else
(another canned ACL, `x-amz-grant-*`, a body with other grants) is refused with 501 before
anything changes (canned ACLs and grant headers by the semantics table, bodies here).
"""

from __future__ import annotations

from aiohttp import web

from shardfleet.node.s3 import xml
from shardfleet.node.s3.buckets import read_small_body, xml_response
from shardfleet.node.s3.context import S3Request
from shardfleet.node.s3.errors import InvalidRequest, MalformedXML, NotImplementedError_
from shardfleet.node.s3.identity import Identity
from shardfleet.node.s3.names import check_key

XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _policy(owner: Identity) -> bytes:
    owner_id = owner.canonical_id
    grant = (
        f'<Grant><Grantee xmlns:xsi="{XSI}" xsi:type="CanonicalUser">'
        f"{xml.el('ID', owner_id)}{xml.el('DisplayName', owner.display_name)}</Grantee>"
        "<Permission>FULL_CONTROL</Permission></Grant>"
    )
    return xml.document(
        "AccessControlPolicy",
        [xml.owner(owner), f"<AccessControlList>{grant}</AccessControlList>"],
    )


async def get_bucket_acl(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    return xml_response(_policy(req.bucket_owner))


async def get_object_acl(req: S3Request) -> web.Response:
    check_key(req.key)
    await req.layer.open_object(req.bucket, req.key)  # NoSuchKey / NoSuchBucket as GET
    return xml_response(_policy(req.bucket_owner))


async def put_bucket_acl(req: S3Request) -> web.Response:
    await req.layer.require_bucket(req.bucket)
    await _check_private(req)
    return web.Response(status=200)


async def put_object_acl(req: S3Request) -> web.Response:
    check_key(req.key)
    await req.layer.open_object(req.bucket, req.key)
    await _check_private(req)
    return web.Response(status=200)


async def _check_private(req: S3Request) -> None:
    """The request sets the private ACL, or is refused. (The canned header's value was
    checked by the semantics table: only `private` reaches here.)"""
    body = await read_small_body(req)
    canned = "x-amz-acl" in req.http.headers
    if canned and body.strip():
        raise InvalidRequest("Specifying both Canned ACLs and Header Grants is not allowed")
    if canned:
        return
    if not body.strip():
        raise MalformedXML("An ACL must be given: the x-amz-acl header or an XML body.")
    policy = xml.parse(body, "AccessControlPolicy")
    lists = xml.children(policy, "AccessControlList")
    grants = xml.children(lists[0], "Grant") if lists else []
    owner_id = req.bucket_owner.canonical_id
    for grant in grants:
        grantee = xml.children(grant, "Grantee")
        who = xml.child_text(grantee[0], "ID") if grantee else None
        if who != owner_id or xml.child_text(grant, "Permission") != "FULL_CONTROL":
            raise NotImplementedError_(
                "Only the private ACL is supported: the owner's FULL_CONTROL and no other grant."
            )
    if not grants:
        raise NotImplementedError_(
            "Only the private ACL is supported: the owner's FULL_CONTROL and no other grant."
        )
