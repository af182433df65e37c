"""Sans-IO decoder for S3 ``aws-chunked`` request bodies (signed, signed+trailer, unsigned+trailer).

The caller owns the socket: it feeds raw body bytes in whatever pieces the transport gives
and writes out the decoded pieces it gets back. Keeping I/O out makes every split point
testable and lets the CPU work (SHA-256 per chunk, checksums) run in a worker thread.

Decoded bytes are handed back as soon as they arrive, before the enclosing chunk's signature
(which covers the whole chunk) can be checked; a signature or checksum failure surfaces from
a later feed()/finish(). Callers must therefore treat the payload as untrusted until finish()
returns, and never commit an object before that.

Wire grammar accepted (CRLF line ends everywhere):
    chunk     = hex-size [";" ext]* CRLF data CRLF     (signed: ext "chunk-signature=<64hex>")
    last      = "0" [";" ext]* CRLF
    trailers  = *(name ":" value CRLF) ["x-amz-trailer-signature:" sig CRLF]
    end       = CRLF
In trailer modes an extra empty line between `last` and the trailers is tolerated, because
the AWS documentation example and some SDKs emit one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from shardfleet.node.s3 import checksums
from shardfleet.node.s3.errors import (
    IncompleteBody,
    InvalidArgument,
    InvalidRequest,
    S3Error,
    SignatureDoesNotMatch,
)
from shardfleet.node.s3.sigv4 import EMPTY_SHA256, AuthResult

MAX_LINE = 4096
MAX_TRAILER_BYTES = 16 * 1024
TRAILER_SIGNATURE = "x-amz-trailer-signature"

_HEX_SIZE = re.compile(r"[0-9a-fA-F]{1,16}")
_SIZE, _DATA, _DATA_CRLF, _TRAILER, _DONE = range(5)
_CRLF = b"\r\n"


class ChunkedDecoder:
    """State machine over the raw body; see the module docstring for the grammar."""

    def __init__(
        self,
        *,
        signed: bool,
        auth: AuthResult | None,
        trailer: bool,
        trailer_names: Sequence[str] = (),
        decoded_length: int | None = None,
        max_chunk: int = 16 << 20,
    ) -> None:
        if signed and auth is None:
            raise ValueError("signed aws-chunked decoding needs the request's AuthResult")
        self._signed = signed
        self._auth = auth
        self._trailer = trailer
        self._decoded_length = decoded_length
        self._max_chunk = max_chunk
        self._prev_sig = auth.seed_signature if auth is not None else ""
        self._state = _SIZE
        self._line = bytearray()
        self._remaining = 0
        self._crlf_seen = 0
        self._chunk_sig = ""
        self._chunk_hash: hashlib._Hash | None = None
        self._decoded = 0
        self._hashers: dict[str, checksums.Checksum] = {}
        for name in trailer_names:
            lname = name.strip().lower()
            alg = checksums.algorithm_of_header(lname)
            if alg is None:
                raise InvalidRequest(f"Unsupported x-amz-trailer value {name!r}.")
            self._hashers[lname] = checksums.new_checksum(alg)
        self._trailers: dict[str, str] = {}
        self._trailer_sig: str | None = None
        self._trailer_bytes = 0
        self._blank_after_last = False
        self._error: S3Error | None = None

    @property
    def done(self) -> bool:
        """True once the terminator (and trailers) parsed and verified. A trailer-mode body
        ending in a bare empty line stays ambiguous until finish(): trailers may follow."""
        return self._state == _DONE

    @property
    def decoded_bytes(self) -> int:
        return self._decoded

    def feed(self, data: bytes | memoryview) -> list[bytes | memoryview]:
        """Returned pieces may be memoryviews into `data`: consume them before reusing it."""
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except S3Error as exc:
            self._error = exc
            raise

    def finish(self) -> dict[str, str]:
        if self._error is not None:
            raise self._error
        try:
            if self._state != _DONE:
                if self._state == _TRAILER and self._blank_after_last and not self._line:
                    self._complete()  # "0\r\n\r\n" in a trailer mode: no trailers followed
                else:
                    raise IncompleteBody("The aws-chunked body ended before its final chunk.")
            return dict(self._trailers)
        except S3Error as exc:
            self._error = exc
            raise

    # -- parsing -------------------------------------------------------------------------

    def _feed(self, data: bytes | memoryview) -> list[bytes | memoryview]:
        mv = data if isinstance(data, memoryview) else memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        out: list[bytes | memoryview] = []
        pos, end = 0, len(mv)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                piece = mv[pos : pos + take]
                self._consume(piece)
                out.append(piece)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._end_chunk()
            elif state == _DATA_CRLF:
                while self._crlf_seen < 2 and pos < end:
                    if mv[pos] != _CRLF[self._crlf_seen]:
                        raise InvalidArgument("aws-chunked data is not followed by CRLF.")
                    pos += 1
                    self._crlf_seen += 1
                if self._crlf_seen == 2:
                    self._state = _SIZE
            elif state == _DONE:
                raise InvalidArgument("Unexpected bytes after the end of the aws-chunked body.")
            else:
                line, pos = self._read_line(mv, pos)
                if line is None:
                    break
                if state == _SIZE:
                    self._on_size_line(line)
                else:
                    self._on_trailer_line(line)
        return out

    def _read_line(self, mv: memoryview, pos: int) -> tuple[bytes | None, int]:
        """Accumulate up to CRLF across feeds, never buffering more than MAX_LINE bytes."""
        buf = self._line
        if buf and buf[-1] == 13 and mv[pos] == 10:
            line = bytes(buf[:-1])
            buf.clear()
            return line, pos + 1
        window = bytes(mv[pos : pos + MAX_LINE + 2 - len(buf)])
        idx = window.find(_CRLF)
        if idx < 0:
            buf += window
            if len(buf) - (buf[-1] == 13) > MAX_LINE:
                raise InvalidArgument("aws-chunked header line is too long.")
            return None, pos + len(window)
        line = bytes(buf) + window[:idx] if buf else window[:idx]
        buf.clear()
        return line, pos + idx + 2

    def _on_size_line(self, line: bytes) -> None:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidArgument("aws-chunked size line is not ASCII.") from None
        size_text, _, exts = text.partition(";")
        size_text = size_text.strip()
        if not _HEX_SIZE.fullmatch(size_text):
            raise InvalidArgument(f"Invalid aws-chunked chunk size {size_text[:32]!r}.")
        size = int(size_text, 16)
        if size > self._max_chunk:
            raise InvalidArgument(f"aws-chunked chunk of {size} bytes exceeds {self._max_chunk}.")
        if self._decoded_length is not None and self._decoded + size > self._decoded_length:
            raise IncompleteBody(
                "The aws-chunked body carries more bytes than x-amz-decoded-content-length."
            )
        if self._signed:
            sig = None
            for ext in exts.split(";"):
                name, _, value = ext.strip().partition("=")
                if name == "chunk-signature":
                    sig = value.strip()
            if sig is None:
                raise InvalidArgument("aws-chunked chunk is missing its chunk-signature.")
            self._chunk_sig = sig
            self._chunk_hash = hashlib.sha256()
        if size == 0:
            self._end_chunk()
            self._state = _TRAILER
        else:
            self._remaining = size
            self._state = _DATA

    def _consume(self, piece: memoryview) -> None:
        self._decoded += len(piece)
        if self._chunk_hash is not None:
            self._chunk_hash.update(piece)
        for hasher in self._hashers.values():
            hasher.update(piece)

    def _end_chunk(self) -> None:
        if self._signed:
            assert self._auth is not None and self._chunk_hash is not None
            sts = (
                f"AWS4-HMAC-SHA256-PAYLOAD\n{self._auth.amz_date}\n{self._auth.scope}\n"
                f"{self._prev_sig}\n{EMPTY_SHA256}\n{self._chunk_hash.hexdigest()}"
            )
            self._verify(sts, self._chunk_sig, "chunk")
            self._prev_sig = self._chunk_sig
            self._chunk_hash = None
        self._state = _DATA_CRLF
        self._crlf_seen = 0

    def _verify(self, sts: str, provided: str, what: str) -> None:
        assert self._auth is not None
        expected = hmac.new(self._auth.signing_key, sts.encode(), hashlib.sha256).hexdigest()
        if not provided.isascii() or not hmac.compare_digest(expected, provided):
            raise SignatureDoesNotMatch(
                f"The {what} signature we calculated does not match the one you provided.",
                StringToSign=sts,
                SignatureProvided=provided,
            )

    def _on_trailer_line(self, line: bytes) -> None:
        if not line.strip():
            if (
                self._trailer
                and not self._blank_after_last
                and not self._trailers
                and self._trailer_sig is None
            ):
                self._blank_after_last = True  # maybe the optional separator; see finish()
                return
            self._complete()
            return
        if not self._trailer:
            raise InvalidArgument("Trailing headers sent without x-amz-trailer mode.")
        self._trailer_bytes += len(line)
        if self._trailer_bytes > MAX_TRAILER_BYTES:
            raise InvalidArgument("aws-chunked trailers are too large.")
        name, colon, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        if not colon or not name:
            raise InvalidArgument("Malformed aws-chunked trailer line.")
        if name == TRAILER_SIGNATURE:
            if self._trailer_sig is not None:
                raise InvalidArgument("Duplicate x-amz-trailer-signature.")
            self._trailer_sig = value
        elif name in self._trailers:
            raise InvalidArgument(f"Duplicate trailer {name!r}.")
        else:
            self._trailers[name] = value

    def _complete(self) -> None:
        """End of body: everything declared must have arrived and must verify."""
        if self._signed and self._trailer and (self._trailers or self._trailer_sig is not None):
            assert self._auth is not None
            if self._trailer_sig is None:
                raise SignatureDoesNotMatch("The aws-chunked trailers are not signed.")
            canonical = "".join(f"{n}:{v}\n" for n, v in sorted(self._trailers.items()))
            sts = (
                f"AWS4-HMAC-SHA256-TRAILER\n{self._auth.amz_date}\n{self._auth.scope}\n"
                f"{self._prev_sig}\n{hashlib.sha256(canonical.encode('latin-1')).hexdigest()}"
            )
            self._verify(sts, self._trailer_sig, "trailer")
        if self._decoded_length is not None and self._decoded != self._decoded_length:
            raise IncompleteBody(
                f"Decoded {self._decoded} bytes but x-amz-decoded-content-length is "
                f"{self._decoded_length}."
            )
        for name in self._trailers:
            if name not in self._hashers and checksums.algorithm_of_header(name) is not None:
                raise InvalidRequest(f"Trailer {name!r} was not declared in x-amz-trailer.")
        for name, hasher in self._hashers.items():
            value = self._trailers.get(name)
            if value is None:
                raise IncompleteBody(f"The declared trailer {name!r} was not sent.")
            value = checksums.validate_value(hasher.algorithm, value)
            if hasher.b64digest() != value:
                raise checksums.mismatch(hasher.algorithm)
        self._state = _DONE
