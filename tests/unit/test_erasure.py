"""Property tests of the pure erasure layer: any k of k+m shards rebuild the exact bytes."""

import doctest
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardfleet.erasure.stripe
from shardfleet.erasure import (
    CRC_LEN,
    BitrotError,
    Codec,
    ErasureParams,
    NotEnoughShards,
    crc32c,
    frame_header,
    shard_file_size,
    stripes_for_range,
    verify_block,
)
from shardfleet.erasure.checksum import crc32c_crcmod
from shardfleet.erasure.stripe import data_blocks_for_range

params_st = st.builds(
    ErasureParams,
    k=st.integers(1, 6),
    m=st.integers(0, 4),
    stripe_size=st.integers(1, 64),
)


def encode_object(data: bytes, p: ErasureParams) -> list[bytearray]:
    """Reference writer: the shard files exactly as the drives would hold them."""
    codec = Codec(p)
    files = [bytearray() for _ in range(p.n)]
    for span in stripes_for_range(len(data), p, 0, len(data)):
        stripe = data[span.object_offset : span.object_offset + span.data_len]
        blocks, block_len = codec.encode_stripe(stripe)
        assert block_len == span.block_len
        for i, block in enumerate(blocks):
            assert len(files[i]) == span.file_offset
            files[i] += frame_header(block) + bytes(block)
    for f in files:
        assert len(f) == shard_file_size(len(data), p)
    return files


def decode_object(files: dict[int, bytes], size: int, p: ErasureParams) -> bytes:
    codec = Codec(p)
    out = bytearray()
    for span in stripes_for_range(size, p, 0, size):
        blocks = {
            i: verify_block(
                f[span.file_offset : span.file_offset + span.framed_len], span.block_len
            )
            for i, f in files.items()
        }
        out += codec.join(codec.decode(blocks), span.data_len)
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(p=params_st, data=st.binary(max_size=300), seed=st.integers(0, 2**32))
def test_any_k_shards_rebuild_exact_bytes(p, data, seed):
    files = encode_object(data, p)
    chosen = random.Random(seed).sample(range(p.n), p.k)
    assert decode_object({i: files[i] for i in chosen}, len(data), p) == data


@pytest.mark.parametrize("k,m", [(1, 0), (2, 2), (4, 2), (3, 1), (1, 3)])
@pytest.mark.parametrize("size_kind", ["empty", "one", "exact", "odd"])
def test_every_k_subset_edge_sizes(k, m, size_kind):
    p = ErasureParams(k, m, stripe_size=12)
    size = {"empty": 0, "one": 1, "exact": 3 * p.stripe_size, "odd": 3 * p.stripe_size + 5}[
        size_kind
    ]
    data = bytes(random.Random(size).randbytes(size))
    files = encode_object(data, p)
    for subset in itertools.combinations(range(p.n), k):
        assert decode_object({i: files[i] for i in subset}, size, p) == data


def test_fewer_than_k_shards_is_an_error():
    codec = Codec(ErasureParams(3, 2))
    with pytest.raises(NotEnoughShards):
        codec.decode({0: b"ab", 4: b"cd"})


@given(data=st.binary(max_size=2000))
def test_crc32c_agrees_with_crcmod_oracle(data):
    assert crc32c(data) == crc32c_crcmod(data)


def test_crc32c_is_the_hardware_package_loaded_without_its_init():
    """erasure.checksum loads crc32c's extension directly (its __init__ costs start-up)."""
    import subprocess
    import sys

    code = (
        "import sys, shardfleet.erasure.checksum as c; "
        "print(type(c.crc32c).__name__, 'crc32c' in sys.modules, 'importlib.metadata' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["builtin_function_or_method", "False", "False"]
    import crc32c as package  # the package imported afterwards reuses the same extension

    assert package.crc32c(b"123456789") == crc32c(b"123456789") == 0xE3069283


def test_bitrot_detected():
    block = b"hello shard"
    framed = bytearray(frame_header(block) + block)
    assert bytes(verify_block(framed, len(block))) == block
    framed[CRC_LEN + 3] ^= 0x40
    with pytest.raises(BitrotError):
        verify_block(framed, len(block))


@settings(max_examples=300, deadline=None)
@given(p=params_st, size=st.integers(0, 500), a=st.integers(0, 500), b=st.integers(0, 500))
def test_range_plan_covers_exactly(p, size, a, b):
    start, end = min(a, b), max(a, b)
    spans = stripes_for_range(size, p, start, end)
    covered = set()
    for span in spans:
        for i in data_blocks_for_range(span, p, start, end):
            lo = span.object_offset + i * span.block_len
            covered.update(range(lo, min(lo + span.block_len, span.object_offset + span.data_len)))
    want = set(range(start, min(end, size)))
    assert want <= covered
    # no stripe is read that holds none of the wanted bytes
    for span in spans:
        assert data_blocks_for_range(span, p, start, end)


def test_quorum_numbers():
    assert ErasureParams(2, 2).default_write_quorum == 3
    assert ErasureParams(2, 2).min_write_quorum == 3
    assert ErasureParams(4, 2).min_write_quorum == 4
    assert ErasureParams(4, 0).default_write_quorum == 4
    assert ErasureParams.parse(" 8+4 ").n == 12
    with pytest.raises(ValueError):
        ErasureParams.parse("2-2")
    with pytest.raises(ValueError):
        ErasureParams(2, 2).check_write_quorum(2)


def test_stripe_doctests():
    assert doctest.testmod(shardfleet.erasure.stripe).failed == 0
