"""HTTPS for the S3 listener: its SSLContext, and a new certificate on SIGHUP.

With `tls_cert` and `tls_key` configured, the S3 listener (S3, /health, /metrics and the
admin API alike) speaks TLS only. The context starts from Python's defaults for a server
(`ssl.create_default_context(Purpose.CLIENT_AUTH)`: OpenSSL's secure cipher list, no
compression, no renegotiation), accepts TLS 1.2 or newer (`tls_min_version` can raise it
to 1.3) and offers ALPN http/1.1. Clients are not asked for a certificate: S3 requests
are authenticated by their signatures.

Rotation: `ServerTls.reload()` (SIGHUP, see node.app.Node.reload) reads both files again
and loads them into the same context, which the listening socket keeps using, so every
handshake from then on presents the new certificate while established connections carry
on undisturbed. The new pair is checked first (each file parses, the key is unencrypted
and belongs to the certificate, the certificate has not expired) and then loaded from the
bytes just checked, staged in memory files (memfd), not re-read from the paths: a file
half-written by a renewal job, or a key that does not match, is refused with an error in
the log, and the previous certificate stays in use.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsError(OSError):
    """The certificate or key cannot be used; the message names the file and why."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    subject: str
    serial: int
    not_after: dt.datetime

    def __str__(self) -> str:
        return f"{self.subject}, serial {self.serial:x}, valid until {self.not_after:%Y-%m-%d %H:%M} UTC"


def server_context(min_version: str = "1.2") -> ssl.SSLContext:
    """An SSLContext for the S3 listener, without a certificate yet."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = max(MIN_VERSIONS[min_version], ssl.TLSVersion.TLSv1_2)
    ctx.verify_mode = ssl.CERT_NONE  # no client certificates: requests carry signatures
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def check_pair(cert_pem: bytes, key_pem: bytes, cert: Path, key: Path) -> CertInfo:
    """Raise TlsError unless `cert_pem` is a PEM chain whose first certificate is current
    and belongs to the unencrypted PEM key `key_pem`; describe that certificate."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TlsError(f"tls_cert {cert}: not a PEM certificate ({exc})") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TlsError(f"tls_key {key}: the key is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TlsError(f"tls_key {key}: not a PEM private key ({exc})") from None
    leaf = chain[0]
    if private.public_key() != leaf.public_key():
        raise TlsError(f"tls_key {key} does not belong to the certificate in tls_cert {cert}")
    now = dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc <= now:
        raise TlsError(
            f"tls_cert {cert}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if leaf.not_valid_before_utc > now:
        log.warning(
            "tls_cert %s: the certificate is not valid before %s (clients will refuse it until then)",
            cert,
            leaf.not_valid_before_utc,
        )
    return CertInfo(leaf.subject.rfc4514_string(), leaf.serial_number, leaf.not_valid_after_utc)


@contextlib.contextmanager
def _in_memory(data: bytes, fallback: Path) -> Iterator[str]:
    """A path that reads `data`: a memory file's /proc/self/fd entry (Linux), else the
    file it came from."""
    if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
        yield str(fallback)
        return
    fd = os.memfd_create("shardfleet-tls", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _no_password() -> bytes:
    raise TlsError("the key is encrypted")  # never asks on the terminal


class ServerTls:
    """The S3 listener's SSLContext and the files it was loaded from."""

    def __init__(self, cert: Path, key: Path, min_version: str = "1.2") -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        self.context = server_context(min_version)
        self.info = self._load()
        log.info("TLS: serving certificate %s", self.info)

    def _read(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise TlsError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None

    def _load(self) -> CertInfo:
        cert_pem = self._read(self.cert, "tls_cert")
        key_pem = self._read(self.key, "tls_key")
        info = check_pair(cert_pem, key_pem, self.cert, self.key)
        with _in_memory(cert_pem, self.cert) as cert, _in_memory(key_pem, self.key) as key:
            # a scratch context first: a pair OpenSSL refuses must not touch the live one
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, _no_password)
            except (ssl.SSLError, TlsError) as exc:
                raise TlsError(f"tls_cert {self.cert} / tls_key {self.key}: {exc}") from None
            self.context.load_cert_chain(cert, key, _no_password)
        return info

    def reload(self) -> bool:
        """Load the files again (SIGHUP); on any error keep serving the current pair."""
        try:
            info = self._load()
        except TlsError as exc:
            log.error("TLS reload refused, still serving %s: %s", self.info, exc)
            return False
        self.info = info
        log.info("TLS reloaded: now serving certificate %s", info)
        return True


def client_context(ca_bundle: str | Path | None = None) -> ssl.SSLContext:
    """For calling an https:// endpoint: the CAs of `ca_bundle` (else $AWS_CA_BUNDLE, as the
    AWS tools read it), or the system's when neither is set."""
    bundle = ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None
    try:
        return ssl.create_default_context(cafile=str(bundle) if bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"CA bundle {bundle}: cannot load it: {exc}") from None
