"""Running one request handler on one stream, and turning its outcome into a reply.

Each authenticated request stream gets a task running `serve_call`. The reply is
``HEADER(ok) BODY* END``; a handler raising `RpcFault(kind, message)` answers
``HEADER(error kind message) END``; any other exception answers kind "internal" with the
exception's class name only (the traceback goes to our log, never to the peer). If the
body fails after the ok header went out, an ERROR frame ends the reply instead.
A reset or STOP_SENDING from the caller cancels the task: the handler sees CancelledError.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

from shardfleet.transport.calls import Request, Response
from shardfleet.transport.errors import BodyTooLarge, RpcFault, TransportError
from shardfleet.transport.framing import encode_end, encode_error, encode_header
from shardfleet.transport.rpc_state import RequestHead, ResponseHead
from shardfleet.transport.streams import STREAM_CANCELLED, STREAM_INTERNAL, StreamIO, is_small

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


def _error_reply(kind: str, message: str) -> bytes:
    return encode_header(ResponseHead.error(kind, message).to_fields()) + encode_end()


async def _close_iterable(body: Any) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # the iterator's own cleanup failed; the reply is already lost
            log.debug("response body iterator failed to close", exc_info=True)


async def serve_call(
    *,
    peer_id: str,
    stream: StreamIO,
    head: RequestHead,
    handler: Handler | None,
    stall: float,
    max_header_size: int,
) -> None:
    request = Request(peer_id, head.method, head.header, head.call_id, stream, stall)
    try:
        await _run(request, stream, head, handler, stall, max_header_size)
    finally:
        if not stream.inbound_done:
            stream.stop_reading()  # answered without the whole body: stop the sender


async def _run(
    request: Request,
    stream: StreamIO,
    head: RequestHead,
    handler: Handler | None,
    stall: float,
    max_header_size: int,
) -> None:
    peer_id = request.peer_id
    try:
        if handler is None:
            raise RpcFault("no-such-method", f"no method {head.method!r}")
        response = await handler(request)
        if not isinstance(response, Response):
            raise TypeError(f"handler returned {type(response).__name__}, not Response")
        header_frame = encode_header(
            ResponseHead.ok(response.header).to_fields(), max_size=max_header_size
        )
    except RpcFault as fault:
        _answer(stream, _error_reply(fault.kind, fault.message))
        return
    except asyncio.CancelledError:
        stream.abort(STREAM_CANCELLED)
        raise
    except BodyTooLarge as exc:
        _answer(stream, _error_reply("body-too-large", str(exc)))
        return
    except TransportError as exc:  # the request body stalled or the caller went away
        log.info("%s from %s: %s", head.method, peer_id, exc)
        stream.abort(STREAM_CANCELLED)
        return
    except Exception as exc:
        log.exception("handler %s (call %d from %s) failed", head.method, head.call_id, peer_id)
        _answer(stream, _error_reply("internal", f"{head.method} failed ({type(exc).__name__})"))
        return

    body = response.body
    try:
        small = body is None or (
            isinstance(body, bytes | bytearray | memoryview) and is_small(body)
        )
        if small and (stream.pacer is None or not body):  # a background body is paced
            stream.write_message(header_frame, body)
            return
        stream.write_frame(header_frame)
        if isinstance(body, bytes | bytearray | memoryview):
            if body:
                await stream.write_body(body, stall)
        elif body is not None:
            await _send_iterable(stream, body, stall)
        stream.write_end()
    except asyncio.CancelledError:
        stream.abort(STREAM_CANCELLED)
        raise
    except TransportError as exc:
        log.info("reply to %s from %s lost: %s", head.method, peer_id, exc)
        stream.abort(STREAM_CANCELLED)
    except RpcFault as fault:  # raised by the body iterator after the ok header
        _abort_reply(stream, fault.kind, fault.message)
    except Exception as exc:
        log.exception("streaming the reply of %s to %s failed", head.method, peer_id)
        _abort_reply(stream, "internal", f"{head.method} reply failed ({type(exc).__name__})")


def _abort_reply(stream: StreamIO, kind: str, message: str) -> None:
    try:
        stream.write_frame(encode_error(kind, message), end=True)
    except TransportError:
        stream.abort(STREAM_INTERNAL)


async def _send_iterable(stream: StreamIO, body: AsyncIterable[bytes], stall: float) -> None:
    try:
        async for chunk in body:
            if chunk:
                await stream.write_body(chunk, stall)
    finally:
        await _close_iterable(body)


def _answer(stream: StreamIO, frames: bytes) -> None:
    try:
        stream.write_frame(frames, end=True)
    except TransportError:
        stream.abort(STREAM_CANCELLED)
