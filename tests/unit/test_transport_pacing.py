"""The background byte-rate cap (transport.pacing.Pacer), driven by hand."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from shardfleet.transport.pacing import Pacer

MIB = 1 << 20


def test_burst_then_rate():
    p = Pacer(rate=10 * MIB, burst=MIB)
    assert p.charge(MIB, now=0.0) == 0.0  # the burst goes at once
    assert p.charge(MIB, now=0.0) == 0.1  # then 1 MiB per 0.1 s
    assert p.charge(MIB, now=0.0) == 0.2  # senders queue in charge order
    assert p.charge(MIB, now=1.0) == 0.0  # idle long enough: the debt is repaid
    assert p.sent == 4 * MIB and abs(p.waited - 0.3) < 1e-9


def test_idle_credit_is_capped_at_the_burst():
    p = Pacer(rate=MIB, burst=MIB)
    p.charge(0, now=0.0)
    assert p.charge(2 * MIB, now=1000.0) == 1.0  # 1000 s idle buys one burst, not 1000 MiB


def test_zero_rate_paces_nothing():
    p = Pacer(rate=0, burst=0)
    assert not p.enabled
    assert p.charge(10 * MIB, now=0.0) == 0.0
    asyncio.run(p.take(MIB))
    assert p.sent == 11 * MIB


@given(
    rate=st.integers(1, 100 * MIB),
    burst=st.integers(0, 4 * MIB),
    pieces=st.lists(
        st.tuples(st.integers(1, 2 * MIB), st.floats(0, 0.5), st.integers(0, 3)),
        min_size=1,
        max_size=60,
    ),
)
def test_sent_bytes_never_outrun_the_rate(rate, burst, pieces):
    """Senders that wait what they are told: by any moment, at most burst + rate * t bytes
    have gone out (a piece counts when it is sent, i.e. at charge time + delay)."""
    p = Pacer(rate=rate, burst=burst)
    now = 0.0
    sends: list[tuple[float, int]] = []
    senders = [0.0] * 4  # when each of 4 concurrent senders is free again
    for size, gap, who in pieces:
        # a sender charges its next piece once its last went; the clock never goes back
        now = max(now + gap, senders[who])
        at = now
        delay = p.charge(size, at)
        senders[who] = at + delay
        sends.append((at + delay, size))
    sends.sort()
    total = 0
    for t, size in sends:
        total += size
        assert total <= burst + rate * t + 1e-6 * rate + 1  # float slack


async def test_take_sleeps_for_the_debt():
    p = Pacer(rate=20 * MIB, burst=MIB)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(3):
        await p.take(MIB)
    assert 0.09 <= loop.time() - t0 < 1.0  # 2 MiB over the burst at 20 MiB/s: ~0.1 s
