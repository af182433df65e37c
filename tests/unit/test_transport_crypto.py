"""The copy-free packet protection produces exactly aioquic's bytes, both ways."""

from __future__ import annotations

import os

from aioquic import _crypto
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.tls import CipherSuite
from hypothesis import given, settings
from hypothesis import strategies as st

from shardfleet.transport import quic_crypto

CIPHERS = [(b"aes-128-ecb", 16), (b"aes-256-ecb", 32), (b"chacha20", 32)]


@st.composite
def packets(draw: st.DrawFn) -> tuple[bytes, bytes, int]:
    """(plain header, protected payload, pn_offset) for short and long header packets."""
    pn_length = draw(st.integers(1, 4))
    long_form = draw(st.booleans())
    first = (0xC0 if long_form else 0x40) | (pn_length - 1) | draw(st.sampled_from([0, 4, 8, 12]))
    rest = draw(st.binary(min_size=0, max_size=40))
    pn = draw(st.binary(min_size=pn_length, max_size=pn_length))
    payload = draw(st.binary(min_size=20, max_size=3000))
    header = bytes([first]) + rest + pn
    return header, payload, len(header) - pn_length


@settings(max_examples=300, deadline=None)
@given(packets(), st.sampled_from(CIPHERS), st.binary(min_size=32, max_size=32))
def test_header_protection_matches_aioquic(packet, cipher, key) -> None:
    header, payload, pn_offset = packet
    name, key_len = cipher
    hp = _crypto.HeaderProtection(name, key[:key_len])
    protected = quic_crypto.ORIGINAL_APPLY(hp, header, payload)
    assert quic_crypto.apply(hp, header, payload) == protected
    assert quic_crypto.remove(hp, protected, pn_offset) == quic_crypto.ORIGINAL_REMOVE(
        hp, protected, pn_offset
    )
    assert quic_crypto.remove(hp, protected, pn_offset)[0] == header


def test_decrypt_matches_aioquic() -> None:
    cid = os.urandom(8)
    client, server = CryptoPair(), CryptoPair()
    client.setup_initial(cid, is_client=True, version=1)
    server.setup_initial(cid, is_client=False, version=1)
    header = bytes([0xC3]) + os.urandom(20) + (7).to_bytes(4, "big")
    payload = os.urandom(65000)
    packet = client.encrypt_packet(header, payload, 7)
    ours = quic_crypto.decrypt_packet(server.recv, packet, len(header) - 4, 7)
    theirs = quic_crypto.ORIGINAL_DECRYPT(server.recv, packet, len(header) - 4, 7)
    assert ours == theirs
    assert ours[0] == header and ours[1] == payload and ours[2] == 7


def test_installed_by_the_transport() -> None:
    import shardfleet.transport.quic  # noqa: F401

    assert _crypto.HeaderProtection.apply is quic_crypto.apply
    assert _crypto.HeaderProtection.remove is quic_crypto.remove
    assert QuicPacketBuilder._end_packet is quic_crypto.end_packet


class _Ours(QuicPacketBuilder):
    _end_packet = quic_crypto.end_packet


class _Theirs(QuicPacketBuilder):
    _end_packet = quic_crypto.ORIGINAL_END_PACKET


def _one_rtt(suite: CipherSuite, secret: bytes) -> CryptoPair:
    pair = CryptoPair()
    pair.send.setup(cipher_suite=suite, secret=secret, version=1)
    pair.recv.setup(cipher_suite=suite, secret=secret, version=1)
    return pair


def _build(cls: type[QuicPacketBuilder], suite, secret, frames, pn, initial_first):
    builder = cls(
        host_cid=b"h" * 8,
        peer_cid=b"p" * 8,
        version=1,
        is_client=True,
        max_datagram_size=65000,
        packet_number=pn,
    )
    pair = _one_rtt(suite, secret)
    if initial_first:  # a coalesced datagram: the 1-RTT packet does not start it
        initial = CryptoPair()
        initial.setup_initial(b"c" * 8, is_client=True, version=1)
        builder.start_packet(QuicPacketType.INITIAL, initial)
        builder.start_frame(QuicFrameType.PING)
    for data in frames:
        builder.start_packet(QuicPacketType.ONE_RTT, pair)
        if data is None:
            continue  # an empty packet: cancelled
        buf = builder.start_frame(QuicFrameType.STREAM_BASE | 2, capacity=9)
        buf.push_uint_var(4)
        buf.push_uint_var(len(data))
        buf.push_bytes(data)
    datagrams, sent = builder.flush()
    return [bytes(d) for d in datagrams], [
        (p.packet_number, p.sent_bytes, p.in_flight, p.is_ack_eliciting) for p in sent
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(
        [
            CipherSuite.AES_128_GCM_SHA256,
            CipherSuite.AES_256_GCM_SHA384,
            CipherSuite.CHACHA20_POLY1305_SHA256,
        ]
    ),
    st.binary(min_size=48, max_size=48),
    st.lists(st.one_of(st.none(), st.binary(max_size=3000)), min_size=1, max_size=4),
    st.integers(0, 70000),
    st.booleans(),
)
def test_sealed_packets_match_aioquic(suite, secret, frames, pn, initial_first) -> None:
    secret = secret[: 48 if suite == CipherSuite.AES_256_GCM_SHA384 else 32]
    ours = _build(_Ours, suite, secret, frames, pn, initial_first)
    assert ours == _build(_Theirs, suite, secret, frames, pn, initial_first)


def test_a_full_datagram_is_sealed_once_and_opens() -> None:
    suite, secret = CipherSuite.AES_128_GCM_SHA256, os.urandom(32)
    data = os.urandom(64000)
    datagrams, sent = _build(_Ours, suite, secret, [data], 5, False)
    assert len(datagrams) == 1 and sent[0][1] == len(datagrams[0])
    header, payload, number = _one_rtt(suite, secret).decrypt_packet(datagrams[0], 1 + 8, 4)
    assert number == 5 and data in payload
