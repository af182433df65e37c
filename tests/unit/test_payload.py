"""BodyDecoder across payload modes, with real boto3 requests as the end-to-end oracle."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import time
import zlib
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config

from shardfleet.node.s3 import errors
from shardfleet.node.s3.checksums import ALGORITHMS, header_name, new_checksum
from shardfleet.node.s3.payload import BodyDecoder
from shardfleet.node.s3.sigv4 import (
    EMPTY_SHA256,
    AuthResult,
    PayloadMode,
    RequestView,
    signing_key,
    verify_request,
)

AK, SECRET = "AKIDPAYLOAD", "payload-secret"


def auth(mode: PayloadMode = "UNSIGNED", sha: str | None = None) -> AuthResult:
    return AuthResult(
        AK,
        mode,
        sha,
        signing_key(SECRET, "20130524", "us-east-1"),
        "e" * 64,
        "20130524T000000Z",
        "20130524/us-east-1/s3/aws4_request",
        False,
    )


def run(decoder: BodyDecoder, *parts: bytes) -> bytes:
    out = bytearray()
    for part in parts:
        for piece in decoder.feed(part):
            out += piece
    decoder.finish()
    return bytes(out)


def b64crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_unsigned_plain_body() -> None:
    decoder = BodyDecoder(auth(), {"content-length": "11"})
    assert decoder.content_length == 11
    assert run(decoder, b"hello ", b"world") == b"hello world"
    assert decoder.size == 11 and decoder.checksums == {}


def test_sha256_match_and_mismatch() -> None:
    good = hashlib.sha256(b"abc").hexdigest()
    assert run(BodyDecoder(auth("SHA256", good), {"content-length": "3"}), b"a", b"bc") == b"abc"
    decoder = BodyDecoder(auth("SHA256", good), {"content-length": "3"})
    with pytest.raises(errors.XAmzContentSHA256Mismatch):
        run(decoder, b"abd")
    with pytest.raises(errors.XAmzContentSHA256Mismatch):  # errors stick
        decoder.finish()


def test_length_mismatches() -> None:
    with pytest.raises(errors.IncompleteBody):
        run(BodyDecoder(auth(), {"content-length": "10"}), b"short")
    with pytest.raises(errors.IncompleteBody):
        run(BodyDecoder(auth(), {"content-length": "2"}), b"too long")
    with pytest.raises(errors.InvalidArgument):
        BodyDecoder(auth(), {"content-length": "-1"})
    assert BodyDecoder(auth(), {}).content_length is None  # HTTP-chunked, length unknown


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_checksum_header_verifies(alg: str) -> None:
    data = b"checksummed payload" * 1000
    hasher = new_checksum(alg)
    hasher.update(data)
    headers = {"content-length": str(len(data)), header_name(alg): hasher.b64digest()}
    decoder = BodyDecoder(auth(), headers)
    assert run(decoder, data[:7], data[7:]) == data
    assert decoder.checksums == {alg: hasher.b64digest()}
    with pytest.raises(errors.BadDigest):
        run(BodyDecoder(auth(), headers), data[:-1] + b"!")


def test_checksum_header_rules() -> None:
    crc = b64crc32(b"x")
    with pytest.raises(errors.InvalidRequest):
        BodyDecoder(auth(), {"x-amz-checksum-md5": crc})
    with pytest.raises(errors.InvalidRequest):
        BodyDecoder(auth(), {"x-amz-checksum-crc32": "not base64!"})
    with pytest.raises(errors.InvalidRequest):
        BodyDecoder(auth(), {"x-amz-checksum-crc32": base64.b64encode(b"12345").decode()})
    with pytest.raises(errors.InvalidRequest):
        BodyDecoder(auth(), {"x-amz-checksum-crc32": crc, "x-amz-checksum-sha1": crc})
    # parameters, not values: must not be mistaken for checksums
    BodyDecoder(auth(), {"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "COMPOSITE"})


def test_checksum_known_answers() -> None:
    vectors = {"CRC32": 0xCBF43926, "CRC32C": 0xE3069283, "CRC64NVME": 0xAE8B14860A799888}
    for alg, value in vectors.items():
        hasher = new_checksum(alg.lower())
        hasher.update(b"1234")
        hasher.update(memoryview(b"56789"))
        size = 8 if alg == "CRC64NVME" else 4
        assert hasher.b64digest() == base64.b64encode(value.to_bytes(size, "big")).decode()
    assert header_name("crc64nvme") == "x-amz-checksum-crc64nvme"
    with pytest.raises(errors.InvalidRequest):
        new_checksum("md5")


def test_aws_chunked_content_encoding_with_plain_mode_is_plain() -> None:
    headers = {"content-encoding": "aws-chunked", "content-length": "10"}
    assert run(BodyDecoder(auth(), headers), b"5\r\nhello\r\n") == b"5\r\nhello\r\n"


def test_streaming_requires_decoded_length() -> None:
    with pytest.raises(errors.MissingContentLength):
        BodyDecoder(auth("STREAMING-UNSIGNED-TRAILER"), {"content-encoding": "aws-chunked"})
    with pytest.raises(errors.InvalidArgument):
        BodyDecoder(auth("STREAMING-SIGNED"), {"x-amz-decoded-content-length": "x"})


def _chunk_sig(a: AuthResult, kind: str, prev: str, digest: str) -> str:
    parts = [f"AWS4-HMAC-SHA256-{kind}", a.amz_date, a.scope, prev]
    parts += [EMPTY_SHA256, digest] if kind == "PAYLOAD" else [digest]
    return hmac.new(a.signing_key, "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def _signed_body(a: AuthResult, payload: bytes, trailer: tuple[str, str] | None) -> bytes:
    out, prev = bytearray(), a.seed_signature
    for piece in (payload[:4], payload[4:], b""):
        prev = _chunk_sig(a, "PAYLOAD", prev, hashlib.sha256(piece).hexdigest())
        out += f"{len(piece):x};chunk-signature={prev}\r\n".encode() + piece
        out += b"\r\n" if piece else b""
    if trailer is None:
        return bytes(out + b"\r\n")
    line = f"{trailer[0]}:{trailer[1]}\n"
    sig = _chunk_sig(a, "TRAILER", prev, hashlib.sha256(line.encode()).hexdigest())
    return bytes(out + f"{line[:-1]}\r\nx-amz-trailer-signature:{sig}\r\n\r\n".encode())


def test_signed_streaming_modes() -> None:
    payload = b"streamed object"
    headers = {"x-amz-decoded-content-length": str(len(payload))}
    decoder = BodyDecoder(auth("STREAMING-SIGNED"), headers)
    assert decoder.content_length == len(payload)
    assert run(decoder, _signed_body(auth(), payload, None)) == payload

    trailer = ("x-amz-checksum-crc32", b64crc32(payload))
    headers = {**headers, "x-amz-trailer": "x-amz-checksum-crc32"}
    decoder = BodyDecoder(auth("STREAMING-SIGNED-TRAILER"), headers)
    assert run(decoder, _signed_body(auth(), payload, trailer)) == payload
    assert decoder.checksums == {"CRC32": trailer[1]}

    bad = ("x-amz-checksum-crc32", b64crc32(b"other"))
    with pytest.raises(errors.BadDigest):
        run(
            BodyDecoder(auth("STREAMING-SIGNED-TRAILER"), headers),
            _signed_body(auth(), payload, bad),
        )
    with pytest.raises(errors.IncompleteBody):
        run(
            BodyDecoder(auth("STREAMING-SIGNED"), headers), _signed_body(auth(), payload, None)[:-5]
        )
    with pytest.raises(errors.SignatureDoesNotMatch):
        run(
            BodyDecoder(auth("STREAMING-SIGNED"), headers),
            _signed_body(auth(), payload, None).replace(b"stre", b"STRE"),
        )


def test_streaming_with_checksum_header_too() -> None:
    payload = b"streamed object"
    headers = {
        "x-amz-decoded-content-length": str(len(payload)),
        "x-amz-checksum-crc32": b64crc32(b"not it"),
    }
    with pytest.raises(errors.BadDigest):
        run(BodyDecoder(auth("STREAMING-SIGNED"), headers), _signed_body(auth(), payload, None))


class _Captured(Exception):
    pass


def _boto3_put(endpoint: str, body: object) -> tuple[RequestView, bytes]:
    """The exact request boto3 would send for PutObject (https: aws-chunked + crc32 trailer;
    http: plain body + sha256 + crc32 header)."""
    seen: list[tuple[RequestView, bytes]] = []

    def grab(request: AWSRequest, **_: object) -> None:
        raw = request.body.read() if hasattr(request.body, "read") else request.body
        parts = urlsplit(request.url)
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
        }
        headers.setdefault("host", parts.netloc)
        query = parse_qsl(parts.query, keep_blank_values=True)
        seen.append((RequestView(request.method, parts.path, query, headers), raw or b""))
        raise _Captured

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=AK,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}
        ),
    )
    client.meta.events.register("before-send.s3.*", grab)
    with pytest.raises(_Captured):
        client.put_object(Bucket="bk", Key="obj key+1", Body=body)
    return seen[0]


@pytest.mark.parametrize("endpoint", ["https://127.0.0.1:9000", "http://127.0.0.1:9000"])
@pytest.mark.parametrize("size", [0, 1, 70_000])
def test_boto3_put_object_end_to_end(endpoint: str, size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    view, raw = _boto3_put(endpoint, io.BytesIO(payload))
    result = verify_request(view, {AK: SECRET}.get, now=time.time(), region="us-east-1")
    if endpoint.startswith("https"):
        assert result.payload_mode == "STREAMING-UNSIGNED-TRAILER"
    decoder = BodyDecoder(result, view.headers)
    assert decoder.content_length == size
    step = 997
    assert run(decoder, *(raw[i : i + step] for i in range(0, len(raw), step))) == payload
    assert decoder.checksums == {"CRC32": b64crc32(payload)}
