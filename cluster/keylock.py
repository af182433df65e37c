"""Per-key locks over a set's drives, so a conditional write checks and commits alone.

`If-None-Match: *` and `If-Match` PUTs and conditional DELETEs read the key's current
version, decide, then commit. Two such writes of one key through two nodes must not both
pass the check; `hold(eset, bucket, key)` brackets check + commit so that they cannot.

    async with keylock.hold(eset, bucket, key):
        ...read the current version, check the condition, commit (bounded)...

How it works. Every drive of the key's set keeps leases in memory (Drive.lock/unlock, a
cluster.drive.LeaseTable). A holder asks every drive at once for a lease on "bucket/key"
under an owner token of its own; it holds the lock once a strict majority of the set's
drives, n//2 + 1, granted it. Otherwise it gives back what it got and tries again after a
randomised, growing pause (5-20 ms at first, doubling, at most 200 ms) until `wait` has
passed, then raises cluster.errors.LockConflict.

Why a majority: two majorities of one set share at least one drive, and a drive grants one
live lease per resource, so two holders cannot both have one (what a drive restart does to
this is spelled out on Drive.lock). A majority rather than "every drive" keeps conditional
writes going with drives down, as long as fewer than half of them are (writes need k+1
anyway). When two contenders split the drives between them neither wins that round; both
give back and retry after random pauses, so one of them soon asks while the other sleeps
and wins: contention costs milliseconds, never a livelock, and the loser then waits its
turn and proceeds.

Why a lease (TTL) and not a plain flag: a holder that dies (process killed, node lost,
partition) never unlocks. Its leases simply expire `ttl` seconds after they were granted
and the key is free again. Everything else unlocks on the way out of `hold`, on success,
error or cancellation (a cancelled holder's unlock runs in a tracked task), so in normal
operation nobody waits for a TTL.

What the holder must guarantee: its critical section ends well before `ttl` (default 30 s)
runs out. There are no fencing tokens: a holder that overruns its lease (a stalled loop,
say) can commit after another holder took the key over. The object layer's check and
commit are each bounded by eset.timeouts.meta (10 s), which is what the default TTL is
sized against. A drive counts a lease from when it received the request, so every drive's
lease outlives the holder's own view of it.

A round waits for every drive's answer up to eset.timeouts.meta; a drive that answers
nothing (a peer the membership view has not marked offline yet) can therefore stretch one
round, and so the whole wait, by up to that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import uuid
from collections.abc import AsyncIterator, Iterable

from shardfleet.cluster.drive import MAX_LOCK_TTL, Drive
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import LockConflict
from shardfleet.cluster.quorum import fan_out

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.020  # the first pause is uniform in [BACKOFF_FIRST / 4, BACKOFF_FIRST]
BACKOFF_MAX = 0.200  # the upper bound doubles per round up to this

_releases: set[asyncio.Task[None]] = set()  # unlocks still running (strong references)


class _Refused(Exception):
    """A drive's answer "another owner holds it" (a failure to fan_out, so `need` counts
    grants only)."""


def lock_quorum(eset: ErasureSet) -> int:
    """Grants that make a lock: a strict majority of the set's drives."""
    return len(eset.drives) // 2 + 1


@contextlib.asynccontextmanager
async def hold(
    eset: ErasureSet, bucket: str, key: str, *, wait: float = 10.0, ttl: float = 30.0
) -> AsyncIterator[None]:
    """Holds the lock on bucket/key for the body of the `async with`.

    Raises LockConflict if no majority of the set's drives granted it within `wait`
    seconds. The lock is released on every way out of the body; releasing never raises.
    """
    if not 0 < ttl <= MAX_LOCK_TTL:
        raise ValueError(f"lock ttl {ttl!r} outside (0, {MAX_LOCK_TTL:.0f}]")
    resource = f"{bucket}/{key}"  # bucket names hold no "/": unambiguous
    owner = await _acquire(eset, bucket, key, resource, wait, ttl)
    try:
        yield
    finally:
        task = _spawn_release(eset, resource, owner, range(len(eset.drives)))
        current = asyncio.current_task()
        if current is None or not current.cancelling():
            # bounded: a drive that does not answer keeps its lease until the TTL
            await asyncio.wait({task}, timeout=eset.timeouts.meta_grace)


async def drain(timeout: float = 5.0) -> None:
    """Waits (at most `timeout`) for unlocks still running in the background: for a
    graceful shutdown, and for tests."""
    if _releases:
        await asyncio.wait(set(_releases), timeout=timeout)


async def _acquire(
    eset: ErasureSet, bucket: str, key: str, resource: str, wait: float, ttl: float
) -> str:
    """Rounds of lock requests until a majority granted one; returns that round's owner."""
    n = len(eset.drives)
    need = lock_quorum(eset)
    hold_id = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(wait, 0.0)
    high = BACKOFF_FIRST
    attempt = 0
    while True:
        # A fresh token per round: a late unlock of an earlier round can never release a
        # lease this round was granted.
        owner = f"{hold_id}.{attempt}"
        calls = [functools.partial(_lock_one, d, resource, owner, ttl) for d in eset.drives]
        try:
            granted, errors = await fan_out(calls, timeout=eset.timeouts.meta, need=need)
        except BaseException:
            _spawn_release(eset, resource, owner, range(n))  # cancelled mid-round
            raise
        if len(granted) >= need:
            return owner
        refused = [i for i, e in errors.items() if isinstance(e, _Refused)]
        maybe = [i for i in range(n) if i not in refused]  # granted, or may have granted late
        release = _spawn_release(eset, resource, owner, maybe) if maybe else None
        now = loop.time()
        if now >= deadline:
            if release is not None:  # give back before giving up (bounded, never raises)
                await asyncio.wait({release}, timeout=eset.timeouts.meta_grace)
            failed = {i: e for i, e in errors.items() if not isinstance(e, _Refused)}
            detail = "; ".join(f"drive {i}: {type(e).__name__}: {e}" for i, e in failed.items())
            raise LockConflict(
                bucket,
                key,
                f"{len(granted)} of {n} drives granted it in the last of {attempt + 1} "
                f"rounds ({need} needed), {len(refused)} held it for another owner"
                + (f", {len(failed)} failed ({detail})" if failed else ""),
            )
        await asyncio.sleep(min(random.uniform(high / 4, high), deadline - now))
        high = min(high * 2, BACKOFF_MAX)
        attempt += 1


async def _lock_one(drive: Drive, resource: str, owner: str, ttl: float) -> None:
    if not await drive.lock(resource, owner, ttl):
        raise _Refused("held by another owner")


def _spawn_release(
    eset: ErasureSet, resource: str, owner: str, positions: Iterable[int]
) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(
        _release(eset, resource, owner, frozenset(positions))
    )
    _releases.add(task)
    task.add_done_callback(_releases.discard)
    return task


async def _release(eset: ErasureSet, resource: str, owner: str, positions: frozenset[int]) -> None:
    calls = [
        functools.partial(d.unlock, resource, owner) if i in positions else None
        for i, d in enumerate(eset.drives)
    ]
    try:
        _, errors = await fan_out(calls, timeout=eset.timeouts.meta)
    except Exception:  # never raise from cleanup: the leases expire anyway
        log.exception("unlock of %s failed", resource)
        return
    if errors:
        log.debug(
            "unlock of %s missed %d drives (their leases expire): %s",
            resource,
            len(errors),
            "; ".join(f"{i}: {type(e).__name__}: {e}" for i, e in sorted(errors.items())),
        )
