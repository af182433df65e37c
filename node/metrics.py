"""Prometheus metrics of one node, on its own registry (several nodes may share a process
in tests). Request metrics are updated by the S3 middleware; drive, membership and
transport figures are read when scraped, from the objects that own them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from typing import Any

# submodules, not the package: serve leaves prometheus_client's __init__ (and with it the
# exposition module, read at the first scrape) for after start-up (node.lazy_init)
from prometheus_client.metrics import Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _StateCollector(Collector):
    """Figures owned by other objects, read at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = self._read()
        online = GaugeMetricFamily(
            "shardfleet_drive_online",
            "1 if the drive answers",
            labels=["drive", "endpoint", "local"],
        )
        errors = GaugeMetricFamily(
            "shardfleet_drive_io_errors",
            "I/O errors seen on the drive",
            labels=["drive", "endpoint"],
        )
        free = GaugeMetricFamily(
            "shardfleet_drive_free_bytes", "free space", labels=["drive", "endpoint"]
        )
        total = GaugeMetricFamily(
            "shardfleet_drive_total_bytes", "capacity", labels=["drive", "endpoint"]
        )
        for d in state.get("drives", []):
            online.add_metric(
                [d["id"], d["endpoint"], str(d["local"]).lower()], 1.0 if d["online"] else 0.0
            )
            if d["local"]:
                errors.add_metric([d["id"], d["endpoint"]], d["errors"])
                free.add_metric([d["id"], d["endpoint"]], d["free"])
                total.add_metric([d["id"], d["endpoint"]], d["total"])
        yield from (online, errors, free, total)
        peers = GaugeMetricFamily(
            "shardfleet_membership_nodes", "nodes by membership state", labels=["state"]
        )
        for st, count in state.get("membership", {}).items():
            peers.add_metric([st], count)
        yield peers
        for name, value in state.get("gauges", {}).items():
            yield GaugeMetricFamily(f"shardfleet_{name}", name.replace("_", " "), value=value)


class Metrics:
    def __init__(self, read_state: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "shardfleet_s3_requests", "S3 requests", ["op", "status"], registry=r
        )
        self.latency = Histogram(
            "shardfleet_s3_request_seconds",
            "S3 request latency",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_in = Counter("shardfleet_s3_received_bytes", "request body bytes", registry=r)
        self.bytes_out = Counter("shardfleet_s3_sent_bytes", "response body bytes", registry=r)
        self.inflight = Gauge(
            "shardfleet_s3_inflight_requests", "requests being served", registry=r
        )
        self.loop_lag = Gauge(
            "shardfleet_event_loop_lag_seconds", "how late a 0.25 s timer fired", registry=r
        )
        self.rpc_latency = Histogram(
            "shardfleet_rpc_seconds",
            "drive RPC latency",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.mrf = Counter(
            "shardfleet_mrf_queued", "writes that missed drives (queued for healing)", registry=r
        )
        self.degraded = Counter(
            "shardfleet_degraded_reads", "reads that decoded around a bad shard", registry=r
        )
        self.throttled = Counter(
            "shardfleet_s3_throttled",
            "S3 requests refused with SlowDown by a per-requester limit",
            ["reason"],
            registry=r,
        )
        for reason in ("rps", "uploads"):  # both series exist from the start, at 0
            self.throttled.labels(reason)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        if read_state is not None:
            r.register(_StateCollector(read_state))

    def _child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, kept: labels() (a lock and a dict lookup) costs as much
        as the update itself."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe(self, op: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        self._child(self.requests, op, str(status)).inc()
        self._child(self.latency, op).observe(seconds)
        if bytes_in:
            self.bytes_in.inc(bytes_in)
        if bytes_out:
            self.bytes_out.inc(bytes_out)

    def throttle(self, reason: str) -> None:
        """A request refused by a rate limit: `reason` "rps" or "uploads" (node/s3/limits.py)."""
        self._child(self.throttled, reason).inc()

    def observe_rpc(self, method: str, seconds: float) -> None:
        self._child(self.rpc_latency, method).observe(seconds)

    def render(self) -> bytes:
        from prometheus_client.exposition import generate_latest

        return generate_latest(self.registry)

    async def watch_loop_lag(self, interval: float = 0.25) -> None:
        """Event-loop lag: anything blocking the loop (CPU work that escaped the pools,
        a slow syscall) shows up here first."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            self.loop_lag.set(max(0.0, loop.time() - start - interval))


def now() -> float:
    return time.perf_counter()


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer_matches(authorization: str | None, digest: bytes) -> bool:
    """Whether an Authorization header is `Bearer <the token whose token_digest is digest>`.
    Constant time: digests of equal length are compared with hmac.compare_digest, so the
    time taken says nothing about the token, not even its length."""
    if authorization is None:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token_digest(credentials.strip()), digest)
