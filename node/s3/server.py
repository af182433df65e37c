"""The HTTP server under the S3 API: aiohttp's low-level server, with S3-shaped errors and
limits on connections that have not sent a request yet.

aiohttp answers requests its HTTP parser rejects (a header line over 8 KiB, a malformed
Content-Length) with its own text/plain page. S3 clients expect an XML <Error> with a
request id, so the request handler class is swapped for one that renders those too.

aiohttp puts no time limit on a request head: a connection that sends nothing, or half a
request line, is held until the keep-alive timeout (an hour by default), and a few thousand
of them use up the node's file descriptors (slowloris). The handler here adds two bounds on
connections that are waiting for a request head:

- a header timeout: a head must be complete `header_timeout` seconds after the connection
  opens, or after its first byte on a kept-alive connection. Idle time between requests is
  bounded separately, by aiohttp's keepalive_timeout.
- a cap on how many connections may wait for a head at once (new, half-sent, and idle
  kept-alive ones); past it the one that has waited longest is closed.

Both cost nothing per request beyond a few attribute and dict operations: one
loop.call_later timer per connection (armed at connection_made, cancelled when the first
head is parsed), and on a kept-alive connection a timer only when a head arrives in more
than one read.

Every response this server sends (S3 answers and errors, streamed GETs, the admin API,
/health, /metrics, the parse errors above) gets the browser security headers MinIO sends
(cmd/generic-handlers.go, addCustomHeadersMiddleware), added as its head is written
(aiohttp's per-request prepare hook), so no handler can forget them:

- `X-Content-Type-Options: nosniff`: a browser renders an object as its declared
  Content-Type, never as what it guesses from the bytes (an "image" that is HTML);
- `X-XSS-Protection: 1; mode=block`, MinIO's value (current browsers ignore the header);
- `Strict-Transport-Security: max-age=31536000; includeSubDomains` on HTTPS only: when the
  connection is TLS, or the server is told it serves HTTPS (`tls_enabled`: the node's
  `tls_cert`/`tls_key`). MinIO sends it over plain HTTP too, where browsers ignore it;
- `Vary: Origin` (MinIO's, from its CORS handler): a cache must not hand an answer made
  for one Origin to another. Merged into a Vary a handler set, never replacing it.

Not sent: `Content-Security-Policy: block-all-mixed-content`, which MinIO dropped in 2023
(a deprecated directive, minio/minio#17580).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from shardfleet.node.s3 import xml
from shardfleet.node.s3.router import new_request_id

log = logging.getLogger(__name__)

#: on every response (see the module docstring)
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-XSS-Protection", "1; mode=block"),
)
#: on responses over HTTPS
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def add_security_headers(headers: Any, *, https: bool) -> None:
    """Sets the security headers on a response's (not yet sent) headers."""
    for name, value in SECURITY_HEADERS:
        headers[name] = value
    if https:
        headers[HSTS[0]] = HSTS[1]
    vary = headers.get("Vary")
    if vary is None:
        headers["Vary"] = "Origin"
    else:  # a handler's own (CORS: Origin, Access-Control-Request-Method, ...) stays
        tokens = {t.strip().lower() for v in headers.getall("Vary") for t in v.split(",")}
        if "origin" not in tokens and "*" not in tokens:
            headers["Vary"] = ", ".join((*headers.getall("Vary"), "Origin"))


class _S3HttpRequest(BaseRequest):
    """A request whose every response gets the security headers as its head is written,
    whoever made the response (a handler's streamed one, an error, a parse failure)."""

    ATTRS = BaseRequest.ATTRS | frozenset(["_tls_enabled"])
    _tls_enabled = False

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        cors = self.get("s3_cors")  # a browser's request (node/s3/router.py)
        if cors:
            response.headers.update(cors)
        add_security_headers(response.headers, https=self._tls_enabled or self.secure)


class _S3RequestHandler(RequestHandler):
    """One connection. The head timer runs while the connection waits for a request head
    (`_awaiting_head`): armed when it opens, or when part of a head arrives after a
    response; cancelled once the parser has produced a complete head (the body that follows
    has its own stall timeout, body_stall_timeout, so a slowly streamed body never meets
    this one). One case the timer does not see: part of a pipelined head that arrived while
    the previous request was being served; that connection still counts against the cap
    and is closed at the keep-alive timeout."""

    __slots__ = ("_server", "_head_timer", "_awaiting_head")

    def __init__(self, manager: S3Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = False

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

    # -- waiting for a request head ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_timer = self._loop.call_later(self._server.header_timeout, self._head_late)
        self._awaiting_head = True
        self._server._waiting(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._awaiting_head:
            # a request body, or a pipelined head behind the request being served
            super().data_received(data)
            return
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # a complete head (or a parse error: also an end)
            self._head_arrived()
        elif self._head_timer is None and self.transport is not None:
            # part of the next head on a kept-alive connection: the rest is due in time
            self._head_timer = self._loop.call_later(self._server.header_timeout, self._head_late)

    def log_access(self, request: Any, response: web.StreamResponse, time: float | None) -> None:
        """Called once per request, as its response finishes: from here a kept-alive
        connection waits for its next head (unless that is already queued, pipelined)."""
        super().log_access(request, response, time)
        if (
            not self._messages
            and response.keep_alive
            and not self._close
            and not self._force_close
            and self.transport is not None
        ):
            self._awaiting_head = True
            self._server._waiting(self)

    def _head_arrived(self) -> None:
        self._awaiting_head = False
        timer = self._head_timer
        if timer is not None:
            timer.cancel()
            self._head_timer = None
        self._server._pending.pop(self, None)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close:
            return
        if self._waiter is None:
            # Not waiting for a head yet: aiohttp is still reading away the unread rest of
            # the last request's body (its lingering close, itself bounded): start again.
            self._head_timer = self._loop.call_later(self._server.header_timeout, self._head_late)
            return
        self._server.head_timeouts += 1
        log.debug("closing a connection from %s: no request head in time", self.peername)
        self._head_arrived()
        self.force_close()


class S3Server(web.Server):
    """aiohttp's low-level server with the S3 request handler and its connection bounds.

    header_timeout: seconds for a complete request head (see _S3RequestHandler).

    max_idle_connections: how many connections may wait for a request head at once. Over
    the cap, the connection that has waited longest is closed, not the new one. Refusing
    new connections would hand the node to whoever fills the cap first: an attacker who
    keeps it full (reopening what the header timeout closes) would lock every real client
    out, while the attacker's own connections stay. Closing the oldest instead means an
    attacker has to open more than the cap's worth of connections in the moment between a
    real client's connect and its request head (well under a millisecond on a LAN) to get
    in its way, and the connections lost are mostly the attacker's own (the oldest by
    construction) or kept-alive idle ones, which clients reopen at the cost of one
    handshake. nginx does the same when it runs out of connections: it reclaims idle
    kept-alive ones, oldest first.

    tls_enabled: the node serves HTTPS, so every response carries Strict-Transport-Security
    (a connection that is TLS gets it anyway).
    """

    def __init__(
        self,
        handler: Any,
        *,
        header_timeout: float = 10.0,
        max_idle_connections: int = 1024,
        tls_enabled: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.header_timeout = header_timeout
        self.tls_enabled = tls_enabled
        self.max_idle_connections = max_idle_connections
        # connections waiting for a head, longest-waiting first
        self._pending: OrderedDict[_S3RequestHandler, None] = OrderedDict()
        self.head_timeouts = 0
        """Connections closed because their request head did not arrive in time."""
        self.evicted = 0
        """Connections closed because too many were waiting for a request head."""

    def __call__(self) -> RequestHandler:
        return _S3RequestHandler(self, loop=self._loop, **self._kwargs)

    def _make_request(
        self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> BaseRequest:
        request = _S3HttpRequest(message, payload, protocol, writer, task, self._loop)
        if self.tls_enabled:
            request._tls_enabled = True
        return request

    @property
    def idle_connections(self) -> int:
        """Connections waiting for a request head now."""
        return len(self._pending)

    def _waiting(self, conn: _S3RequestHandler) -> None:
        pending = self._pending
        pending[conn] = None
        while len(pending) > self.max_idle_connections:
            oldest, _ = pending.popitem(last=False)
            self.evicted += 1
            oldest._head_arrived()
            oldest.force_close()
