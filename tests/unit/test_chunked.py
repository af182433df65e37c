"""aws-chunked decoding: AWS documentation vectors, botocore's encoder as an oracle, and
hypothesis proving the decoder is indifferent to how the transport splits the body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import zlib

import crc32c
import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from shardfleet.node.s3 import errors
from shardfleet.node.s3.chunked import ChunkedDecoder
from shardfleet.node.s3.sigv4 import (
    EMPTY_SHA256,
    AuthResult,
    PayloadMode,
    RequestView,
    signing_key,
    verify_request,
)

AK = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_TIME = 1369353600.0  # 20130524T000000Z
DOC_SIGS = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
TRAILER_DOC_SIGS = (
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
)
TRAILER_DOC_SIG = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"


def doc_auth(mode: str, seed: str, signed_headers: str, **extra: str) -> AuthResult:
    """Run the documented request through verify_request, proving the seed signature too."""
    headers = {
        "host": "s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": mode,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
        "content-length": "66824",
        **extra,
        "authorization": f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
        f"SignedHeaders={signed_headers},Signature={seed}",
    }
    view = RequestView("PUT", "/examplebucket/chunkObject.txt", [], headers)
    return verify_request(view, {AK: SECRET}.get, now=DOC_TIME, region="us-east-1")


def documented_body(sigs: tuple[str, str, str], tail: bytes) -> bytes:
    return (
        f"10000;chunk-signature={sigs[0]}\r\n".encode()
        + b"a" * 65536
        + b"\r\n"
        + f"400;chunk-signature={sigs[1]}\r\n".encode()
        + b"a" * 1024
        + b"\r\n"
        + f"0;chunk-signature={sigs[2]}\r\n".encode()
        + tail
    )


@pytest.fixture(scope="module")
def doc_signed() -> AuthResult:
    auth = doc_auth(
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class",
    )
    assert auth.payload_mode == "STREAMING-SIGNED"
    return auth


@pytest.fixture(scope="module")
def doc_trailer() -> AuthResult:
    auth = doc_auth(
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        "x-amz-storage-class;x-amz-trailer",
        **{"x-amz-trailer": "x-amz-checksum-crc32c"},
    )
    assert auth.payload_mode == "STREAMING-SIGNED-TRAILER"
    return auth


def decode(decoder: ChunkedDecoder, *parts: bytes) -> tuple[bytes, dict[str, str]]:
    out = bytearray()
    for part in parts:
        for piece in decoder.feed(part):
            out += piece
    return bytes(out), decoder.finish()


def test_aws_documented_signed_chunks(doc_signed: AuthResult) -> None:
    body = documented_body(DOC_SIGS, b"\r\n")
    assert len(body) == 66824
    decoder = ChunkedDecoder(signed=True, auth=doc_signed, trailer=False, decoded_length=66560)
    data, trailers = decode(decoder, body)
    assert data == b"a" * 66560 and trailers == {} and decoder.done


def test_aws_documented_signed_chunks_tampered(doc_signed: AuthResult) -> None:
    body = bytearray(documented_body(DOC_SIGS, b"\r\n"))
    body[200] ^= 1  # a data byte inside the first chunk
    decoder = ChunkedDecoder(signed=True, auth=doc_signed, trailer=False)
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(decoder, bytes(body))
    bad_final = documented_body((*DOC_SIGS[:2], "0" * 64), b"\r\n")
    decoder = ChunkedDecoder(signed=True, auth=doc_signed, trailer=False)
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(decoder, bad_final)


@pytest.mark.parametrize("cut", [1, 2, 100, 1100, 66824 - 2])
def test_truncated_body_is_incomplete(doc_signed: AuthResult, cut: int) -> None:
    body = documented_body(DOC_SIGS, b"\r\n")[:-cut]
    decoder = ChunkedDecoder(signed=True, auth=doc_signed, trailer=False, decoded_length=66560)
    with pytest.raises(errors.IncompleteBody):
        decode(decoder, body)


@pytest.mark.parametrize("separator", [b"", b"\r\n"])
def test_aws_documented_signed_trailer(doc_trailer: AuthResult, separator: bytes) -> None:
    tail = (
        separator
        + (
            f"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{TRAILER_DOC_SIG}\r\n\r\n"
        ).encode()
    )
    body = documented_body(TRAILER_DOC_SIGS, tail)
    decoder = ChunkedDecoder(
        signed=True,
        auth=doc_trailer,
        trailer=True,
        trailer_names=["x-amz-checksum-crc32c"],
        decoded_length=66560,
    )
    data, trailers = decode(decoder, body)
    assert data == b"a" * 66560
    assert trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}


def test_signed_trailer_signature_is_checked(doc_trailer: AuthResult) -> None:
    tail = f"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{'1' * 64}\r\n\r\n"
    decoder = ChunkedDecoder(
        signed=True, auth=doc_trailer, trailer=True, trailer_names=["x-amz-checksum-crc32c"]
    )
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(decoder, documented_body(TRAILER_DOC_SIGS, tail.encode()))
    unsigned_tail = b"x-amz-checksum-crc32c:sOO8/Q==\r\n\r\n"
    decoder = ChunkedDecoder(
        signed=True, auth=doc_trailer, trailer=True, trailer_names=["x-amz-checksum-crc32c"]
    )
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(decoder, documented_body(TRAILER_DOC_SIGS, unsigned_tail))


# -- a reference encoder for arbitrary payloads (anchored by the vectors above) -----------


def synthetic_auth(mode: PayloadMode = "STREAMING-SIGNED") -> AuthResult:
    return AuthResult(
        AK,
        mode,
        None,
        signing_key(SECRET, "20130524", "us-east-1"),
        "f" * 64,
        "20130524T000000Z",
        "20130524/us-east-1/s3/aws4_request",
        False,
    )


def _sign(auth: AuthResult, kind: str, prev: str, digest: str) -> str:
    parts = [f"AWS4-HMAC-SHA256-{kind}", auth.amz_date, auth.scope, prev]
    parts += [EMPTY_SHA256, digest] if kind == "PAYLOAD" else [digest]
    return hmac.new(auth.signing_key, "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def encode_signed(
    payload: bytes, chunk: int, auth: AuthResult, trailers: dict[str, str] | None = None
) -> bytes:
    out, prev = bytearray(), auth.seed_signature
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    for piece in pieces:
        prev = _sign(auth, "PAYLOAD", prev, hashlib.sha256(piece).hexdigest())
        out += f"{len(piece):x};chunk-signature={prev}\r\n".encode() + piece
        out += b"\r\n" if piece else b""
    if trailers is None:
        return bytes(out + b"\r\n")
    canonical = "".join(f"{k}:{v}\n" for k, v in sorted(trailers.items()))
    for k, v in trailers.items():
        out += f"{k}:{v}\r\n".encode()
    sig = _sign(auth, "TRAILER", prev, hashlib.sha256(canonical.encode()).hexdigest())
    return bytes(out + f"x-amz-trailer-signature:{sig}\r\n\r\n".encode())


def encode_unsigned(payload: bytes, chunk: int, checksum_cls: type, name: str) -> bytes:
    """botocore's own aws-chunked encoder: what boto3 sends for PutObject by default."""
    wrapper = AwsChunkedWrapper(
        io.BytesIO(payload), checksum_cls=checksum_cls, checksum_name=name, chunk_size=chunk
    )
    return wrapper.read()


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


class Crc32cChecksum:
    """Independent CRC32C for botocore's encoder (botocore only has one via awscrt)."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, chunk: bytes) -> None:
        self.value = crc32c.crc32c(chunk, self.value)

    def b64digest(self) -> str:
        return base64.b64encode(self.value.to_bytes(4, "big")).decode()


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    chunk=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 10_000), max_size=25),
    trailer=st.booleans(),
)
def test_signed_random_splits(payload: bytes, chunk: int, cuts: list[int], trailer: bool) -> None:
    crc = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    auth = synthetic_auth("STREAMING-SIGNED-TRAILER" if trailer else "STREAMING-SIGNED")
    body = encode_signed(payload, chunk, auth, {"x-amz-checksum-crc32": crc} if trailer else None)
    decoder = ChunkedDecoder(
        signed=True,
        auth=auth,
        trailer=trailer,
        trailer_names=["x-amz-checksum-crc32"] if trailer else (),
        decoded_length=len(payload),
    )
    data, trailers = decode(decoder, *splits(body, cuts))
    assert data == payload
    assert trailers == ({"x-amz-checksum-crc32": crc} if trailer else {})


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    chunk=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 10_000), max_size=25),
)
def test_unsigned_trailer_random_splits(payload: bytes, chunk: int, cuts: list[int]) -> None:
    body = encode_unsigned(payload, chunk, Crc32Checksum, "x-amz-checksum-crc32")
    decoder = ChunkedDecoder(
        signed=False,
        auth=None,
        trailer=True,
        trailer_names=["x-amz-checksum-crc32"],
        decoded_length=len(payload),
    )
    data, trailers = decode(decoder, *splits(body, cuts))
    assert data == payload and "x-amz-checksum-crc32" in trailers


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (Crc32Checksum, "x-amz-checksum-crc32"),
        (Crc32cChecksum, "x-amz-checksum-crc32c"),
        (Sha256Checksum, "x-amz-checksum-sha256"),
    ],
)
def test_unsigned_trailer_checksums(cls: type, name: str) -> None:
    payload = bytes(range(256)) * 300
    body = encode_unsigned(payload, 4096, cls, name)
    decoder = ChunkedDecoder(
        signed=False, auth=None, trailer=True, trailer_names=[name], decoded_length=len(payload)
    )
    data, trailers = decode(decoder, body)
    assert data == payload and trailers[name] == body.split(b":")[-1].strip().decode()

    wrong = body.replace(
        trailers[name].encode(), encode_unsigned(b"x", 4, cls, name).split(b":")[-1].strip()
    )
    decoder = ChunkedDecoder(signed=False, auth=None, trailer=True, trailer_names=[name])
    with pytest.raises(errors.BadDigest):
        decode(decoder, wrong)


def test_trailer_declaration_rules() -> None:
    body = encode_unsigned(b"hello", 5, Crc32Checksum, "x-amz-checksum-crc32")
    missing = ChunkedDecoder(
        signed=False, auth=None, trailer=True, trailer_names=["x-amz-checksum-sha256"]
    )
    with pytest.raises((errors.IncompleteBody, errors.InvalidRequest)):
        decode(missing, body)
    undeclared = ChunkedDecoder(signed=False, auth=None, trailer=True)
    with pytest.raises(errors.InvalidRequest):
        decode(undeclared, body)
    with pytest.raises(errors.InvalidRequest):
        ChunkedDecoder(signed=False, auth=None, trailer=True, trailer_names=["x-amz-meta-x"])
    no_trailers = ChunkedDecoder(signed=False, auth=None, trailer=True)
    assert decode(no_trailers, b"5\r\nhello\r\n0\r\n\r\n") == (b"hello", {})


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",  # not hex
        b"0x5\r\nhello\r\n0\r\n\r\n",  # int() would accept, AWS does not
        b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
        b"5\r\nhello\r\n0\r\nx-a:b\r\n\r\nextra",  # bytes after the end
        b"5" + b" " * 5000 + b"\r\n",  # unbounded size line
        b"1000001\r\n",  # chunk larger than max_chunk
        b"5\r\nhello\r\n0\r\nnot a trailer\r\n\r\n",
    ],
)
def test_framing_errors(body: bytes) -> None:
    decoder = ChunkedDecoder(signed=False, auth=None, trailer=True, max_chunk=1 << 20)
    with pytest.raises(errors.InvalidArgument):
        decode(decoder, body)


def test_signed_chunk_without_signature_and_length_mismatch() -> None:
    auth = synthetic_auth()
    with pytest.raises(errors.InvalidArgument):
        decode(ChunkedDecoder(signed=True, auth=auth, trailer=False), b"5\r\nhello\r\n")
    body = encode_signed(b"hello", 2, auth)
    with pytest.raises(errors.IncompleteBody):
        decode(ChunkedDecoder(signed=True, auth=auth, trailer=False, decoded_length=6), body)
    with pytest.raises(errors.IncompleteBody):  # more than declared: caught at the size line
        ChunkedDecoder(signed=True, auth=auth, trailer=False, decoded_length=3).feed(body)


def test_pieces_are_views_of_the_fed_buffer_and_errors_stick() -> None:
    payload = b"x" * 100_000
    body = encode_unsigned(payload, 65536, Crc32Checksum, "x-amz-checksum-crc32")
    decoder = ChunkedDecoder(
        signed=False, auth=None, trailer=True, trailer_names=["x-amz-checksum-crc32"]
    )
    pieces = decoder.feed(body)
    assert all(isinstance(p, memoryview) and p.obj is body for p in pieces)
    assert sum(len(p) for p in pieces) == len(payload)
    decoder.finish()

    broken = ChunkedDecoder(signed=False, auth=None, trailer=False)
    with pytest.raises(errors.InvalidArgument):
        broken.feed(b"zz\r\n")
    with pytest.raises(errors.InvalidArgument):
        broken.feed(b"5\r\nhello\r\n")
    with pytest.raises(errors.InvalidArgument):
        broken.finish()


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, 66_824), max_size=40))
def test_aws_documented_body_random_splits(doc_signed: AuthResult, cuts: list[int]) -> None:
    body = documented_body(DOC_SIGS, b"\r\n")
    decoder = ChunkedDecoder(signed=True, auth=doc_signed, trailer=False, decoded_length=66560)
    data, _ = decode(decoder, *splits(body, cuts))
    assert data == b"a" * 66560


def test_byte_at_a_time() -> None:
    auth = synthetic_auth("STREAMING-SIGNED-TRAILER")
    crc = base64.b64encode(zlib.crc32(b"hello world").to_bytes(4, "big")).decode()
    body = encode_signed(b"hello world", 4, auth, {"x-amz-checksum-crc32": crc})
    decoder = ChunkedDecoder(
        signed=True,
        auth=auth,
        trailer=True,
        trailer_names=["x-amz-checksum-crc32"],
        decoded_length=11,
    )
    data, trailers = decode(decoder, *(body[i : i + 1] for i in range(len(body))))
    assert data == b"hello world" and trailers == {"x-amz-checksum-crc32": crc}
