"""Suite "overhead" (issue 5): what metrics + access logging cost on 4 KiB request throughput.

A standalone node (4 drives, 2+2) runs s3bench 4 KiB, -c 16, put then get (cell-1-like), with
``--log-level info`` (the default: one access-log line per request, to the node's log file)
and with ``--log-level warning`` (no access log), alternating on, off, on, off, ...
(``--overhead-rounds`` pairs, default 2) so drift on the shared cores hits both sides alike.
Each round is a freshly started node on the same data dir.  Overhead per op =
(off - on) / off of the mean ops/s; target < 10%.

Metrics cannot be switched off by configuration, so "off" still collects Prometheus metrics:
this measures the access log's cost, plus nothing for metrics (a lower bound for the pair).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchnode import BenchNode, pick_data_base
from matrix import REPO, SHARED, print_table
from proctree import NodeDied, run_child
from summary import SuiteResult, command
from targets import Run, load

LABEL = "shardfleet-overhead"
TARGET_PCT = 10.0
MODES = {"on": "info", "off": "warning"}


def one_round(a: argparse.Namespace, data: Path, mode: str, k: int) -> Run:
    """Start a node with logging ``mode``, run the 4 KiB phases, stop it; the s3bench Run."""
    out: Path = a.out
    node = BenchNode(
        data, out / f"{LABEL}.node-{mode}{k}.log", extra_args=("--log-level", MODES[mode])
    )
    node.start()
    log = out / f"{LABEL}.{mode}{k}.log"
    label = f"shardfleet-log-{MODES[mode]}|4KiB r{k}"
    cmd = [
        *(sys.executable, str(SHARED / "s3bench.py"), "--endpoint", node.endpoint),
        *("--access-key", node.access_key, "--secret-key", node.secret_key),
        *("--bucket", "s3bench-overhead", "--create-bucket", "--cleanup", "--cleanup-timeout"),
        *("60", "--size", "4KiB", "-c", "16", "--procs", str(a.procs)),
        *("--duration", f"{a.duration:g}", "--phases", a.overhead_phases),
        *("--server-pid", str(node.pid), "--label", label),
    ]
    phases = len(a.overhead_phases.split(","))
    try:
        with open(log, "wb") as f:
            rc = run_child(
                cmd,
                dict(os.environ),
                node.alive,
                stdout=f,
                stderr=f,
                timeout=phases * a.duration + 150,
            )
    finally:
        node.stop()
    lines = log.read_text(errors="replace").splitlines()
    if rc != 0 or not lines or not lines[-1].startswith('{"s3bench"'):
        raise RuntimeError(f"s3bench exited {rc} in round {mode}{k}; see {log}")
    with open(out / f"{LABEL}.jsonl", "a") as f:
        f.write(lines[-1] + "\n")
    logged = len(node.log_text().splitlines())
    print(f"  round {mode:<3} #{k}: node log {logged} lines ({node.log.name})", flush=True)
    return load(log)[-1]


def _rate(runs: list[Run], op: str) -> list[float]:
    rates = []
    for r in runs:
        got = r.op(op)
        if got is not None:
            rates.append(float(got[1]["ops_s"]))
    return rates


def run(a: argparse.Namespace) -> SuiteResult:
    res = SuiteResult("overhead: access log (+metrics) on 4 KiB requests, standalone node")
    out: Path = a.out
    (out / f"{LABEL}.jsonl").write_text("")
    again = command("overhead", "--duration", a.duration, "--overhead-rounds", a.overhead_rounds)
    base, disk = pick_data_base(REPO, a.tmpdir)
    data = Path(tempfile.mkdtemp(prefix="shardfleet-bench-overhead-", dir=base))
    order = ["on", "off"] * a.overhead_rounds
    print(
        f"\n## overhead: 4 KiB -c 16, phases {a.overhead_phases}, {a.duration:g}s each, "
        f"rounds {' '.join(order)} (on = --log-level info, off = --log-level warning)\n"
        f"#   data {data} ({disk})",
        flush=True,
    )
    runs: dict[str, list[Run]] = {"on": [], "off": []}
    try:
        for i, mode in enumerate(order):
            runs[mode].append(one_round(a, data, mode, i // 2 + 1))
    except (RuntimeError, NodeDied) as exc:
        res.broken = True
        res.notes.append(f"overhead measurement failed: {exc}")
        print(f"!! {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print("\n## overhead rounds (label shardfleet-log-LEVEL, r = round)\n", flush=True)
    print_table(out / f"{LABEL}.jsonl", peers=False)
    print()
    for op in a.overhead_phases.split(","):
        on, off = _rate(runs["on"], op), _rate(runs["off"], op)
        what = f"4KiB {op.upper()} logging+metrics overhead < {TARGET_PCT:.0f}%"
        if not on or not off:
            res.add("FAIL", what, "NO RESULT", again)
            continue
        m_on, m_off = statistics.mean(on), statistics.mean(off)
        pct = 100 * (m_off - m_on) / m_off if m_off else float("nan")
        spread = [100 * (max(v) - min(v)) / statistics.mean(v) for v in (on, off) if len(v) > 1]
        noise = f"; round-to-round spread {max(spread):.0f}%" if spread else ""
        res.judge(
            pct < TARGET_PCT,
            what,
            f"{pct:+.1f}% (on {m_on:.0f} vs off {m_off:.0f} ops/s{noise})",
            again,
        )
    errors = sum(ph.get("errors") or 0 for rs in runs.values() for r in rs for ph in r.phases)
    if errors:
        res.add("FAIL", "overhead runs: no request errors", f"{errors} errors", again)
    res.notes.append("metrics cannot be switched off by config: 'off' = access log off only")
    print("## overhead targets\n")
    res.print_verdicts()
    return res
