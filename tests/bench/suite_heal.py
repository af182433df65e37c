"""Suite "heal": rebuilding a wiped drive, and what it costs the foreground.

1. starts the DEFAULT dev cluster (4 nodes x 2 drives, 2+2) on free ports, data in a temp
   dir on the real disk, node logs in OUT/shardfleet-heal-logs;
2. fills bucket heal-data with 1 GiB in 16 MiB objects (s3bench, one PUT each, through
   node 1) and waits until `admin heal status` says done (every node idle);
3. idle: 1 MiB PUT, then 1 MiB GET, concurrency 8, PHASE_S seconds each, through node 1;
4. wipes node 2's drive1 (rmtree + mkdir: the node formats the empty slot within ~2 s and a
   scanner pass heals every object of its sets onto it), waits until heal status first shows
   work (bounded), then runs the same PUT and GET again while it heals; heal status is polled every POLL_S meanwhile (in-process, the same
   admin call `admin heal status --json` makes, so no CLI process competes for the cores);
5. waits for heal status done (bounded): time to done = wipe until the first poll that saw
   every node idle after the heal had started; bytes healed = growth of the nodes' scanner
   "bytes" (MRF bytes reported beside it); heal MiB/s = bytes healed / time to done;
6. targets: PUT and GET during healing each >= 70% of idle; stops the cluster and deletes
   the temp dir, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchnode import pick_data_base
from matrix import REPO, loud_errors, report_suspicious, run_once, suspicious
from proctree import NodeDied
from suite_cluster import BenchCluster
from summary import SuiteResult, command
from targets import Run, load

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shardfleet.node.admin import fetch_heal  # noqa: E402
from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY, ENV_ACCESS_KEY, ENV_SECRET_KEY  # noqa: E402

LABEL = "shardfleet-heal"
FILL_SIZE, FILL_OBJECTS = "16MiB", 64  # 1 GiB of data, 2 GiB of shards (2+2)
FILL_TIMEOUT = 300.0
FG_SIZE, FG_CONC = "1MiB", 8
PHASE_S = 4.0  # per foreground phase (min with --duration): the heal must outlast PUT + GET
RATIO_GOAL = 0.70
WIPE_NODE, WIPE_DRIVE = 2, "drive1"
POLL_S = 0.5
IDLE_TIMEOUT = 180.0  # fill (or idle run) until heal status done
START_TIMEOUT = 60.0  # wipe until the heal is seen to start
HEAL_TIMEOUT = 900.0  # wipe until heal status done


def _totals(st: dict[str, Any]) -> dict[str, int]:
    """Cluster sums of the scanner's and the MRF's cumulative counters."""
    out = {"scan_bytes": 0, "scan_healed": 0, "scanned": 0, "mrf_bytes": 0, "mrf_healed": 0}
    out["failed"] = 0
    for n in st.get("nodes", []):
        sc, mrf = n.get("scanner", {}), n.get("mrf", {})
        out["scan_bytes"] += int(sc.get("bytes") or 0)
        out["scan_healed"] += int(sc.get("healed") or 0)
        out["scanned"] += int(sc.get("scanned") or 0)
        out["mrf_bytes"] += int(mrf.get("bytes") or 0)
        out["mrf_healed"] += int(mrf.get("healed") or 0)
        out["failed"] += int(sc.get("failed") or 0) + int(mrf.get("failed") or 0)
    return out


def _idle(st: dict[str, Any]) -> bool:
    """Every node answered and is idle (`done` alone ignores nodes that did not answer)."""
    return bool(st.get("done")) and not st.get("unreachable")


class HealWatch:
    """Polls heal status in a thread: when the heal started (any node busy, or counters
    moved past the baseline) and the first idle poll after that."""

    def __init__(self, endpoint: str, keys: tuple[str, str], base: dict[str, int]) -> None:
        self.endpoint, self.keys, self.base = endpoint, keys, base
        self.t0 = time.monotonic()
        self.started_at: float | None = None
        self.done_at: float | None = None
        self.last: dict[str, Any] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> HealWatch:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set() and self.done_at is None:
            try:
                st = fetch_heal(self.endpoint, *self.keys)
            except (SystemExit, Exception):  # _call ends a CLI with SystemExit
                self.errors += 1
                st = None
            now = time.monotonic()
            if st is not None:
                self.last = st
                moved = _totals(st) != self.base
                if self.started_at is None and (moved or not st.get("done")):
                    self.started_at = now
                if self.started_at is not None and _idle(st):
                    self.done_at = now
            self._stop.wait(POLL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _wait_idle(endpoint: str, keys: tuple[str, str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = fetch_heal(endpoint, *keys)
            if _idle(st):
                return st
        except SystemExit as exc:
            st = {"error": str(exc)}
        if time.monotonic() > deadline:
            raise RuntimeError(f"heal status not done after {timeout:.0f}s: {str(st)[:300]}")
        time.sleep(POLL_S)


def _fg(run: Run | None, op: str) -> tuple[float, float, int, int] | None:
    """(ops/s, MiB/s, ops, errors) of ``op`` in ``run``, or None if it did not run."""
    got = run.op(op) if run else None
    if got is None or got[1]["ops"] < 1:
        return None
    row = got[1]
    return float(row["ops_s"]), float(row["mib_s"]), int(row["ops"]), int(row.get("errors") or 0)


def run(a: argparse.Namespace) -> SuiteResult:
    """The whole suite; raises KeyboardInterrupt after cleaning up if interrupted."""
    out: Path = a.out
    jsonl = out / f"{LABEL}.jsonl"
    jsonl.write_text("")
    phase = min(a.duration, PHASE_S)
    base, disk = pick_data_base(REPO, a.tmpdir)
    tmp = Path(tempfile.mkdtemp(prefix="shardfleet-bench-heal-", dir=base))
    keys = (
        os.environ.get(ENV_ACCESS_KEY, DEV_ACCESS_KEY),
        os.environ.get(ENV_SECRET_KEY, DEV_SECRET_KEY),
    )
    print(f"\n# heal: data {tmp}\n#   disk: {disk}\n#   results: {out}", flush=True)
    broken = ""
    notes: list[str] = []
    cluster: BenchCluster | None = None
    times: dict[str, tuple[float, float]] = {}  # cell -> (start, end), monotonic
    t_wipe: float | None = None
    watch: HealWatch | None = None
    base_totals: dict[str, int] = {}
    fill_s = 0.0
    try:
        cluster = BenchCluster(tmp / "cluster", out / f"{LABEL}-logs")
        cluster.start()
        c = cluster
        eps = c.dev.endpoints
        ep1 = eps[0]
        pids = list(c.pids().values())
        print(f"# dev cluster up: {c.pids()} at {','.join(eps)}", flush=True)

        def s3b(cell: str, size: str, args: str, timeout: float) -> None:
            t = time.monotonic()
            run_once(LABEL, cell, ep1, pids, keys, c.alive, out, size, args, timeout)
            times[cell] = (t, time.monotonic())

        print(f"\n## heal: fill {FILL_OBJECTS} x {FILL_SIZE} through node 1", flush=True)
        s3b(
            "fill",
            FILL_SIZE,
            f"--bucket heal-data --create-bucket -c 4 --procs 1 --ops {FILL_OBJECTS} "
            "--duration 0 --phases put --prefix fill",
            FILL_TIMEOUT,
        )
        fill_s = times["fill"][1] - times["fill"][0]
        filled = _fg(next((r for r in load(jsonl) if r.cell == "fill"), None), "put")
        if filled is None or filled[2] < FILL_OBJECTS or filled[3]:
            raise RuntimeError(f"fill did not write {FILL_OBJECTS} objects cleanly: {filled}")
        _wait_idle(ep1, keys, IDLE_TIMEOUT)

        fg = f"-c {FG_CONC} --procs {a.procs} --duration {phase:g}"
        print(f"\n## heal: idle 1 MiB PUT then GET, {phase:g}s each, node 1", flush=True)
        s3b("idle-put", FG_SIZE, f"--bucket heal-fg --create-bucket {fg} --phases put "
            "--prefix idleput", phase + 120)  # fmt: skip
        s3b("idle-get", FG_SIZE, f"--bucket heal-fg {fg} --phases get --prefix idleget",
            phase + 120)  # fmt: skip
        base_totals = _totals(_wait_idle(ep1, keys, IDLE_TIMEOUT))

        drive = c.spec.data.resolve() / c.spec.node_id(WIPE_NODE) / WIPE_DRIVE
        print(f"\n## heal: wiping {drive}, then 1 MiB PUT and GET while it heals", flush=True)
        watch = HealWatch(ep1, keys, base_totals)
        shutil.rmtree(drive)
        drive.mkdir()
        t_wipe = time.monotonic()
        watch.start()
        # the foreground runs only count as "during heal" once a node reports heal work
        while watch.started_at is None and time.monotonic() < t_wipe + START_TIMEOUT:
            if not c.alive():
                raise NodeDied("a node exited after the wipe")
            time.sleep(POLL_S / 5)
        if watch.started_at is None:
            raise RuntimeError(f"the heal was not seen to start within {START_TIMEOUT:.0f}s")
        print(f"# heal seen running {watch.started_at - t_wipe:.1f}s after the wipe", flush=True)
        s3b("heal-put", FG_SIZE, f"--bucket heal-fg {fg} --phases put --prefix healput",
            phase + 120)  # fmt: skip
        s3b("heal-get", FG_SIZE, f"--bucket heal-fg {fg} --phases get --prefix healget",
            phase + 120)  # fmt: skip
        deadline = t_wipe + HEAL_TIMEOUT
        while watch.done_at is None and time.monotonic() < deadline:
            if not c.alive():
                raise NodeDied("a node exited while healing")
            if watch.started_at is None and time.monotonic() > t_wipe + START_TIMEOUT:
                break
            time.sleep(POLL_S)
        watch.stop()
        if watch.started_at is None:
            broken = f"the heal was not seen to start within {START_TIMEOUT:.0f}s of the wipe"
        elif watch.done_at is None:
            broken = f"heal status not done {HEAL_TIMEOUT:.0f}s after the wipe"
    except NodeDied:
        assert cluster is not None
        broken = f"A NODE DIED during the benchmark ({cluster.exits()})"
        print(f"\n!! {broken}\n{cluster.tails(dead_only=True)}", file=sys.stderr)
    except (RuntimeError, OSError, ValueError) as exc:
        broken = str(exc).split("\n", 1)[0]
        print(f"!! {exc}", file=sys.stderr)
    finally:
        if watch is not None:
            watch.stop()
        if cluster is not None and cluster.started:
            cluster.dev.stop()
        if a.keep:
            print(f"# kept data dir {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if cluster is None or not cluster.started:
        return SuiteResult("heal", broken=True, notes=[broken or "cluster did not start"])
    res = _report(a, cluster, phase, times, t_wipe, watch, base_totals, fill_s)
    res.notes[:0] = notes
    if broken:
        res.broken = True
        res.notes.append(broken)
    return res


def _overlap(span: tuple[float, float] | None, began: float | None, done: float | None) -> str:
    """How much of a during-heal run the heal covered (it may finish before the run ends)."""
    if span is None or began is None or done is None:
        return ""
    start, end = span
    covered = max(0.0, min(end, done) - max(start, began)) / max(end - start, 1e-9)
    return f", heal running for {100 * min(covered, 1.0):.0f}% of it"


def _report(
    a: argparse.Namespace,
    cluster: BenchCluster,
    phase: float,
    times: dict[str, tuple[float, float]],
    t_wipe: float | None,
    watch: HealWatch | None,
    base: dict[str, int],
    fill_s: float,
) -> SuiteResult:
    res = SuiteResult("heal: default dev cluster, one drive of node 2 wiped and healed")
    jsonl = a.out / f"{LABEL}.jsonl"
    runs = {r.cell: r for r in load(jsonl)} if jsonl.exists() else {}
    cmd = command("heal", "--duration", phase)
    done = watch.done_at if watch else None
    print(f"\n## heal results (1 MiB, concurrency {FG_CONC}, {phase:g}s per phase, node 1)\n")
    for op in ("put", "get"):
        idle, heal = _fg(runs.get(f"idle-{op}"), op), _fg(runs.get(f"heal-{op}"), op)
        what = f"1MiB {op.upper()} during heal >= {RATIO_GOAL:.0%} of idle"
        for name, got in (("idle", idle), ("during heal", heal)):
            if got:
                print(f"  {op.upper():<4} {name:<12} {got[0]:7.1f} ops/s {got[1]:7.1f} MiB/s "
                      f"({got[2]} ops, {got[3]} errors)")  # fmt: skip
        if idle is None or heal is None or idle[0] <= 0:
            res.add("FAIL", what, f"NO RESULT (idle {idle}, during heal {heal})", cmd)
            continue
        ratio = heal[0] / idle[0]
        cover = _overlap(times.get(f"heal-{op}"), watch.started_at if watch else None, done)
        errs = f", {idle[3] + heal[3]} errors" if idle[3] + heal[3] else ""
        res.judge(
            ratio >= RATIO_GOAL,
            what,
            f"{ratio:.2f} ({heal[0]:.1f} vs {idle[0]:.1f} ops/s{cover}{errs})",
            cmd,
        )
    if watch is not None and watch.last and t_wipe is not None:
        now = _totals(watch.last)
        healed = now["scan_bytes"] - base.get("scan_bytes", 0)
        mrf = now["mrf_bytes"] - base.get("mrf_bytes", 0)
        objs = now["scan_healed"] - base.get("scan_healed", 0)
        failed = now["failed"] - base.get("failed", 0)
        if done is not None:
            secs = done - t_wipe
            rate = healed / (1 << 20) / secs if secs > 0 else 0.0
            started = (watch.started_at or t_wipe) - t_wipe
            fig = (
                f"heal: {secs:.1f}s from wipe to heal status done (first seen busy after "
                f"{started:.1f}s; polled every {POLL_S:g}s); scanner healed {objs} objects, "
                f"{healed / (1 << 20):.1f} MiB of shards => {rate:.1f} MiB/s; MRF "
                f"{mrf / (1 << 20):.1f} MiB; {failed} failed"
            )
        else:
            fig = (
                f"heal NOT done; so far scanner healed {objs} objects, "
                f"{healed / (1 << 20):.1f} MiB; MRF {mrf / (1 << 20):.1f} MiB"
            )
        print(f"\n  {fig}")
        res.notes.append(fig)
        if watch.errors:
            res.notes.append(f"{watch.errors} heal status polls failed")
    res.notes.append(
        f"fill: {FILL_OBJECTS} x {FILL_SIZE} in {fill_s:.1f}s; foreground phases {phase:g}s, "
        f"{a.procs} client procs; heal status polled in-process (admin API)"
    )
    print(f"\n## heal targets (duration {phase:g}s/phase)\n")
    res.print_verdicts()
    loud_errors(LABEL, list(runs.values()), a.out)
    for i in cluster.nodes:
        text = cluster.log(i).read_text(errors="replace")
        report_suspicious(res, cluster.log(i), suspicious(text), 10)
        if i == WIPE_NODE and "replaced by an empty one" not in text:
            res.notes.append(f"node{i} never logged the drive replacement")
    print(f"\n(JSON lines: {jsonl}; logs: {a.out}/{LABEL}.*.log, node logs: {cluster.logs}/)")
    res.broken = any(r.failed for r in runs.values())
    return res
