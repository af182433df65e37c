"""Sans-IO call state: message heads, frame order, flow-control credit, reconnect backoff.

Nothing here touches a socket or a clock: time comes in as `now`, bytes as frames. The
endpoint drives these objects; the unit tests drive them by hand.

Flow control, the why. aioquic delivers every in-order byte to the application at once
and then raises MAX_STREAM_DATA / MAX_DATA by doubling them as soon as half is *received*
(`QuicConnection._write_stream_limits`). Its windows therefore never close: a slow reader
ends up buffering whatever the sender wrote. And its sender buffers whatever it is given.
So the transport keeps its own credit on both sides:

- `ReceiveWindow`: the limit we advertise is what the *application consumed* plus the
  window. A handler that stops reading stops the peer after one window.
- `SendCredit`: `send()` waits while the stream's unacknowledged bytes (queued in aioquic
  plus in flight) would exceed the send window. Memory per sending stream is bounded by
  ``send_window + one chunk``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardfleet.transport.errors import ProtocolError
from shardfleet.transport.framing import Body, End, Error, Frame, Header

MAX_METHOD_LEN = 256
FLAG_BACKGROUND = 1  # RequestHead.flags: a background call; its reply body is paced


# -- message heads ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestHead:
    """What a caller asks for: method, call id (for logs), header map, flags."""

    method: str
    call_id: int
    header: dict[str, Any]
    flags: int = 0

    def to_fields(self) -> dict[str, Any]:
        return {"m": self.method, "i": self.call_id, "h": self.header, "f": self.flags}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> RequestHead:
        method, call_id = fields.get("m"), fields.get("i", 0)
        header, flags = fields.get("h", {}), fields.get("f", 0)
        if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD_LEN:
            raise ProtocolError("request head needs a method name")
        if not isinstance(call_id, int) or not isinstance(flags, int):
            raise ProtocolError("request head: call id and flags must be integers")
        if not isinstance(header, dict):
            raise ProtocolError("request head: header must be a map")
        return cls(method, call_id, header, flags)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The reply's status: "ok" with a header map, or "error" with (kind, message)."""

    status: str
    header: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    message: str = ""

    @classmethod
    def ok(cls, header: dict[str, Any]) -> ResponseHead:
        return cls("ok", header)

    @classmethod
    def error(cls, kind: str, message: str) -> ResponseHead:
        return cls("error", {}, kind, message[:4096])

    def to_fields(self) -> dict[str, Any]:
        if self.status == "ok":
            return {"s": "ok", "h": self.header}
        return {"s": "error", "k": self.kind, "m": self.message}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ResponseHead:
        status = fields.get("s")
        if status == "ok":
            header = fields.get("h", {})
            if not isinstance(header, dict):
                raise ProtocolError("response head: header must be a map")
            return cls.ok(header)
        if status == "error":
            kind, message = fields.get("k"), fields.get("m", "")
            if not isinstance(kind, str) or not isinstance(message, str):
                raise ProtocolError("error response needs a string kind and message")
            return cls.error(kind, message)
        raise ProtocolError(f"response head with unknown status {status!r}")


# -- frame order -----------------------------------------------------------------------------
MessageEvent = RequestHead | ResponseHead | Body | End | Error


class MessageReader:
    """Checks the order ``HEADER (BODY)* (END | ERROR)`` of one message.

    `on_frame` turns the HEADER into a typed head (request or response) and passes body,
    end and error frames through; anything out of order raises `ProtocolError`. An ERROR
    frame is legal at any point before the end (an abort before or after the head).
    """

    def __init__(self, *, response: bool) -> None:
        self._response = response
        self._state = "head"

    @property
    def done(self) -> bool:
        return self._state == "done"

    @property
    def started(self) -> bool:
        return self._state != "head"

    def on_frame(self, frame: Frame) -> MessageEvent:
        if self._state == "done":
            raise ProtocolError("frame after the end of the message")
        if isinstance(frame, Error):
            self._state = "done"
            return frame
        if self._state == "head":
            if not isinstance(frame, Header):
                raise ProtocolError(f"message must start with a HEADER, not {frame!r:.40}")
            self._state = "body"
            if self._response:
                return ResponseHead.from_fields(frame.fields)
            return RequestHead.from_fields(frame.fields)
        if isinstance(frame, Header):
            raise ProtocolError("second HEADER in one message")
        if isinstance(frame, End):
            self._state = "done"
        return frame


# -- credit ----------------------------------------------------------------------------------
class ReceiveWindow:
    """The flow-control limit to advertise: consumed bytes plus the window.

    `consume(n)` is called when the application takes `n` bytes. `limit(current)` returns
    the new limit to advertise, or `current` while the increase would be under a quarter
    window (batching, so a busy reader does not emit a MAX_STREAM_DATA per chunk).

    >>> w = ReceiveWindow(1000)
    >>> w.limit(1000)          # nothing consumed: the initial window stands
    1000
    >>> w.consume(100); w.limit(1000)   # below a quarter window: no update yet
    1000
    >>> w.consume(200); w.limit(1000)
    1300
    """

    def __init__(self, window: int, consumed: int = 0) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self.consumed = consumed
        self.delivered = 0  # bytes handed to the application so far (for accounting)

    def consume(self, n: int) -> None:
        self.consumed += n

    def limit(self, current: int) -> int:
        target = self.consumed + self.window
        if target - current >= max(1, self.window // 4):
            return target
        return current


class SendCredit:
    """Whether a stream may queue `size` more bytes given its unacknowledged bytes.

    A write is allowed when the stream is empty (so a chunk larger than the window still
    goes through, alone) or when it fits in the window. `peak` records the most bytes ever
    left unacknowledged after a write, for tests and metrics.

    >>> c = SendCredit(1000)
    >>> c.may_send(unacked=0, size=5000), c.may_send(unacked=600, size=400)
    (True, True)
    >>> c.may_send(unacked=601, size=400)
    False
    """

    def __init__(self, window: int) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self.peak = 0

    def may_send(self, *, unacked: int, size: int) -> bool:
        return unacked == 0 or unacked + size <= self.window

    def wrote(self, unacked_after: int) -> None:
        self.peak = max(self.peak, unacked_after)


# -- reconnect backoff -----------------------------------------------------------------------
class Backoff:
    """Exponential backoff between failed connect attempts to one peer.

    After the n-th consecutive failure the next attempt is allowed
    ``min(cap, base * 2**(n-1))`` seconds later, scaled by a jitter factor in [0.5, 1]
    so that many nodes do not retry a recovered peer in lockstep. While waiting, callers
    fail fast instead of queueing behind a peer that is down.

    >>> b = Backoff(base=1.0, cap=8.0, jitter=lambda: 1.0)
    >>> b.wait_left(now=0.0)
    0.0
    >>> b.failed(now=10.0, error="refused"); b.wait_left(now=10.5)
    1.0
    0.5
    >>> [b.failed(now=20.0, error="x") for _ in range(4)]
    [2.0, 4.0, 8.0, 8.0]
    >>> b.succeeded(); b.wait_left(now=20.0)
    0.0
    """

    def __init__(
        self, *, base: float, cap: float, jitter: Callable[[], float] | None = None
    ) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""
        self._jitter = jitter or (lambda: random.uniform(0.5, 1.0))

    def failed(self, *, now: float, error: str) -> float:
        self.failures += 1
        self.last_error = error
        delay = min(self.cap, self.base * 2 ** (self.failures - 1)) * self._jitter()
        self.retry_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""

    def wait_left(self, *, now: float) -> float:
        return max(0.0, self.retry_at - now) if self.failures else 0.0
