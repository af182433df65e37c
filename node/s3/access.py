"""Authorization: may this requester do this operation on this bucket or object?

After the signature is checked (or found absent: an anonymous request) and before the
handler runs, so nothing is read, stored or deleted for a request that is refused:

- the root credential may do anything (it is the operator: bucket policies do not bind it,
  so a policy can never lock the cluster's owner out of a bucket);
- a bucket's owner may do anything to it except what its own policy explicitly denies
  (policy management itself is never denied to the owner, as in S3);
- anyone else, another user or an anonymous request, only what the bucket's policy
  allows (node/s3/policy.py: an explicit Deny wins over any Allow).

Operations that name no bucket: ListBuckets needs a signed request (each user sees the
buckets it owns; the root sees all); CreateBucket too (node/s3/buckets.py answers
BucketAlreadyExists for another's name). The system bucket (node/s3/bucketconf.py) does not
exist for S3 clients at all.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping

from shardfleet.node.s3 import policy
from shardfleet.node.s3.bucketconf import SYSTEM_BUCKET, BucketConfig
from shardfleet.node.s3.context import S3Request
from shardfleet.node.s3.errors import AccessDenied, NoSuchBucket
from shardfleet.node.s3.identity import Identity

#: the IAM action each operation needs (HEAD and GET of an object are both s3:GetObject)
ACTIONS: Mapping[str, str] = {
    "ListBuckets": "s3:ListAllMyBuckets",
    "CreateBucket": "s3:CreateBucket",
    "HeadBucket": "s3:ListBucket",
    "DeleteBucket": "s3:DeleteBucket",
    "ListObjects": "s3:ListBucket",
    "GetBucketLocation": "s3:GetBucketLocation",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "ListObjectVersions": "s3:ListBucketVersions",
    "GetBucketAcl": "s3:GetBucketAcl",
    "PutBucketAcl": "s3:PutBucketAcl",
    "GetObjectAcl": "s3:GetObjectAcl",
    "PutObjectAcl": "s3:PutObjectAcl",
    "DeleteObjects": "s3:DeleteObject",  # checked per key (node/s3/objects.py)
    "PutObject": "s3:PutObject",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "DeleteObject": "s3:DeleteObject",
    "CopyObject": "s3:PutObject",  # and s3:GetObject on the source (node/s3/copy.py)
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",  # and s3:GetObject on the source
    "ListParts": "s3:ListMultipartUploadParts",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "PutBucketPolicy": "s3:PutBucketPolicy",
    "GetBucketPolicy": "s3:GetBucketPolicy",
    "DeleteBucketPolicy": "s3:DeleteBucketPolicy",
    "GetBucketPolicyStatus": "s3:GetBucketPolicyStatus",
    "PutBucketCors": "s3:PutBucketCORS",
    "GetBucketCors": "s3:GetBucketCORS",
    "DeleteBucketCors": "s3:PutBucketCORS",  # as in S3: no action of its own
}
POLICY_ACTIONS = frozenset(
    (
        "s3:PutBucketPolicy",
        "s3:GetBucketPolicy",
        "s3:DeleteBucketPolicy",
        "s3:GetBucketPolicyStatus",
    )
)
# an object operation's resource is the object; a bucket operation's, the bucket
_OBJECT_OPS = frozenset(
    (
        "GetObjectAcl", "PutObjectAcl", "PutObject", "GetObject", "HeadObject",
        "DeleteObject", "CopyObject", "CreateMultipartUpload", "UploadPart",
        "UploadPartCopy", "ListParts", "CompleteMultipartUpload", "AbortMultipartUpload",
    )
)  # fmt: skip


async def authorize(req: S3Request, op: str) -> None:
    """Raises AccessDenied (or NoSuchBucket for the system bucket) unless allowed; on the
    way, sets `req.owner` (the bucket's owner) for the handlers."""
    me = req.identity
    if req.bucket == SYSTEM_BUCKET:
        raise NoSuchBucket(BucketName=req.bucket)
    if not req.bucket or op == "CreateBucket":
        if me.anonymous:
            raise AccessDenied()
        return
    conf = await req.services.confs.get(req.bucket)
    req.owner = owner_of(req, conf)
    if me.root:
        return
    if op == "DeleteObjects":
        return  # decided key by key (node/s3/objects.delete_objects), as S3 does
    action = ACTIONS.get(op)
    if action is None:  # an operation without an IAM action: only the owner
        if req.owner.canonical_id != me.canonical_id:
            raise AccessDenied()
        return
    resource = (
        policy.object_arn(req.bucket, req.key)
        if op in _OBJECT_OPS
        else policy.bucket_arn(req.bucket)
    )
    if not allowed(req, conf, action, resource):
        raise AccessDenied()


async def may(req: S3Request, action: str, bucket: str, key: str) -> None:
    """Another bucket or object the request touches (CopyObject's source), or each key of
    a DeleteObjects: AccessDenied unless allowed."""
    if req.identity.root:
        return
    if bucket == SYSTEM_BUCKET:
        raise NoSuchBucket(BucketName=bucket)
    conf = await req.services.confs.get(bucket)
    if not allowed(req, conf, action, policy.object_arn(bucket, key)):
        raise AccessDenied()


def owner_of(req: S3Request, conf: BucketConfig) -> Identity:
    users = req.services.users
    if conf.owner is None:
        return users.root
    return users.by_canonical_id(conf.owner) or Identity(conf.owner, conf.owner, conf.owner)


def allowed(req: S3Request, conf: BucketConfig, action: str, resource: str) -> bool:
    """The decision for one action on one resource of `req`'s bucket (also what
    DeleteObjects asks per key, and CopyObject for its source's bucket)."""
    me = req.identity
    if me.root:
        return True
    owner = (conf.owner or req.services.users.root.canonical_id) == me.canonical_id
    compiled = conf.compiled
    if compiled is None:  # no policy (or one that no longer parses): the owner's alone
        return owner
    decision = policy.evaluate(compiled, _request(req, me, action, resource, compiled.keys))
    if owner:
        return decision != "deny" or action in POLICY_ACTIONS
    return decision == "allow"


def _request(
    req: S3Request, me: Identity, action: str, resource: str, keys: frozenset[str]
) -> policy.Request:
    """The request as the policy sees it; of the condition keys only those in `keys`
    (lower-cased: the ones the policy tests; the rest could change nothing)."""
    http = req.http
    context: dict[str, policy.ContextValue] = {}
    if "aws:securetransport" in keys:
        context["aws:SecureTransport"] = req.services.tls_enabled
    if "aws:currenttime" in keys or "aws:epochtime" in keys:
        now = int(time.time())
        context["aws:CurrentTime"] = _iso_time(now)
        context["aws:EpochTime"] = now
    if "s3:authtype" in keys:
        presigned = req.auth and req.auth.presigned
        context["s3:authType"] = "REST-QUERY-STRING" if presigned else "REST-HEADER"
    if http.remote and "aws:sourceip" in keys:
        context["aws:SourceIp"] = http.remote
    for header, name in (("Referer", "aws:Referer"), ("User-Agent", "aws:UserAgent")):
        if header in http.headers and name.lower() in keys:
            context[name] = http.headers[header]
    if not me.anonymous and ("aws:username" in keys or "aws:userid" in keys):
        context["aws:username"] = me.display_name
        context["aws:userid"] = me.canonical_id
    q = req.query
    for param, name in (("prefix", "s3:prefix"), ("delimiter", "s3:delimiter")):
        if param in q and name in keys:
            context[name] = q[param]
    if "s3:max-keys" in keys and q.get("max-keys", "").isdigit():
        context["s3:max-keys"] = int(q["max-keys"])
    principal = None if me.anonymous else me.canonical_id
    aliases = () if me.anonymous else (me.arn, me.access_key)
    return policy.Request(principal, action, resource, context, aliases)


@functools.lru_cache(maxsize=4)
def _iso_time(epoch: int) -> str:
    """aws:CurrentTime, formatted once a second rather than for every request."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
