"""Suite "cluster" (issue 4): the default dev cluster, matrix over all nodes + 2 GiB per-node RSS.

1. starts the DEFAULT dev cluster (node.devcluster.DevClusterSpec defaults: 4 nodes x 2
   drives, 2+2) on free ports, data in a temp dir on the real disk, node logs in OUT;
2. runs cells 1-3 and 5 of run_matrix.sh with ALL node endpoints (s3bench spreads requests
   round-robin) and SERVER_PID = every node PID; label "shardfleet-cluster"; cell 5 (1 GiB
   multipart) runs last, on restarted nodes (--warm-mpu to not), between two runs of the same
   upload at 256 MiB, with each node's RSS sampled (matrix.run_mpu): each < 150 MB, not growing;
3. restarts every node (same data; --warm-2gib to not), then PUTs and GETs one 2 GiB object
   through node 1 while rsswatch samples each node's RSS/VmHWM: target each node < 200 MB;
4. stops the cluster and deletes the temp dir, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchnode import pick_data_base
from matrix import (
    CELL_NAMES,
    MPU_CELL_NUM,
    MPU_PROBES,
    REPO,
    add_report,
    big_cell,
    loud_errors,
    print_table,
    report_suspicious,
    run_2gib,
    run_matrix,
    run_mpu,
    suspicious,
    swift_runs,
)
from proctree import NodeDied
from rsswatch import RssWatch
from summary import SuiteResult, command
from targets import check, check_mpu_rss, load

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY, ENV_ACCESS_KEY, ENV_SECRET_KEY  # noqa: E402
from shardfleet.node.devcluster import DevCluster, DevClusterSpec, free_base_port  # noqa: E402

LABEL = "shardfleet-cluster"
NODE_RSS_LIMIT_MB = 200.0  # MB = 10^6 bytes, as the issue states it


class BenchCluster:
    """DevCluster with its node logs in OUT and a liveness check for run_child."""

    def __init__(self, data: Path, logs: Path) -> None:
        self.spec = DevClusterSpec(data=data, base_port=free_base_port(DevClusterSpec().nodes))
        self.logs = logs
        self.dev = DevCluster(self.spec)
        self.started = False
        logs.mkdir(parents=True, exist_ok=True)
        for i in self.nodes:
            self.log(i).write_bytes(b"")

    @property
    def nodes(self) -> range:
        return range(1, self.spec.nodes + 1)

    def log(self, i: int) -> Path:
        return self.logs / f"{self.spec.node_id(i)}.log"

    def start(self) -> None:
        for i in self.nodes:
            self.dev.start_node(i, self.logs)
        self.started = True
        try:
            self.dev.wait_ready(self.nodes, timeout=60)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"dev cluster did not start: {exc}\n{self.tails()}") from None

    def pids(self) -> dict[str, int]:
        return {self.spec.node_id(i): p.pid for i, p in self.dev.procs.items()}

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.dev.procs.values())

    def exits(self) -> str:
        codes = {self.spec.node_id(i): p.poll() for i, p in self.dev.procs.items()}
        return ", ".join(f"{n} exit {c}" for n, c in codes.items() if c is not None)

    def tails(self, lines: int = 15, dead_only: bool = False) -> str:
        """Last log lines of each node (or of the dead ones), access-log lines left out."""
        out = []
        for i, proc in sorted(self.dev.procs.items()):
            if dead_only and proc.poll() is None:
                continue
            text = self.log(i).read_text(errors="replace").splitlines()
            text = [ln for ln in text if "shardfleet.access" not in ln][-lines:]
            out.append(f"-- last lines of {self.log(i)}:\n" + "\n".join(text))
        return "\n".join(out)

    def rss_mib(self) -> dict[str, float]:
        watch = RssWatch(self.pids())
        watch.sample()
        return {n: kb / 1024 for n, kb in watch.peak_kb.items()}


def _judge_rss(res: SuiteResult, peaks: dict[str, float], out: Path, cmd: str, size: str) -> None:
    """Each node's peak during the 2 GiB PUT+GET, only if both succeeded."""
    big = next((r for r in load(out / f"{LABEL}.jsonl") if r.cell == big_cell(size)), None)
    ok_ops = big is not None and all(
        (big.op(o) or ({}, {"ops": 0}))[1]["ops"] >= 1 for o in ("put", "get")
    )
    for name, mib in peaks.items():
        what = f"{big_cell(size)} PUT+GET: {name} peak RSS < {NODE_RSS_LIMIT_MB:.0f} MB"
        mb = mib * (1 << 20) / 1e6
        if not ok_ops:
            res.add("FAIL", what, f"{mb:.1f} MB, but the {size} PUT/GET did not succeed", cmd)
        else:
            res.judge(mb < NODE_RSS_LIMIT_MB, what, f"{mb:.1f} MB peak ({mib:.1f} MiB)", cmd)


def _report(
    a: argparse.Namespace,
    out: Path,
    cluster: BenchCluster,
    peaks: dict[str, float] | None,
    mpu_peaks: dict[str, dict[str, float]] | None,
) -> SuiteResult:
    res = SuiteResult("cluster: default dev cluster, 4 nodes x 2 drives, 2+2")
    jsonl = out / f"{LABEL}.jsonl"
    print("\n## shardfleet dev cluster vs. peers (peers: PROCS=2, 15 s per phase)\n", flush=True)
    print_table(jsonl)
    ours = load(jsonl) if jsonl.exists() else []
    big = big_cell(a.big_size)
    wanted = {CELL_NAMES[c] for c in a.cell_list} | ({big} if peaks is not None else set())
    rep = check(ours, swift_runs(), wanted, absolute=False, rss_limit_mib=None, big_cell=big)
    check_mpu_rss(rep, ours, mpu_peaks, MPU_PROBES)
    add_report(res, rep, "cluster", a.duration, a.big_size)
    sized = ("--big-size", a.big_size) if a.big_size != "2GiB" else ()
    cmd = command("cluster", "--cells", "", *sized, "--duration", a.duration)
    if peaks is not None:
        _judge_rss(res, peaks, out, cmd, a.big_size)
    elif not a.skip_2gib:
        res.add("FAIL", f"{big} PUT+GET: each node peak RSS < 200 MB", "NO RESULT", cmd)
    print(f"\n## cluster targets (duration {a.duration:g}s/phase, {a.procs} client procs)\n")
    res.print_verdicts()
    loud_errors(LABEL, ours, out)
    for i in cluster.nodes:
        problems = suspicious(cluster.log(i).read_text(errors="replace"))
        report_suspicious(res, cluster.log(i), problems, 10)
    print(f"\n(JSON lines: {jsonl}; logs: {out}/{LABEL}.*.log, node logs: {cluster.logs}/)")
    res.broken = any(r.failed for r in ours)
    return res


def run(a: argparse.Namespace) -> SuiteResult:
    """The whole suite; raises KeyboardInterrupt after cleaning up if interrupted."""
    out: Path = a.out
    (out / f"{LABEL}.jsonl").write_text("")
    base, disk = pick_data_base(REPO, a.tmpdir)
    tmp = Path(tempfile.mkdtemp(prefix="shardfleet-bench-cluster-", dir=base))
    keys = (
        os.environ.get(ENV_ACCESS_KEY, DEV_ACCESS_KEY),
        os.environ.get(ENV_SECRET_KEY, DEV_SECRET_KEY),
    )
    print(f"\n# cluster: data {tmp}\n#   disk: {disk}\n#   results: {out}", flush=True)
    broken = ""
    notes: list[str] = []
    peaks: dict[str, float] | None = None
    mpu_peaks: dict[str, dict[str, float]] | None = None
    cells = [c for c in a.cell_list if c != MPU_CELL_NUM]
    cluster: BenchCluster | None = None
    try:
        cluster = BenchCluster(tmp / "cluster", out / f"{LABEL}-logs")
        cluster.start()
        eps = cluster.dev.endpoints
        print(f"# dev cluster up: {cluster.pids()} at {','.join(eps)}", flush=True)
        if cells:
            pids = list(cluster.pids().values())
            mrc = run_matrix(
                LABEL, eps, pids, keys, cluster.alive, out,
                cells=cells, duration=a.duration, procs=a.procs,
            )  # fmt: skip
            if mrc != 0:
                broken = f"run_matrix.sh exited {mrc}"
        if MPU_CELL_NUM in a.cell_list:
            if cells and not a.warm_mpu:
                warm = cluster.rss_mib()
                cluster.dev.stop()
                cluster.start()
                notes.append(
                    f"node RSS after cells {' '.join(cells)} (MiB): "
                    + ", ".join(f"{n} {v:.0f}" for n, v in warm.items())
                    + "; cell 5 uses restarted nodes (--warm-mpu to not)"
                )
                print(f"# {notes[-1]}", flush=True)
            mrc, mpu_peaks, mpu_notes = run_mpu(
                LABEL, eps, cluster.pids(), keys, cluster.alive, out,
                duration=a.duration, procs=a.procs,
            )  # fmt: skip
            if mrc != 0 and not broken:
                broken = f"run_matrix.sh exited {mrc} (cell {MPU_CELL_NUM})"
            notes += mpu_notes
        if not a.skip_2gib:
            if a.cell_list and not a.warm_2gib:
                warm = cluster.rss_mib()
                cluster.dev.stop()
                cluster.start()
                notes.append(
                    "node RSS after the matrix (MiB): "
                    + ", ".join(f"{n} {v:.0f}" for n, v in warm.items())
                    + f"; the {a.big_size} run uses restarted nodes (--warm-2gib to not)"
                )
                print(f"# {notes[-1]}", flush=True)
            watch = RssWatch(cluster.pids()).start()
            try:
                pids = list(cluster.pids().values())
                ran = run_2gib(LABEL, eps[0], pids, keys, cluster.alive, tmp, out, a.big_size)
            finally:
                got = watch.stop()
            if ran:
                peaks = got
                print(
                    f"# {a.big_size} per-node peak RSS (MiB): "
                    + ", ".join(f"{n} {v:.1f}" for n, v in got.items())
                )
                if not watch.hwm_reset:
                    notes.append("VmHWM could not be reset: per-node peaks are VmRSS samples only")
    except NodeDied:
        assert cluster is not None
        broken = f"A NODE DIED during the benchmark ({cluster.exits()})"
        print(f"\n!! {broken}\n{cluster.tails(dead_only=True)}", file=sys.stderr)
    except (RuntimeError, OSError, ValueError) as exc:
        broken = str(exc).split("\n", 1)[0]
        print(f"!! {exc}", file=sys.stderr)
    finally:
        if cluster is not None and cluster.started:
            cluster.dev.stop()
        if a.keep:
            print(f"# kept data dir {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if cluster is None or not cluster.started:
        return SuiteResult("cluster", broken=True, notes=[broken or "cluster did not start"])
    res = _report(a, out, cluster, peaks, mpu_peaks)
    res.notes[:0] = notes
    if broken:
        res.broken = True
        res.notes.append(broken)
    return res
