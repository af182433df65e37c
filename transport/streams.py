"""One call's QUIC stream as the application sees it: inbound queue, outbound credit.

`StreamIO` sits between the connection (which feeds it bytes and events synchronously,
from aioquic's event loop callbacks) and the awaiting code (a handler reading a request
body, a caller reading a reply or sending a streamed request). It owns both halves of
the backpressure story:

- inbound: decoded body pieces wait in a deque; bytes count as consumed for flow control
  only when a reader takes them, so the deque never holds more than the stream window.
- outbound: `write_body()` waits until the stream's unacknowledged bytes leave room in
  the send window; the connection pokes `poll_credit()` after every datagram it receives.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from shardfleet.transport.errors import (
    PeerGone,
    ProtocolError,
    RemoteError,
    RpcTimeout,
    TransportError,
)
from shardfleet.transport.framing import Body, End, Error, FrameDecoder, body_prefix, encode_end
from shardfleet.transport.pacing import Pacer
from shardfleet.transport.rpc_state import MessageReader, RequestHead, ResponseHead, SendCredit

if TYPE_CHECKING:
    from shardfleet.transport.connection import RpcConnection

# Application error codes on RESET_STREAM / STOP_SENDING.
STREAM_CANCELLED = 0x20  # the caller gave up (cancel, timeout)
STREAM_DONE = 0x21  # the handler answered without reading the whole request body
STREAM_PROTOCOL_ERROR = 0x22
STREAM_INTERNAL = 0x23
SMALL_BODY = 64 << 10  # bodies sent with their header and end in one write (write_message)


def is_small(body: bytes | bytearray | memoryview | None) -> bool:
    return body is None or memoryview(body).nbytes <= SMALL_BODY


class StreamIO:
    def __init__(self, conn: RpcConnection, stream_id: int, *, response: bool) -> None:
        self.conn = conn
        self.quic = conn.quic
        self.stream_id = stream_id
        self.credit = SendCredit(conn.config.send_window)
        self.on_head: Callable[[RequestHead | ResponseHead], None] | None = None
        self.on_abort: Callable[[], None] | None = None
        self.head: RequestHead | ResponseHead | None = None
        self.aborted = False
        self.sent_end = False
        self.send_stopped = False  # the peer sent STOP_SENDING
        self.stop_code: int | None = None
        self._decoder = FrameDecoder(max_header_size=conn.config.max_header_size)
        self._reader = MessageReader(response=response)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._ended = False
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._send_waiter: asyncio.Future[None] | None = None
        self.pacer: Pacer | None = None  # set on background calls' streams: paces write_body

    # -- state ---------------------------------------------------------------------------
    @property
    def inbound_done(self) -> bool:
        """Everything the peer sent has been read (or the stream failed)."""
        return (self._ended and not self._chunks) or self._error is not None or self.aborted

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet taken by the reader."""
        return self._buffered

    @property
    def peer_done_reading(self) -> bool:
        """The peer answered without needing the rest of our body (STOP_SENDING "done")."""
        return self.send_stopped and self.stop_code == STREAM_DONE

    @property
    def outbound_done(self) -> bool:
        return self.sent_end or self.aborted or self.send_stopped

    @property
    def error(self) -> TransportError | None:
        return self._error

    def _maybe_done(self) -> None:
        if self.inbound_done and self.outbound_done:
            self.conn.forget(self)

    # -- inbound, fed by the connection ---------------------------------------------------
    def on_data(self, data: bytes, fin: bool) -> None:
        if self.aborted or self._error is not None:
            return
        self.quic.deliver(self.stream_id, len(data))
        body = 0
        try:
            for frame in self._decoder.feed(data):
                event = self._reader.on_frame(frame)
                if isinstance(event, Body):
                    if event.data:
                        self._chunks.append(event.data)
                        body += len(event.data)
                        self._buffered += len(event.data)
                elif isinstance(event, End):
                    self._ended = True
                elif isinstance(event, Error):
                    self._fail(RemoteError(event.kind, event.message))
                else:
                    self.head = event
                    if self.on_head is not None:
                        self.on_head(event)
            if fin and not self._reader.done:
                raise ProtocolError("stream ended in the middle of a message")
        except ProtocolError as exc:
            self._fail(exc)
            self.abort(STREAM_PROTOCOL_ERROR)
            return
        if self.conn.quic.consume(self.stream_id, len(data) - body):
            self.conn.transmit_soon()
        self._wake()
        if self.inbound_done:
            self.quic.release(self.stream_id)
            self._maybe_done()

    def on_reset(self, error_code: int) -> None:
        """The peer reset its sending half (cancelled request, or a dying handler)."""
        if not self._ended:
            self._fail(PeerGone(f"peer reset the stream (code 0x{error_code:x})"))
            self.quic.release(self.stream_id)
            if self.on_abort is not None:
                self.on_abort()
        self._maybe_done()

    def on_stop_sending(self, error_code: int) -> None:
        """The peer does not want (the rest of) what we send."""
        self.send_stopped = True
        self.stop_code = error_code
        self._wake_sender()
        if error_code != STREAM_DONE and self.on_abort is not None:
            self.on_abort()
        self._maybe_done()

    def on_connection_lost(self, exc: TransportError) -> None:
        self._fail(exc)
        self._wake_sender()

    def _fail(self, exc: TransportError) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- inbound, awaited by the application ----------------------------------------------
    async def _wait(self, timeout: float | None, what: str) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise RpcTimeout(f"no {what} from the peer for {timeout:.1f}s") from None
        finally:
            self._waiter = None

    async def read_head(self) -> RequestHead | ResponseHead:
        while self.head is None:
            if self._error is not None:
                raise self._error
            await self._wait(None, "reply")
        return self.head

    async def read_chunk(self, stall: float) -> bytes | None:
        """The next body piece, or None at the end. Raises the stream's error."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                return None
            await self._wait(stall, "body data")
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self.quic.consume(self.stream_id, len(chunk)):
            self.conn.transmit_soon()
        if self.inbound_done:
            self.quic.release(self.stream_id)
            self._maybe_done()
        return chunk

    async def read_available(
        self, max_bytes: int, stall: float, min_bytes: int = 0
    ) -> list[bytes] | None:
        """Every piece already buffered (at least one, waiting if none, and waiting on until
        `min_bytes` arrived or the body ended), up to about `max_bytes`; None at the end.
        Lets a reader that pays per call (a thread hop to write a file) take many pieces in
        one go. Pieces are consumed as they are taken, so the sender is never held back
        waiting for `min_bytes` to fit in its window."""
        first = await self.read_chunk(stall)
        if first is None:
            return None
        batch, total = [first], len(first)
        while True:
            taken = 0
            while self._chunks and total + len(self._chunks[0]) <= max_bytes:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                batch.append(chunk)
                total += len(chunk)
                taken += len(chunk)
            if taken:
                if self.quic.consume(self.stream_id, taken):
                    self.conn.transmit_soon()
                if self.inbound_done:
                    self.quic.release(self.stream_id)
                    self._maybe_done()
            if total >= min_bytes or self._chunks:  # enough, or the next piece would pass max
                return batch
            chunk = await self.read_chunk(stall)
            if chunk is None:
                return batch
            batch.append(chunk)
            total += len(chunk)

    # -- outbound ------------------------------------------------------------------------
    def _check_send(self) -> None:
        if self.conn.lost_error is not None:
            raise self.conn.lost_error
        if self.aborted:
            raise PeerGone("stream was cancelled")
        if self.send_stopped:
            raise PeerGone("peer stopped reading this stream")

    def _send(self, data: bytes | memoryview, end: bool = False) -> None:
        try:
            self.quic.send_stream_data(self.stream_id, data, end_stream=end)  # type: ignore[arg-type]
        except (ValueError, RuntimeError) as exc:  # aioquic: stream reset, finished or gone
            raise PeerGone(f"stream closed: {exc}") from exc

    def write_frame(self, frame: bytes, *, end: bool = False) -> None:
        """Queue a small frame (header, end, error) without waiting for credit."""
        self._check_send()
        self._send(frame, end)
        if end:
            self.sent_end = True
        self.conn.transmit_soon()
        if end:
            self._maybe_done()

    def write_end(self) -> None:
        self.write_frame(encode_end(), end=True)

    def write_message(self, frame: bytes, body: bytes | bytearray | memoryview | None) -> None:
        """A whole small message, header frame + body + end, in one write to the stream:
        a write costs aioquic as much for 5 bytes as for 60 KB, and a small RPC made four.
        For bodies up to SMALL_BODY (larger ones go through write_body and its credit)."""
        parts: list[bytes | memoryview] = [frame]
        if body:
            if not is_small(body):
                raise ValueError(f"write_message takes bodies up to {SMALL_BODY} bytes")
            view = memoryview(body).cast("B")
            parts += (body_prefix(len(view)), view)
        parts.append(encode_end())
        self.write_frame(b"".join(parts), end=True)

    async def write_body(self, data: bytes | bytearray | memoryview, stall: float) -> None:
        """Send body bytes as BODY frames of at most `chunk_size`, waiting for credit."""
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        chunk = self.conn.config.chunk_size
        pacer = self.pacer
        for start in range(0, len(view), chunk):
            piece = view[start : start + chunk]
            if pacer is not None:
                await pacer.take(len(piece))
            await self._wait_credit(len(piece), stall)
            self._send(body_prefix(len(piece)))
            self._send(piece)
            self.credit.wrote(self.quic.unacked_bytes(self.stream_id))
            self.conn.transmit_soon()

    async def _wait_credit(self, size: int, stall: float) -> None:
        while True:
            self._check_send()
            if self.credit.may_send(unacked=self.quic.unacked_bytes(self.stream_id), size=size):
                return
            waiter = self._send_waiter = asyncio.get_running_loop().create_future()
            self.conn.blocked.add(self)
            try:
                async with asyncio.timeout(stall):
                    await waiter
            except TimeoutError:
                raise RpcTimeout(f"send stalled: no acknowledgement for {stall:.1f}s") from None
            finally:
                self.conn.blocked.discard(self)
                self._send_waiter = None

    def poll_credit(self) -> None:
        """Called after incoming datagrams: wake a blocked sender if credit came back."""
        waiter = self._send_waiter
        if waiter is None or waiter.done():
            return
        if self.send_stopped or self.credit.may_send(
            unacked=self.quic.unacked_bytes(self.stream_id), size=self.conn.config.chunk_size
        ):
            waiter.set_result(None)

    def _wake_sender(self) -> None:
        waiter = self._send_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- teardown ------------------------------------------------------------------------
    def abort(self, code: int = STREAM_CANCELLED) -> None:
        """Reset our half and ask the peer to stop its half; drop anything queued."""
        if self.aborted:
            return
        self.aborted = True
        self._chunks.clear()
        self._buffered = 0
        if self.conn.lost_error is None:
            try:
                self.quic.reset_stream(self.stream_id, code)  # no-op once all acked
                if not self._ended:
                    self.quic.stop_stream(self.stream_id, code)
            except ValueError:
                pass  # aioquic already discarded the stream
            self.conn.transmit_soon()
        self.quic.release(self.stream_id)
        self.conn.transmit_soon()
        self._fail(PeerGone("stream was cancelled"))
        self._wake_sender()
        self.conn.forget(self)

    def stop_reading(self) -> None:
        """We will not read the rest of the peer's message: tell it to stop sending."""
        if self._ended or self.aborted or self.conn.lost_error is not None:
            return
        try:
            self.quic.stop_stream(self.stream_id, STREAM_DONE)
        except ValueError:
            pass
        self._chunks.clear()
        self._buffered = 0
        self._ended = True
        self.quic.release(self.stream_id)
        self.conn.transmit_soon()
        self._maybe_done()
