"""fan_out outcome tables: successes, errors, timeouts and the straggler grace."""

import asyncio
import random

import pytest

from shardfleet.cluster.quorum import CallTimeout, fan_out


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


class Gone(Exception):
    pass


def failing(exc: BaseException):
    async def call():
        raise exc

    return call


@pytest.mark.parametrize("seed", range(20))
async def test_reach_quorum_returns_at_quorum_or_raises_naming_every_drive(seed):
    from shardfleet.cluster.errors import ReadQuorumLost, WriteQuorumLost
    from shardfleet.cluster.quorum import reach_quorum

    rng = random.Random(seed)
    kinds = [rng.choice(["ok", "err", "gone"]) for _ in range(5)]
    calls = [
        outcome("ok") if k == "ok" else failing(Gone()) if k == "gone" else outcome("err")
        for k in kinds
    ]
    need = rng.randint(1, 5)
    counted = kinds.count("ok") + kinds.count("gone")
    write = rng.random() < 0.5
    if counted >= need:
        ok, errors = await reach_quorum(
            calls, need=need, timeout=5, what="t", counts=(Gone,), write=write
        )
        assert len(ok) + sum(isinstance(e, Gone) for e in errors.values()) >= need
    else:
        with pytest.raises(WriteQuorumLost if write else ReadQuorumLost) as info:
            await reach_quorum(calls, need=need, timeout=5, what="t", counts=(Gone,), write=write)
        assert info.value.need == need and info.value.got == counted
        assert sorted(info.value.errors) == [i for i, k in enumerate(kinds) if k != "ok"]


async def test_reach_quorum_lets_a_precise_error_win():
    from shardfleet.cluster.quorum import reach_quorum

    def precise(errors):
        raise LookupError(len(errors))

    with pytest.raises(LookupError):
        await reach_quorum(
            [outcome("err"), outcome("err")], need=1, timeout=5, what="t", on_short=precise
        )
