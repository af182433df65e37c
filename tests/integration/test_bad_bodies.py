"""Bad bodies get their S3 error code and XML body, and store nothing: payload hashes,
aws-chunked framing and signatures, short bodies, Content-MD5, malformed XML."""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib

import pytest

from shardfleet.node.config import DEV_SECRET_KEY
from tests.support.raw_http import (  # noqa: F401 - pytest fixtures  # shared raw-HTTP tools
    EMPTY_SHA256,
    REGION,
    STREAMED,
    _flip_hex,
    assert_still_old,
    assert_stored_nothing,
    bucket,
    expect_error,
    get_bytes,
    keys_in,
    path,
    payload,
    raw,
    s3,
    server,
)


# -- x-amz-content-sha256 ----------------------------------------------------------------------
@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_content_sha256_mismatch(server, s3, raw, bucket, size, existing):
    old = payload(size, seed=1)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    body = payload(size, seed=2)
    wrong = hashlib.sha256(body + b"!").hexdigest()
    root = expect_error(
        raw.request("PUT", path(bucket, "k"), body, payload_hash=wrong),
        400,
        "XAmzContentSHA256Mismatch",
    )
    assert root is not None
    assert root.findtext("ClientComputedContentSHA256") == wrong
    assert root.findtext("S3ComputedContentSHA256") == hashlib.sha256(body).hexdigest()
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


def test_content_sha256_match_is_accepted(s3, raw, bucket):
    body = payload(STREAMED, seed=3)
    reply = raw.request(
        "PUT", path(bucket, "k"), body, payload_hash=hashlib.sha256(body).hexdigest()
    )
    assert reply.status == 200
    assert get_bytes(s3, bucket, "k") == body


# -- aws-chunked bodies ------------------------------------------------------------------------
CHUNK = 64 * 1024


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def unsigned_trailer_body(data: bytes, checksum: str | None = None) -> tuple[bytes, bytes]:
    """(everything before the final 0-chunk, the final chunk + trailer + end)."""
    chunks = b"".join(
        f"{len(data[i : i + CHUNK]):x}\r\n".encode() + data[i : i + CHUNK] + b"\r\n"
        for i in range(0, len(data), CHUNK)
    )
    tail = f"0\r\nx-amz-checksum-crc32:{checksum or crc32_b64(data)}\r\n\r\n".encode()
    return chunks, tail


def unsigned_trailer_headers(data: bytes, content_length: int) -> dict[str, str]:
    return {
        "Content-Encoding": "aws-chunked",
        "Content-Length": str(content_length),
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }


def put_unsigned_trailer(raw, target, data, parts, content_length, *, half_close=False):
    headers = raw.sign(
        "PUT",
        target,
        unsigned_trailer_headers(data, content_length),
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    )
    return raw.send("PUT", target, headers, parts, half_close=half_close)


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
def test_unsigned_trailer_upload_is_accepted(s3, raw, bucket, size):
    data = payload(size, seed=4)
    chunks, tail = unsigned_trailer_body(data)
    reply = put_unsigned_trailer(
        raw, path(bucket, "k"), data, [chunks, tail], len(chunks) + len(tail)
    )
    assert reply is not None and reply.status == 200, reply
    assert get_bytes(s3, bucket, "k") == data


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_aws_chunked_cut_off_before_final_chunk(server, s3, raw, bucket, size, existing):
    """Content-Length announces the whole framing; the client stops before the 0-chunk and
    half-closes: the HTTP body is short, so IncompleteBody or a dropped connection."""
    old = payload(size, seed=5)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    data = payload(size, seed=6)
    chunks, tail = unsigned_trailer_body(data)
    reply = put_unsigned_trailer(
        raw, path(bucket, "k"), data, [chunks], len(chunks) + len(tail), half_close=True
    )
    if reply is not None:
        expect_error(reply, 400, "IncompleteBody")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
def test_stalled_body_gets_request_timeout(server, s3, raw, bucket, size):
    """A client that stops sending mid-body (without closing) is answered once the stall
    timeout passes (2 s for this node), and nothing is stored. A client that half-closes
    its socket instead just loses the connection (aiohttp closes on EOF): covered above."""
    data = payload(size, seed=6)
    chunks, tail = unsigned_trailer_body(data)
    reply = put_unsigned_trailer(raw, path(bucket, "k"), data, [chunks], len(chunks) + len(tail))
    expect_error(reply, 400, "RequestTimeout")
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
def test_aws_chunked_framing_without_final_chunk(server, s3, raw, bucket, size):
    """The HTTP body is complete (Content-Length matches) but the aws-chunked framing inside
    it never reaches the 0-chunk: the decoder, not the transport, must refuse it."""
    data = payload(size, seed=8)
    chunks, _ = unsigned_trailer_body(data)
    reply = put_unsigned_trailer(raw, path(bucket, "k"), data, [chunks], len(chunks))
    expect_error(reply, 400, "IncompleteBody")
    assert_stored_nothing(server, s3, bucket, "k")


def test_aws_chunked_fewer_bytes_than_decoded_length(server, s3, raw, bucket):
    data = payload(1000, seed=9)
    chunks, tail = unsigned_trailer_body(data[:600], checksum=crc32_b64(data[:600]))
    reply = put_unsigned_trailer(
        raw, path(bucket, "k"), data, [chunks, tail], len(chunks) + len(tail)
    )
    expect_error(reply, 400, "IncompleteBody")
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_aws_chunked_bad_trailer_checksum(server, s3, raw, bucket, size, existing):
    old = payload(size, seed=10)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    data = payload(size, seed=11)
    chunks, tail = unsigned_trailer_body(data, checksum=crc32_b64(data + b"x"))
    reply = put_unsigned_trailer(
        raw, path(bucket, "k"), data, [chunks, tail], len(chunks) + len(tail)
    )
    expect_error(reply, 400, "BadDigest")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


def _signing_key(secret: str, date: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def signed_chunked_body(
    pieces: list[bytes], *, amz_date: str, seed: str, secret: str, corrupt: int | None = None
) -> bytes:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD framing (AWS SigV4 chunked upload): each chunk,
    then the final empty one, signed over the previous signature and the chunk's SHA-256.
    `corrupt` is the index of a chunk whose signature is sent wrong (len(pieces) = final)."""
    key = _signing_key(secret, amz_date[:8])
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    previous, out = seed, bytearray()
    for i, piece in enumerate([*pieces, b""]):
        sts = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(piece).hexdigest(),
            )
        )
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        sent = _flip_hex(sig) if i == corrupt else sig
        out += f"{len(piece):x};chunk-signature={sent}\r\n".encode() + piece + b"\r\n"
        previous = sig
    return bytes(out)


def put_signed_chunked(raw, target, data, *, corrupt=None, chunk=CHUNK):
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    # Every signature is 64 hex digits, so the framing's length is known before signing.
    length = len(
        signed_chunked_body(pieces, amz_date="20000101T000000Z", seed="0" * 64, secret="x")
    )
    headers = raw.sign(
        "PUT",
        target,
        {
            "Content-Encoding": "aws-chunked",
            "Content-Length": str(length),
            "x-amz-decoded-content-length": str(len(data)),
        },
        payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    )
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    body = signed_chunked_body(
        pieces, amz_date=headers["X-Amz-Date"], seed=seed, secret=DEV_SECRET_KEY, corrupt=corrupt
    )
    assert len(body) == length
    return raw.send("PUT", target, headers, [body])


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
def test_signed_chunked_upload_is_accepted(s3, raw, bucket, size):
    data = payload(size, seed=12)
    reply = put_signed_chunked(raw, path(bucket, "k"), data)
    assert reply is not None and reply.status == 200, reply
    assert get_bytes(s3, bucket, "k") == data


@pytest.mark.parametrize(
    ("size", "corrupt"),
    [(11, 0), (11, 1), (STREAMED, 0), (STREAMED, 3), (STREAMED, 5)],
    ids=["inline-first", "inline-final", "streamed-first", "streamed-middle", "streamed-final"],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_signed_chunked_wrong_chunk_signature(server, s3, raw, bucket, size, corrupt, existing):
    old = payload(size, seed=13)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    data = payload(size, seed=14)
    assert corrupt <= -(-size // CHUNK)  # STREAMED is 5 chunks: index 5 is the final 0-chunk
    reply = put_signed_chunked(raw, path(bucket, "k"), data, corrupt=corrupt)
    expect_error(reply, 403, "SignatureDoesNotMatch")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


# -- bodies shorter than Content-Length ----------------------------------------------------------
@pytest.mark.parametrize(
    ("declared", "sent"),
    [(1000, 400), (3 << 20, 1 << 20)],
    ids=["inline", "streamed"],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_body_shorter_than_content_length(server, s3, raw, bucket, declared, sent, existing):
    old = payload(declared, seed=15)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    target = path(bucket, "k")
    headers = raw.sign(
        "PUT", target, {"Content-Length": str(declared)}, payload_hash="UNSIGNED-PAYLOAD"
    )
    reply = raw.send("PUT", target, headers, [payload(sent, seed=16)], half_close=True)
    if reply is not None:
        expect_error(reply, 400, "IncompleteBody")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


def test_signed_body_shorter_than_content_length(server, s3, raw, bucket):
    body = payload(1000, seed=17)
    target = path(bucket, "k")
    headers = raw.sign("PUT", target, {"Content-Length": "1000"}, body)
    reply = raw.send("PUT", target, headers, [body[:400]], half_close=True)
    if reply is not None:
        expect_error(reply, 400, "IncompleteBody")
    assert_stored_nothing(server, s3, bucket, "k")


# -- Content-MD5 -------------------------------------------------------------------------------
def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.mark.parametrize("size", [11, STREAMED], ids=["inline", "streamed"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_content_md5_mismatch(server, s3, raw, bucket, size, existing):
    old = payload(size, seed=18)
    if existing:
        s3.put_object(Bucket=bucket, Key="k", Body=old)
    body = payload(size, seed=19)
    reply = raw.request("PUT", path(bucket, "k"), body, {"Content-MD5": md5_b64(body + b"!")})
    expect_error(reply, 400, "BadDigest")
    if existing:
        assert_still_old(server, s3, bucket, "k", old)
    else:
        assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        base64.b64encode(b"x" * 15).decode(),
        base64.b64encode(b"x" * 17).decode(),
        "",
        hashlib.md5(b"hex is not base64").hexdigest(),
    ],
    ids=["not-base64", "15-bytes", "17-bytes", "empty", "hex"],
)
def test_malformed_content_md5(server, s3, raw, bucket, value):
    reply = raw.request("PUT", path(bucket, "k"), b"some data", {"Content-MD5": value})
    expect_error(reply, 400, "InvalidDigest")
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("size", [0, 11, STREAMED], ids=["empty", "inline", "streamed"])
def test_content_md5_match_is_accepted(s3, raw, bucket, size):
    body = payload(size, seed=20)
    reply = raw.request("PUT", path(bucket, "k"), body, {"Content-MD5": md5_b64(body)})
    assert reply.status == 200
    assert reply.header("etag") == f'"{hashlib.md5(body).hexdigest()}"'
    assert get_bytes(s3, bucket, "k") == body


# -- DeleteObjects -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"<Delete><Object><Key>a</Key></Object>",
        b"this is not xml",
        b"",
        b"<NotDelete><Object><Key>a</Key></Object></NotDelete>",
        b"<Delete><Object><VersionId>x</VersionId></Object></Delete>",
        b"<Delete></Delete>",
        b'<!DOCTYPE x [<!ENTITY e "a">]><Delete><Object><Key>&e;</Key></Object></Delete>',
    ],
    ids=["unclosed", "not-xml", "empty", "wrong-root", "no-key", "no-objects", "dtd"],
)
def test_delete_objects_malformed_xml(s3, raw, bucket, body):
    s3.put_object(Bucket=bucket, Key="a", Body=b"kept")
    headers = {"Content-MD5": md5_b64(body)}
    expect_error(raw.request("POST", f"/{bucket}?delete", body, headers), 400, "MalformedXML")
    assert keys_in(s3, bucket) == ["a"]
    assert get_bytes(s3, bucket, "a") == b"kept"


_DELETE_A = b"<Delete><Object><Key>a</Key></Object></Delete>"


def test_delete_objects_content_md5_mismatch(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"kept")
    reply = raw.request("POST", f"/{bucket}?delete", _DELETE_A, {"Content-MD5": md5_b64(b"other")})
    try:
        expect_error(reply, 400, "BadDigest")
    finally:
        assert keys_in(s3, bucket) == ["a"]


def test_delete_objects_malformed_content_md5(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"kept")
    reply = raw.request("POST", f"/{bucket}?delete", _DELETE_A, {"Content-MD5": "garbage!"})
    try:
        expect_error(reply, 400, "InvalidDigest")
    finally:
        assert keys_in(s3, bucket) == ["a"]


def test_delete_objects_content_sha256_mismatch(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"kept")
    wrong = hashlib.sha256(_DELETE_A + b" ").hexdigest()
    reply = raw.request("POST", f"/{bucket}?delete", _DELETE_A, payload_hash=wrong)
    expect_error(reply, 400, "XAmzContentSHA256Mismatch")
    assert keys_in(s3, bucket) == ["a"]


def test_delete_objects_well_formed_control(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"gone")
    body = b"<Delete><Object><Key>a</Key></Object></Delete>"
    reply = raw.request("POST", f"/{bucket}?delete", body, {"Content-MD5": md5_b64(body)})
    assert reply.status == 200
    assert keys_in(s3, bucket) == []


# -- other refusals: lengths, metadata, unsupported operations ---------------------------------
def test_put_without_content_length(server, s3, raw, bucket):
    target = path(bucket, "k")
    headers = raw.sign("PUT", target, payload_hash="UNSIGNED-PAYLOAD")
    expect_error(raw.send("PUT", target, headers), 411, "MissingContentLength")
    headers = raw.sign(
        "PUT", target, {"Transfer-Encoding": "chunked"}, payload_hash="UNSIGNED-PAYLOAD"
    )
    reply = raw.send("PUT", target, headers, [b"4\r\ndata\r\n0\r\n\r\n"])
    expect_error(reply, 411, "MissingContentLength")
    assert_stored_nothing(server, s3, bucket, "k")


def test_user_metadata_too_large(server, s3, raw, bucket):
    reply = raw.request("PUT", path(bucket, "k"), b"data", {"x-amz-meta-big": "v" * 2100})
    expect_error(reply, 400, "MetadataTooLarge")
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [
        ("PUT", "/{bucket}/k?retention", 501, "NotImplemented"),
        ("PUT", "/{bucket}/k?tagging", 501, "NotImplemented"),
        ("GET", "/{bucket}/k?attributes", 501, "NotImplemented"),
        ("PATCH", "/{bucket}/k", 405, "MethodNotAllowed"),
        ("DELETE", "/", 405, "MethodNotAllowed"),
    ],
)
def test_unsupported_operations(server, s3, raw, bucket, method, target, status, code):
    body = b"<x/>" if method in ("PUT", "POST") else b""
    reply = raw.request(method, target.format(bucket=bucket), body)
    expect_error(reply, status, code)
    assert_stored_nothing(server, s3, bucket, "k")


@pytest.mark.parametrize("how", ["header-too-long", "bad-content-length"])
def test_http_level_errors_are_s3_errors(server, s3, raw, bucket, how):
    target = path(bucket, "k")
    if how == "header-too-long":
        headers = raw.sign(
            "PUT", target, {"Content-Length": "4", "x-amz-meta-big": "v" * 9000}, b"data"
        )
    else:
        headers = raw.sign("PUT", target, {"Content-Length": "four"}, b"data")
    expect_error(raw.send("PUT", target, headers, [b"data"]), 400, None)
    assert_stored_nothing(server, s3, bucket, "k")
