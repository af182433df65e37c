"""RpcEndpoint: one node's QUIC RPC server and client, with mutual TLS under the cluster CA.

This is the only module that awaits the network. Shape of the traffic:

- Two outbound connections per peer, one for client calls and one for background calls
  (heal, scan: `background=True`), each shared by every concurrent call of its class, so
  background bodies never hold a client call's flow-control window; each call is one
  bidirectional QUIC stream (request ``HEADER BODY* END``, reply the same, see
  `transport.framing`). Callers racing to connect share one attempt. A failed attempt
  starts an exponential backoff during which calls fail fast with ConnectFailed.
- The client verifies the server's certificate against the cluster CA with
  ``server_name = peer.node_id``; the server verifies the client by the post-handshake
  proof in `transport.auth` before it serves a single stream (aioquic cannot do client
  certificates, see there). Handlers get `request.peer_id`, the proven node id.
- Deadlines: `timeout` bounds a call up to its reply header (connect included); body
  streaming either way is bounded by `config.stall_timeout` per wait without progress;
  connects by `config.connect_timeout`; dead connections by `config.idle_timeout`
  (keepalive pings). A call that times out on a connection that has been silent since
  the call began closes that connection, so the next call reconnects (a crashed and
  restarted peer does not know our connection and never answers it).
- Restarts: each endpoint has a random boot id, exchanged on every connection's auth
  stream (`transport.auth`). A connection authenticated with a new boot id for a peer
  means the peer restarted: every other connection to or from that peer's old process is
  closed at once (they are dead: the new process knows none of them, and a call on one
  would wait for its timeout), the reconnect backoff for the peer is cleared, and the
  `on_peer_up` callbacks run (membership pings the peer at once). An inbound connection
  from a peer we are backing off from clears the backoff and runs them too: it is up.
- Cancelling a call (asyncio cancel, timeout, `StreamCall.cancel`, an unread `Reply`
  dropped) resets its stream both ways; the server cancels the handler's task.

- Background calls' bodies are paced by the end that sends them, to
  `config.background_rate` bytes/s per endpoint (`transport.pacing`).

Memory: see `transport.config` (per connection `max_data` inbound, per sending stream
`send_window` + one chunk outbound).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from aioquic.asyncio.server import QuicServer
from aioquic.quic.connection import QuicConnection

from shardfleet.transport.calls import (
    Peer,
    PeerState,
    Reply,
    Request,
    Response,
    StreamCall,
    raise_for_head,
)
from shardfleet.transport.config import TransportConfig
from shardfleet.transport.connection import CLOSE_NORMAL, RpcConnection
from shardfleet.transport.errors import (
    AuthFailed,
    ConnectFailed,
    PeerGone,
    RemoteError,
    RpcFault,
    RpcTimeout,
    TransportError,
)
from shardfleet.transport.framing import encode_header
from shardfleet.transport.pacing import Pacer
from shardfleet.transport.quic import (
    FlowControlledConnection,
    client_configuration,
    server_configuration,
)
from shardfleet.transport.rpc_state import FLAG_BACKGROUND, Backoff, RequestHead, ResponseHead
from shardfleet.transport.server import Handler, serve_call
from shardfleet.transport.streams import STREAM_CANCELLED, StreamIO, is_small
from shardfleet.transport.tls import TlsFiles, load_identity

__all__ = [
    "Handler",
    "Peer",
    "PeerState",
    "RemoteError",
    "Reply",
    "Request",
    "Response",
    "RpcEndpoint",
    "RpcFault",
    "StreamCall",
]

log = logging.getLogger(__name__)
DEFAULT_CONFIG = TransportConfig()  # frozen, so one shared default is safe


# Linux values; Python's socket module does not name them.
_IP_MTU_DISCOVER, _IPV6_MTU_DISCOVER, _PMTUDISC_DO = 10, 23, 2


def _tune_socket(transport: asyncio.BaseTransport, size: int) -> None:
    """Large socket buffers, and never fragment (RFC 9000 section 14: set DF).

    Bursts of 64 KB datagrams overflow default buffers and look like congestion. With DF
    set, a `max_datagram_size` larger than the path MTU fails loudly (EMSGSIZE: the
    connect fails with "Message too long") instead of being split into IP fragments,
    which work until one fragment is lost and then lose the whole datagram.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError:
            pass  # capped or refused by the kernel; the default still works, slower
    if sys.platform == "linux":
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _PMTUDISC_DO)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _PMTUDISC_DO)
        except OSError:
            pass


class _QuicServer(QuicServer):
    """aioquic's server socket protocol, reporting send errors instead of dropping them
    (at most one log line per 10 s: an oversized datagram setting fails every send)."""

    _last_report = -1e9

    def error_received(self, exc: Exception) -> None:
        now = self._loop.time()
        if now - self._last_report >= 10.0:
            self._last_report = now
            log.warning("rpc server socket error (check max_datagram_size vs MTU): %s", exc)


def _local_bind(family: int, remote_ip: str) -> tuple[str, int] | None:
    """Bind outbound sockets to loopback for loopback peers; else let the kernel route."""
    try:
        if ipaddress.ip_address(remote_ip).is_loopback:
            return (remote_ip, 0)
    except ValueError:
        pass
    return None


class RpcEndpoint:
    def __init__(
        self,
        *,
        node_id: str,
        tls: TlsFiles,
        host: str,
        port: int,
        config: TransportConfig = DEFAULT_CONFIG,
    ) -> None:
        self.identity = load_identity(tls)
        if self.identity.node_id != node_id:
            raise ValueError(
                f"{tls.cert} is issued to {self.identity.node_id!r}, not to node {node_id!r}"
            )
        self.node_id = node_id
        self.host = host
        self.port = port
        self.config = config
        self._handlers: dict[str, Handler] = {}
        self._server: QuicServer | None = None
        self._server_transport: asyncio.DatagramTransport | None = None
        self._server_conf = server_configuration(self.identity, config)
        # per peer one connection for client calls and one for background calls (key: the
        # peer and whether it is the background one)
        self._outbound: dict[tuple[Peer, bool], RpcConnection] = {}
        self._connecting: dict[tuple[Peer, bool], asyncio.Task[RpcConnection]] = {}
        self.background_pacer = Pacer(config.background_rate, config.background_burst)
        self._backoff: dict[Peer, Backoff] = {}
        self._inbound: set[RpcConnection] = set()
        self._call_ids = itertools.count(1)
        self._closed = False
        self.boot = os.urandom(8)  # this endpoint's boot id (one per node process)
        self._boots: dict[str, bytes] = {}  # peer node id -> its newest boot id seen
        #: called with a peer's node id when it restarted or came back (see the docstring)
        self.on_peer_up: list[Callable[[str], None]] = []

    # -- server --------------------------------------------------------------------------
    def register(self, method: str, handler: Handler) -> None:
        """Serve `method` with `handler`; one handler per method."""
        if method in self._handlers:
            raise ValueError(f"method {method!r} already registered")
        self._handlers[method] = handler

    async def start(self) -> tuple[str, int]:
        """Listen on (host, port); returns the bound address (port 0 picks a free one)."""
        if self._server is not None:
            raise RuntimeError("endpoint already started")
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _QuicServer(
                configuration=self._server_conf, create_protocol=self._inbound_protocol
            ),
            local_addr=(self.host, self.port),
        )
        _tune_socket(transport, self.config.socket_buffer)
        self._server_transport = transport
        self._server = protocol
        host, port = transport.get_extra_info("sockname")[:2]
        self.port = port
        log.info("rpc endpoint %s listening on %s:%d", self.node_id, host, port)
        return host, port

    def _inbound_protocol(self, quic: QuicConnection, **_: Any) -> RpcConnection:
        upgraded = FlowControlledConnection.upgrade(
            quic,
            stream_window=self.config.max_stream_data,
            connection_window=self.config.max_data,
            ack_delay=self.config.ack_delay,
            ack_every=self.config.ack_every,
        )
        conn = RpcConnection(upgraded, owner=self)
        self._inbound.add(conn)
        return conn

    def dispatch(self, conn: RpcConnection, stream: StreamIO, head: RequestHead) -> None:
        """Called by a connection for each authenticated request head: run its handler."""
        assert conn.peer_id is not None
        task = asyncio.get_running_loop().create_task(
            serve_call(
                peer_id=conn.peer_id,
                stream=stream,
                head=head,
                handler=self._handlers.get(head.method),
                stall=self.config.stall_timeout,
                max_header_size=self.config.max_header_size,
            ),
            name=f"rpc:{head.method}:{conn.peer_id}",
        )
        conn.handler_tasks.add(task)
        task.add_done_callback(conn.handler_tasks.discard)
        stream.on_abort = task.cancel
        if head.flags & FLAG_BACKGROUND and self.background_pacer.enabled:
            stream.pacer = self.background_pacer  # the reply body we send is paced

    def connection_authenticated(self, conn: RpcConnection) -> None:
        """Called by a connection once both ends are proven: notices peer restarts."""
        node, boot = conn.peer_id, conn.peer_boot
        if node is None or boot is None:
            return  # a peer of a release without boot ids: never taken for restarted
        known = self._boots.get(node)
        self._boots[node] = boot
        restarted = known is not None and known != boot
        backoffs = [b for p, b in self._backoff.items() if p.node_id == node]
        if not restarted and (conn.is_client or not any(b.failures for b in backoffs)):
            return
        if restarted:
            stale = [
                c
                for c in [*self._outbound.values(), *self._inbound]
                if c is not conn and c.peer_id == node and c.peer_boot != boot
            ]
            log.info(
                "%s restarted: closing %d connection(s) to its previous process", node, len(stale)
            )
            for c in stale:
                c.close_with(CLOSE_NORMAL, "peer restarted")
        else:
            log.info("%s connected to us: retrying it without backoff", node)
        for backoff in backoffs:
            backoff.succeeded()
        for hook in list(self.on_peer_up):
            try:
                hook(node)
            except Exception:
                log.exception("on_peer_up callback failed for %s", node)

    def connection_lost(self, conn: RpcConnection) -> None:
        self._inbound.discard(conn)
        for lane, current in list(self._outbound.items()):
            if current is conn:
                del self._outbound[lane]
        if conn.is_client and conn._transport is not None:
            conn._transport.close()  # one UDP socket per outbound connection

    # -- client --------------------------------------------------------------------------
    async def call(
        self,
        peer: Peer,
        method: str,
        header: dict[str, Any],
        body: bytes | bytearray | memoryview | None = None,
        *,
        timeout: float | None = None,
        background: bool = False,
    ) -> Reply:
        """Call `method` on `peer`; returns once the reply header arrived.

        `timeout` (default `config.call_timeout`) covers connecting, sending the body and
        waiting for the reply header. Raises RemoteError for an error reply, RpcTimeout,
        ConnectFailed/AuthFailed, PeerGone. A `background` call (heal, scan) goes on the
        peer's background connection and both ends pace the bodies they send to
        `config.background_rate` (`transport.pacing`); give it a timeout that allows for it.
        """
        timeout = self.config.call_timeout if timeout is None else timeout
        frame = self._request_frame(method, header, background)
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn: RpcConnection | None = None
        stream: StreamIO | None = None
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connection(peer, background)
                stream = conn.open_stream()
                if background and self.background_pacer.enabled:
                    stream.pacer = self.background_pacer
                if is_small(body) and (stream.pacer is None or not body):
                    stream.write_message(frame, body)
                else:
                    stream.write_frame(frame)
                    try:
                        await stream.write_body(body, self.config.stall_timeout)
                    except PeerGone:
                        if not stream.peer_done_reading:
                            raise  # else: it answered early; its reply says why
                    if not stream.outbound_done:
                        stream.write_end()
                head = await stream.read_head()
        except TimeoutError as exc:
            if stream is not None:
                stream.abort(STREAM_CANCELLED)
            if conn is not None and (conn.last_seen is None or conn.last_seen < started):
                log.warning("%s silent for %.1fs: dropping the connection", peer.node_id, timeout)
                conn.close_with(CLOSE_NORMAL, "peer unresponsive")
            if isinstance(exc, RpcTimeout):
                raise
            raise RpcTimeout(
                f"{method} to {peer.node_id}: no reply within {timeout:.1f}s"
            ) from None
        except BaseException:
            if stream is not None:
                stream.abort(STREAM_CANCELLED)
            raise
        assert isinstance(head, ResponseHead)
        if head.status != "ok" and not stream.inbound_done:
            stream.abort(STREAM_CANCELLED)
        raise_for_head(head)
        return Reply(stream, head.header, self.config.stall_timeout)

    async def open_stream(
        self,
        peer: Peer,
        method: str,
        header: dict[str, Any],
        *,
        timeout: float | None = None,
        background: bool = False,
    ) -> StreamCall:
        """Start a call whose request body is streamed with `StreamCall.send()`.

        `timeout` bounds connecting now and, later, `finish()`'s wait for the reply header;
        each `send()` waits at most `config.stall_timeout` for credit (and, `background`,
        for the pacer, as in `call`).
        """
        timeout = self.config.call_timeout if timeout is None else timeout
        frame = self._request_frame(method, header, background)
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connection(peer, background)
        except TimeoutError as exc:
            if isinstance(exc, RpcTimeout):
                raise
            raise RpcTimeout(f"connecting to {peer.node_id} took over {timeout:.1f}s") from None
        stream = conn.open_stream()
        if background and self.background_pacer.enabled:
            stream.pacer = self.background_pacer
        stream.write_frame(frame)
        return StreamCall(stream, timeout=timeout, stall=self.config.stall_timeout)

    def _request_frame(self, method: str, header: dict[str, Any], background: bool) -> bytes:
        head = RequestHead(method, next(self._call_ids), header, FLAG_BACKGROUND * background)
        return encode_header(head.to_fields(), max_size=self.config.max_header_size)

    async def _connection(self, peer: Peer, background: bool = False) -> RpcConnection:
        if self._closed:
            raise TransportError("endpoint is closed")
        lane = (peer, background)
        conn = self._outbound.get(lane)
        if conn is not None and conn.lost_error is None and not conn.quic.closing:
            return conn
        loop = asyncio.get_running_loop()
        backoff = self._backoff.setdefault(
            peer,
            Backoff(base=self.config.reconnect_backoff_base, cap=self.config.reconnect_backoff_max),
        )
        task = self._connecting.get(lane)
        if task is None:
            left = backoff.wait_left(now=loop.time())
            if left > 0:
                raise ConnectFailed(
                    f"{peer.node_id} unreachable ({backoff.last_error}); "
                    f"next attempt in {left:.1f}s"
                )
            task = loop.create_task(self._connect(lane, backoff), name=f"connect:{peer.node_id}")
            self._connecting[lane] = task
            task.add_done_callback(lambda t: self._connect_done(lane, t))
        return await asyncio.shield(task)

    def _connect_done(self, lane: tuple[Peer, bool], task: asyncio.Task[RpcConnection]) -> None:
        if self._connecting.get(lane) is task:
            del self._connecting[lane]
        if not task.cancelled():
            task.exception()  # retrieved here: callers may all have timed out

    async def _connect(self, lane: tuple[Peer, bool], backoff: Backoff) -> RpcConnection:
        peer = lane[0]
        loop = asyncio.get_running_loop()
        conn: RpcConnection | None = None
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                infos = await loop.getaddrinfo(peer.host, peer.port, type=socket.SOCK_DGRAM)
                family, addr = infos[0][0], infos[0][4]
                quic = FlowControlledConnection(
                    configuration=client_configuration(self.identity, self.config, peer.node_id)
                )
                quic.init_flow_control(
                    stream_window=self.config.max_stream_data,
                    connection_window=self.config.max_data,
                    ack_delay=self.config.ack_delay,
                    ack_every=self.config.ack_every,
                )
                # A connected socket: the kernel reports ICMP port-unreachable to it, so a
                # peer that is down fails the connect at once instead of at the timeout.
                transport, conn = await loop.create_datagram_endpoint(
                    lambda: RpcConnection(quic, owner=self, server_id=peer.node_id),
                    local_addr=_local_bind(family, addr[0]),
                    remote_addr=addr,
                    family=family,
                )
                _tune_socket(transport, self.config.socket_buffer)
                conn.connect(addr)
                await asyncio.shield(conn.ready)
        except BaseException as exc:
            if conn is not None:
                conn.close_with(CLOSE_NORMAL, "connect failed")
                if conn._transport is not None:
                    conn._transport.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {self.config.connect_timeout:.1f}s"
            backoff.failed(now=loop.time(), error=reason)
            log.info(
                "connect to %s at %s:%d failed: %s", peer.node_id, peer.host, peer.port, reason
            )
            if isinstance(exc, AuthFailed):
                raise
            raise ConnectFailed(
                f"cannot connect to {peer.node_id} at {peer.host}:{peer.port}: {reason}"
            ) from exc
        backoff.succeeded()
        if self._closed:  # close() ran while we were connecting
            conn.close_with(CLOSE_NORMAL, "endpoint closing")
            raise TransportError("endpoint is closed")
        self._outbound[lane] = conn
        log.debug("connected to %s at %s:%d", peer.node_id, peer.host, peer.port)
        return conn

    # -- state and shutdown --------------------------------------------------------------
    def peer_state(self, peer: Peer) -> PeerState:
        now = asyncio.get_running_loop().time()
        conn = self._outbound.get((peer, False))
        connected = conn is not None and conn.lost_error is None
        seen = [c.last_seen for c in self._inbound if c.peer_id == peer.node_id and c.last_seen]
        for either in (conn, self._outbound.get((peer, True))):
            if either is not None and either.last_seen is not None:
                seen.append(either.last_seen)
        backoff = self._backoff.get(peer)
        return PeerState(
            connected=connected,
            last_seen=max(seen) if seen else None,
            rtt=conn.quic.rtt if conn is not None else None,
            failures=backoff.failures if backoff else 0,
            retry_in=backoff.wait_left(now=now) if backoff else 0.0,
            last_error=backoff.last_error if backoff else "",
        )

    async def close(self) -> None:
        """Close every connection (peers see a clean CONNECTION_CLOSE) and the socket."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._connecting.values()):
            task.cancel()
        tasks: list[asyncio.Task[Any]] = []
        for conn in [*self._outbound.values(), *self._inbound]:
            tasks.extend(conn.handler_tasks)
            conn.close_with(CLOSE_NORMAL, "endpoint closing")
        if self._server is not None:
            self._server.close()
        pending = [*tasks, *self._connecting.values()]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        await asyncio.sleep(0)  # let transports finish closing
