"""Background workers: one `run_once()` pass, run again every interval until stopped.

Tests call `run_once()` directly; the node runs `run_forever(stop)`. A failing pass is
logged and retried next interval, never allowed to kill the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class Worker:
    name = "worker"

    def __init__(self, interval: float, *, first_delay: float = 0.0) -> None:
        self.interval = interval
        #: seconds before the first pass (work that need not race the node's start-up,
        #: while the peers are still coming up)
        self.first_delay = first_delay
        self.passes = 0
        self.failures = 0
        self.last_pass: float | None = None
        self.last_error: str | None = None
        self._wake = asyncio.Event()

    async def run_once(self) -> Any:
        raise TypeError(f"{type(self).__name__} must define run_once")

    def wake(self) -> None:
        """Asks for a pass now (e.g. a node came back)."""
        self._wake.set()

    async def run_forever(self, stop: asyncio.Event) -> None:
        if self.first_delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._first(stop), self.first_delay)
        while not stop.is_set():
            # cleared before the pass, so a wake() that arrives during it starts the next
            self._wake.clear()
            try:
                await self.run_once()
                self.passes += 1
                self.last_pass = time.time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s pass failed: %s", self.name, self.last_error)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._first(stop), self.interval)

    async def _first(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def status(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "failures": self.failures,
            "last_pass": self.last_pass,
            "last_error": self.last_error,
        }
