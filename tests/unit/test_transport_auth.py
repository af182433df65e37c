"""Cluster certificates and the post-handshake client proof, sans-IO: bytes moved by hand."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from shardfleet.transport.auth import (
    ClientAuth,
    ServerAuth,
    signed_message,
    verify_proof,
)
from shardfleet.transport.errors import AuthFailed
from shardfleet.transport.framing import encode_end, encode_header
from shardfleet.transport.tls import (
    TlsFiles,
    check_node_id,
    create_ca,
    issue_node_cert,
    load_identity,
    verify_chain,
)

pytestmark = pytest.mark.timeout(60)

BINDING = bytes(range(32))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca", "unit")
    create_ca(root / "other-ca", "intruders")
    ids = {
        "a": load_identity(issue_node_cert(root / "ca", "node-a", ["127.0.0.1"], root / "a")),
        "b": load_identity(issue_node_cert(root / "ca", "node-b", ["::1", "b.lan"], root / "b")),
        "evil": load_identity(issue_node_cert(root / "other-ca", "node-b", [], root / "evil")),
    }
    return root, ids


def exchange(server: ServerAuth, client: ClientAuth, piece: int = 1 << 30) -> None:
    """Move the auth bytes between the two sides in pieces of `piece` bytes."""

    def move(data, feed):
        out = b""
        for i in range(0, len(data), piece):
            out += feed(data[i : i + piece]) or b""
        return out

    proof = move(server.challenge_bytes(), client.feed)
    ok = move(proof, server.feed)
    assert move(ok, client.feed) == b""


@pytest.mark.parametrize("piece", [1, 7, 1 << 30])
def test_exchange_authenticates_the_client(pki, piece):
    _, ids = pki
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    client = ClientAuth(identity=ids["b"], server_id="node-a", binding=BINDING)
    exchange(server, client, piece)
    assert server.peer_id == "node-b"
    assert client.done


def test_exchange_carries_both_boot_ids(pki):
    """Each end learns the other's boot id (how a node tells that a peer restarted); an end
    that sends none, as older releases do, leaves it unknown rather than failing."""
    _, ids = pki
    server = ServerAuth(
        server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING, boot=b"server-1"
    )
    client = ClientAuth(identity=ids["b"], server_id="node-a", binding=BINDING, boot=b"client-1")
    exchange(server, client)
    assert (server.peer_boot, client.peer_boot) == (b"client-1", b"server-1")
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    client = ClientAuth(identity=ids["b"], server_id="node-a", binding=BINDING)
    exchange(server, client)
    assert server.peer_id == "node-b" and client.done
    assert (server.peer_boot, client.peer_boot) == (None, None)


def test_certificate_from_another_ca_is_rejected(pki):
    _, ids = pki
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    client = ClientAuth(identity=ids["evil"], server_id="node-a", binding=BINDING)
    proof = client.feed(server.challenge_bytes())
    with pytest.raises(AuthFailed, match="cluster CA"):
        server.feed(proof)
    assert server.peer_id is None


def test_proof_is_bound_to_the_connection(pki):
    _, ids = pki
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    client = ClientAuth(identity=ids["b"], server_id="node-a", binding=b"\x00" * 32)
    with pytest.raises(AuthFailed, match="signature"):
        server.feed(client.feed(server.challenge_bytes()))


def test_replayed_proof_fails_on_a_new_challenge(pki):
    _, ids = pki
    first = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    proof = ClientAuth(identity=ids["b"], server_id="node-a", binding=BINDING).feed(
        first.challenge_bytes()
    )
    first.feed(proof)
    second = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    with pytest.raises(AuthFailed, match="signature"):
        second.feed(proof)


def test_proof_cannot_be_relayed_to_another_server(pki):
    """A proof made for node-a does not open node-c, even with the same challenge."""
    _, ids = pki
    for_a = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    proof = ClientAuth(identity=ids["b"], server_id="node-a", binding=BINDING).feed(
        for_a.challenge_bytes()
    )
    node_c = ServerAuth(
        server_id="node-c", ca_cert=ids["a"].ca_cert, binding=BINDING, challenge=for_a.challenge
    )
    with pytest.raises(AuthFailed, match="signature"):
        node_c.feed(proof)


def test_signature_by_another_key_with_a_valid_chain_is_rejected(pki):
    _, ids = pki
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    message = signed_message(server.challenge, "node-a", "node-b", BINDING)
    forged = ec.generate_private_key(ec.SECP256R1()).sign(
        message, ec.ECDSA(ids["b"].cert.signature_hash_algorithm)
    )
    proof = {"a": "proof", "n": "node-b", "chain": ids["b"].chain_der, "sig": forged}
    with pytest.raises(AuthFailed, match="signature"):
        server.feed(encode_header(proof) + encode_end())


def test_claimed_id_must_match_the_certificate(pki):
    _, ids = pki
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    message = signed_message(server.challenge, "node-a", "node-z", BINDING)
    sig = ids["b"].key.sign(message, ec.ECDSA(ids["b"].cert.signature_hash_algorithm))
    proof = {"a": "proof", "n": "node-z", "chain": ids["b"].chain_der, "sig": sig}
    with pytest.raises(AuthFailed, match="claims"):
        server.feed(encode_header(proof) + encode_end())


def test_expired_certificate_is_rejected(pki):
    _, ids = pki
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3651)
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING, now=later)
    proof = ClientAuth(identity=ids["b"], server_id="node-a", binding=BINDING).feed(
        server.challenge_bytes()
    )
    with pytest.raises(AuthFailed, match="not valid"):
        server.feed(proof)


@pytest.mark.parametrize(
    "message",
    [
        {"a": "hello"},
        {"a": "proof", "n": "node-b", "chain": "nope", "sig": b""},
        {"a": "proof", "n": "node-b", "chain": [b"not der"], "sig": b"x"},
        {"a": "proof", "n": 5, "chain": [], "sig": b"x"},
    ],
)
def test_malformed_proofs(pki, message):
    _, ids = pki
    with pytest.raises(AuthFailed):
        verify_proof(message, challenge=b"c" * 32, server_id="node-a", binding=BINDING,
                     ca_cert=ids["a"].ca_cert)  # fmt: skip


def test_garbage_and_oversized_auth_streams(pki):
    _, ids = pki
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    with pytest.raises(AuthFailed, match="framing"):
        server.feed(b"\x09\x00\x00\x00\x00")
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    with pytest.raises(AuthFailed):
        server.feed(b"\x01\x00\x10\x00\x00")  # a 1 MiB header announced: over the auth cap


def test_client_checks_the_challenge(pki):
    _, ids = pki
    client = ClientAuth(identity=ids["b"], server_id="node-x", binding=BINDING)
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    with pytest.raises(AuthFailed, match="expected 'node-x'"):
        client.feed(server.challenge_bytes())
    client = ClientAuth(identity=ids["b"], server_id="node-a", binding=BINDING)
    with pytest.raises(AuthFailed, match="size"):
        client.feed(encode_header({"a": "challenge", "c": b"short", "n": "node-a"}))


def test_client_reports_a_refusal(pki):
    _, ids = pki
    client = ClientAuth(identity=ids["b"], server_id="node-a", binding=BINDING)
    server = ServerAuth(server_id="node-a", ca_cert=ids["a"].ca_cert, binding=BINDING)
    client.feed(server.challenge_bytes())
    with pytest.raises(AuthFailed, match="refused"):
        client.feed(encode_header({"a": "denied", "m": "no"}))
    assert not client.done


# -- certificates --------------------------------------------------------------------------
def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ca_files_and_no_overwrite(tmp_path):
    files = create_ca(tmp_path / "ca", "c1")
    assert mode(files.key) == 0o600
    ca = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(FileExistsError, match="refusing"):
        create_ca(tmp_path / "ca", "c1")


def test_node_certificate_contents(pki):
    root, ids = pki
    cert = ids["b"].cert
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["node-b", "b.lan"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    files = TlsFiles.in_dir(root / "b")
    assert mode(files.key) == 0o600
    assert files.ca_cert.read_bytes() == (root / "ca" / "ca.crt").read_bytes()
    assert verify_chain(ids["b"].chain_der, ids["a"].ca_cert) == "node-b"
    with pytest.raises(ValueError, match="cluster CA"):
        verify_chain(ids["evil"].chain_der, ids["a"].ca_cert)


def test_issue_refuses_to_replace_a_key_unless_asked(pki):
    root, _ = pki
    with pytest.raises(FileExistsError):
        issue_node_cert(root / "ca", "node-a", [], root / "a")
    files = issue_node_cert(root / "ca", "node-a2", [], root / "a2")
    again = issue_node_cert(root / "ca", "node-a2", ["10.0.0.2"], root / "a2", overwrite=True)
    assert load_identity(again).node_id == "node-a2" and files == again


def test_clear_errors_for_missing_or_mismatched_files(tmp_path, pki):
    root, _ = pki
    with pytest.raises(FileNotFoundError, match="certs init"):
        issue_node_cert(tmp_path / "nowhere", "node-x", [], tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="certs issue"):
        load_identity(TlsFiles.in_dir(tmp_path / "nothing"))
    mixed = TlsFiles(root / "a" / "ca.crt", root / "a" / "node.crt", root / "b" / "node.key")
    with pytest.raises(ValueError, match="does not belong"):
        load_identity(mixed)
    foreign = TlsFiles(
        root / "a" / "ca.crt", root / "evil" / "node.crt", root / "evil" / "node.key"
    )
    with pytest.raises(ValueError, match="not valid under"):
        load_identity(foreign)


@pytest.mark.parametrize("bad", ["Node-1", "node_1", "", "-x", "a" * 64, "a..b"])
def test_node_ids_must_be_dns_names(bad):
    with pytest.raises(ValueError):
        check_node_id(bad)
