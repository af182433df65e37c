"""The allocator tuning applies on glibc and is harmless to call twice."""

from __future__ import annotations

import sys

import pytest

from shardfleet.node.malloc import tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tune_allocator_sets_the_thresholds() -> None:
    assert tune_allocator() is True
    assert tune_allocator() is True
    block = bytearray(1 << 20)  # a MiB from the heap now, and back
    del block
