"""Client authentication after the QUIC handshake: sans-IO challenge and proof.

Why this exists: aioquic's TLS server never asks for a client certificate. Its
`tls.Context` has a `_request_client_certificate` flag ("for test purposes only"), not
reachable from `QuicConfiguration`; and even with it set, `_server_handle_certificate`
accepts an empty Certificate message and `_server_handle_certificate_verify` checks only
the signature, never the chain against a CA (`verify_certificate` is called on the client
path alone). So TLS proves the *server* to the client, and this module proves the
*client* to the server, over the encrypted connection, before anything else is served.

The exchange, on the first server-initiated bidirectional stream (the "auth stream")::

    server -> client  HEADER {a: "challenge", c: 32 random bytes, n: server node id, b: boot}
    client -> server  HEADER {a: "proof", n: client node id, chain: [DER...], sig: ..., b: boot} END
    server -> client  HEADER {a: "ok", n: client node id} END          (or closes)

The signature covers ``LABEL | challenge | server id | client id | binding`` (each
length-prefixed), where binding is the TLS ClientHello random of THIS connection: both
ends know it, it is covered by the server's handshake signature, and it differs for
every connection, so a proof cannot be replayed on another connection, nor relayed to
another server (the server id is inside). The server checks the chain against its
cluster CA (dates, usage, CA identity), the signature with the leaf's key, and that the
claimed id is the certificate's node id. Until the "ok", the server serves nothing: any
other stream closes the connection, and so does silence past the auth timeout.

`b` (optional, up to 32 bytes) is each end's boot id: random per endpoint, so per node
process. It tells a node that a peer restarted (a new boot id under the same node id) and
that its connections to the old process are dead (see `RpcEndpoint`). It needs no
signature: it travels inside this TLS connection, next to (client) or before (server) the
proof that authenticates the connection, and is used only once the proof checked out.
An end that sends none (an older release) is never taken for restarted.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from shardfleet.transport.errors import AuthFailed, ProtocolError
from shardfleet.transport.framing import End, FrameDecoder, Header, encode_end, encode_header
from shardfleet.transport.tls import NodeIdentity, verify_chain

LABEL = b"shardfleet-rpc-auth-v1"
CHALLENGE_SIZE = 32
MAX_AUTH_MESSAGE = 64 * 1024
MAX_BOOT_ID = 32
_U16 = struct.Struct(">H")


def signed_message(challenge: bytes, server_id: str, client_id: str, binding: bytes) -> bytes:
    """The exact bytes a client signs; length-prefixed so no two tuples collide."""
    parts = [challenge, server_id.encode(), client_id.encode(), binding]
    return LABEL + b"".join(_U16.pack(len(p)) + p for p in parts)


def sign(identity: NodeIdentity, message: bytes) -> bytes:
    key = identity.key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_signature(cert: x509.Certificate, message: bytes, signature: bytes) -> None:
    """Raise AuthFailed unless `signature` over `message` was made by `cert`'s key."""
    public = cert.public_key()
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            raise AuthFailed("unsupported client key type")
    except InvalidSignature as exc:
        raise AuthFailed("bad proof signature") from exc


def verify_proof(
    fields: dict[str, Any],
    *,
    challenge: bytes,
    server_id: str,
    binding: bytes,
    ca_cert: x509.Certificate,
    now: dt.datetime | None = None,
) -> str:
    """Check a client's proof message; return its authenticated node id or raise AuthFailed."""
    if fields.get("a") != "proof":
        raise AuthFailed("expected an auth proof")
    client_id, chain, sig = fields.get("n"), fields.get("chain"), fields.get("sig")
    if not isinstance(client_id, str) or not isinstance(sig, bytes):
        raise AuthFailed("malformed proof")
    if not isinstance(chain, list) or not all(isinstance(c, bytes) for c in chain):
        raise AuthFailed("malformed certificate chain")
    try:
        cert_id = verify_chain(chain, ca_cert, now=now)
    except ValueError as exc:
        raise AuthFailed(f"client certificate rejected: {exc}") from exc
    if cert_id != client_id:
        raise AuthFailed(f"proof claims {client_id!r} but the certificate is {cert_id!r}")
    leaf = x509.load_der_x509_certificate(chain[0])
    verify_signature(leaf, signed_message(challenge, server_id, client_id, binding), sig)
    return cert_id


def boot_of(fields: dict[str, Any]) -> bytes | None:
    """The boot id an auth message carries, if well-formed."""
    boot = fields.get("b")
    return boot if isinstance(boot, bytes) and 0 < len(boot) <= MAX_BOOT_ID else None


class _AuthReader:
    """Collects the HEADER frames of the auth stream, bounded in size."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder(max_header_size=MAX_AUTH_MESSAGE)
        self._received = 0
        self._heads: list[dict[str, Any]] = []
        self.ended = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._received += len(data)
        if self._received > 2 * MAX_AUTH_MESSAGE:
            raise AuthFailed("auth stream too long")
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            raise AuthFailed(f"bad auth framing: {exc}") from exc
        heads = []
        for frame in frames:
            if isinstance(frame, Header):
                heads.append(frame.fields)
            elif isinstance(frame, End):
                self.ended = True
            else:
                raise AuthFailed(f"unexpected frame on the auth stream: {frame!r:.60}")
        return heads


class ServerAuth:
    """The server's side of the exchange for one connection.

    `challenge_bytes()` is sent first; `feed()` takes client bytes and returns the reply
    bytes (ok + END) once a valid proof arrived, with `peer_id` set; it raises AuthFailed
    on anything else. `now` is injectable for tests of certificate dates.
    """

    def __init__(
        self,
        *,
        server_id: str,
        ca_cert: x509.Certificate,
        binding: bytes,
        challenge: bytes | None = None,
        now: dt.datetime | None = None,
        boot: bytes = b"",
    ) -> None:
        self.server_id = server_id
        self.challenge = challenge if challenge is not None else os.urandom(CHALLENGE_SIZE)
        self.peer_id: str | None = None
        self.peer_boot: bytes | None = None  # the client's boot id, once authenticated
        self._boot = boot
        self._ca_cert = ca_cert
        self._binding = binding
        self._now = now
        self._reader = _AuthReader()

    def challenge_bytes(self) -> bytes:
        fields: dict[str, Any] = {"a": "challenge", "c": self.challenge, "n": self.server_id}
        if self._boot:
            fields["b"] = self._boot
        return encode_header(fields)

    def feed(self, data: bytes) -> bytes | None:
        if self.peer_id is not None:
            if data:
                self._reader.feed(data)  # only a late END/FIN is expected
            return None
        heads = self._reader.feed(data)
        if not heads:
            return None
        self.peer_id = verify_proof(
            heads[0],
            challenge=self.challenge,
            server_id=self.server_id,
            binding=self._binding,
            ca_cert=self._ca_cert,
            now=self._now,
        )
        self.peer_boot = boot_of(heads[0])
        return encode_header({"a": "ok", "n": self.peer_id}) + encode_end()


class ClientAuth:
    """The client's side: answer the challenge, then wait for the server's "ok".

    `feed()` returns the proof bytes once the challenge is complete, then None; `done`
    turns true when the "ok" arrived. Raises AuthFailed if the challenge names another
    server than the one TLS verified, or the server says anything but ok.
    """

    def __init__(
        self, *, identity: NodeIdentity, server_id: str, binding: bytes, boot: bytes = b""
    ) -> None:
        self.identity = identity
        self.server_id = server_id
        self.done = False
        self.peer_boot: bytes | None = None  # the server's boot id, from its challenge
        self._boot = boot
        self._binding = binding
        self._answered = False
        self._reader = _AuthReader()

    def feed(self, data: bytes) -> bytes | None:
        out = b""
        for head in self._reader.feed(data):
            if not self._answered:
                out += self._answer(head)
            elif head.get("a") == "ok" and head.get("n") == self.identity.node_id:
                self.done = True
            else:
                raise AuthFailed(f"server refused our proof: {head.get('m', head.get('a'))}")
        return out or None

    def _answer(self, head: dict[str, Any]) -> bytes:
        challenge, server_id = head.get("c"), head.get("n")
        if head.get("a") != "challenge" or not isinstance(challenge, bytes):
            raise AuthFailed("expected an auth challenge")
        if len(challenge) != CHALLENGE_SIZE:
            raise AuthFailed("auth challenge has the wrong size")
        if server_id != self.server_id:
            raise AuthFailed(f"challenge from {server_id!r}, expected {self.server_id!r}")
        me = self.identity.node_id
        sig = sign(self.identity, signed_message(challenge, server_id, me, self._binding))
        self._answered = True
        self.peer_boot = boot_of(head)
        proof = {"a": "proof", "n": me, "chain": self.identity.chain_der, "sig": sig}
        if self._boot:
            proof["b"] = self._boot
        return encode_header(proof, max_size=MAX_AUTH_MESSAGE) + encode_end()
