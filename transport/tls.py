"""Cluster CA and node certificates (ECDSA P-256), and checking a peer's chain.

One CA per cluster signs every node certificate directly (no intermediates). A node
certificate carries CN = node id and the SANs DNS:<node id> plus each host the node is
reached at (IP or DNS). The node id is what peers verify: a client connects with
``server_name = peer.node_id``, and a server reads the client's node id from the chain
it proves ownership of after the handshake (see `transport.auth`).

Why P-256: aioquic's TLS 1.3 signs and verifies ECDSA P-256 (and Ed25519 when the
OpenSSL backend supports it, which it does here), but P-256 is what every TLS stack and
`cryptography`'s X.509 verifier accept without caveats.

Files (the CLI's `shardfleet certs init` / `certs issue NODE` call these)::

    <ca_dir>/ca.crt   ca.key (0600)          create_ca()
    <out_dir>/ca.crt  node.crt  node.key (0600)   issue_node_cert()
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"

# A node id must be usable as a DNS name: it is matched by TLS hostname verification.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NODE_ID = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_CLOCK_SKEW = dt.timedelta(hours=1)


@dataclass(frozen=True)
class CaFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsFiles:
    """Where one node's TLS material lives: the cluster CA, its cert and its key."""

    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        """The layout `issue_node_cert` writes: ca.crt, node.crt, node.key."""
        directory = Path(directory)
        return cls(directory / CA_CERT, directory / NODE_CERT, directory / NODE_KEY)


@dataclass(frozen=True)
class NodeIdentity:
    """A node's loaded TLS identity: what the endpoint needs in memory."""

    node_id: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    files: TlsFiles

    @property
    def chain_der(self) -> list[bytes]:
        return [self.cert.public_bytes(serialization.Encoding.DER)]


def check_node_id(node_id: str) -> str:
    """Return `node_id` if it is a valid lowercase DNS name, else raise ValueError."""
    if not isinstance(node_id, str) or len(node_id) > 253 or not _NODE_ID.match(node_id):
        raise ValueError(
            f"node id {node_id!r} must be a lowercase DNS name (letters, digits, '-', '.'); "
            "it is checked by TLS hostname verification"
        )
    return node_id


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write a file readable by its owner only (0600), atomically when overwriting."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    tmp = path.with_name(path.name + ".tmp") if overwrite else path
    if overwrite:
        tmp.unlink(missing_ok=True)
    fd = os.open(tmp, flags, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if overwrite:
        os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _serial() -> int:
    return int.from_bytes(os.urandom(16), "big") >> 1


def create_ca(directory: Path, cluster_name: str, *, days: int = 7300) -> CaFiles:
    """Create the cluster CA in `directory` (ca.crt, ca.key 0600).

    Refuses to overwrite an existing CA: replacing it would lock every node out.
    """
    if not cluster_name or not cluster_name.isprintable():
        raise ValueError("cluster name must be a non-empty printable string")
    directory = Path(directory)
    files = CaFiles(directory / CA_CERT, directory / CA_KEY)
    for path in (files.cert, files.key):
        if path.exists():
            raise FileExistsError(f"a cluster CA already exists at {path}; refusing to replace it")
    directory.mkdir(parents=True, exist_ok=True)

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shardfleet"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cluster_name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"shardfleet CA {cluster_name}"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key), overwrite=False)
    _write_public(files.cert, _cert_pem(cert))
    return files


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_dir = Path(ca_dir)
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    for path in (cert_path, key_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"cluster CA file {path} not found; create the CA first (shardfleet certs init)"
            )
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} is not an EC private key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise ValueError(f"{key_path} does not belong to {cert_path}")
    return cert, key


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(check_node_id(host.lower()))


def issue_node_cert(
    ca_dir: Path,
    node_id: str,
    hosts: list[str],
    out_dir: Path,
    days: int = 3650,
    *,
    overwrite: bool = False,
) -> TlsFiles:
    """Issue a certificate for `node_id` signed by the CA in `ca_dir`.

    Writes node.crt, node.key (0600) and a copy of ca.crt into `out_dir`. The cert has
    CN = node id, SAN DNS:<node id> plus every host (IP or DNS), and both serverAuth and
    clientAuth usages, since every node is both a server and a client. Refuses to replace
    an existing node key unless `overwrite`.
    """
    check_node_id(node_id)
    ca_cert, ca_key = _load_ca(ca_dir)
    out_dir = Path(out_dir)
    files = TlsFiles.in_dir(out_dir)
    if files.key.exists() and not overwrite:
        raise FileExistsError(f"{files.key} already exists; pass overwrite=True to re-issue")
    out_dir.mkdir(parents=True, exist_ok=True)

    sans: list[x509.GeneralName] = [x509.DNSName(node_id)]
    for host in hosts:
        entry = _san_entry(host)
        if entry not in sans:
            sans.append(entry)

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cluster = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shardfleet")]
    if cluster:
        subject.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cluster[0].value))
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, node_id))
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key), overwrite=overwrite)
    _write_public(files.cert, _cert_pem(cert))
    _write_public(files.ca_cert, _cert_pem(ca_cert))
    return files


def load_identity(files: TlsFiles) -> NodeIdentity:
    """Load and check a node's TLS files: present, key matches cert, cert valid under the CA."""
    for label, path in (("CA certificate", files.ca_cert), ("node certificate", files.cert),
                        ("node key", files.key)):  # fmt: skip
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"{label} {path} not found; issue one with `shardfleet certs issue NODE`"
            )
    ca_cert = x509.load_pem_x509_certificate(Path(files.ca_cert).read_bytes())
    cert = x509.load_pem_x509_certificate(Path(files.cert).read_bytes())
    key = serialization.load_pem_private_key(Path(files.key).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.key} is not an EC private key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise ValueError(f"{files.key} does not belong to {files.cert}")
    try:
        node_id = verify_chain([cert.public_bytes(serialization.Encoding.DER)], ca_cert)
    except ValueError as exc:
        raise ValueError(f"{files.cert} is not valid under {files.ca_cert}: {exc}") from exc
    return NodeIdentity(node_id, cert, key, ca_cert, files)


def verify_chain(
    chain_der: list[bytes], ca_cert: x509.Certificate, *, now: dt.datetime | None = None
) -> str:
    """Verify a node's chain (leaf first, DER) against the cluster CA; return its node id.

    Checks, via `cryptography`'s RFC 5280 verifier with a store holding only our CA:
    signature up to OUR CA, validity dates at `now`, CA/leaf constraints, clientAuth
    usage. Then the node id: CN must be a valid node id and also present as a DNS SAN.
    Raises ValueError with the reason.
    """
    if not chain_der or len(chain_der) > 4:
        raise ValueError("expected a certificate chain of 1 to 4 certificates")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as exc:
        raise ValueError(f"unparseable certificate: {exc}") from exc
    leaf, intermediates = certs[0], certs[1:]
    verifier = (
        PolicyBuilder()
        .store(Store([ca_cert]))
        .time(now or _now())
        .max_chain_depth(1)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise ValueError(f"certificate not valid under the cluster CA: {exc}") from exc
    if verified.chain[-1] != ca_cert:
        raise ValueError("certificate chain does not end at the cluster CA")
    cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or not isinstance(cns[0].value, str):
        raise ValueError("certificate needs exactly one common name")
    node_id = check_node_id(cns[0].value)
    dns = [s.value for s in (verified.subjects or []) if isinstance(s, x509.DNSName)]
    if node_id not in dns:
        raise ValueError(f"certificate CN {node_id!r} is not among its DNS names")
    return node_id
