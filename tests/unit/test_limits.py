"""node/s3/limits.py on a fake clock: token buckets, uploads in flight, who a requester is,
and the SlowDown (with Retry-After) a refused request gets."""

from __future__ import annotations

import asyncio
import time

import pytest

from shardfleet.node.s3.errors import SlowDown
from shardfleet.node.s3.limits import InFlight, Limits, TokenBuckets, source_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    tb = TokenBuckets(8, 5, clock=clock)  # binary fractions: exact sums on the fake clock
    assert [tb.take("k") for _ in range(5)] == [0.0] * 5
    wait = tb.take("k")
    assert wait == 0.125  # one token every 1/8 s
    clock.now += 0.0625
    assert tb.take("k") == 0.0625  # a refusal takes nothing
    clock.now += 0.0625
    assert tb.take("k") == 0.0
    assert tb.take("k") > 0


def test_bucket_refills_to_the_burst_and_no_more() -> None:
    clock = Clock()
    tb = TokenBuckets(10, 3, clock=clock)
    for _ in range(3):
        tb.take("k")
    clock.now += 3600  # an hour idle: still only 3
    assert [tb.take("k") for _ in range(3)] == [0.0] * 3
    assert tb.take("k") > 0


def test_sustained_rate_is_the_configured_one() -> None:
    clock = Clock()
    tb = TokenBuckets(20, 20, clock=clock)
    admitted = 0
    for _ in range(10_000):  # a client asking every millisecond for 10 s
        clock.now += 0.001
        admitted += tb.take("k") == 0.0
    assert 20 * 10 <= admitted <= 20 * 10 + 20 + 1  # the rate, plus one burst


def test_keys_are_independent() -> None:
    clock = Clock()
    tb = TokenBuckets(1, 1, clock=clock)
    assert tb.take("a") == 0.0
    assert tb.take("a") > 0
    assert tb.take("b") == 0.0


def test_table_keeps_the_most_recent_keys() -> None:
    clock = Clock()
    tb = TokenBuckets(1, 1, clock=clock, max_keys=3)
    for key in "abc":
        tb.take(key)
    tb.take("a")  # a is recent again; b is now the oldest
    tb.take("d")
    assert len(tb) == 3
    assert tb.take("a") > 0  # still remembered: empty
    assert tb.take("b") == 0.0  # forgotten: a full bucket


def test_bucket_cost_does_not_grow_with_keys() -> None:
    """O(1) per request: a take among 50,000 keys costs what it costs among 10."""

    def per_take(n: int) -> float:
        tb = TokenBuckets(100, 10, max_keys=1 << 20)
        keys = [f"key{i}" for i in range(n)]
        for k in keys:
            tb.take(k)
        rounds = 200_000
        start = time.perf_counter()
        for i in range(rounds):
            tb.take(keys[i % n])
        return (time.perf_counter() - start) / rounds

    small = min(per_take(10) for _ in range(3))
    large = min(per_take(50_000) for _ in range(3))
    assert large < small * 3, (small, large)


def test_in_flight_counts_and_forgets() -> None:
    flight = InFlight(2)
    assert flight.acquire("k") and flight.acquire("k")
    assert not flight.acquire("k")
    assert flight.acquire("other")
    flight.release("k")
    assert flight.acquire("k")
    for _ in range(2):
        flight.release("k")
    flight.release("other")
    assert len(flight) == 0  # nothing kept for requesters with nothing in flight


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, ""),
        ("not an address:x", "not an address:x"),
    ],
)
def test_source_key(remote: str | None, key: str) -> None:
    assert source_key(remote) == key


def test_admit_refuses_with_slowdown_and_retry_after() -> None:
    clock = Clock()
    seen: list[str] = []
    limits = Limits(rps=0.2, burst=1, clock=clock, on_throttle=seen.append)
    assert limits.admit("AK", "10.0.0.1", "GetObject") is None
    with pytest.raises(SlowDown) as info:
        limits.admit("AK", "10.0.0.1", "GetObject")
    err = info.value
    assert (err.status, err.code) == (503, "SlowDown")
    assert err.headers == {"Retry-After": "5"}  # a token every 5 s, rounded up
    assert seen == ["rps"]
    clock.now += 5
    assert limits.admit("AK", "10.0.0.1", "GetObject") is None


def test_retry_after_is_at_least_one_second() -> None:
    limits = Limits(rps=1000, burst=1, clock=Clock())
    limits.admit("AK", None, "GetObject")
    with pytest.raises(SlowDown) as info:
        limits.admit("AK", None, "GetObject")
    assert info.value.headers["Retry-After"] == "1"


def test_signed_and_anonymous_requesters_are_apart() -> None:
    clock = Clock()
    limits = Limits(rps=1, burst=1, clock=clock)
    limits.admit("AK", "10.0.0.1", "GetObject")
    with pytest.raises(SlowDown):
        limits.admit("AK", "10.0.0.2", "GetObject")  # an access key is one requester anywhere
    limits.admit(None, "10.0.0.1", "GetObject")  # anonymous from the same address: its own
    limits.admit("", "10.0.0.2", "GetObject")  # "" is anonymous too
    with pytest.raises(SlowDown):
        limits.admit(None, "10.0.0.1", "HeadObject")
    limits.admit("10.0.0.3", "10.0.0.3", "GetObject")  # a key spelled like an address
    limits.admit(None, "10.0.0.3", "GetObject")  # is not that address


def test_uploads_in_flight() -> None:
    seen: list[str] = []
    limits = Limits(uploads=2, clock=Clock(), on_throttle=seen.append)
    a = limits.admit("AK", None, "PutObject")
    b = limits.admit("AK", None, "UploadPart")
    assert a is not None and b is not None
    with pytest.raises(SlowDown) as info:
        limits.admit("AK", None, "CopyObject")
    assert info.value.headers["Retry-After"] == "1"
    assert seen == ["uploads"]
    assert limits.admit("AK", None, "GetObject") is None  # reads are not uploads
    assert limits.admit("other", None, "UploadPartCopy") is not None
    Limits.release(a)
    c = limits.admit("AK", None, "PutObject")
    assert c is not None


def test_rate_is_checked_before_uploads() -> None:
    seen: list[str] = []
    limits = Limits(rps=1, burst=1, uploads=5, clock=Clock(), on_throttle=seen.append)
    limits.admit("AK", None, "PutObject")
    with pytest.raises(SlowDown):
        limits.admit("AK", None, "PutObject")
    assert seen == ["rps"]


def test_build_is_none_when_off() -> None:
    assert Limits.build(0, 0, 0) is None
    assert Limits.build(0, 10, 0) is None  # a burst alone limits nothing
    assert Limits.build(5, 0, 0) is not None
    assert Limits.build(0, 0, 3) is not None


def test_default_burst_is_one_second() -> None:
    limits = Limits(rps=20, clock=Clock())
    for _ in range(20):
        limits.admit("AK", None, "GetObject")
    with pytest.raises(SlowDown):
        limits.admit("AK", None, "GetObject")


async def test_check_holds_a_refusal_then_raises_it() -> None:
    limits = Limits(rps=1, burst=1, clock=Clock(), hold=0.2)
    assert await limits.check("AK", None, "GetObject") is None  # admitted: no wait
    started = time.monotonic()
    with pytest.raises(SlowDown):
        await limits.check("AK", None, "GetObject")
    waited = time.monotonic() - started
    assert 0.09 <= waited < 1.0, waited  # between half the hold and the hold (+ slack)
    assert limits.held == 0


async def test_check_answers_at_once_past_max_held() -> None:
    limits = Limits(rps=1, burst=1, clock=Clock(), hold=5.0, max_held=2)
    limits.admit("AK", None, "GetObject")
    held = [asyncio.ensure_future(limits.check("AK", None, "GetObject")) for _ in range(2)]
    await asyncio.sleep(0)
    assert limits.held == 2
    started = time.monotonic()
    with pytest.raises(SlowDown):
        await limits.check("AK", None, "GetObject")  # a third: no room, answered at once
    assert time.monotonic() - started < 0.5
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert limits.held == 0


async def test_check_without_hold_answers_at_once() -> None:
    limits = Limits(rps=1, burst=1, clock=Clock())
    limits.admit("AK", None, "GetObject")
    started = time.monotonic()
    with pytest.raises(SlowDown):
        await limits.check("AK", None, "GetObject")
    assert time.monotonic() - started < 0.5
