"""The byte-rate cap of background calls: a token bucket that senders wait on.

Heal and scan traffic shares the nodes (their one event loop each, their NICs) with
client traffic. A background call's body bytes are paced by the endpoint that sends them:
the caller paces the request body it sends, the server paces the reply body it sends (the
request head carries the background flag). So `TransportConfig.background_rate` caps the
bytes per second a node *sends* on background calls, whatever direction the data flows;
what it receives is paced by its peers' caps.

The bucket lets a sender go into debt: a piece is charged whole, then its sender waits
until the debt is repaid. Pieces are never split (a body goes out in `chunk_size` frames
either way), every sender waits its turn in the order it charged, and cancelling a wait
keeps the charge (the bytes may already be queued). Sans-IO: `charge()` takes `now`, the
async `take()` brings the clock and the sleep.
"""

from __future__ import annotations

import asyncio


class Pacer:
    """`rate` bytes per second on average, at most `burst` bytes sent at once after idling.
    A rate of 0 or less paces nothing."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp", "sent", "waited")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = float(rate)
        self.burst = float(max(burst, 0))
        self._tokens = self.burst
        self._stamp: float | None = None
        self.sent = 0  # bytes charged, for metrics and tests
        self.waited = 0.0  # seconds senders were told to wait, summed

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def charge(self, size: int, now: float) -> float:
        """Charge `size` bytes at time `now`; returns how long to wait before sending them."""
        self.sent += size
        if self.rate <= 0:
            return 0.0
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= size
        if self._tokens >= 0:
            return 0.0
        delay = -self._tokens / self.rate
        self.waited += delay
        return delay

    async def take(self, size: int) -> None:
        """Wait until `size` more bytes fit the rate."""
        if self.rate <= 0:
            self.sent += size
            return
        delay = self.charge(size, asyncio.get_running_loop().time())
        if delay > 0:
            await asyncio.sleep(delay)
