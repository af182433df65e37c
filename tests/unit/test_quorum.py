"""fan_out outcome tables: successes, errors, timeouts and the straggler grace."""

import asyncio
import random

import pytest

from cluster.quorum import CallTimeout, fan_out


def outcome(kind: str, delay: float = 0.0):
    async def call():
        await asyncio.sleep(delay)
        if kind == "err":
            raise OSError("boom")
        if kind == "hang":
            await asyncio.sleep(3600)
        return kind

    return call


@pytest.mark.parametrize("seed", range(20))
async def test_shuffled_outcomes(seed):
    rng = random.Random(seed)
    kinds = [rng.choice(["ok", "err", "ok", None]) for _ in range(6)]
    calls = [outcome(k, rng.random() / 100) if k else None for k in kinds]
    ok, errors = await fan_out(calls, timeout=5)
    assert sorted(ok) == [i for i, k in enumerate(kinds) if k == "ok"]
    assert sorted(errors) == [i for i, k in enumerate(kinds) if k == "err"]


async def test_timeout_and_grace():
    calls = [outcome("ok"), outcome("ok"), outcome("ok"), outcome("hang")]
    loop = asyncio.get_running_loop()
    started = loop.time()
    ok, errors = await fan_out(calls, timeout=30, need=3, grace=0.05)
    assert loop.time() - started < 1
    assert len(ok) == 3 and isinstance(errors[3], CallTimeout)
    ok, errors = await fan_out(calls, timeout=0.05)
    assert isinstance(errors[3], CallTimeout)
