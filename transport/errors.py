"""Errors of the transport, one tree, no HTTP in it.

    TransportError
    ├── ConnectFailed     could not reach or handshake with the peer (or backing off after that)
    ├── AuthFailed        TLS or cluster-identity check failed, either direction
    ├── RpcTimeout        a deadline passed: connect, whole call, or a stalled body
    ├── PeerGone          the connection died or the peer reset the stream mid-call
    ├── RemoteError       the peer's handler answered with a typed error (kind, message)
    ├── BodyTooLarge      a reply body exceeded the limit the caller gave to read()
    └── ProtocolError     the peer broke the framing rules

`RpcFault` is not a transport error: handlers raise it to answer with a typed error, and
the caller receives it as `RemoteError(kind, message)`.
"""

from __future__ import annotations


class TransportError(Exception):
    """Base of every error the transport raises to callers."""


class ConnectFailed(TransportError):
    """The peer could not be reached, or we are backing off after failing to reach it."""


class AuthFailed(TransportError):
    """Mutual authentication failed: bad chain, wrong CA, wrong name or a bad proof."""


class RpcTimeout(TransportError, TimeoutError):
    """A deadline passed. Also a TimeoutError so generic timeout handling catches it."""


class PeerGone(TransportError):
    """The connection or the stream died under a call."""


class BodyTooLarge(TransportError):
    """A body was larger than the limit its reader allowed."""


class ProtocolError(TransportError):
    """The peer sent frames that break the framing or call rules."""


class RemoteError(TransportError):
    """The remote handler answered with an error of a given kind (e.g. "no-such-method")."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message


class RpcFault(Exception):
    """Raised by a handler to answer with a typed error instead of "internal"."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message
