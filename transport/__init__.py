"""QUIC RPC between nodes: mutual TLS under the cluster CA, streamed bodies, backpressure.

Imports nothing of ours. The public surface, all re-exported here:

    RpcEndpoint(node_id=, tls=, host=, port=, config=)  .register .start .call .open_stream
                                                         .peer_state .close
    Peer, PeerState, Request, Response, Reply, StreamCall, TransportConfig
    create_ca, issue_node_cert, load_identity, TlsFiles, CaFiles
    TransportError > ConnectFailed, AuthFailed, RpcTimeout, PeerGone, RemoteError, ...
    RpcFault (raised by handlers)
"""

from transport.calls import Peer, PeerState, Reply, Request, Response, StreamCall
from transport.config import TransportConfig
from transport.endpoint import Handler, RpcEndpoint
from transport.errors import (
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
from transport.tls import CaFiles, TlsFiles, create_ca, issue_node_cert, load_identity

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
    "create_ca",
    "issue_node_cert",
    "load_identity",
]
