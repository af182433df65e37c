#!/usr/bin/env python3
"""`make bench`: measure shardfleet with the shared yardstick and its own targets.

Suites (``--suite a,b``; default all, in this order), each bounded in time:

  standalone  one node, 4 drives, 2+2: matrix cells 1-3 and 5 (1 GiB multipart, with the
              node's peak RSS beside 256 MiB ones) + one 2 GiB PUT/GET (peak RSS)
  cluster     the default dev cluster (4 nodes x 2 drives, 2+2): cells 1-3 and 5 over all
              nodes (cell 5 with each node's peak RSS), then one 2 GiB PUT/GET through
              node 1 with each node's peak RSS (issue 4)
  costs       the CPU a 64 MiB cluster PUT cannot avoid (MD5, zfec, kernel, disk, QUIC per
              byte), timed piece by piece, beside Swift's and our server CPU per PUT
  transport   tests/bench/bench_transport.py: QUIC shard shipping between two processes
  startup     spawn of a standalone node until /health/ready answers 200 (issue 5)
  overhead    access log + metrics cost on 4 KiB request throughput, on/off alternating
  priority    tests/bench/bench_priority.py: client PUT latency beside paced background calls
  heal        the default dev cluster, 1 GiB in 16 MiB objects, one drive of node 2 wiped: heal
              MiB/s and time to done, 1 MiB PUT/GET during healing vs. idle (>= 70%)
  frozen      the default dev cluster with node 4 SIGSTOPped: 1 MiB PUT/GET latency through
              nodes 1-3 vs. idle (issue 15: at most ~2.5 s extra, only in the first 5 s)
  edge        standalone node (issue 16): bucket-policy evaluation and TLS on the 4 KiB and
              64 MiB cells (policy < 5 %, TLS reported), and a quiet key's p99 while a noisy
              key floods a rate-limited node (<= 3x idle)

Data always lives in temp dirs on the real disk (on tmpfs fsync is free and the numbers would
flatter us); every process a suite starts is stopped and its data deleted, whatever happens.
A benchmark reports, it does not gate: missed targets still exit 0.  Exit 1 means a
measurement itself is broken (a node did not start or died, a client crashed); 130 =
interrupted.  The last block printed is a summary of every target with the command that
measures it again.

    .venv/bin/python tests/bench/run_bench.py                      # everything (~15-20 min)
    .venv/bin/python tests/bench/run_bench.py --suite cluster --duration 3 --cells 1 --skip-2gib
    .venv/bin/python tests/bench/run_bench.py --suite standalone,cluster --cells 5 --skip-2gib

Cell 5 (1 GiB multipart) always runs last of the cells, between two runs of the same upload
at 256 MiB, on restarted node(s) unless --warm-mpu; it is one upload and one GET, so
--duration does not shorten it.

Environment: CELLS, DURATION, PROCS (as run_matrix.sh), OUT, BENCH_TMPDIR, BENCH_SKIP_2GIB=1,
BENCH_SUITE, SHARED_BENCH (folder holding run_matrix.sh; default ../shared/bench).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import suite_cluster
import suite_costs
import suite_edge
import suite_frozen
import suite_heal
import suite_overhead
import suite_priority
import suite_standalone
import suite_startup
import suite_transport
from matrix import REPO, SHARED, size_bytes
from summary import SuiteResult, print_summary

SUITES: dict[str, Callable[[argparse.Namespace], SuiteResult]] = {
    "standalone": suite_standalone.run,
    "cluster": suite_cluster.run,
    "costs": suite_costs.run,
    "transport": suite_transport.run,
    "startup": suite_startup.run,
    "overhead": suite_overhead.run,
    "priority": suite_priority.run,
    "heal": suite_heal.run,
    "frozen": suite_frozen.run,
    "edge": suite_edge.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.epilog = __doc__.split("\n", 2)[2]
    p.add_argument(
        "--suite",
        default=env.get("BENCH_SUITE", ",".join(SUITES)),
        help=f"comma list of suites: {','.join(SUITES)} [env BENCH_SUITE, default all]",
    )
    p.add_argument(
        "--cells",
        default=env.get("CELLS", "1 2 3 5"),
        help='run_matrix.sh cells for standalone/cluster, e.g. "1 2 3 5" (1-5; "" = none) '
        "[env CELLS, default 1 2 3 5]",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=float(env.get("DURATION", "15")),
        help="seconds per timed phase, every suite [env DURATION, default 15]",
    )
    p.add_argument(
        "--procs",
        type=int,
        default=int(env.get("PROCS", "2")),
        help="s3bench client processes [env PROCS, default 2]",
    )
    p.add_argument(
        "--skip-2gib",
        action="store_true",
        default=env.get("BENCH_SKIP_2GIB", "") not in ("", "0"),
        help="skip the 2 GiB PUT/GET peak-RSS runs [env BENCH_SKIP_2GIB=1]",
    )
    p.add_argument(
        "--warm-2gib",
        action="store_true",
        help="run the 2 GiB object on the node(s) the matrix warmed up, instead of restarted ones",
    )
    p.add_argument(
        "--big-size",
        default="2GiB",
        help="the big single-stream object (default 2GiB; anything else is a quick check, "
        "its rows labelled big-SIZE)",
    )
    p.add_argument(
        "--warm-mpu",
        action="store_true",
        help="run cell 5 (multipart) on the node(s) the earlier cells warmed up, instead of "
        "restarted ones",
    )
    p.add_argument("--transport-mib", type=int, default=512, help="MiB per transport phase")
    p.add_argument("--startup-runs", type=int, default=5, help="starts per startup series")
    p.add_argument("--overhead-rounds", type=int, default=2, help="on/off pairs (overhead)")
    p.add_argument("--overhead-phases", default="put,get", help="s3bench phases (overhead)")
    p.add_argument(
        "--edge-parts",
        default="policy,tls,ratelimit",
        help="edge suite parts: policy,tls,ratelimit (default all)",
    )
    p.add_argument("--edge-rounds", type=int, default=2, help="rounds per side (edge)")
    p.add_argument("--keep", action="store_true", help="keep the data dirs afterwards")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(env.get("OUT", REPO / "matrix-results")),
        help="folder for JSON lines and logs [env OUT, default matrix-results/]",
    )
    p.add_argument(
        "--tmpdir",
        default=env.get("BENCH_TMPDIR"),
        help="parent of the temp data dirs [env BENCH_TMPDIR; default /tmp if it is "
        "on the repo's disk]",
    )
    a = p.parse_args(argv)
    a.suites = [s.strip() for s in a.suite.split(",") if s.strip()]
    unknown = [s for s in a.suites if s not in SUITES]
    if unknown or not a.suites:
        p.error(f"--suite: unknown {unknown}; valid: {','.join(SUITES)}")
    a.cell_list = a.cells.split()
    try:
        size_bytes(a.big_size)
    except ValueError as exc:
        p.error(f"--big-size: {exc}")
    bad = [c for c in a.cell_list if c not in {"1", "2", "3", "4", "5"}]
    if bad:
        p.error(f"--cells: unknown cell(s) {bad}; valid: 1 2 3 4 5")
    if a.duration <= 0:
        p.error("--duration must be > 0")
    bad_parts = set(a.edge_parts.split(",")) - set(suite_edge.PARTS)
    if bad_parts:
        p.error(f"--edge-parts: unknown {sorted(bad_parts)}; valid: {','.join(suite_edge.PARTS)}")
    for name in ("transport_mib", "startup_runs", "overhead_rounds", "procs", "edge_rounds"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return a


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (e.g. make being stopped) unwinds like Ctrl-C, so the finally blocks run."""
    raise KeyboardInterrupt


def cpu_seconds() -> tuple[float, float]:
    """(user+system CPU s of the whole machine, of this process and its reaped children).

    Their difference over a suite is CPU that neither our servers nor our clients used: other
    work on these 2 shared cores, which would make every number low.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    machine = sum(int(x) for x in fields[1:4]) / os.sysconf("SC_CLK_TCK")  # user nice system
    t = os.times()
    return machine, t.user + t.system + t.children_user + t.children_system


def run_suite(name: str, a: argparse.Namespace) -> SuiteResult:
    """One suite, with a note on how much CPU other processes took meanwhile."""
    load1 = os.getloadavg()[0]
    print(f"\n{'=' * 100}\n# suite {name}  (load average {load1:.2f})", flush=True)
    (m0, o0), t0 = cpu_seconds(), time.monotonic()
    res = SUITES[name](a)
    (m1, o1), wall = cpu_seconds(), time.monotonic() - t0
    other = max(0.0, (m1 - m0) - (o1 - o0))
    share = 100 * other / max(wall, 1e-9)
    note = f"{wall:.0f}s; other processes used {other:.0f} CPU-s ({share:.0f}% of a core)"
    if share > 10:
        note = "WARNING: " + note + ": numbers are low; rerun on a quiet machine"
    res.notes.append(note)
    print(f"\n# suite {name}: {note}", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if not (SHARED / "run_matrix.sh").exists():
        print(f"shared yardstick not found at {SHARED} (set SHARED_BENCH)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _raise_interrupt)
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    print(f"# shardfleet bench: suites {','.join(a.suites)}; results in {a.out}", flush=True)
    results: list[SuiteResult] = []
    rc = 0
    try:
        for name in a.suites:
            results.append(run_suite(name, a))
    except KeyboardInterrupt:
        print("\n!! interrupted: clients and nodes were stopped", file=sys.stderr)
        rc = 130
    if results:
        print_summary(results)
    if rc == 0 and any(r.broken for r in results):
        print("!! at least one measurement is broken (see above)", file=sys.stderr)
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
