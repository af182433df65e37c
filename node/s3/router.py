"""The one dispatch table of the S3 API, and the middleware every request passes.

Every request: request id -> SigV4 -> table lookup by (method, target, subresource) ->
handler. Any exception becomes an S3 XML error here and nowhere else; unknown ones are
logged with the request id and answered as InternalError without a stack trace.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from shardfleet.node.logs import log_request
from shardfleet.node.s3 import (
    acl,
    bucketcors,
    bucketpolicy,
    buckets,
    copy,
    cors,
    multipart,
    objects,
    semantics,
    xml,
)
from shardfleet.node.s3.access import authorize
from shardfleet.node.s3.context import S3Request, S3Services, split_query, split_target
from shardfleet.node.s3.errors import MethodNotAllowed, NotImplementedError_, S3Error, from_internal
from shardfleet.node.s3.sigv4 import RequestView, verify_request

log = logging.getLogger(__name__)

Handler = Callable[[S3Request], Awaitable[web.StreamResponse]]

# Subresources that pick a handler; a request naming one we do not serve gets 501, not a
# silently wrong answer (e.g. PUT ?acl must not overwrite an object). What every header and
# parameter means is decided by the one table, node/s3/semantics.py, screened below.
BUCKET_SUBRESOURCES = (
    "delete",
    "location",
    "versioning",
    "uploads",
    "policyStatus",
    "policy",
    "acl",
    "cors",
    "lifecycle",
    "tagging",
    "website",
    "logging",
    "notification",
    "replication",
    "encryption",
    "object-lock",
    "requestPayment",
    "accelerate",
    "analytics",
    "inventory",
    "metrics",
    "ownershipControls",
    "publicAccessBlock",
    "intelligent-tiering",
    "versions",
)
OBJECT_SUBRESOURCES = (
    "uploads",
    "uploadId",
    "partNumber",
    "tagging",
    "acl",
    "retention",
    "legal-hold",
    "torrent",
    "restore",
    "select",
    "attributes",
)

SERVICE: dict[str, Handler] = {"GET": buckets.list_buckets}
BUCKET: dict[tuple[str, str], Handler] = {
    ("PUT", ""): buckets.create_bucket,
    ("HEAD", ""): buckets.head_bucket,
    ("DELETE", ""): buckets.delete_bucket,
    ("GET", ""): buckets.list_objects,
    ("GET", "location"): buckets.get_location,
    ("GET", "versioning"): buckets.get_versioning,
    ("GET", "versions"): buckets.list_versions,
    ("GET", "acl"): acl.get_bucket_acl,
    ("PUT", "acl"): acl.put_bucket_acl,
    ("POST", "delete"): objects.delete_objects,
    ("GET", "uploads"): multipart.list_uploads,
    ("PUT", "policy"): bucketpolicy.put_bucket_policy,
    ("GET", "policy"): bucketpolicy.get_bucket_policy,
    ("DELETE", "policy"): bucketpolicy.delete_bucket_policy,
    ("GET", "policyStatus"): bucketpolicy.get_bucket_policy_status,
    ("PUT", "cors"): bucketcors.put_bucket_cors,
    ("GET", "cors"): bucketcors.get_bucket_cors,
    ("DELETE", "cors"): bucketcors.delete_bucket_cors,
}
OBJECT: dict[tuple[str, str], Handler] = {
    ("PUT", ""): objects.put_object,
    ("GET", ""): objects.get_object,
    ("HEAD", ""): objects.head_object,
    ("DELETE", ""): objects.delete_object,
    ("GET", "acl"): acl.get_object_acl,
    ("PUT", "acl"): acl.put_object_acl,
    ("POST", "uploads"): multipart.create_upload,
    ("PUT", "uploadId"): multipart.upload_part,
    ("GET", "uploadId"): multipart.list_parts,
    ("POST", "uploadId"): multipart.complete_upload,
    ("DELETE", "uploadId"): multipart.abort_upload,
    ("GET", "partNumber"): objects.get_object,
    ("HEAD", "partNumber"): objects.head_object,
}


OP_NAMES: dict[Handler, str] = {
    buckets.list_buckets: "ListBuckets",
    buckets.create_bucket: "CreateBucket",
    buckets.head_bucket: "HeadBucket",
    buckets.delete_bucket: "DeleteBucket",
    buckets.list_objects: "ListObjects",
    buckets.get_location: "GetBucketLocation",
    buckets.get_versioning: "GetBucketVersioning",
    buckets.list_versions: "ListObjectVersions",
    acl.get_bucket_acl: "GetBucketAcl",
    acl.put_bucket_acl: "PutBucketAcl",
    acl.get_object_acl: "GetObjectAcl",
    acl.put_object_acl: "PutObjectAcl",
    objects.delete_objects: "DeleteObjects",
    objects.put_object: "PutObject",
    objects.get_object: "GetObject",
    objects.head_object: "HeadObject",
    objects.delete_object: "DeleteObject",
    copy.copy_object: "CopyObject",
    multipart.create_upload: "CreateMultipartUpload",
    multipart.upload_part: "UploadPart",
    multipart.upload_part_copy: "UploadPartCopy",
    multipart.list_parts: "ListParts",
    multipart.complete_upload: "CompleteMultipartUpload",
    multipart.abort_upload: "AbortMultipartUpload",
    multipart.list_uploads: "ListMultipartUploads",
    bucketpolicy.put_bucket_policy: "PutBucketPolicy",
    bucketpolicy.get_bucket_policy: "GetBucketPolicy",
    bucketpolicy.delete_bucket_policy: "DeleteBucketPolicy",
    bucketpolicy.get_bucket_policy_status: "GetBucketPolicyStatus",
    bucketcors.put_bucket_cors: "PutBucketCors",
    bucketcors.get_bucket_cors: "GetBucketCors",
    bucketcors.delete_bucket_cors: "DeleteBucketCors",
}


def _subresource(query: dict[str, str], known: tuple[str, ...]) -> str:
    for name in known:
        if name in query:
            return name
    return ""


def pick_handler(
    method: str, bucket: str, key: str, query: dict[str, str], headers: Mapping[str, str]
) -> Handler:
    if not bucket:
        handler = SERVICE.get(method)
        if handler is None:
            raise MethodNotAllowed()
        return handler
    table, known = (OBJECT, OBJECT_SUBRESOURCES) if key else (BUCKET, BUCKET_SUBRESOURCES)
    sub = _subresource(query, known)
    handler = table.get((method, sub))
    if handler is objects.put_object and "x-amz-copy-source" in headers:
        return copy.copy_object
    if handler is multipart.upload_part and "x-amz-copy-source" in headers:
        return multipart.upload_part_copy
    if handler is not None:
        return handler
    if sub or any(m == method for m, _ in table):
        raise NotImplementedError_(f"{method} {'?' + sub if sub else ''} is not implemented yet.")
    raise MethodNotAllowed()


def new_request_id() -> str:
    return os.urandom(8).hex().upper()


def error_response(err: S3Error, method: str, resource: str, request_id: str) -> web.Response:
    headers = {"x-amz-request-id": request_id}
    if err.headers:  # e.g. SlowDown's Retry-After
        headers.update(err.headers)
    if method == "HEAD":
        return web.Response(status=err.status, headers=headers)
    body = xml.error(err.code, err.message, resource, request_id, err.extra)
    return web.Response(
        status=err.status, body=body, content_type="application/xml", headers=headers
    )


def make_handler(services: S3Services) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    metrics = services.metrics
    limits = services.limits  # per-requester limits (node/s3/limits.py), None when off

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        if metrics is not None:
            metrics.inflight.inc()
        op = "Unknown"
        try:
            response = await serve(request)
            return response
        finally:
            if limits is not None and (slot := request.get("s3_slot")) is not None:
                limits.release(slot)  # the upload it admitted is done
            seconds = time.perf_counter() - started
            state = request.get("s3")
            status = state[1] if state else 499
            if metrics is not None:
                metrics.inflight.dec()
                metrics.observe(
                    state[0] if state else request.get("s3_op", op),
                    status,
                    seconds,
                    state[2] if state else 0,
                    state[3] if state else 0,
                )
            if state:
                log_request(
                    request_id=state[4],
                    access_key=state[5],
                    op=state[0],
                    method=request.method,
                    resource=state[6],
                    status=status,
                    bytes_in=state[2],
                    bytes_out=state[3],
                    seconds=seconds,
                    remote=request.remote,
                )

    async def serve(request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        raw_path, _, raw_query = request.raw_path.partition("?")
        bucket, key = split_target(raw_path)
        pairs = split_query(raw_query)
        query = {}
        for name, value in pairs:
            query.setdefault(name, value)
        req = S3Request(request, services, bucket, key, query, request_id)
        op = "Unknown"
        origin = request.headers.get("Origin")
        try:
            if origin is not None:  # a browser's: CORS headers on whatever the answer is
                request["s3_cors"] = await _cors_headers(services, bucket, request.method, origin)
            if request.method == "OPTIONS":  # a CORS preflight: never signed, nothing stored
                op = request["s3_op"] = "PreflightRequest"
                if limits is not None:
                    await limits.check(None, request.remote, op)
                response = await bucketcors.preflight(services, bucket, key, request.headers)
            else:
                response = await _serve_s3(req, request, raw_path, pairs, query)
                op = request.get("s3_op", op)
        except Exception as exc:
            op = request.get("s3_op", op)
            err = from_internal(exc)
            # a throttled request is no failure of ours (the access log and
            # shardfleet_s3_throttled_total have it): a flood must not flood the log too
            if err.status >= 500 and err.code != "SlowDown":
                log.log(
                    logging.ERROR if err.code == "InternalError" else logging.WARNING,
                    "request %s %s %s failed: %s",
                    request_id,
                    request.method,
                    req.resource,
                    exc,
                    exc_info=err.code == "InternalError",
                )
            if isinstance(exc, ConnectionResetError | ConnectionError):
                raise
            response = error_response(err, request.method, req.resource, request_id)
            if request.body_exists and not request.content.is_eof():
                # an unread body would be parsed as the next request on this connection
                response.force_close()
        if not response.prepared:  # streamed responses carry it from their handler
            response.headers["x-amz-request-id"] = request_id
            response.headers["x-amz-id-2"] = request_id
        out = 0 if request.method == "HEAD" else (response.content_length or 0)
        status = response.status
        if (cut := request.get("s3_cut")) is not None:  # a streamed body cut short
            status, out = cut
        access_key = req.auth.access_key if req.auth else ""
        request["s3"] = (
            op,
            status,
            req.bytes_in,
            out,
            request_id,
            access_key,
            req.resource,
        )
        return response

    async def _serve_s3(
        req: S3Request,
        request: web.Request,
        raw_path: str,
        pairs: list[tuple[str, str]],
        query: dict[str, str],
    ) -> web.StreamResponse:
        view = RequestView(request.method, raw_path, pairs, request.headers)
        req.auth = verify_request(
            view, services.users.secret, now=time.time(), region=services.region
        )
        req.identity = services.users.identity(req.auth.access_key)
        handler = pick_handler(request.method, req.bucket, req.key, query, request.headers)
        op = request["s3_op"] = OP_NAMES.get(handler, handler.__name__)
        if limits is not None:  # SlowDown before the body is read or anything stored
            request["s3_slot"] = await limits.check(
                req.auth.access_key if req.auth else None, request.remote, op
            )
        await authorize(req, op)  # nothing is read or stored for a refused request
        # before any handler: what we would not honor exactly is refused here
        owner = req.owner.canonical_id if req.owner else services.owner_id
        semantics.screen(op, request.headers, query, owner_id=owner)
        return await handler(req)

    return handle


async def _cors_headers(
    services: S3Services, bucket: str, method: str, origin: str
) -> dict[str, str]:
    """What a request with an Origin gets on its answer, success or error (added as the
    response's head is written, node/s3/server.py). A failure to read the bucket's rules
    costs the headers, never the request: the browser then withholds the answer."""
    headers = {"Vary": cors.VARY}
    if method == "OPTIONS":
        return headers
    try:
        headers.update(await bucketcors.response_headers(services, bucket, method, origin))
    except Exception as exc:  # noqa: BLE001 - e.g. ReadQuorumLost: the request still runs
        log.warning("CORS rules of bucket %r unreadable: %s", bucket, exc)
    return headers
