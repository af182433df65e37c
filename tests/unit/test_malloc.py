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


def test_limit_arenas_is_accepted() -> None:
    from shardfleet.node.malloc import limit_arenas

    assert limit_arenas() is True  # glibc here; a second call is as good as the first
    assert limit_arenas() is True
