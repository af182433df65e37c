"""Mutual authentication against hostile clients built on plain `aioquic.asyncio.connect`.

Each client below speaks our framing but breaks the rules in one way: no certificate,
a certificate from another CA, a valid certificate that skips or forges the proof, a
replayed proof, silence. None may get a single handler to run: the server's counter must
stay at 0 and the connection must be closed. A well-behaved raw client (the control)
shows that the harness itself can reach the handler.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict

import pytest
from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from cryptography.hazmat.primitives.asymmetric import ec

from shardfleet.transport import Response, RpcEndpoint, TransportConfig, create_ca, issue_node_cert
from shardfleet.transport.auth import ClientAuth, signed_message
from shardfleet.transport.connection import (
    CLOSE_AUTH_FAILED,
    CLOSE_AUTH_TIMEOUT,
    CLOSE_UNAUTHENTICATED,
)
from shardfleet.transport.framing import FrameDecoder, Header, encode_end, encode_header
from shardfleet.transport.quic import ALPN
from shardfleet.transport.tls import load_identity

pytestmark = pytest.mark.timeout(30)

AUTH_STREAM = 1  # the server opens it with the challenge
REQUEST = encode_header({"m": "count", "i": 1, "h": {}, "f": 0}) + encode_end()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca", "sec")
    create_ca(root / "other-ca", "intruders")
    return {
        "root": root,
        "server": issue_node_cert(root / "ca", "server-node", ["127.0.0.1"], root / "server"),
        "client": issue_node_cert(root / "ca", "client-node", ["127.0.0.1"], root / "client"),
        "stranger": issue_node_cert(root / "other-ca", "client-node", [], root / "stranger"),
    }


@pytest.fixture
async def server(pki):
    ep = RpcEndpoint(node_id="server-node", tls=pki["server"], host="127.0.0.1", port=0,
                     config=TransportConfig(auth_timeout=1.0))  # fmt: skip
    ep.calls = 0

    async def count(req):
        ep.calls += 1
        return Response({"peer": req.peer_id})

    ep.register("count", count)
    await ep.start()
    yield ep
    await ep.close()


class RawClient(QuicConnectionProtocol):
    """A bare aioquic client: records stream bytes and how the connection ended."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.streams: dict[int, bytes] = defaultdict(bytes)
        self.changed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self.streams[event.stream_id] += event.data
        self.changed.set()

    def datagram_received(self, data, addr) -> None:
        super().datagram_received(data, addr)
        close = self._quic._close_event  # seen at once, before aioquic's draining period
        if close is not None and self.close_code is None:
            self.close_code, self.close_reason = close.error_code, close.reason_phrase
        self.changed.set()

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def challenge(self) -> bytes:
        await self.wait_for(lambda: len(self.streams[AUTH_STREAM]) > 5)
        return self.streams[AUTH_STREAM]

    def send(self, stream_id: int, data: bytes, end: bool = True) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end)
        self.transmit()

    @property
    def binding(self) -> bytes:
        return self._quic.tls.client_random

    async def closed_by_server(self) -> tuple[int, str]:
        await self.wait_for(lambda: self.close_code is not None)
        return self.close_code, self.close_reason


def raw_config(pki, *, with_cert: bool = False) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name="server-node")
    config.verify_mode = ssl.CERT_REQUIRED
    config.load_verify_locations(cafile=str(pki["root"] / "ca" / "ca.crt"))
    if with_cert:  # aioquic only sends it if asked, and our server (aioquic) never asks
        config.load_cert_chain(pki["client"].cert, pki["client"].key)
    return config


def raw_connect(pki, server, **kwargs):
    return connect("127.0.0.1", server.port, configuration=raw_config(pki, **kwargs),
                   create_protocol=RawClient)  # fmt: skip


def replies(data: bytes) -> list[dict]:
    return [f.fields for f in FrameDecoder().feed(data) if isinstance(f, Header)]


async def test_control_a_correct_raw_client_reaches_the_handler(pki, server):
    async with raw_connect(pki, server) as client:
        auth = ClientAuth(identity=load_identity(pki["client"]), server_id="server-node",
                          binding=client.binding)  # fmt: skip
        challenge = await client.challenge()
        client.send(AUTH_STREAM, auth.feed(challenge))
        ok = encode_header({"a": "ok", "n": "client-node"}) + encode_end()
        await client.wait_for(lambda: client.streams[AUTH_STREAM] == challenge + ok)
        auth.feed(ok)
        assert auth.done
        client.send(0, REQUEST)
        await client.wait_for(lambda: b"peer" in client.streams[0])
        assert replies(client.streams[0])[0] == {"s": "ok", "h": {"peer": "client-node"}}
    assert server.calls == 1


@pytest.mark.parametrize("with_cert", [False, True])
async def test_client_that_skips_authentication(pki, server, with_cert):
    """No certificate at all, or a valid one never proven: the request closes the connection."""
    async with raw_connect(pki, server, with_cert=with_cert) as client:
        client.send(0, REQUEST)
        code, reason = await client.closed_by_server()
    assert code == CLOSE_UNAUTHENTICATED and "unauthenticated" in reason
    assert server.calls == 0


async def test_request_sent_after_the_challenge_but_before_the_proof(pki, server):
    async with raw_connect(pki, server) as client:
        await client.challenge()
        client.send(0, REQUEST)
        code, _ = await client.closed_by_server()
    assert code == CLOSE_UNAUTHENTICATED
    assert server.calls == 0


async def test_certificate_from_another_ca(pki, server):
    async with raw_connect(pki, server) as client:
        auth = ClientAuth(identity=load_identity(pki["stranger"]), server_id="server-node",
                          binding=client.binding)  # fmt: skip
        client.send(AUTH_STREAM, auth.feed(await client.challenge()))
        client.send(0, REQUEST)
        code, reason = await client.closed_by_server()
    assert code == CLOSE_AUTH_FAILED and "cluster CA" in reason
    assert server.calls == 0


async def test_valid_chain_with_a_forged_signature(pki, server):
    identity = load_identity(pki["client"])
    async with raw_connect(pki, server) as client:
        challenge = replies(await client.challenge())[0]["c"]
        message = signed_message(challenge, "server-node", "client-node", client.binding)
        forged = ec.generate_private_key(ec.SECP256R1()).sign(
            message, ec.ECDSA(identity.cert.signature_hash_algorithm)
        )
        proof = {"a": "proof", "n": "client-node", "chain": identity.chain_der, "sig": forged}
        client.send(AUTH_STREAM, encode_header(proof) + encode_end())
        client.send(0, REQUEST)
        code, reason = await client.closed_by_server()
    assert code == CLOSE_AUTH_FAILED and "signature" in reason
    assert server.calls == 0


async def test_proof_replayed_from_another_connection(pki, server):
    identity = load_identity(pki["client"])
    async with raw_connect(pki, server) as first:
        auth = ClientAuth(identity=identity, server_id="server-node", binding=first.binding)
        captured = auth.feed(await first.challenge())  # a valid proof, for THAT connection
    async with raw_connect(pki, server) as second:
        await second.challenge()
        second.send(AUTH_STREAM, captured)
        second.send(0, REQUEST)
        code, reason = await second.closed_by_server()
    assert code == CLOSE_AUTH_FAILED and "signature" in reason
    assert server.calls == 0


async def test_silent_client_is_closed_after_the_auth_timeout(pki, server):
    async with raw_connect(pki, server) as client:
        code, reason = await client.closed_by_server()
    assert code == CLOSE_AUTH_TIMEOUT and "timed out" in reason
    assert server.calls == 0
