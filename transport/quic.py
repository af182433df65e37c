"""The aioquic seam: connection flow control that follows consumption, and configurations.

Everything that reaches into aioquic's internals lives here, so an aioquic upgrade has one
file to check (written against aioquic 1.7.2):

- `QuicConnection._write_stream_limits` / `_write_connection_limits` decide MAX_STREAM_DATA
  and MAX_DATA. aioquic doubles them once half is *received*, whatever the application
  did with the bytes, so a slow reader never slows the sender. We override both so the
  limits are ``consumed + window`` (see `rpc_state.ReceiveWindow`).
- `QuicStreamSender._buffer_start/_buffer_stop` give a stream's unacknowledged bytes
  (queued or in flight), which `send()` uses for backpressure.
- `QuicConnection.tls.client_random` is the per-connection value the auth proof binds to.
- `HeaderProtection.apply/remove`, `CryptoContext.decrypt_packet` and (for short-header
  packets) `QuicPacketBuilder._end_packet` are replaced by the copy-free versions in
  `transport.quic_crypto` (same bytes on the wire).
- `QuicConnection._close_event` tells us at once that a close was sent or received;
  aioquic only emits ConnectionTerminated after the 3-PTO draining period.
- `QuicPacketSpace.ack_at` (when the pending ACK is due) and `_write_ack_frame`: an ACK
  goes out at once after `ack_every` datagrams instead of waiting the whole ACK delay.

aioquic's `QuicServer` builds plain `QuicConnection` objects; `upgrade()` turns one into a
`FlowControlledConnection` in place (same layout, a subclass without new slots) before
its first packet is processed.
"""

from __future__ import annotations

import ssl
from collections import deque
from typing import Any

from aioquic import tls
from aioquic.buffer import size_uint_var
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.stream import QuicStream
from cryptography.hazmat.primitives import serialization

from shardfleet.transport import quic_crypto
from shardfleet.transport.config import TransportConfig
from shardfleet.transport.rpc_state import ReceiveWindow
from shardfleet.transport.tls import NodeIdentity

quic_crypto.install()

ALPN = "shardfleet-rpc/1"
_MAX_STREAM_DATA_FRAME_CAPACITY = 1 + 8 + 8


class ChunkBuffer:
    """Drop-in for `QuicStreamSender._buffer` (a bytearray) that never moves its bytes.

    aioquic appends what we send with ``buffer += data`` and drops acknowledged bytes with
    ``del buffer[:n]``. On a bytearray that pair costs a memmove of everything buffered
    whenever an append must grow the allocation: with a 4 MiB send window that measured
    ~1 ms per 512 KiB append (0.5 GB/s, a large share of a core at 200 MB/s). Here an
    append stores the object (bytes and read-only memoryviews are kept by reference: a
    sender that hands over a read-only view of a buffer it owns promises not to change the
    bytes until the stream is done with them; anything writable is copied once), a frame
    cut from one chunk is a view of it (only one spanning chunks is joined), and dropping
    the front pops whole chunks.

    >>> b = ChunkBuffer(); b += b"hello "; b += memoryview(b"world"); len(b)
    11
    >>> bytes(b[4:8]); del b[:6]; bytes(b[0:5]), len(b)
    b'o wo'
    (b'world', 5)
    """

    __slots__ = ("_chunks", "_head", "_len")

    def __init__(self, initial: bytes | bytearray = b"") -> None:
        self._chunks: deque[bytes | memoryview] = deque()
        self._head = 0  # bytes of the first chunk already dropped
        self._len = 0
        if initial:
            self += initial

    def __len__(self) -> int:
        return self._len

    def __iadd__(self, data: bytes | bytearray | memoryview) -> ChunkBuffer:
        view = memoryview(data)
        if view.readonly and view.contiguous and view.itemsize == 1:
            # bytes, or a read-only view whose owner leaves it alone: kept as a view, so
            # the frames cut from it are views too (slicing bytes would copy each frame)
            data = view
        else:
            data = bytes(view)  # the caller may reuse a mutable buffer: copy it once
        if len(data):
            self._chunks.append(data)
            self._len += len(data)
        return self

    def __getitem__(self, item: slice) -> bytes | memoryview:
        start, stop, _ = item.indices(self._len)
        if stop <= start:
            return b""
        start += self._head
        stop += self._head
        parts = []
        offset = 0
        for chunk in self._chunks:
            end = offset + len(chunk)
            if end > start:
                parts.append(chunk[max(0, start - offset) : min(len(chunk), stop - offset)])
                if end >= stop:
                    break
            offset = end
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __delitem__(self, item: slice) -> None:
        if item.start is not None or item.step is not None or item.stop is None:
            raise TypeError("ChunkBuffer only drops a prefix: del buffer[:n]")
        n = min(max(item.stop, 0), self._len)
        self._len -= n
        n += self._head
        chunks = self._chunks
        while chunks and n >= len(chunks[0]):
            n -= len(chunks.popleft())
        self._head = n


class FlowControlledConnection(QuicConnection):
    """A QuicConnection whose receive windows move only as the application consumes.

    The application calls `consume(stream_id, n)` for every stream byte it has taken off
    its hands (header bytes at once, body bytes when the reader takes them) and
    `release(stream_id)` when it no longer cares about a stream (then the window opens
    freely so the peer can drain). Streams not yet seen by the application are tracked
    from their first frame with nothing consumed.
    """

    _fc_windows: dict[int, ReceiveWindow]
    _fc_released: set[int]
    _fc_stream_window: int
    _fc_conn: ReceiveWindow

    def init_flow_control(
        self,
        *,
        stream_window: int,
        connection_window: int,
        ack_delay: float | None = None,
        ack_every: int | None = None,
    ) -> None:
        if ack_delay is not None:
            self._ack_delay = ack_delay
        self._fc_ack_every = ack_every  # datagrams after which an ACK goes out at once
        self._fc_unacked = 0  # datagrams received while an ACK is pending
        self._fc_windows = {}
        self._fc_released = set()
        self._fc_stream_window = stream_window
        self._fc_conn = ReceiveWindow(connection_window)
        self._fc_dirty = True  # something was consumed or released since the last MAX_DATA check
        self._fc_stream_dirty: set[int] = set()  # streams consumed from since their last check
        self._fc_unchecked = 0

    @classmethod
    def upgrade(
        cls,
        quic: QuicConnection,
        *,
        stream_window: int,
        connection_window: int,
        ack_delay: float | None = None,
        ack_every: int | None = None,
    ) -> FlowControlledConnection:
        quic.__class__ = cls
        assert isinstance(quic, FlowControlledConnection)
        quic.init_flow_control(
            stream_window=stream_window,
            connection_window=connection_window,
            ack_delay=ack_delay,
            ack_every=ack_every,
        )
        return quic

    # -- application side ----------------------------------------------------------------
    def _window(self, stream_id: int) -> ReceiveWindow | None:
        window = self._fc_windows.get(stream_id)
        if window is None and stream_id not in self._fc_released:
            window = self._fc_windows[stream_id] = ReceiveWindow(self._fc_stream_window)
        return window

    def deliver(self, stream_id: int, n: int) -> None:
        """Record `n` stream bytes handed to the application (not yet consumed)."""
        window = self._window(stream_id)
        if window is not None:
            window.delivered += n

    def consume(self, stream_id: int, n: int) -> bool:
        """Record `n` bytes the application is done with; True if a window update is due."""
        window = self._window(stream_id)
        if window is None:
            return False
        window.consume(n)
        self._fc_conn.consume(n)  # exact value recomputed before the next packet
        self._fc_dirty = True
        self._fc_stream_dirty.add(stream_id)
        stream = self._streams.get(stream_id)
        if stream is not None:
            current = stream.max_stream_data_local
            if window.limit(current) != current:
                return True
        return self._fc_conn.limit(self._local_max_data.value) != self._local_max_data.value

    def release(self, stream_id: int) -> None:
        """The application is done reading `stream_id`: stop holding the peer back."""
        self._fc_windows.pop(stream_id, None)
        if stream_id in self._streams:
            self._fc_released.add(stream_id)
        self._fc_dirty = True

    def unacked_bytes(self, stream_id: int) -> int:
        """Bytes written to the stream and not yet acknowledged (queued + in flight)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def send_possible(self, stream_id: int) -> bool:
        """False once the stream's sending side was reset (by us or a STOP_SENDING)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return not self._stream_is_discarded(stream_id)
        return stream.sender._reset_error_code is None and stream.sender._buffer_fin is None

    @property
    def closing(self) -> bool:
        """A CONNECTION_CLOSE was sent or received (before aioquic's draining ends)."""
        return self._close_event is not None

    @property
    def close_reason(self) -> tuple[int, str]:
        event = self._close_event
        return (event.error_code, event.reason_phrase) if event is not None else (0, "")

    @property
    def binding(self) -> bytes:
        """The TLS ClientHello random: per connection, known to both ends."""
        return self.tls.client_random

    @property
    def rtt(self) -> float | None:
        loss = self._loss
        return loss._rtt_smoothed if getattr(loss, "_rtt_initialized", False) else None

    # -- overrides -----------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        super().receive_datagram(data, addr, now)
        # aioquic holds every ACK for `_ack_delay`; after `ack_every` datagrams it goes at once
        space = self._spaces.get(tls.Epoch.ONE_RTT)
        if space is not None and space.ack_at is not None and self._fc_ack_every is not None:
            self._fc_unacked += 1
            if self._fc_unacked >= self._fc_ack_every and space.ack_at > now:
                space.ack_at = now

    def _write_ack_frame(self, builder: Any, space: Any, now: float) -> None:
        super()._write_ack_frame(builder, space, now)
        if space is self._spaces.get(tls.Epoch.ONE_RTT):
            self._fc_unacked = 0

    def _get_or_create_stream_for_send(self, stream_id: int) -> QuicStream:
        stream = super()._get_or_create_stream_for_send(stream_id)
        sender = stream.sender
        if not isinstance(sender._buffer, ChunkBuffer):
            sender._buffer = ChunkBuffer(sender._buffer)
        return stream

    def _write_stream_limits(self, builder: Any, space: Any, stream: QuicStream) -> None:
        sid = stream.stream_id
        # aioquic asks for every stream before every packet; only a stream read from since
        # its last check, one whose last MAX_STREAM_DATA was lost, or a released one (left
        # to aioquic) can need a frame
        if (
            sid not in self._fc_stream_dirty
            and stream.max_stream_data_local_sent == stream.max_stream_data_local
            and sid not in self._fc_released
        ):
            return
        self._fc_stream_dirty.discard(sid)
        if sid in self._fc_released or not stream.max_stream_data_local:
            # released, or a local unidirectional stream: behave like aioquic
            super()._write_stream_limits(builder, space, stream)
            return
        if stream.receiver.is_finished:
            return
        window = self._fc_windows.get(sid)
        if window is None:
            window = self._fc_windows[sid] = ReceiveWindow(self._fc_stream_window)
        stream.max_stream_data_local = window.limit(stream.max_stream_data_local)
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=_MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(sid)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_stream_frame(
        self, builder: Any, space: Any, stream: QuicStream, max_offset: int
    ) -> int:
        """aioquic's STREAM frame writer with a correct length field.

        aioquic writes the data length as a 2-byte varint (`push_uint16(len | 0x4000)`),
        which silently corrupts any frame of 16384 bytes or more: with datagrams above
        ~16 KiB the peer fails with "Failed to parse frame". That is the real ceiling
        behind "aioquic tops out at 16 KiB datagrams". We reserve and write a 4-byte
        varint instead, so one frame can fill a 65000-byte datagram.
        """
        room = builder.remaining_flight_space
        if room < 6:  # not even a FIN-only frame fits (aioquic asks every stream per packet)
            return 0
        sender = stream.sender
        offset = sender.next_offset
        overhead = 1 + size_uint_var(stream.stream_id) + (size_uint_var(offset) if offset else 0)
        overhead += 4
        previous_send_highest = sender.highest_offset
        frame = sender.get_frame(room - overhead, max_offset)
        if frame is None:
            return 0
        frame_type = QuicFrameType.STREAM_BASE | 2  # explicit length
        if frame.offset:
            frame_type |= 4
        if frame.fin:
            frame_type |= 1
        buf = builder.start_frame(
            frame_type,
            capacity=overhead,
            handler=sender.on_data_delivery,
            handler_args=(frame.offset, frame.offset + len(frame.data), frame.fin),
        )
        buf.push_uint_var(stream.stream_id)
        if frame.offset:
            buf.push_uint_var(frame.offset)
        buf.push_uint32(len(frame.data) | 0x80000000)  # 4-byte varint
        buf.push_bytes(frame.data)
        if self._quic_logger is not None:
            builder.quic_logger_frames.append(
                self._quic_logger.encode_stream_frame(frame, stream_id=stream.stream_id)
            )
        return sender.highest_offset - previous_send_highest

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        limit = self._local_max_data
        # The walk over every stream below runs before each packet; consumption only grows
        # through consume() and release(), so between them it is skipped (but still done
        # every 16th packet, so nothing can keep the window shut for long).
        if self._fc_dirty or self._fc_unchecked >= 16:
            self._fc_dirty = False
            self._fc_unchecked = 0
            self._recompute_connection_window(limit)
        else:
            self._fc_unchecked += 1
        # aioquic doubles MAX_DATA when half is used; hide `used` from it for this call so
        # only our consumption-based value goes out (and MAX_STREAMS handling stays its own).
        used, limit.used = limit.used, 0
        try:
            super()._write_connection_limits(builder, space)
        finally:
            limit.used = used

    def _recompute_connection_window(self, limit: Any) -> None:
        # Bytes received and not consumed: per live stream from aioquic's highest offset
        # (which counts out-of-order bytes too), per stream aioquic already discarded from
        # what it delivered to us. Released streams count as consumed.
        outstanding = 0
        for sid, stream in self._streams.items():
            if sid not in self._fc_released and stream.receiver.highest_offset:
                window = self._window(sid)
                assert window is not None
                received = max(stream.receiver.highest_offset, window.delivered)
                outstanding += received - window.consumed
        for sid, window in list(self._fc_windows.items()):
            if sid not in self._streams:
                if window.delivered > window.consumed:
                    outstanding += window.delivered - window.consumed
                else:
                    del self._fc_windows[sid]  # gone and nothing pending
        if self._fc_released:
            self._fc_released.intersection_update(self._streams)
        if self._fc_stream_dirty:
            self._fc_stream_dirty.intersection_update(self._streams)
        self._fc_conn.consumed = limit.used - outstanding
        limit.value = max(limit.value, self._fc_conn.limit(limit.value))


def _base_configuration(config: TransportConfig, *, is_client: bool) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        max_datagram_size=config.max_datagram_size,
        max_data=config.max_data,
        max_stream_data=config.max_stream_data,
        idle_timeout=config.idle_timeout,
        congestion_control_algorithm=config.congestion_control,
    )


def server_configuration(identity: NodeIdentity, config: TransportConfig) -> QuicConfiguration:
    """TLS server side: our node cert and key. (aioquic cannot request client certs.)"""
    conf = _base_configuration(config, is_client=False)
    conf.certificate = identity.cert
    conf.private_key = identity.key
    return conf


def client_configuration(
    identity: NodeIdentity, config: TransportConfig, server_name: str
) -> QuicConfiguration:
    """TLS client side: trust only the cluster CA, and require the peer's node id."""
    conf = _base_configuration(config, is_client=True)
    conf.verify_mode = ssl.CERT_REQUIRED
    conf.cadata = identity.ca_cert.public_bytes(serialization.Encoding.PEM)
    conf.server_name = server_name
    return conf
