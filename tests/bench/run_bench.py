#!/usr/bin/env python3
"""`make bench`: measure a real shardfleet node with the shared yardstick, next to its peers.

What it does, and why each step is there:

1. starts ``python -m node.main serve --drives 4 --ec 2+2`` on a free port, data in a fresh temp
   dir *on the real disk* (on tmpfs fsync is free and the numbers would flatter us);
2. runs ../shared/bench/run_matrix.sh (cells 1 2 3 by default) against it, so our rows are
   measured exactly like the peers' rows in ../shared/bench/peers/;
3. PUTs then GETs one 2 GiB object with s3bench, sampling the node's RSS: the store must stream,
   never buffer an object;
4. stops the node (SIGTERM, SIGKILL after a timeout) and deletes the temp dir, whatever happens;
5. prints the comparison table and PASS/FAIL per target.

A benchmark reports, it does not gate: missed targets still exit 0.  Exit 1 means the
measurement itself is broken (node did not start or died, s3bench crashed); 130 = interrupted.

    .venv/bin/python tests/bench/run_bench.py                      # full: cells 1 2 3 + 2 GiB
    .venv/bin/python tests/bench/run_bench.py --duration 3 --cells 1 --skip-2gib   # smoke test

Environment: CELLS, DURATION, PROCS (as run_matrix.sh), OUT, BENCH_TMPDIR, BENCH_SKIP_2GIB=1,
SHARED_BENCH (folder holding run_matrix.sh; default ../shared/bench).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from benchnode import BenchNode, pick_data_base
from proctree import NodeDied, run_child
from targets import check, error_samples, load

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench")).resolve()
LABEL = "shardfleet"
CELL_NAMES = {"1": "4KiB", "2": "1MiB", "3": "64MiB", "4": "1GiB", "5": "1GiB-mpu"}
BIG_FREE_BYTES = 6 << 30  # 2 GiB at 2+2 is 4 GiB of shards, plus slack


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--cells",
        default=env.get("CELLS", "1 2 3"),
        help='run_matrix.sh cells, e.g. "1 2 3" (1-5; "" = none) [env CELLS]',
    )
    p.add_argument(
        "--duration",
        type=float,
        default=float(env.get("DURATION", "15")),
        help="seconds per timed phase [env DURATION, default 15]",
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
        help="skip the 2 GiB PUT/GET peak-RSS run [env BENCH_SKIP_2GIB=1]",
    )
    p.add_argument(
        "--warm-2gib",
        action="store_true",
        help="run the 2 GiB object on the node the matrix warmed up, instead of a fresh one",
    )
    p.add_argument("--keep", action="store_true", help="keep the node's data dir afterwards")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(env.get("OUT", REPO / "matrix-results")),
        help="folder for JSON lines and logs [env OUT, default matrix-results/]",
    )
    p.add_argument(
        "--tmpdir",
        default=env.get("BENCH_TMPDIR"),
        help="parent of the temp data dir [env BENCH_TMPDIR; default /tmp if it is "
        "on the repo's disk]",
    )
    a = p.parse_args(argv)
    a.cell_list = a.cells.split()
    a.big_ran = not a.skip_2gib  # until the disk-space check says otherwise
    a.rss_note = ""
    bad = [c for c in a.cell_list if c not in {"1", "2", "3", "4", "5"}]
    if bad:
        p.error(f"--cells: unknown cell(s) {bad}; valid: 1 2 3 4 5")
    if a.duration <= 0:
        p.error("--duration must be > 0")
    return a


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (e.g. make being stopped) unwinds like Ctrl-C, so the finally blocks run."""
    raise KeyboardInterrupt


def run_matrix(a: argparse.Namespace, node: BenchNode, out: Path) -> int:
    """Step 2: the shared matrix; it writes <out>/shardfleet.jsonl and one log per cell."""
    env = dict(
        os.environ,
        SERVER_PID=str(node.pid),
        LABEL=LABEL,
        CELLS=" ".join(a.cell_list),
        OUT=str(out),
        DURATION=f"{a.duration:g}",
        PROCS=str(a.procs),
        PYTHON=sys.executable,
    )
    cmd = ["bash", str(SHARED / "run_matrix.sh"), node.endpoint, node.access_key, node.secret_key]
    print(
        f"\n## run_matrix.sh cells {a.cells!r}, {a.duration:g}s per phase, {a.procs} client procs",
        flush=True,
    )
    # its stdout is only a repeat of our table: keep it in a log; progress (stderr) streams
    with open(out / f"{LABEL}.matrix.log", "wb") as f:
        return run_child(cmd, env, node.alive, stdout=f)


def run_2gib(node: BenchNode, data: Path, jsonl: Path, out: Path) -> bool:
    """Step 3: one 2 GiB PUT then GET, single stream; its JSON line goes into the same jsonl.

    Returns False if it did not run for lack of disk space.  A crash or timeout is recorded as
    a "failed" JSON line, like run_matrix.sh does, so the report sees it.
    """
    free = shutil.disk_usage(data).free
    if free < BIG_FREE_BYTES:
        print(
            f"!! skipping 2 GiB run: only {free / 2**30:.1f} GiB free under {data}", file=sys.stderr
        )
        return False
    log = out / f"{LABEL}.2GiB.log"
    fixed = (
        "--bucket s3bench-2gib --create-bucket --cleanup --cleanup-timeout 90 --size 2GiB -c 1"
        " --ops 1 --duration 0 --phases put,get --procs 1"
    ).split()
    cmd = [
        *(sys.executable, str(SHARED / "s3bench.py"), "--endpoint", node.endpoint),
        *("--access-key", node.access_key, "--secret-key", node.secret_key, *fixed),
        *("--server-pid", str(node.pid), "--label", f"{LABEL}|2GiB"),
    ]
    print("\n## 2 GiB object: PUT then GET, server RSS sampled", flush=True)
    with open(log, "wb") as f:
        rc = run_child(
            cmd, dict(os.environ), node.alive, stdout=f, stderr=subprocess.STDOUT, timeout=900
        )
    lines = log.read_text(errors="replace").splitlines()
    for line in lines:
        if not line.startswith("{"):
            print(line, file=sys.stderr)
    with open(jsonl, "a") as f:
        if lines and lines[-1].startswith('{"s3bench"'):
            f.write(lines[-1] + "\n")
        else:
            failed = f"s3bench crashed or timed out, rc={rc} (see {log})"
            line = {"s3bench": 1, "label": f"{LABEL}|2GiB", "size": 2 << 30, "phases": []}
            f.write(json.dumps({**line, "failed": failed}) + "\n")
    return True


def cpu_seconds() -> tuple[float, float]:
    """(user+system CPU s of the whole machine, of this process and its reaped children).

    Their difference over the run is CPU that neither the node nor s3bench used: other work on
    these 2 shared cores, which would make every number low.  Interrupt time is left out.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    machine = sum(int(x) for x in fields[1:4]) / os.sysconf("SC_CLK_TCK")  # user nice system
    t = os.times()
    return machine, t.user + t.system + t.children_user + t.children_system


def report(a: argparse.Namespace, jsonl: Path, out: Path, node: BenchNode) -> bool:
    """Step 5: comparison table, targets, and loud lines for errors; True if no run crashed.

    Bad bytes get a banner and the s3bench log lines that say VERIFY: wrong data is the one
    result that must never scroll by unnoticed.
    """
    peers = sorted((SHARED / "peers").glob("*.jsonl"))
    print("\n## shardfleet vs. peers (peers: PROCS=2, 15 s per phase)\n", flush=True)
    subprocess.run(
        [sys.executable, str(SHARED / "matrix_table.py"), *map(str, peers), str(jsonl)], check=False
    )
    ours = load(jsonl) if jsonl.exists() else []
    swift_path = SHARED / "peers" / "swift.jsonl"
    swift = load(swift_path) if swift_path.exists() else []
    wanted = {CELL_NAMES[c] for c in a.cell_list} | ({"2GiB"} if a.big_ran else set())
    rep = check(ours, swift, wanted)
    print(
        f"\n## targets (duration {a.duration:g}s/phase, {a.procs} client procs; MiB = 2^20 bytes)\n"
    )
    print("\n".join(rep.lines))
    if a.rss_note:
        print(f"\n  note: {a.rss_note}")
    print(f"  note: {a.cpu_note}")
    c = rep.counts
    print(f"\n  {c['PASS']} pass, {c['FAIL']} fail, {c['SKIP']} skipped")
    samples = error_samples(ours)
    if samples:
        print("\n## s3bench error samples", file=sys.stderr)
        print("\n".join(samples), file=sys.stderr)
    bad = []
    for log in sorted(out.glob(f"{LABEL}.*.log")):
        bad += [
            f"  {log.name}: {ln}"
            for ln in log.read_text(errors="replace").splitlines()
            if "VERIFY" in ln
        ]
    if bad or any(ph.get("verify_fail") for r in ours for ph in r.phases):
        print(
            "\n" + "!" * 72 + "\n!!! WRONG BYTES: the server returned data that failed "
            "verification\n" + "!" * 72,
            file=sys.stderr,
        )
        print("\n".join(bad), file=sys.stderr)
    problems = node.problems()
    if problems:
        print(
            f"\n## node log {node.log}: {len(problems)} suspicious lines, first 20:",
            file=sys.stderr,
        )
        print("\n".join(problems[:20]), file=sys.stderr)
    print(f"\n(JSON lines: {jsonl}; logs: {out}/{LABEL}.*.log, node log: {node.log})")
    return not any(r.failed for r in ours)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if not (SHARED / "run_matrix.sh").exists():
        print(f"shared yardstick not found at {SHARED} (set SHARED_BENCH)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _raise_interrupt)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / f"{LABEL}.jsonl"
    jsonl.write_text("")  # run_matrix.sh truncates it too; this covers --cells ""
    base, disk = pick_data_base(REPO, a.tmpdir)
    data = Path(tempfile.mkdtemp(prefix="shardfleet-bench-", dir=base))
    node = BenchNode(data, out / f"{LABEL}.node.log")
    print(f"# shardfleet bench: data {data}\n#   disk: {disk}\n#   results: {out}", flush=True)
    load1 = os.getloadavg()[0]
    if load1 > 0.5:  # 2 cores shared by server and clients: anything else running skews it
        print(f"#   WARNING: load average {load1:.2f} before start; results may be low")
    cpu0, t0 = cpu_seconds(), time.monotonic()
    rc = 0
    finished = False
    try:
        node.start()
        print(f"# node pid {node.pid} at {node.endpoint} (ec 2+2 over 4 drives)", flush=True)
        if a.cell_list:
            mrc = run_matrix(a, node, out)
            if mrc != 0:
                print(f"!! run_matrix.sh exited {mrc}", file=sys.stderr)
                rc = 1
        if not a.skip_2gib:
            if a.cell_list and not a.warm_2gib:
                # a fresh process (same data): the peak then shows whether one 2 GiB object
                # streams, not what the heap kept from 4 x 64 MiB in flight a moment ago
                warm = node.rss_mib()
                if (code := node.stop()) != 0:
                    print(f"!! node exited {code} on SIGTERM (see {node.log})", file=sys.stderr)
                node.start()
                a.rss_note = (
                    f"node RSS after the matrix: {warm:.1f} MiB; the 2 GiB run uses a restarted "
                    f"node (pid {node.pid}, idle RSS {node.rss_mib():.1f} MiB; --warm-2gib to not)"
                )
                print(f"# {a.rss_note}", flush=True)
            a.big_ran = run_2gib(node, data, jsonl, out)
        finished = True
    except NodeDied as exc:
        code = node.proc.returncode if node.proc else None
        print(f"\n!! NODE DIED during the benchmark: {exc} (exit code {code})", file=sys.stderr)
        print(f"-- last lines of {node.log}:\n{node.log_tail()}", file=sys.stderr)
        rc = 1
    except RuntimeError as exc:  # node did not (re)start; after NodeDied, its subclass
        print(f"!! {exc}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        print("\n!! interrupted: stopping clients and node", file=sys.stderr)
        rc = 130
    finally:
        code = node.stop()
        if code not in (None, 0) and rc == 0:
            print(
                f"!! node exited {code} on SIGTERM; tail of {node.log}:\n{node.log_tail()}",
                file=sys.stderr,
            )
        if a.keep:
            print(f"# kept data dir {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    if rc == 130 or not node.endpoint:  # interrupted, or nothing was ever measured
        return rc
    (m0, o0), (m1, o1) = cpu0, cpu_seconds()  # the node and all clients are reaped by now
    other = max(0.0, (m1 - m0) - (o1 - o0))
    share = 100 * other / max(time.monotonic() - t0, 1e-9)
    a.cpu_note = f"other processes used {other:.0f} CPU-s during the run ({share:.0f}% of a core)"
    if share > 10:
        a.cpu_note = "WARNING: " + a.cpu_note + ": numbers are low; rerun on a quiet machine"
    ok = report(a, jsonl, out, node)
    if finished and not ok:
        print("!! at least one s3bench run crashed or timed out (see FAILED rows)", file=sys.stderr)
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
