"""Hybrid logical clock: version stamps that order overwrites even when clocks drift.

A stamp is the larger of the wall clock (ns) and the highest stamp seen, plus one, so a
node whose clock lags still stamps a later write above every version it has read.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class HybridClock:
    def __init__(self, wall: Callable[[], int] = time.time_ns) -> None:
        self._wall = wall
        self._last = 0

    def now(self) -> int:
        self._last = max(self._wall(), self._last + 1)
        return self._last

    def observe(self, stamp: int) -> None:
        if stamp > self._last:
            self._last = stamp
