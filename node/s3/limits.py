"""Per-requester limits of the S3 API: a request rate and uploads in flight.

Who a requester is: the access key of a signed request (after its signature is checked,
so nobody spends someone else's budget by naming their key), or, for an anonymous
request, its source address (an IPv6 address by its /64, what one host or one customer
is normally given).

- `rate_limit_rps`: a token bucket per requester, `rate_limit_burst` tokens deep (default:
  one second's worth), refilled at `rate_limit_rps` tokens a second; every request takes
  one.
- `rate_limit_uploads`: request bodies a requester may have in flight at once, counted
  for the operations that send or copy object data (PutObject, UploadPart, CopyObject,
  UploadPartCopy) from admission until the handler has returned.

Over either: 503 SlowDown with a Retry-After header, raised by `Limits.admit` before the
handler runs, so the body is not read (an `Expect: 100-continue` client never sends it)
and nothing is stored.

A refusal is answered after between half of `rate_limit_hold` and all of it
(`Limits.check`), as Swift's ratelimit middleware sleeps a request over its rate (the
jitter keeps a flood's connections from coming back all at once): a client that retries
at once, from
many connections, without backoff, would otherwise get its 503s as fast as the node can
write them, and spend the node's one core on them at the expense of every other
requester. Held, each of its connections costs one answer per hold, and sleeps on a
timer meanwhile. At most `MAX_HELD` answers are held at once on a node; past that they
go out at once (a sleeping request costs memory, and a flood of connections is the
network's to stop).

Cost: O(1) per request whatever the number of requesters: a dict lookup and a few float
operations for the rate (the bucket is refilled lazily, from the time of its last use),
and a counter for uploads. Neither table grows without bound: a requester's upload count
is dropped when it reaches zero, and the rate tables keep the `max_keys` requesters seen
most recently (OrderedDict: moving a key to the end and dropping the oldest are O(1)). A
requester dropped from the rate table comes back with a full bucket, which it would have
had anyway unless it was seen within the last burst/rate seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable

from shardfleet.node.s3.errors import SlowDown

#: operations whose request bodies (or copies) `rate_limit_uploads` counts
UPLOAD_OPS = frozenset({"PutObject", "UploadPart", "CopyObject", "UploadPartCopy"})

MAX_KEYS = 65536
#: refusals a node holds back at once (`Limits.check`)
MAX_HELD = 4096


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second, at most `burst` kept."""

    __slots__ = ("rate", "burst", "max_keys", "_clock", "_buckets")

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        # key -> [tokens, time of the last refill]; most recently used last
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Takes a token for `key`: 0.0 if it had one, else the seconds until it will
        (nothing is taken then)."""
        now = self._clock()
        buckets = self._buckets
        state = buckets.get(key)
        if state is None:
            state = buckets[key] = [self.burst, now]
            if len(buckets) > self.max_keys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
            tokens = state[0] + (now - state[1]) * self.rate
            state[0] = tokens if tokens < self.burst else self.burst
            state[1] = now
        if state[0] >= 1.0:
            state[0] -= 1.0
            return 0.0
        return (1.0 - state[0]) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


class InFlight:
    """How many of something each key has going at once, up to `limit`."""

    __slots__ = ("limit", "_counts")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        count = self._counts.get(key, 0)
        if count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        return len(self._counts)


def source_key(remote: str | None) -> str:
    """Who an anonymous request is: its IPv4 address, or its IPv6 address's /64 (an
    IPv4-mapped IPv6 address counts as the IPv4 one)."""
    if not remote or ":" not in remote:
        return remote or ""
    try:
        addr = ipaddress.IPv6Address(remote.partition("%")[0])
    except ValueError:
        return remote
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return f"{ipaddress.IPv6Address(int(addr) >> 64 << 64)}/64"


# an upload slot taken by `admit`, handed back to `release`
Slot = tuple[InFlight, str]


class Limits:
    """The limits of one node; signed and anonymous requesters are kept apart (an access
    key and an address never share a bucket, whatever they spell)."""

    def __init__(
        self,
        rps: float = 0.0,
        burst: int = 0,
        uploads: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_throttle: Callable[[str], None] | None = None,
        max_keys: int = MAX_KEYS,
        hold: float = 0.0,
        max_held: int = MAX_HELD,
    ) -> None:
        self.hold = hold
        self.max_held = max_held
        self.held = 0  # refusals being held right now
        depth = burst or max(1, math.ceil(rps))
        self._rates = (
            (
                TokenBuckets(rps, depth, clock=clock, max_keys=max_keys),
                TokenBuckets(rps, depth, clock=clock, max_keys=max_keys),
            )
            if rps > 0
            else None
        )
        self._uploads = (InFlight(uploads), InFlight(uploads)) if uploads > 0 else None
        self._on_throttle = on_throttle

    @classmethod
    def build(
        cls,
        rps: float,
        burst: int,
        uploads: int,
        *,
        hold: float = 0.0,
        on_throttle: Callable[[str], None] | None = None,
    ) -> Limits | None:
        """The limits, or None when both are off (0): the router then checks nothing."""
        if rps <= 0 and uploads <= 0:
            return None
        return cls(rps, burst, uploads, hold=hold, on_throttle=on_throttle)

    async def check(self, access_key: str | None, remote: str | None, op: str) -> Slot | None:
        """`admit`, with a refusal held back between half of `hold` and `hold` seconds
        before it is raised (unless `max_held` are held already)."""
        try:
            return self.admit(access_key, remote, op)
        except SlowDown:
            if self.hold > 0 and self.held < self.max_held:
                self.held += 1
                try:
                    # jittered, so a flood's connections do not come back all at once
                    await asyncio.sleep(self.hold * (0.5 + random.random() / 2))
                finally:
                    self.held -= 1
            raise

    def admit(self, access_key: str | None, remote: str | None, op: str) -> Slot | None:
        """Admits a request of `op` from `access_key` (None or "": anonymous, from
        `remote`), or raises SlowDown with a Retry-After header. Returns the upload slot
        taken, which the caller must `release` once the handler has returned."""
        signed = bool(access_key)
        key = access_key if signed else source_key(remote)
        assert key is not None
        if self._rates is not None:
            wait = self._rates[0 if signed else 1].take(key)
            if wait:
                self._refuse("rps", wait, "Please reduce your request rate.")
        if self._uploads is not None and op in UPLOAD_OPS:
            table = self._uploads[0 if signed else 1]
            if not table.acquire(key):
                self._refuse(
                    "uploads",
                    1.0,
                    f"Please reduce your request rate: at most {table.limit} uploads in flight "
                    "at once per requester.",
                )
            return (table, key)
        return None

    @staticmethod
    def release(slot: Slot) -> None:
        slot[0].release(slot[1])

    def _refuse(self, reason: str, wait: float, message: str) -> None:
        if self._on_throttle is not None:
            self._on_throttle(reason)
        err = SlowDown(message)
        err.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        raise err
