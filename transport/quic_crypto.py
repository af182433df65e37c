"""Packet protection for aioquic without whole-packet copies (part of the aioquic seam).

aioquic 1.7.2's `HeaderProtection.apply` builds ``bytearray(header + payload)`` and then
``bytes()`` of it to flip a handful of header bits: three copies of every 64 KB packet
sent. `HeaderProtection.remove` copies the whole received packet to unmask its first few
bytes, and `CryptoContext.decrypt_packet` slices the payload out (one more copy) before
AES-GCM reads it. With 64 KB datagrams those copies (and the page faults of their fresh
allocations) were a tenth of a sending core. The versions here touch only the header and
hand the AEAD a memoryview; the bytes on the wire are identical (tests/unit check them
against aioquic's own code). `install()` puts them in place; `transport.quic` calls it.
"""

from __future__ import annotations

from aioquic import _crypto
from aioquic.quic import crypto
from aioquic.quic.packet import decode_packet_number, is_long_header

PN_MAX = _crypto.PACKET_NUMBER_LENGTH_MAX
SAMPLE = _crypto.SAMPLE_LENGTH

ORIGINAL_APPLY = _crypto.HeaderProtection.apply
ORIGINAL_REMOVE = _crypto.HeaderProtection.remove
ORIGINAL_DECRYPT = crypto.CryptoContext.decrypt_packet


def _flip_first_byte(header: bytearray, mask: bytes) -> None:
    header[0] ^= mask[0] & (0x0F if header[0] & 0x80 else 0x1F)  # long vs short header


def apply(self: _crypto.HeaderProtection, plain_header: bytes, protected_payload: bytes) -> bytes:
    pn_length = (plain_header[0] & 0x03) + 1
    sample_offset = PN_MAX - pn_length
    mask = self._mask(protected_payload[sample_offset : sample_offset + SAMPLE])
    header = bytearray(plain_header)
    _flip_first_byte(header, mask)
    pn_offset = len(plain_header) - pn_length
    for i in range(pn_length):
        header[pn_offset + i] ^= mask[1 + i]
    return b"".join((header, protected_payload))  # the one copy of the payload


def remove(self: _crypto.HeaderProtection, packet: bytes, pn_offset: int) -> tuple[bytes, int]:
    sample_offset = pn_offset + PN_MAX
    if sample_offset + SAMPLE > len(packet):
        raise _crypto.CryptoError("Packet is too short to sample")
    mask = self._mask(packet[sample_offset : sample_offset + SAMPLE])
    header = bytearray(packet[:sample_offset])  # the header and the longest packet number
    _flip_first_byte(header, mask)
    pn_length = (header[0] & 0x03) + 1
    pn_truncated = 0
    for i in range(pn_length):
        header[pn_offset + i] ^= mask[1 + i]
        pn_truncated = header[pn_offset + i] | (pn_truncated << 8)
    return bytes(header[: pn_offset + pn_length]), pn_truncated


def decrypt_packet(
    self: crypto.CryptoContext, packet: bytes, encrypted_offset: int, expected_packet_number: int
) -> tuple[bytes, bytes, int, bool]:
    """aioquic's CryptoContext.decrypt_packet, reading the payload through a memoryview."""
    if self.aead is None:
        raise crypto.KeyUnavailableError("Decryption key is not available")
    plain_header, packet_number = self.hp.remove(packet, encrypted_offset)
    first_byte = plain_header[0]
    pn_length = (first_byte & 0x03) + 1
    packet_number = decode_packet_number(packet_number, pn_length * 8, expected_packet_number)
    context = self
    if not is_long_header(first_byte) and (first_byte & 4) >> 2 != self.key_phase:
        context = crypto.next_key_phase(self)
    payload = context.aead.decrypt(
        memoryview(packet)[len(plain_header) :], plain_header, packet_number
    )
    return plain_header, payload, packet_number, context is not self


def install() -> None:
    """Use the copy-free versions for every aioquic connection in this process."""
    _crypto.HeaderProtection.apply = apply  # type: ignore[method-assign]
    _crypto.HeaderProtection.remove = remove  # type: ignore[method-assign]
    crypto.CryptoContext.decrypt_packet = decrypt_packet  # type: ignore[method-assign]
