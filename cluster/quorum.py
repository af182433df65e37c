"""THE fan-out helper: run one call per drive, decide by quorum.

Every multi-drive operation goes through `fan_out`: it starts all calls, waits until each
has answered or the deadline passed, and splits the outcome into successes and a per-drive
error map. Calls still running at the deadline are cancelled (a cancelled drive call resets
its stream or abandons its thread job) and count as failures. `need_quorum` turns the
outcome into a QuorumError of the caller's choosing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from cluster.errors import QuorumLost

T = TypeVar("T")


class CallTimeout(Exception):
    pass


async def fan_out(
    calls: Sequence[Callable[[], Awaitable[T]] | None], *, timeout: float
) -> tuple[dict[int, T], dict[int, BaseException]]:
    """Runs calls[i]() for every non-None entry; returns ({i: result}, {i: error})."""
    tasks = {i: asyncio.ensure_future(call()) for i, call in enumerate(calls) if call is not None}
    results: dict[int, T] = {}
    errors: dict[int, BaseException] = {}
    if not tasks:
        return results, errors
    try:
        await asyncio.wait(tasks.values(), timeout=timeout)
    except asyncio.CancelledError:
        for task in tasks.values():
            task.cancel()
        raise
    for i, task in tasks.items():
        if not task.done():
            task.cancel()
            errors[i] = CallTimeout(f"no answer within {timeout:.0f}s")
        elif task.cancelled():
            errors[i] = CallTimeout("cancelled")
        elif (exc := task.exception()) is not None:
            errors[i] = exc
        else:
            results[i] = task.result()
    return results, errors


def need_quorum(
    error: type[QuorumLost],
    what: str,
    results: dict[int, T],
    errors: dict[int, BaseException],
    need: int,
    total: int,
) -> dict[int, T]:
    if len(results) < need:
        raise error(what, need, len(results), total, errors)
    return results
