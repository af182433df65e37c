"""RangeReader returns exactly the bytes a plain pread would, direct or not."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardfleet.node.storage.shardfile import ShardFile
from shardfleet.node.storage.shardread import ALIGN, DIRECT_MIN, RangeReader

SIZE = 3 * (1 << 20) + 4 * 7  # not a whole number of pages, like a framed shard
DATA = os.urandom(SIZE)


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shard") / "part.1"
    f = ShardFile(path)
    try:
        f.append([DATA[: 1 << 20], memoryview(DATA)[1 << 20 :]])
        f.finish()
    finally:
        f.close()
    return path


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(0, SIZE + ALIGN), length=st.integers(0, 3 << 20))
def test_any_range_reads_what_pread_reads(shard, offset, length):
    got = RangeReader().read(shard, offset, length)
    assert bytes(got) == DATA[offset : offset + length]


def test_large_reads_go_direct_and_return_read_only_views(shard):
    reader = RangeReader()
    got = reader.read(shard, 4097, DIRECT_MIN + 5)
    assert reader.direct
    assert isinstance(got, memoryview) and got.readonly
    assert bytes(got) == DATA[4097 : 4097 + DIRECT_MIN + 5]
    small = reader.read(shard, 10, 100)
    assert isinstance(small, bytes) and small == DATA[10:110]


def test_the_tail_of_the_file_comes_back_short(shard):
    got = RangeReader().read(shard, SIZE - 100, 1 << 20)
    assert bytes(got) == DATA[-100:]


def test_tmpfs_reads_are_exact_whether_or_not_it_takes_o_direct():
    # tmpfs refuses O_DIRECT before Linux 6.6 (the reader then stays buffered) and takes it since
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no tmpfs at /dev/shm")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        path = Path(tmp) / "part.1"
        path.write_bytes(DATA)
        reader = RangeReader()
        for _ in range(2):
            assert bytes(reader.read(path, 123, 1 << 20)) == DATA[123 : 123 + (1 << 20)]


def test_a_reader_without_o_direct_reads_through_the_page_cache(shard):
    reader = RangeReader()
    reader.direct = False
    got = reader.read(shard, 4097, 1 << 20)
    assert isinstance(got, bytes) and got == DATA[4097 : 4097 + (1 << 20)]


def test_a_missing_file_raises():
    with pytest.raises(FileNotFoundError):
        RangeReader().read("/nonexistent/part.1", 0, DIRECT_MIN)
