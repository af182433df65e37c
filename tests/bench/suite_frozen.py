"""Suite "frozen" (issue 15): what one SIGSTOPped node costs clients of the others.

A frozen peer is not a crashed one: its sockets stay open, so nothing fails fast. With one
node stopped, PUTs and GETs through the other nodes should see at most ~2 s of extra latency,
once (a grace period or a hedge while the membership learns the node is gone), not a drive
timeout per request.

1. starts the DEFAULT dev cluster (4 nodes x 2 drives, 2+2) on free ports, data in a temp
   dir on the real disk, node logs in OUT/shardfleet-frozen-logs;
2. creates bucket frozen and writes PREFILL 1 MiB objects through node 1 (all four nodes up,
   so their shards include node 4's drives), then a few unmeasured warm-up ops;
3. idle: IDLE_OPS 1 MiB PUTs and as many GETs of the prefilled objects, sequential and
   interleaved (PUT, GET, PUT, ...), through nodes 1-3 in turn; boto3, retries off, bounded
   timeouts; every GET's bytes are compared with what was written;
4. SIGSTOPs node 4 (its PID from the DevCluster) and at once runs the same sequence for
   FROZEN_S seconds (at most FROZEN_MAX_OPS ops), recording each op's latency and its start
   time since the stop; SIGCONT in a finally;
5. reports idle p50/p99/max and, frozen, the first op's latency, the max, how many ops took
   more than idle p99 + SLOW_MARGIN_S, and the p50 after the first EARLY_S seconds;
   targets per op: max - idle p50 <= EXTRA_GOAL_S, and every slow op started within EARLY_S
   of the stop; no errors, every byte verified. Stops the cluster and deletes the temp dir,
   whatever happens.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchnode import pick_data_base
from matrix import REPO, report_suspicious, suspicious
from proctree import NodeDied
from suite_cluster import BenchCluster
from summary import SuiteResult, command

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY, ENV_ACCESS_KEY, ENV_SECRET_KEY  # noqa: E402

LABEL = "shardfleet-frozen"
BUCKET = "frozen"
SIZE = 1 << 20
PREFILL = 20  # objects written before the stop, read by the GETs
WARMUP = 6  # unmeasured ops (connections, first-request costs)
IDLE_OPS = 40  # per op kind
FROZEN_S = 15.0  # node 4 stopped for this long (min with --duration, never under MIN_FROZEN_S)
MIN_FROZEN_S = 8.0
FROZEN_MAX_OPS = 800  # both kinds together (~35 ms each here: time, not count, ends it)
EARLY_S = 5.0  # slow ops are allowed only in this window after the stop
SLOW_MARGIN_S = 0.5  # an op is slow above idle p99 + this
EXTRA_GOAL_S = 2.5  # max frozen latency - idle p50
VICTIM = 4
CONNECT_TIMEOUT, READ_TIMEOUT = 5, 20  # a drive timeout shows; a hang does not stall the run


@dataclass(frozen=True)
class Op:
    kind: str  # "put" or "get"
    node: int
    at: float  # start, seconds since the stop (negative: idle)
    latency: float
    error: str = ""


def _client(endpoint: str, keys: tuple[str, str]):  # noqa: ANN202 - boto3 client type
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        region_name="us-east-1",
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
        ),
    )


def _pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


class Workload:
    """Sequential PUTs and GETs through nodes 1-3 in turn, each timed and checked."""

    def __init__(self, clients: dict[int, object], objects: dict[str, bytes]) -> None:
        self.clients = clients
        self.nodes = sorted(clients)
        self.objects = objects  # key -> bytes, written with every node up
        self.keys = sorted(objects)
        self.bodies = [os.urandom(SIZE) for _ in range(4)]
        self.n = 0

    def one(self, kind: str, t0: float, prefix: str) -> Op:
        i = self.n
        self.n += 1
        node = self.nodes[(i // 2) % len(self.nodes)]  # a PUT and a GET per node, in turn
        c = self.clients[node]
        error = ""
        start = time.monotonic()
        try:
            if kind == "put":
                c.put_object(  # type: ignore[attr-defined]
                    Bucket=BUCKET, Key=f"{prefix}-{i}", Body=self.bodies[i % len(self.bodies)]
                )
            else:
                key = self.keys[(i // 2) % len(self.keys)]
                body = c.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # type: ignore[attr-defined]
                if body != self.objects[key]:
                    error = f"WRONG BYTES for {key} ({len(body)} bytes)"
        except Exception as exc:  # noqa: BLE001 - any client failure is a result to report
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        end = time.monotonic()
        return Op(kind, node, start - t0, end - start, error)

    def run(self, t0: float, prefix: str, *, ops: int, until: float | None = None) -> list[Op]:
        """Up to ``ops`` ops, PUT and GET alternating; stops early at monotonic ``until``."""
        out: list[Op] = []
        for j in range(ops):
            if until is not None and time.monotonic() >= until:
                break
            out.append(self.one("put" if j % 2 == 0 else "get", t0, prefix))
        return out


def run(a: argparse.Namespace) -> SuiteResult:
    """The whole suite; raises KeyboardInterrupt after cleaning up if interrupted."""
    out: Path = a.out
    frozen_s = max(MIN_FROZEN_S, min(a.duration, FROZEN_S))
    base, disk = pick_data_base(REPO, a.tmpdir)
    tmp = Path(tempfile.mkdtemp(prefix="shardfleet-bench-frozen-", dir=base))
    keys = (
        os.environ.get(ENV_ACCESS_KEY, DEV_ACCESS_KEY),
        os.environ.get(ENV_SECRET_KEY, DEV_SECRET_KEY),
    )
    print(f"\n# frozen: data {tmp}\n#   disk: {disk}\n#   results: {out}", flush=True)
    broken = ""
    cluster: BenchCluster | None = None
    idle: list[Op] = []
    frozen: list[Op] = []
    stopped_pid: int | None = None
    try:
        cluster = BenchCluster(tmp / "cluster", out / f"{LABEL}-logs")
        cluster.start()
        c = cluster
        print(f"# dev cluster up: {c.pids()} at {','.join(c.dev.endpoints)}", flush=True)
        clients = {i: _client(c.dev.endpoint(i), keys) for i in c.nodes if i != VICTIM}
        first = clients[min(clients)]
        first.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        objects = {f"pre-{k:03d}": os.urandom(SIZE) for k in range(PREFILL)}
        for key, value in objects.items():
            first.put_object(Bucket=BUCKET, Key=key, Body=value)  # type: ignore[attr-defined]
        work = Workload(clients, objects)
        warm = work.run(time.monotonic(), "warm", ops=WARMUP)
        if bad := [o for o in warm if o.error]:
            raise RuntimeError(f"warm-up failed with every node up: {bad[0].error}")

        print(f"\n## frozen: idle, {IDLE_OPS} x 1 MiB PUT + GET, nodes 1-3 in turn", flush=True)
        idle = work.run(time.monotonic(), "idle", ops=2 * IDLE_OPS)
        if not c.alive():
            raise NodeDied("a node exited during the idle run")

        victim = c.dev.procs[VICTIM]
        print(f"\n## frozen: SIGSTOP node{VICTIM} (pid {victim.pid}), then the same "
              f"PUT/GET for {frozen_s:g}s", flush=True)  # fmt: skip
        os.kill(victim.pid, signal.SIGSTOP)
        stopped_pid = victim.pid
        t_stop = time.monotonic()
        try:
            frozen = work.run(t_stop, "frozen", ops=FROZEN_MAX_OPS, until=t_stop + frozen_s)
        finally:
            os.kill(victim.pid, signal.SIGCONT)
            stopped_pid = None
        held = time.monotonic() - t_stop
        print(f"# SIGCONT node{VICTIM} after {held:.1f}s", flush=True)
        time.sleep(0.5)
        if not c.alive():
            raise NodeDied("a node exited while node 4 was frozen")
    except NodeDied:
        assert cluster is not None
        broken = f"A NODE DIED during the benchmark ({cluster.exits()})"
        print(f"\n!! {broken}\n{cluster.tails(dead_only=True)}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a broken measurement, reported as such
        broken = f"{type(exc).__name__}: {str(exc).split(chr(10), 1)[0]}"
        print(f"!! {broken}", file=sys.stderr)
    finally:
        if stopped_pid is not None:
            os.kill(stopped_pid, signal.SIGCONT)
        if cluster is not None and cluster.started:
            cluster.dev.stop()
        if a.keep:
            print(f"# kept data dir {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if cluster is None or not cluster.started:
        return SuiteResult("frozen", broken=True, notes=[broken or "cluster did not start"])
    res = _report(a, cluster, frozen_s, idle, frozen)
    if broken:
        res.broken = True
        res.notes.append(broken)
    return res


def _report(
    a: argparse.Namespace,
    cluster: BenchCluster,
    frozen_s: float,
    idle: list[Op],
    frozen: list[Op],
) -> SuiteResult:
    res = SuiteResult(f"frozen: default dev cluster, node{VICTIM} SIGSTOPped")
    cmd = command("frozen", "--duration", frozen_s)
    print(f"\n## frozen results (1 MiB, sequential, nodes 1-3 in turn; node{VICTIM} stopped "
          f"for {frozen_s:g}s; latencies in s)\n")  # fmt: skip
    hdr = f"  {'op':<4} {'phase':<7} {'ops':>4} {'err':>4} {'p50':>7} {'p99':>7} {'max':>7}"
    print(hdr + f"  {'first':>7} {'slow':>5} {'p50>5s':>7} {'last slow at':>12}")
    limits: dict[str, float] = {}  # kind -> the latency above which a frozen op is slow
    for kind in ("put", "get"):
        i_ok = [o.latency for o in idle if o.kind == kind and not o.error]
        f_ops = [o for o in frozen if o.kind == kind]
        f_lat = [o.latency for o in f_ops]
        what_x = f"1MiB {kind.upper()} frozen: max - idle p50 <= {EXTRA_GOAL_S:g}s"
        what_e = f"1MiB {kind.upper()} frozen: slow ops only in first {EARLY_S:g}s"
        if not i_ok or not f_ops:
            res.add("FAIL", what_x, f"NO RESULT ({len(i_ok)} idle, {len(f_ops)} frozen ops)", cmd)
            res.add("FAIL", what_e, "NO RESULT", cmd)
            continue
        p50, p99 = _pct(i_ok, 50), _pct(i_ok, 99)
        i_err = sum(1 for o in idle if o.kind == kind and o.error)
        print(f"  {kind.upper():<4} {'idle':<7} {len(i_ok) + i_err:>4} {i_err:>4} {p50:7.3f} "
              f"{p99:7.3f} {max(i_ok):7.3f}")  # fmt: skip
        slow_at = p99 + SLOW_MARGIN_S
        limits[kind] = slow_at
        slow = [o for o in f_ops if o.latency > slow_at or o.error]
        late = [o for o in slow if o.at > EARLY_S]
        after = [o.latency for o in f_ops if o.at > EARLY_S]
        p50_after = _pct(after, 50) if after else float("nan")
        f_err = sum(1 for o in f_ops if o.error)
        last_slow = f"{max(o.at for o in slow):.1f}s" if slow else "-"
        print(f"  {kind.upper():<4} {'frozen':<7} {len(f_ops):>4} {f_err:>4} {_pct(f_lat, 50):7.3f} "
              f"{_pct(f_lat, 99):7.3f} {max(f_lat):7.3f}  {f_ops[0].latency:7.3f} {len(slow):>5} "
              f"{p50_after:7.3f} {last_slow:>12}")  # fmt: skip
        extra = max(f_lat) - p50
        res.judge(
            extra <= EXTRA_GOAL_S,
            what_x,
            f"{extra:.2f}s (max {max(f_lat):.2f}s, first op {f_ops[0].latency:.2f}s, idle "
            f"p50 {p50:.3f}s p99 {p99:.3f}s; p50 after {EARLY_S:g}s {p50_after:.3f}s)",
            cmd,
        )
        res.judge(
            not late,
            what_e,
            f"{len(slow)} of {len(f_ops)} ops > idle p99 + {SLOW_MARGIN_S:g}s "
            f"({slow_at:.2f}s), {len(late)} after {EARLY_S:g}s"
            + (f" (last at {max(o.at for o in late):.1f}s)" if late else ""),
            cmd,
        )
    errors = [o for o in idle + frozen if o.error]
    if idle or frozen:
        res.judge(
            not errors,
            "no errors, every GET byte verified",
            f"{len(errors)} errors" + (f"; first: {errors[0].error}" if errors else ""),
            cmd,
        )
    # the slow ops one by one: which node, when, how long
    slow_ops = [o for o in frozen if o.error or o.latency > limits.get(o.kind, 1.0)]
    if slow_ops:
        print(f"\n  slow (> idle p99 + {SLOW_MARGIN_S:g}s) or failed frozen ops (start since "
              "the stop, node, latency):")  # fmt: skip
        for o in slow_ops[:20]:
            err = f"  {o.error}" if o.error else ""
            print(f"    {o.at:6.2f}s  {o.kind.upper():<3} node{o.node}  {o.latency:6.3f}s{err}")
    res.notes.append(
        f"{len(idle)} idle and {len(frozen)} frozen ops (PUT/GET alternating, 1 MiB, sequential, "
        f"boto3 without retries); GETs read {PREFILL} objects written with every node up"
    )
    print("\n## frozen targets\n")
    res.print_verdicts()
    for i in cluster.nodes:
        report_suspicious(
            res, cluster.log(i), suspicious(cluster.log(i).read_text("utf-8", "replace")), 10
        )
    print(f"\n(node logs: {cluster.logs}/)")
    return res
