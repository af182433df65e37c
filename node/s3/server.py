"""The HTTP server under the S3 API: aiohttp's low-level server, with S3-shaped errors.

aiohttp answers requests its HTTP parser rejects (a header line over 8 KiB, a malformed
Content-Length) with its own text/plain page. S3 clients expect an XML <Error> with a
request id, so the request handler class is swapped for one that renders those too.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from node.s3 import xml
from node.s3.router import new_request_id


class _S3RequestHandler(RequestHandler):
    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        request_id = new_request_id()
        body = xml.error(
            "InvalidRequest" if status == 400 else "BadRequest",
            f"The HTTP request could not be parsed: {exc or message or status}"[:500],
            "/",
            request_id,
            {},
        )
        response = web.Response(
            status=status,
            body=body,
            content_type="application/xml",
            headers={"x-amz-request-id": request_id},
        )
        response.force_close()
        return response


class S3Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _S3RequestHandler(self, loop=self._loop, **self._kwargs)
