"""The copy-free packet protection produces exactly aioquic's bytes, both ways."""

from __future__ import annotations

import os

from aioquic import _crypto
from aioquic.quic.crypto import CryptoPair
from hypothesis import given, settings
from hypothesis import strategies as st

from transport import quic_crypto

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
    import transport.quic  # noqa: F401

    assert _crypto.HeaderProtection.apply is quic_crypto.apply
    assert _crypto.HeaderProtection.remove is quic_crypto.remove
