"""QUIC RPC between nodes: mutual TLS under the cluster CA, streamed bodies, backpressure.

Imports nothing of ours. The public surface, all re-exported here:

    RpcEndpoint(node_id=, tls=, host=, port=, config=)  .register .start .call .open_stream
                                                         .peer_state .close .on_peer_up
    Peer, PeerState, Request, Response, Reply, StreamCall, TransportConfig
    create_ca, issue_node_cert, load_identity, TlsFiles, CaFiles
    TransportError > ConnectFailed, AuthFailed, RpcTimeout, PeerGone, RemoteError, ...
    RpcFault (raised by handlers)
    UnsupportedAioquic (raised by `import shardfleet.transport` for an aioquic outside its range)

aioquic is fenced: written and tested against 1.7.2, accepted as ``>=1.7.2,<1.8``
(pyproject.toml and `shardfleet.transport._aioquic_fence.SUPPORTED`, checked to agree). Importing
this package refuses any other release before a module below touches aioquic. The
private aioquic names the transport relies on, i.e. the work of an upgrade (O = override
of a private method, P = monkeypatch of aioquic's class, R/W = private attribute read or
written; `where` is our module):

    where               aioquic name (kind)                              why
    ------------------  -----------------------------------------------  -----------------------
    quic.py             QuicConnection._write_stream_limits,             receive windows follow
      FlowControlled-     _write_connection_limits (O);                  consumption, not
      Connection          _streams, _local_max_data.value/.used (R/W),   receipt; MAX_DATA walk
                          _on_max_stream_data_delivery (R)               only when dirty
    quic.py             QuicConnection._write_stream_frame (O, a copy    4-byte STREAM length:
                          of aioquic's with one change); _quic_logger    frames over 16 KiB
    quic.py             QuicConnection._get_or_create_stream_for_send    ChunkBuffer instead of
                          (O); QuicStreamSender._buffer (W)              the bytearray (no
                                                                         memmove per append)
    quic.py             QuicStreamSender._buffer_start/_buffer_stop,     send backpressure;
                          _reset_error_code, _buffer_fin (R);            is the stream still
                          QuicConnection._stream_is_discarded (R)        writable
    quic.py             QuicConnection._spaces[ONE_RTT].ack_at (W),      an ACK at once after
                          _write_ack_frame (O), _ack_delay (W)           `ack_every` datagrams;
                                                                         our ACK delay
    quic.py             QuicConnection._close_event (R)                  a close seen at once,
                                                                         not after draining
    quic.py             QuicConnection._loss._rtt_smoothed,              PeerState.rtt
                          _rtt_initialized (R)
    quic.py             `quic.__class__ = FlowControlledConnection`      QuicServer builds plain
                          (relies on QuicConnection's layout, no         QuicConnections;
                          __slots__)                                     upgraded in place
    quic_crypto.py      aioquic._crypto (a private module):              copy-free header
                          HeaderProtection.apply/remove (P), ._mask,     protection and
                          AEAD._aead, AEAD._nonce (R), CryptoError,      decryption (same bytes,
                          PACKET_NUMBER_LENGTH_MAX, SAMPLE_LENGTH,       tests/unit/
                          AEAD_TAG_LENGTH, _crypto.aead (R);             test_transport_crypto)
                          quic.crypto.CryptoContext.decrypt_packet (P)
    quic_crypto.py      QuicPacketBuilder._end_packet (P, a copy of      short-header packets
                          aioquic's for 1-RTT) and its state: _buffer,   sealed straight into
                          _packet, _packet_type, _packet_start,          the datagram
                          _packet_crypto, _packet_number, _header_size,
                          _datagram_needs_padding, _spin_bit, _peer_cid,
                          _packets, _datagrams, _datagram_flight_bytes,
                          _flight_bytes, _total_bytes, _datagram_init,
                          _quic_logger (R/W); PACKET_NUMBER_SEND_SIZE;
                          CryptoPair._update_key_requested,
                          _update_key (R)
    connection.py       QuicConnectionProtocol._handle_timer (O),        replies sent once per
      RpcConnection       datagram_received (O, aioquic's body with      loop turn; close
                          call_soon), _quic, _loop, _timer, _transport,  handling; keepalives
                          _process_events, _transmit_soon (R/W);
                          QuicConnection._streams (R)
    endpoint.py         QuicServer._loop (R, in error_received);         log server send errors;
                          QuicConnectionProtocol._transport (R, close)   one UDP socket per
                                                                         outbound connection

tls.py, auth.py, streams.py and the rest use no aioquic internals (streams.py only the
FlowControlledConnection methods above). Tests reach in too: QuicConnection._close_event
and _spaces (test_transport_credit.py, integration/test_transport_security.py),
aioquic._crypto and QuicPacketBuilder._end_packet (test_transport_crypto.py, byte for byte
against aioquic's own functions).
"""

# First, before any module below imports aioquic: refuses an unsupported release
from shardfleet.transport._aioquic_fence import UnsupportedAioquic
from shardfleet.transport.calls import Peer, PeerState, Reply, Request, Response, StreamCall
from shardfleet.transport.config import TransportConfig
from shardfleet.transport.endpoint import Handler, RpcEndpoint
from shardfleet.transport.errors import (
    AuthFailed,
    BodyTooLarge,
    ConnectFailed,
    PeerGone,
    ProtocolError,
    RemoteError,
    RpcFault,
    RpcTimeout,
    TransportError,
)
from shardfleet.transport.tls import CaFiles, TlsFiles, create_ca, issue_node_cert, load_identity

__all__ = [
    "AuthFailed",
    "BodyTooLarge",
    "CaFiles",
    "ConnectFailed",
    "Handler",
    "Peer",
    "PeerGone",
    "PeerState",
    "ProtocolError",
    "RemoteError",
    "Reply",
    "Request",
    "Response",
    "RpcEndpoint",
    "RpcFault",
    "RpcTimeout",
    "StreamCall",
    "TlsFiles",
    "TransportConfig",
    "TransportError",
    "UnsupportedAioquic",
    "create_ca",
    "issue_node_cert",
    "load_identity",
]
