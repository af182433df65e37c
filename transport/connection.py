"""One QUIC connection: aioquic events in, streams and authentication out.

`RpcConnection` is the asyncio protocol aioquic drives (datagrams, timers). It turns
aioquic events into calls on `StreamIO` objects, runs the post-handshake client
authentication (`transport.auth`), wakes blocked senders when ACKs arrive, and sends
keepalive pings so a dead peer is noticed within `idle_timeout`.

Server rule, the security core: until the client has proven its node id on the auth
stream, any other stream closes the connection (UNAUTHENTICATED), and a connection still
unauthenticated `auth_timeout` after it was created is closed (AUTH_TIMEOUT). Nothing is
dispatched to a handler before that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.connection import stream_is_client_initiated, stream_is_unidirectional

from shardfleet.transport.auth import ClientAuth, ServerAuth
from shardfleet.transport.config import TransportConfig
from shardfleet.transport.errors import AuthFailed, PeerGone, TransportError
from shardfleet.transport.quic import FlowControlledConnection
from shardfleet.transport.rpc_state import RequestHead, ResponseHead
from shardfleet.transport.streams import StreamIO
from shardfleet.transport.tls import NodeIdentity

log = logging.getLogger(__name__)

# Application close codes (CONNECTION_CLOSE of type 0x1d).
CLOSE_NORMAL = 0x0
CLOSE_AUTH_FAILED = 0x10
CLOSE_UNAUTHENTICATED = 0x11
CLOSE_AUTH_TIMEOUT = 0x12
CLOSE_PROTOCOL_ERROR = 0x13
_AUTH_CODES = (CLOSE_AUTH_FAILED, CLOSE_UNAUTHENTICATED, CLOSE_AUTH_TIMEOUT)
_CRYPTO_ERRORS = range(0x100, 0x200)  # QUIC CRYPTO_ERROR + TLS alert: handshake rejected
_CLIENT_AUTH_STREAM = 1  # the first server-initiated bidirectional stream


class ConnectionOwner(Protocol):
    config: TransportConfig
    identity: NodeIdentity
    boot: bytes  # this end's boot id, sent on the auth stream (`transport.auth`)

    def dispatch(self, conn: RpcConnection, stream: StreamIO, head: RequestHead) -> None: ...

    def connection_authenticated(self, conn: RpcConnection) -> None: ...

    def connection_lost(self, conn: RpcConnection) -> None: ...


class RpcConnection(QuicConnectionProtocol):
    """Our side of one QUIC connection, as client (outbound) or server (inbound)."""

    quic: FlowControlledConnection

    def __init__(
        self,
        quic: FlowControlledConnection,
        *,
        owner: ConnectionOwner,
        server_id: str | None = None,
    ) -> None:
        super().__init__(quic)
        self.quic = quic
        self.owner = owner
        self.config = owner.config
        self.is_client = server_id is not None
        # client: the server's node id (verified by TLS); server: set by authentication
        self.peer_id: str | None = server_id
        self.peer_boot: bytes | None = None  # the peer process's boot id, once authenticated
        self.authenticated = False
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.ready.add_done_callback(_retrieve)
        self.streams: dict[int, StreamIO] = {}
        self.blocked: set[StreamIO] = set()
        self.handler_tasks: set[asyncio.Task[Any]] = set()
        self.last_seen: float | None = None
        self.lost_error: TransportError | None = None
        self._done_ids: set[int] = set()
        self._server_auth: ServerAuth | None = None
        self._client_auth: ClientAuth | None = None
        self._auth_stream: int | None = None
        self._auth_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self.log = logging.LoggerAdapter(log, {"peer": server_id or "?"})

    # -- lifecycle -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.is_client:
            self._auth_timer = self._loop.call_later(
                self.config.auth_timeout, self._check_auth_deadline
            )

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (port unreachable) while connecting: the peer is down, fail now."""
        if self.is_client and not self.ready.done():
            self.log.debug("connect error: %s", exc)
            self.close_with(CLOSE_NORMAL, f"unreachable: {exc}")

    def _check_auth_deadline(self) -> None:
        if not self.authenticated and self.lost_error is None:
            self.close_with(CLOSE_AUTH_TIMEOUT, "authentication timed out")

    def _keepalive(self) -> None:
        if self.lost_error is not None:
            return
        interval = self.config.idle_timeout / 3
        if self.last_seen is None or self._loop.time() - self.last_seen >= interval * 0.9:
            self.quic.send_ping(0)
            self.transmit()
        self._keepalive_timer = self._loop.call_later(interval, self._keepalive)

    def close_with(self, code: int, reason: str) -> None:
        """Close the connection with an application error code, failing every stream."""
        self.close(error_code=code, reason_phrase=reason)

    def close(self, error_code: int = CLOSE_NORMAL, reason_phrase: str = "") -> None:
        if self.lost_error is None and not self.quic.closing:
            super().close(error_code=error_code, reason_phrase=reason_phrase)
        self._check_closing()

    def transmit(self) -> None:
        if self._transport is None or self._transport.is_closing():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        super().transmit()

    def transmit_soon(self) -> None:
        self._transmit_soon()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """aioquic's, except that what we send in reply (ACKs, window updates, the data
        that ACKs let out) goes out once after every datagram that arrived in this turn of
        the loop, not after each one: building nothing to send was ~20% of a receiver's
        CPU, and the loop reads up to 32 queued datagrams per turn."""
        now = self.last_seen = self._loop.time()
        self._quic.receive_datagram(data, addr, now=now)  # type: ignore[arg-type]
        self._process_events()
        self._transmit_soon()
        self._check_closing()
        for stream in list(self.blocked):
            stream.poll_credit()

    def _handle_timer(self) -> None:
        super()._handle_timer()
        self._check_closing()

    def _check_closing(self) -> None:
        """React at once to a close sent or received, not after aioquic's draining."""
        if self.lost_error is None and self.quic.closing:
            code, reason = self.quic.close_reason
            self._lost(code, reason)

    def _lost(self, code: int, reason: str) -> None:
        if self.lost_error is not None:
            return
        if code in _AUTH_CODES or code in _CRYPTO_ERRORS:
            exc: TransportError = AuthFailed(f"connection rejected: {reason or hex(code)}")
        else:
            exc = PeerGone(f"connection closed (code 0x{code:x}{': ' + reason if reason else ''})")
        self.lost_error = exc
        self.log.debug("connection lost: %s", exc)
        for timer in (self._auth_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        if not self.ready.done():
            self.ready.set_exception(exc)
        for stream in list(self.streams.values()):
            stream.on_connection_lost(exc)
        for task in list(self.handler_tasks):
            task.cancel()
        self.owner.connection_lost(self)

    # -- streams -------------------------------------------------------------------------
    def open_stream(self) -> StreamIO:
        sid = self.quic.get_next_available_stream_id()
        stream = self.streams[sid] = StreamIO(self, sid, response=True)
        return stream

    def forget(self, stream: StreamIO) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            self._done_ids.add(stream.stream_id)
            if len(self._done_ids) > 1024:
                self._done_ids.intersection_update(self.quic._streams)
        self.blocked.discard(stream)

    # -- aioquic events ------------------------------------------------------------------
    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self._on_stream_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_reset(event.error_code)
        elif isinstance(event, events.StopSendingReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_stop_sending(event.error_code)
        elif isinstance(event, events.HandshakeCompleted):
            self._on_handshake()
        elif isinstance(event, events.ConnectionTerminated):
            self._lost(event.error_code, event.reason_phrase)

    def _on_handshake(self) -> None:
        identity = self.owner.identity
        if self.is_client:
            assert self.peer_id is not None
            self._client_auth = ClientAuth(
                identity=identity,
                server_id=self.peer_id,
                binding=self.quic.binding,
                boot=self.owner.boot,
            )
            self._auth_stream = _CLIENT_AUTH_STREAM
        else:
            self._server_auth = ServerAuth(
                server_id=identity.node_id,
                ca_cert=identity.ca_cert,
                binding=self.quic.binding,
                boot=self.owner.boot,
            )
            self._auth_stream = self.quic.get_next_available_stream_id()
            self.quic.send_stream_data(self._auth_stream, self._server_auth.challenge_bytes())
        self._keepalive_timer = self._loop.call_later(self.config.idle_timeout / 3, self._keepalive)

    def _on_stream_data(self, sid: int, data: bytes, fin: bool) -> None:
        if sid == self._auth_stream:
            self._on_auth_data(sid, data, fin)
            return
        stream = self.streams.get(sid)
        if stream is not None:
            stream.on_data(data, fin)
            return
        if self.is_client:
            if not self.authenticated or not stream_is_client_initiated(sid):
                self.close_with(CLOSE_PROTOCOL_ERROR, f"unexpected server stream {sid}")
            return  # late data for a call we already gave up on
        if not self.authenticated:
            self.log.warning("stream %d before authentication: closing", sid)
            self.close_with(CLOSE_UNAUTHENTICATED, "unauthenticated: authenticate first")
            return
        if sid in self._done_ids:
            return
        if not stream_is_client_initiated(sid) or stream_is_unidirectional(sid):
            self.close_with(CLOSE_PROTOCOL_ERROR, f"unexpected stream {sid}")
            return
        stream = self.streams[sid] = StreamIO(self, sid, response=False)
        stream.on_head = lambda head: self._on_request_head(stream, head)
        stream.on_data(data, fin)

    def _on_request_head(self, stream: StreamIO, head: RequestHead | ResponseHead) -> None:
        assert isinstance(head, RequestHead)
        self.owner.dispatch(self, stream, head)

    def _on_auth_data(self, sid: int, data: bytes, fin: bool) -> None:
        self.quic.deliver(sid, len(data))
        self.quic.consume(sid, len(data))  # bounded by the auth reader's own size cap
        try:
            if self._server_auth is not None:
                reply = self._server_auth.feed(data)
                if reply is not None:
                    self.peer_id = self._server_auth.peer_id
                    self.peer_boot = self._server_auth.peer_boot
                    self.authenticated = True
                    self.log = logging.LoggerAdapter(log, {"peer": self.peer_id})
                    self.quic.send_stream_data(sid, reply, end_stream=True)
                    self.ready.set_result(None)
                    self.log.debug("client authenticated as %s", self.peer_id)
                    self.owner.connection_authenticated(self)
            elif self._client_auth is not None:
                proof = self._client_auth.feed(data)
                if proof is not None:
                    self.quic.send_stream_data(sid, proof, end_stream=True)
                if self._client_auth.done and not self.authenticated:
                    self.authenticated = True
                    self.peer_boot = self._client_auth.peer_boot
                    self.ready.set_result(None)
                    self.owner.connection_authenticated(self)
        except AuthFailed as exc:
            self.log.warning("authentication failed: %s", exc)
            self.close_with(CLOSE_AUTH_FAILED, str(exc)[:200])
            return
        if fin and not self.authenticated:
            self.close_with(CLOSE_AUTH_FAILED, "auth stream closed before authentication")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: nobody may be awaiting `ready` when it fails."""
    if not future.cancelled():
        future.exception()


ConnectionFactory = Callable[..., RpcConnection]
