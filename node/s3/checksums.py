"""S3 "flexible checksums": incremental hashers keyed by S3 algorithm name.

Every hasher is fed the object bytes as they stream past, so the checksum costs one pass over
data we are touching anyway, and `b64digest()` yields exactly the text S3 puts in
``x-amz-checksum-<alg>`` (base64 of the big-endian digest) so values compare as strings.

CRC64NVME: `awscrt` (what botocore uses) is preferred when importable; otherwise `crcmod`,
a hard dependency that ships a C extension, computes it at ~400 MiB/s. Only if crcmod was
installed without its extension does this degrade to crcmod's pure-Python path, which is
slow (a few MiB/s) but still correct.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import zlib
from collections.abc import Callable
from typing import Protocol

from shardfleet.node.s3.errors import BadDigest, InvalidRequest, S3Error

ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
HEADER_PREFIX = "x-amz-checksum-"
#: x-amz-checksum-* request headers that carry parameters, not checksum values.
NON_VALUE_HEADERS = frozenset(
    {"x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-checksum-mode"}
)
#: Raw digest length per algorithm, used to reject malformed client values up front.
DIGEST_SIZES = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}

_CrcFun = Callable[[bytes | memoryview, int], int]


def _load_crc32c() -> _CrcFun:
    from shardfleet.erasure.checksum import (
        hardware_crc32c,  # loaded without the package's slow __init__
    )

    if hardware_crc32c is not None:
        return hardware_crc32c  # type: ignore[return-value]
    import crcmod.predefined  # pragma: no cover - crc32c is a declared dependency

    fun: _CrcFun = crcmod.predefined.mkCrcFun("crc-32c")  # pragma: no cover
    return fun  # pragma: no cover


@functools.cache
def _load_crc64nvme() -> _CrcFun:
    """On first use: few requests ask for CRC64NVME (the crcmod table costs ~2 ms of start-up)."""
    try:
        from awscrt.checksums import crc64nvme  # type: ignore[import-not-found]

        return crc64nvme  # type: ignore[no-any-return]
    except ImportError:
        import crcmod

        # Reflected CRC-64/NVME (poly 0xAD93D23594C93659), init and xorout all ones; crcmod
        # folds the xorout into its `crc` argument so chaining calls stays incremental.
        fun: _CrcFun = crcmod.mkCrcFun(
            0x1AD93D23594C93659, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF
        )
        return fun


_crc32c = _load_crc32c()


class Checksum(Protocol):
    algorithm: str

    def update(self, data: bytes | memoryview) -> None: ...

    def b64digest(self) -> str: ...


class _Crc:
    """A CRC whose running value is an int; `size` bytes big-endian when digested."""

    __slots__ = ("algorithm", "_fun", "_size", "_value")

    def __init__(self, algorithm: str, fun: _CrcFun, size: int) -> None:
        self.algorithm = algorithm
        self._fun = fun
        self._size = size
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = self._fun(data, self._value)

    def b64digest(self) -> str:
        mask = (1 << (8 * self._size)) - 1
        return base64.b64encode((self._value & mask).to_bytes(self._size, "big")).decode()


class _Hash:
    __slots__ = ("algorithm", "_h")

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm.lower())

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)

    def b64digest(self) -> str:
        return base64.b64encode(self._h.digest()).decode()


def normalize(algorithm: str) -> str:
    """Canonical upper-case name; clients send any case (boto3: "crc32", headers: "CRC32")."""
    alg = algorithm.strip().upper()
    if alg not in DIGEST_SIZES:
        raise InvalidRequest(f"Checksum algorithm {algorithm!r} is not supported.")
    return alg


def new_checksum(algorithm: str) -> Checksum:
    alg = normalize(algorithm)
    if alg == "CRC32":
        return _Crc(alg, zlib.crc32, 4)
    if alg == "CRC32C":
        return _Crc(alg, _crc32c, 4)
    if alg == "CRC64NVME":
        return _Crc(alg, _load_crc64nvme(), 8)
    return _Hash(alg)


def header_name(algorithm: str) -> str:
    return HEADER_PREFIX + normalize(algorithm).lower()


def algorithm_of_header(name: str) -> str | None:
    """The algorithm a checksum-value header names, None for unrelated headers.

    Raises InvalidRequest for an x-amz-checksum-<unknown> header, because silently ignoring
    a checksum the client asked us to enforce would store data it believes was verified.
    """
    lname = name.lower()
    if not lname.startswith(HEADER_PREFIX) or lname in NON_VALUE_HEADERS:
        return None
    return normalize(lname[len(HEADER_PREFIX) :])


def validate_value(algorithm: str, value: str) -> str:
    """Check a client-sent digest is base64 of the right length, so a typo is a 400 up front
    rather than a misleading BadDigest after the whole body was read."""
    alg = normalize(algorithm)
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != DIGEST_SIZES[alg]:
        raise InvalidRequest(f"Value for {header_name(alg)} header is invalid.")
    return value.strip()


def mismatch(algorithm: str) -> S3Error:
    """The BadDigest a client sees, worded per algorithm as AWS does."""
    return BadDigest(
        f"The {normalize(algorithm)} you specified did not match the calculated checksum."
    )


# -- multipart: whole-object checksums from the parts' --------------------------------------
#: the reflected polynomials of the CRCs S3 offers; all three start and end inverted, which
#: is what lets crc(A + B) be computed from crc(A), crc(B) and len(B) alone
_REFLECTED = {
    "CRC32": (0xEDB88320, 32),
    "CRC32C": (0x82F63B78, 32),
    "CRC64NVME": (0x9A6C9329AC4BC9B5, 64),
}
_SHIFTS: dict[str, list[list[int]]] = {}  # per CRC: the operator appending 2**i zero bytes


def _times(matrix: list[int], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _shift_operators(alg: str) -> list[list[int]]:
    """GF(2) matrices that advance a CRC register over 1, 2, 4, ... zero bytes (zlib's
    crc32_combine), computed once per algorithm."""
    found = _SHIFTS.get(alg)
    if found is not None:
        return found
    poly, width = _REFLECTED[alg]
    op = [poly] + [1 << n for n in range(width - 1)]  # one zero bit
    for _ in range(3):  # 2, 4, 8 bits: one zero byte
        op = [_times(op, op[n]) for n in range(width)]
    ops = [op]
    for _ in range(63):  # up to 2**63 bytes
        op = [_times(op, op[n]) for n in range(width)]
        ops.append(op)
    _SHIFTS[alg] = ops
    return ops


def combine_crc(alg: str, parts: list[tuple[bytes, int]]) -> bytes:
    """The CRC of the concatenation of parts given each part's (raw CRC, length): S3's
    FULL_OBJECT checksum of a multipart upload, without reading its bytes again."""
    alg = normalize(alg)
    if alg not in _REFLECTED:
        raise InvalidRequest(f"The FULL_OBJECT checksum type is not available for {alg}.")
    width = _REFLECTED[alg][1]
    ops = _shift_operators(alg)
    crc = 0
    for raw, length in parts:
        i = 0
        while length:
            if length & 1:
                crc = _times(ops[i], crc)
            length >>= 1
            i += 1
        crc ^= int.from_bytes(raw, "big")
    return crc.to_bytes(width // 8, "big")


def composite(alg: str, raw_parts: list[bytes]) -> str:
    """S3's COMPOSITE checksum: the algorithm over the parts' raw checksums, then -N."""
    hasher = new_checksum(alg)
    for raw in raw_parts:
        hasher.update(raw)
    return f"{hasher.b64digest()}-{len(raw_parts)}"
