"""Transport settings: datagram size, windows, timeouts, backoff.

Datagram size sets aioquic's speed. aioquic does its work per packet in Python, so bytes
per second scale with bytes per packet. Stock aioquic cannot go past ~16 KiB: it writes
STREAM frame lengths as 2-byte varints (see `transport.quic`); with that fixed, ours
measured on this 2-core host, two processes, mTLS (tests/bench/bench_transport.py, under
load from other jobs, so +-30%): 1452 B ~7 MB/s, 8952 B ~40-55, 16384 B ~50-75,
65000 B ~220-250 MB/s each way. aioquic does not discover the path MTU and pads the
client's first datagram to the full size, so the setting must fit the path:

    loopback (dev cluster, one host)          65000  (the default; UDP payload max is 65507)
    jumbo-frame LAN, MTU 9000                  8952  (9000 - 40 IPv6 - 8 UDP; 8972 if IPv4 only)
    ordinary LAN, MTU 1500                     1452  (1500 - 48; 1472 if IPv4 only)

`TransportConfig.for_mtu(mtu)` computes the IPv6-safe value. A size above the path MTU
fails loudly: our sockets set DF (IP_PMTUDISC_DO, as RFC 9000 asks), so sendto() raises
EMSGSIZE, which ends the connect at once with ConnectFailed("... Message too long"),
rather than IP-fragmenting every datagram (which works until one fragment is lost). (The
error path is the one tested with ICMP port-unreachable; no small-MTU link exists on the
test host.) Both ends agree only loosely: each sends at most its own size and receives
any size.

Memory bound per connection: at most `max_data` bytes received and not yet consumed
(the connection window, which we only extend as the application reads), plus, per
sending stream, `send_window` + one chunk queued in aioquic.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
LOOPBACK_DATAGRAM_SIZE = 65000
MIN_DATAGRAM_SIZE = 1200  # QUIC's floor (RFC 9000 section 14)
MAX_DATAGRAM_SIZE = 65507  # the largest IPv4 UDP payload


@dataclass(frozen=True)
class TransportConfig:
    max_datagram_size: int = LOOPBACK_DATAGRAM_SIZE
    """Largest UDP payload we send. Must fit the path MTU; see the module docstring."""

    max_data: int = 64 * MIB
    """Connection receive window: bytes a peer may send us beyond what we consumed."""

    max_stream_data: int = 4 * MIB
    """Per-stream receive window. aioquic's default (1 MiB, then doubling) is replaced by
    a window that only moves as the handler or caller reads. 4 MiB keeps one stream near
    full speed on loopback; `max_data` / `max_stream_data` (16) streams with slow readers
    are needed before the connection window stalls the others (heartbeats included)."""

    send_window: int = 4 * MIB
    """Per-stream unacknowledged bytes after which `send()` waits (backpressure)."""

    chunk_size: int = 1 * MIB
    """Largest BODY frame we send; larger buffers are cut into frames of this size."""

    congestion_control: str = "reno"
    """aioquic's algorithm: "reno" or "cubic". On loopback and LANs they measure alike;
    the windows and the datagram size are what matter."""

    socket_buffer: int = 8 * MIB
    """SO_SNDBUF/SO_RCVBUF asked of the kernel (capped by net.core.[rw]mem_max): a burst
    of large datagrams must not overflow the receive queue and look like congestion."""

    ack_delay: float = 0.02
    """Seconds a receiver may hold an ACK back (aioquic's own is 1 ms; both advertise 25 ms
    as the bound). Every ACK costs a packet's processing on both ends in Python, and most
    RPCs get a reply within it that carries the ACK: 5 ms measured 17% less CPU per 512 KiB
    call than 1 ms, and 20 ms (with `ack_every`) ~10% less CPU per 1 MiB cluster PUT than
    5 ms (59 -> 51 datagrams). Data is never held back."""

    ack_every: int = 16
    """Datagrams received after which a receiver acknowledges at once, whatever `ack_delay`
    says: a bulk stream's sender frees its send window and congestion window on ACKs and
    must not wait `ack_delay` for them (RFC 9000 13.2.2 asks for an ACK every second
    packet). Counted in datagrams, not bytes, so it scales with `max_datagram_size`: ~1 MiB
    on loopback, ~23 KB at 1452 bytes, where a sender's first window (10 datagrams) waits
    one `ack_delay` at most."""

    idle_timeout: float = 20.0
    """A connection with no packet from the peer for this long is dead. Keepalive pings
    go out every third of it, so only a dead or partitioned peer ever reaches it."""

    connect_timeout: float = 5.0
    """Handshake plus authentication, per attempt."""

    auth_timeout: float = 5.0
    """A server closes a connection that has not authenticated this long after its
    handshake."""

    call_timeout: float = 30.0
    """Default deadline of `call()` when the caller gives none: until the reply header."""

    stall_timeout: float = 30.0
    """Longest wait without progress while streaming a body either way (credit for a
    send, data for a read)."""

    reconnect_backoff_base: float = 0.2
    """First delay after a failed connect; doubles per failure (with jitter)."""

    reconnect_backoff_max: float = 10.0
    """Cap of the reconnect delay."""

    max_header_size: int = 1 * MIB
    """Largest HEADER frame accepted."""

    background_rate: int = 32 * MIB
    """Bytes per second this endpoint sends on background calls (heal, scan), request and
    reply bodies together; 0: no cap. Background calls also travel on their own
    connection per peer, so they never take a client call's flow-control window. See
    `transport.pacing`; tests/bench/bench_priority.py measures what it buys."""

    background_burst: int = 1 * MIB
    """Bytes a background sender may send at once after idling."""

    def __post_init__(self) -> None:
        if not MIN_DATAGRAM_SIZE <= self.max_datagram_size <= MAX_DATAGRAM_SIZE:
            raise ValueError(
                f"max_datagram_size must be within {MIN_DATAGRAM_SIZE}..{MAX_DATAGRAM_SIZE}"
            )
        if self.congestion_control not in ("reno", "cubic"):
            raise ValueError("congestion_control must be 'reno' or 'cubic'")
        for name in ("max_data", "max_stream_data", "send_window", "chunk_size"):
            if getattr(self, name) < 64 * 1024:
                raise ValueError(f"{name} must be at least 64 KiB")
        if self.background_rate < 0 or self.background_burst < 0:
            raise ValueError("background_rate and background_burst must not be negative")
        if self.ack_every < 1:
            raise ValueError("ack_every must be at least 1")
        if self.max_stream_data > self.max_data:
            raise ValueError("max_stream_data must not exceed max_data")
        for name in ("idle_timeout", "connect_timeout", "auth_timeout", "call_timeout",
                     "stall_timeout", "reconnect_backoff_base", "reconnect_backoff_max"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @staticmethod
    def datagram_size_for_mtu(mtu: int) -> int:
        """Largest QUIC datagram for a link MTU, safe for IPv6 (40 + 8 bytes of headers).

        >>> TransportConfig.datagram_size_for_mtu(1500), TransportConfig.datagram_size_for_mtu(9000)
        (1452, 8952)
        """
        return max(MIN_DATAGRAM_SIZE, min(MAX_DATAGRAM_SIZE, mtu - 48))

    @classmethod
    def for_mtu(cls, mtu: int, **kwargs: object) -> TransportConfig:
        return cls(max_datagram_size=cls.datagram_size_for_mtu(mtu), **kwargs)  # type: ignore[arg-type]
