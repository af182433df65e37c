"""The objects callers and handlers hold: Peer, Request, Response, Reply, StreamCall.

Bodies are streams both ways. A handler reads `request.body` (an async iterator of byte
pieces, split wherever the network split them) and answers with bytes or an async
iterable; a caller reads `reply.read(limit)` or iterates the reply. Every wait for body
data or send credit is bounded by the stall timeout; a reader that gives up (cancel,
timeout, BodyTooLarge, aclose before the end) resets the stream so the peer stops too.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from shardfleet.transport.errors import BodyTooLarge, PeerGone, RemoteError, RpcTimeout
from shardfleet.transport.rpc_state import ResponseHead
from shardfleet.transport.streams import STREAM_CANCELLED, STREAM_DONE, StreamIO


@dataclass(frozen=True)
class Peer:
    """Where a node is reached; `node_id` is the name its certificate must carry."""

    node_id: str
    host: str
    port: int


@dataclass(frozen=True)
class PeerState:
    """What the endpoint knows about a peer's reachability (for membership, status)."""

    connected: bool
    last_seen: float | None  # loop.time() (monotonic) of the last packet from it, any direction
    rtt: float | None  # smoothed RTT of our connection to it, seconds
    failures: int = 0  # consecutive failed connects
    retry_in: float = 0.0  # seconds left before we try connecting again
    last_error: str = ""


@dataclass
class Response:
    """What a handler returns: a header map and an optional body (bytes or async iterable)."""

    header: dict[str, Any] = field(default_factory=dict)
    body: bytes | bytearray | memoryview | AsyncIterable[bytes] | None = None


async def _read_all(stream: StreamIO, limit: int, stall: float, *, server: bool) -> bytes:
    parts: list[bytes] = []
    total = 0
    try:
        while (chunk := await stream.read_chunk(stall)) is not None:
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"body exceeds the {limit}-byte limit")
            parts.append(chunk)
    except BodyTooLarge:
        if server:
            stream.stop_reading()  # the handler may still answer (an error, usually)
        else:
            stream.abort(STREAM_CANCELLED)
        raise
    except BaseException:
        stream.abort(STREAM_CANCELLED)
        raise
    return parts[0] if len(parts) == 1 else b"".join(parts)


class RequestBody(AsyncIterator[bytes]):
    """A request's body as an async iterator of byte pieces (empty when there is none)."""

    def __init__(self, stream: StreamIO, stall: float) -> None:
        self._stream = stream
        self._stall = stall
        self.exhausted = False

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._stream.read_chunk(self._stall)
        if chunk is None:
            self.exhausted = True
            raise StopAsyncIteration
        return chunk


class Request:
    """An authenticated call as its handler sees it."""

    __slots__ = ("peer_id", "method", "header", "call_id", "body", "_stream", "_stall")

    def __init__(
        self, peer_id: str, method: str, header: dict[str, Any], call_id: int,
        stream: StreamIO, stall: float,
    ) -> None:  # fmt: skip
        self.peer_id = peer_id  # the node id proven by the client's certificate
        self.method = method
        self.header = header
        self.call_id = call_id
        self.body: AsyncIterator[bytes] = RequestBody(stream, stall)
        self._stream = stream
        self._stall = stall

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet read (bounded by the stream window)."""
        return self._stream.buffered

    async def batches(
        self, max_bytes: int = 4 << 20, min_bytes: int = 0
    ) -> AsyncIterator[list[bytes]]:
        """The body as lists of pieces: each list is what had arrived (up to ~max_bytes),
        and at least `min_bytes` of it unless the body ended first.

        `request.body` yields pieces as the network cut them (about one datagram each);
        a handler that pays per call, e.g. a thread hop per `writer.write(chunks)`, should
        iterate batches instead: ``async for chunks in req.batches(): await w.write(chunks)``.
        """
        stream, stall = self._stream, self._stall
        while (batch := await stream.read_available(max_bytes, stall, min_bytes)) is not None:
            yield batch

    async def read(self, limit: int) -> bytes:
        """The whole request body. Beyond `limit`: BodyTooLarge, and the caller is told to
        stop sending; a handler that lets it propagate answers "body-too-large"."""
        return await _read_all(self._stream, limit, self._stall, server=True)


def _abort_abandoned(loop: asyncio.AbstractEventLoop, stream: StreamIO) -> None:
    if not stream.inbound_done and not loop.is_closed():
        loop.call_soon_threadsafe(stream.abort, STREAM_CANCELLED)


class Reply:
    """A call's answer: `header` now, the body streamed on demand.

    Read the body with `await read(limit)` or `async for chunk in reply`, or drop it with
    `await aclose()`; a Reply garbage-collected unread resets its stream, so an abandoned
    body never pins the peer's handler or our window.
    """

    def __init__(self, stream: StreamIO, header: dict[str, Any], stall: float) -> None:
        self.header = header
        self._stream = stream
        self._stall = stall
        if not stream.inbound_done:
            loop = asyncio.get_running_loop()
            self._finalizer = weakref.finalize(self, _abort_abandoned, loop, stream)

    @property
    def complete(self) -> bool:
        return self._stream.inbound_done

    async def read(self, limit: int) -> bytes:
        """The whole body; BodyTooLarge (and the stream reset) if it exceeds `limit`."""
        return await _read_all(self._stream, limit, self._stall, server=False)

    def __aiter__(self) -> Reply:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._stream.read_chunk(self._stall)
        except BaseException:
            self._stream.abort(STREAM_CANCELLED)
            raise
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Stop reading: the rest of the body is refused (stream reset) unless complete."""
        if not self._stream.inbound_done:
            self._stream.abort(STREAM_CANCELLED)

    async def __aenter__(self) -> Reply:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def raise_for_head(head: ResponseHead) -> None:
    if head.status != "ok":
        raise RemoteError(head.kind, head.message)


class StreamCall:
    """A call whose request body is sent piece by piece, with backpressure.

    `send()` returns once the piece is queued within the send window (so a slow peer
    slows the caller); `finish()` ends the body and waits (up to the call's timeout) for
    the reply header. If the handler answers before reading everything, further sends are
    dropped when it answered ok, and raise its RemoteError when it failed.
    Cancelling `send`/`finish` (or `cancel()`) resets the stream; the handler is cancelled.
    """

    def __init__(self, stream: StreamIO, *, timeout: float, stall: float) -> None:
        self._stream = stream
        self._timeout = timeout
        self._stall = stall
        self._finished = False
        # dropped without finish() or cancel(): reset, so the handler does not wait for
        # the rest of the body until its stall timeout
        self._finalizer = weakref.finalize(
            self, _abort_abandoned, asyncio.get_running_loop(), stream
        )

    @property
    def send_window_peak(self) -> int:
        """Most bytes ever left unacknowledged on this stream (backpressure check)."""
        return self._stream.credit.peak

    def _early_answer(self) -> bool:
        """True if the handler already answered ok; raises if it answered an error."""
        head = self._stream.head
        if isinstance(head, ResponseHead):
            raise_for_head(head)
            return True
        return False

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue body bytes (waiting for credit). bytes and read-only memoryviews are kept
        by reference until acknowledged, so their owner must not change them meanwhile;
        writable buffers are copied."""
        if self._finished:
            raise RuntimeError("send() after finish()")
        stream = self._stream
        if stream.send_stopped and stream.stop_code == STREAM_DONE:
            self._early_answer()
            return
        try:
            await stream.write_body(data, self._stall)
        except PeerGone:
            if stream.send_stopped and stream.stop_code == STREAM_DONE:
                self._early_answer()
                return
            stream.abort(STREAM_CANCELLED)
            raise
        except BaseException:
            stream.abort(STREAM_CANCELLED)
            raise

    async def finish(self) -> Reply:
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        self._finalizer.detach()  # from here the Reply (or an exception) owns the stream
        stream = self._stream
        try:
            if not stream.outbound_done:
                stream.write_end()
            elif stream.aborted:
                raise PeerGone("stream was cancelled")
            async with asyncio.timeout(self._timeout):
                head = await stream.read_head()
        except TimeoutError as exc:
            stream.abort(STREAM_CANCELLED)
            if isinstance(exc, RpcTimeout):
                raise
            raise RpcTimeout(f"no reply within {self._timeout:.1f}s") from None
        except BaseException:
            stream.abort(STREAM_CANCELLED)
            raise
        assert isinstance(head, ResponseHead)
        raise_for_head(head)
        return Reply(stream, head.header, self._stall)

    async def cancel(self) -> None:
        """Abandon the call: reset the stream; the remote handler is cancelled."""
        self._finished = True
        self._finalizer.detach()
        self._stream.abort(STREAM_CANCELLED)
