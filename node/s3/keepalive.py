"""Long S3 calls kept alive the way AWS keeps them: CopyObject, UploadPartCopy and
CompleteMultipartUpload.

Once the call has run FIRST_WAIT seconds the 200 status and the XML declaration go out,
then a space every KEEPALIVE seconds until the result is known; the body then ends with the
result document, or with an <Error> document (a 200 carrying an error, which the SDKs check
for on exactly these calls). A client that leaves does not stop the work: stopping it
mid-commit would leave a version below quorum on some drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from shardfleet.node.s3 import xml
from shardfleet.node.s3.buckets import xml_response
from shardfleet.node.s3.context import S3Request
from shardfleet.node.s3.errors import from_internal

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_WAIT = 2.0  # a call done within this answers plainly
KEEPALIVE = 5.0  # then a space every so often until it is done


async def respond_slowly(
    req: S3Request,
    task: asyncio.Future[T],
    render: Callable[[T], bytes],
    headers: Callable[[T], dict[str, str]] | None = None,
) -> web.StreamResponse:
    """The response of `task`'s result, rendered; spaces while it runs long."""
    try:
        done, _ = await asyncio.wait({task}, timeout=FIRST_WAIT)
        if done:
            response = xml_response(render(task.result()))
            if headers is not None:
                response.headers.update(headers(task.result()))
            return response
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "application/xml",
                "x-amz-request-id": req.request_id,
                "x-amz-id-2": req.request_id,
            },
        )
        await response.prepare(req.http)
        await response.write(xml.HEAD.encode())
        while not task.done():
            await asyncio.wait({task}, timeout=KEEPALIVE)
            if not task.done():
                await response.write(b" ")
        try:
            body = render(task.result()).removeprefix(xml.HEAD.encode())
        except Exception as exc:  # the status is gone: the error goes in the body, as AWS
            err = from_internal(exc)
            req.http["s3_cut"] = (err.status, 0)
            log.warning("request %s: %s failed: %s", req.request_id, req.resource, exc)
            body = xml.error(err.code, err.message, req.resource, req.request_id, err.extra)
            body = body.removeprefix(xml.HEAD.encode())
        await response.write(body)
        await response.write_eof()
        return response
    finally:
        if not task.done():
            # the client left while we wrote keep-alive spaces: the work still runs to its
            # end (stopping it mid-commit would leave a version below quorum on some drives)
            with contextlib.suppress(BaseException):
                await task
