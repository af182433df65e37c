"""THE fan-out helper: run one call per drive, decide by quorum.

Every multi-drive operation goes through `fan_out`: it starts all calls, waits until each
has answered or the deadline passed, and splits the outcome into successes and a per-drive
error map. Calls still running at the deadline are cancelled (a cancelled drive call resets
its stream or abandons its thread job) and count as failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class CallTimeout(Exception):
    pass


_stragglers: set[asyncio.Future[object]] = set()


async def fan_out(
    calls: Sequence[Callable[[], Awaitable[T]] | None],
    *,
    timeout: float,
    need: int | None = None,
    grace: float = 0.0,
) -> tuple[dict[int, T], dict[int, BaseException]]:
    """Runs calls[i]() for every non-None entry; returns ({i: result}, {i: error}).

    With `need`, once that many calls succeeded the stragglers get `grace` more seconds
    and are then cancelled: a dead peer costs the grace period, not the full timeout.
    """
    tasks = {i: asyncio.ensure_future(call()) for i, call in enumerate(calls) if call is not None}
    results: dict[int, T] = {}
    errors: dict[int, BaseException] = {}
    if not tasks:
        return results, errors
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = set(tasks.values())
    try:
        while pending:
            left = deadline - loop.time()
            if left <= 0:
                break
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if need is not None and pending:
                ok = sum(
                    1
                    for t in tasks.values()
                    if t.done() and not t.cancelled() and t.exception() is None
                )
                if ok >= need:
                    deadline = min(deadline, loop.time() + grace)
    except asyncio.CancelledError:
        for task in tasks.values():
            task.cancel()
        raise
    for i, task in tasks.items():
        if not task.done():
            task.cancel()
            _stragglers.add(task)  # keep a reference until its cancellation has run
            task.add_done_callback(_stragglers.discard)
            errors[i] = CallTimeout(f"no answer within {timeout:.0f}s")
        elif task.cancelled():
            errors[i] = CallTimeout("cancelled")
        elif (exc := task.exception()) is not None:
            errors[i] = exc
        else:
            results[i] = task.result()
    return results, errors


async def reach_quorum(
    calls: Sequence[Callable[[], Awaitable[T]] | None],
    *,
    need: int,
    timeout: float,
    what: str,
    grace: float = 0.0,
    write: bool = True,
    counts: tuple[type[BaseException], ...] = (),
    on_short: Callable[[dict[int, BaseException]], None] | None = None,
) -> tuple[dict[int, T], dict[int, BaseException]]:
    """`fan_out`, then the count every multi-drive call makes: returns (results, errors)
    when at least `need` drives succeeded, or failed with one of `counts` (errors that
    mean "already so": VolumeExists for a create, FileNotFound for a delete); otherwise
    raises WriteQuorumLost (ReadQuorumLost when not `write`) naming every drive's error.
    `on_short`, given the errors, may raise a more precise error first (NoSuchBucket when
    enough drives say the bucket is gone)."""
    from shardfleet.cluster.errors import ReadQuorumLost, WriteQuorumLost

    results, errors = await fan_out(calls, timeout=timeout, need=need, grace=grace)
    got = (
        len(results) + sum(isinstance(e, counts) for e in errors.values())
        if counts
        else len(results)
    )
    if got >= need:
        return results, errors
    if on_short is not None:
        on_short(errors)
    total = len(calls)
    raise (WriteQuorumLost if write else ReadQuorumLost)(what, need, got, total, errors)
