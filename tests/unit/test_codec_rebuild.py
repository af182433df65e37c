"""Codec.rebuild: any k blocks of a stripe give back every other block exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shardfleet.erasure import Codec, ErasureParams


@settings(max_examples=80, deadline=None)
@given(
    k=st.integers(1, 6),
    m=st.integers(0, 4),
    data=st.binary(min_size=1, max_size=5000),
    seed=st.randoms(use_true_random=False),
)
def test_any_k_blocks_rebuild_the_rest(k, m, data, seed):
    codec = Codec(ErasureParams(k, m, 1 << 20))
    blocks, _ = codec.encode_stripe(data)
    everything = {i: bytes(b) for i, b in enumerate(blocks)}
    kept = seed.sample(range(k + m), k)
    lost = [i for i in range(k + m) if i not in kept]
    rebuilt = codec.rebuild({i: everything[i] for i in kept}, lost)
    assert {i: bytes(b) for i, b in rebuilt.items()} == {i: everything[i] for i in lost}
