"""BodyDecoder: raw PUT/POST body bytes in, verified object bytes out, for every payload mode.

Handlers should not care whether a client sent a plain body with a SHA-256, an unsigned
body, or one of the aws-chunked encodings: they create one BodyDecoder from the AuthResult
and the request headers, pipe every received piece through feed(), write what comes out,
and call finish() before committing. All checks that can only run at the end (payload hash,
checksums, lengths) live in finish(), so nothing may be made visible before it returns.

feed()/finish() are pure CPU so a handler can push them into a thread pool for large bodies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

from shardfleet.node.s3 import checksums
from shardfleet.node.s3.chunked import ChunkedDecoder
from shardfleet.node.s3.errors import (
    IncompleteBody,
    InvalidArgument,
    InvalidDigest,
    InvalidRequest,
    MissingContentLength,
    S3Error,
    XAmzContentSHA256Mismatch,
)
from shardfleet.node.s3.sigv4 import AuthResult

_SIGNED_STREAMING = ("STREAMING-SIGNED", "STREAMING-SIGNED-TRAILER")


def _parse_length(value: str, header: str) -> int:
    value = value.strip()
    if not value.isdigit() or not value.isascii():
        raise InvalidArgument(f"{header} must be a non-negative integer.", ArgumentName=header)
    return int(value)


class BodyDecoder:
    """Turns raw HTTP body bytes into verified object bytes for any payload mode."""

    def __init__(self, auth: AuthResult, headers: Mapping[str, str]) -> None:
        self._error: S3Error | None = None
        self._finished = False
        self._received = 0
        self._verified: dict[str, str] = {}
        self._sha = hashlib.sha256() if auth.payload_mode == "SHA256" else None
        self._expected_sha = auth.expected_sha256
        self._header_checksum: tuple[checksums.Checksum, str] | None = None
        found = []
        for name, value in headers.items():
            alg = checksums.algorithm_of_header(name)
            if alg is not None:
                found.append((alg, checksums.validate_value(alg, value)))
        if len(found) > 1:
            raise InvalidRequest(
                "Expecting a single x-amz-checksum- header. Multiple checksum Types are not "
                "allowed."
            )
        if found:
            alg, value = found[0]
            self._header_checksum = (checksums.new_checksum(alg), value)

        self._chunked: ChunkedDecoder | None = None
        mode = auth.payload_mode
        if mode.startswith("STREAMING-"):
            declared = headers.get("x-amz-decoded-content-length")
            if declared is None:
                raise MissingContentLength(
                    "You must provide the x-amz-decoded-content-length header for aws-chunked "
                    "uploads."
                )
            self._length: int | None = _parse_length(declared, "x-amz-decoded-content-length")
            trailer = mode.endswith("-TRAILER")
            names = headers.get("x-amz-trailer", "") if trailer else ""
            self._chunked = ChunkedDecoder(
                signed=mode in _SIGNED_STREAMING,
                auth=auth,
                trailer=trailer,
                trailer_names=[n.strip() for n in names.split(",") if n.strip()],
                decoded_length=self._length,
            )
        else:
            # Content-Encoding: aws-chunked with a plain payload hash is a client quirk: the
            # signed hash covers the raw bytes, so the raw bytes are the object.
            length = headers.get("content-length")
            self._length = None if length is None else _parse_length(length, "Content-Length")

    @property
    def content_length(self) -> int | None:
        return self._length

    @property
    def size(self) -> int:
        """Object bytes produced so far."""
        return self._chunked.decoded_bytes if self._chunked is not None else self._received

    @property
    def checksums(self) -> dict[str, str]:
        """{ALGORITHM: base64} of every checksum the client supplied and we verified; valid
        after finish(), for storing and echoing back as x-amz-checksum-<alg>."""
        return dict(self._verified)

    def feed(self, data: bytes | memoryview) -> list[bytes | memoryview]:
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except S3Error as exc:
            self._error = exc
            raise

    def finish(self) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            return
        try:
            self._finish()
        except S3Error as exc:
            self._error = exc
            raise
        self._finished = True

    def _feed(self, data: bytes | memoryview) -> list[bytes | memoryview]:
        if self._chunked is not None:
            pieces = self._chunked.feed(data)
        else:
            if not len(data):
                return []
            self._received += len(data)
            if self._length is not None and self._received > self._length:
                raise IncompleteBody("The request body is longer than its Content-Length.")
            pieces = [data]
            if self._sha is not None:
                self._sha.update(data)
        if self._header_checksum is not None:
            hasher = self._header_checksum[0]
            for piece in pieces:
                hasher.update(piece)
        return pieces

    def _finish(self) -> None:
        if self._chunked is not None:
            trailers = self._chunked.finish()
            for name, value in trailers.items():
                alg = checksums.algorithm_of_header(name)
                if alg is not None:
                    self._verified[alg] = value
        else:
            if self._length is not None and self._received < self._length:
                raise IncompleteBody()
            if self._sha is not None:
                computed = self._sha.hexdigest()
                if computed != self._expected_sha:
                    raise XAmzContentSHA256Mismatch(
                        ClientComputedContentSHA256=self._expected_sha or "",
                        S3ComputedContentSHA256=computed,
                    )
        if self._header_checksum is not None:
            hasher, value = self._header_checksum
            if hasher.b64digest() != value:
                raise checksums.mismatch(hasher.algorithm)
            self._verified[hasher.algorithm] = value


def content_md5(headers: Mapping[str, str]) -> bytes | None:
    """The Content-MD5 digest a client sent, or None; InvalidDigest when it is malformed."""
    raw = headers.get("Content-MD5")
    if raw is None:
        return None
    try:
        digest = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidDigest() from None
    if len(digest) != 16:
        raise InvalidDigest()
    return digest
