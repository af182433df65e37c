"""Suite "standalone": one ``node.main serve --drives 4 --ec 2+2`` process, matrix + 2 GiB.

1. starts the node on a free port, data in a fresh temp dir *on the real disk* (on tmpfs
   fsync is free and the numbers would flatter us);
2. runs ../shared/bench/run_matrix.sh (cells 1 2 3 5 by default) against it, so our rows are
   measured exactly like the peers' rows in ../shared/bench/peers/; cell 5 (1 GiB multipart)
   runs last, on a restarted node (--warm-mpu to not), between two runs of the same upload
   at 256 MiB, all with the node's RSS sampled (matrix.run_mpu);
3. PUTs then GETs one 2 GiB object with s3bench, sampling the node's RSS, on a restarted node
   (so the peak shows whether one object streams, not what the matrix left in the heap);
4. stops the node (SIGTERM, SIGKILL after a timeout) and deletes the temp dir, whatever happens;
5. prints the comparison table and PASS/FAIL per target.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchnode import BenchNode, pick_data_base
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
    swift_runs,
)
from proctree import NodeDied
from summary import SuiteResult
from targets import check, check_mpu_rss, load

LABEL = "shardfleet"


def _report(
    a: argparse.Namespace,
    out: Path,
    node: BenchNode,
    big_ran: bool,
    mpu_peaks: dict[str, dict[str, float]] | None,
) -> SuiteResult:
    res = SuiteResult("standalone: 1 node, 4 drives, 2+2")
    jsonl = out / f"{LABEL}.jsonl"
    print("\n## shardfleet standalone vs. peers (peers: PROCS=2, 15 s per phase)\n", flush=True)
    print_table(jsonl)
    ours = load(jsonl) if jsonl.exists() else []
    big = big_cell(a.big_size)
    wanted = {CELL_NAMES[c] for c in a.cell_list} | ({big} if big_ran else set())
    rep = check(ours, swift_runs(), wanted, big_cell=big)
    check_mpu_rss(rep, ours, mpu_peaks, MPU_PROBES)
    print(
        f"\n## standalone targets (duration {a.duration:g}s/phase, {a.procs} client procs; "
        "MiB = 2^20 bytes)\n"
    )
    print("\n".join(rep.lines))
    c = rep.counts
    print(f"\n  {c['PASS']} pass, {c['FAIL']} fail, {c['SKIP']} skipped")
    add_report(res, rep, "standalone", a.duration, a.big_size)
    loud_errors(LABEL, ours, out)
    report_suspicious(res, node.log, node.problems(), 20)
    print(f"\n(JSON lines: {jsonl}; logs: {out}/{LABEL}.*.log, node log: {node.log})")
    res.broken = any(r.failed for r in ours)
    return res


def run(a: argparse.Namespace) -> SuiteResult:
    """The whole suite; raises KeyboardInterrupt after cleaning up if interrupted."""
    out: Path = a.out
    (out / f"{LABEL}.jsonl").write_text("")  # run_matrix.sh truncates it too; covers --cells ""
    base, disk = pick_data_base(REPO, a.tmpdir)
    data = Path(tempfile.mkdtemp(prefix="shardfleet-bench-", dir=base))
    node = BenchNode(data, out / f"{LABEL}.node.log")
    print(f"\n# standalone: data {data}\n#   disk: {disk}\n#   results: {out}", flush=True)
    keys = (node.access_key, node.secret_key)
    broken = ""
    big_ran = False
    mpu_peaks: dict[str, dict[str, float]] | None = None
    notes: list[str] = []
    cells = [c for c in a.cell_list if c != MPU_CELL_NUM]
    try:
        node.start()
        print(f"# node pid {node.pid} at {node.endpoint} (ec 2+2 over 4 drives)", flush=True)
        keys = (node.access_key, node.secret_key)
        if cells:
            mrc = run_matrix(
                LABEL,
                [node.endpoint],
                [node.pid],
                keys,
                node.alive,
                out,
                cells=cells,
                duration=a.duration,
                procs=a.procs,
            )
            if mrc != 0:
                broken = f"run_matrix.sh exited {mrc}"
        if MPU_CELL_NUM in a.cell_list:
            if cells and not a.warm_mpu:
                warm = node.rss_mib()
                if (code := node.stop()) != 0:
                    print(f"!! node exited {code} on SIGTERM (see {node.log})", file=sys.stderr)
                node.start()
                notes.append(
                    f"node RSS after cells {' '.join(cells)}: {warm:.1f} MiB; cell 5 uses a "
                    f"restarted node (pid {node.pid}, idle RSS {node.rss_mib():.1f} MiB; "
                    "--warm-mpu to not)"
                )
                print(f"# {notes[-1]}", flush=True)
            mrc, mpu_peaks, mpu_notes = run_mpu(
                LABEL,
                [node.endpoint],
                {"node": node.pid},
                keys,
                node.alive,
                out,
                duration=a.duration,
                procs=a.procs,
            )
            if mrc != 0 and not broken:
                broken = f"run_matrix.sh exited {mrc} (cell {MPU_CELL_NUM})"
            notes += mpu_notes
        if not a.skip_2gib:
            if a.cell_list and not a.warm_2gib:
                warm = node.rss_mib()
                if (code := node.stop()) != 0:
                    print(f"!! node exited {code} on SIGTERM (see {node.log})", file=sys.stderr)
                node.start()
                notes.append(
                    f"node RSS after the matrix: {warm:.1f} MiB; the {a.big_size} run uses a restarted "
                    f"node (pid {node.pid}, idle RSS {node.rss_mib():.1f} MiB; --warm-2gib to not)"
                )
                print(f"# {notes[-1]}", flush=True)
            big_ran = run_2gib(
                LABEL, node.endpoint, [node.pid], keys, node.alive, data, out, a.big_size
            )
    except NodeDied as exc:
        code = node.proc.returncode if node.proc else None
        broken = f"NODE DIED during the benchmark: {exc} (exit code {code})"
        print(f"\n!! {broken}\n-- last lines of {node.log}:\n{node.log_tail()}", file=sys.stderr)
    except RuntimeError as exc:  # node did not (re)start; after NodeDied, its subclass
        broken = str(exc)
        print(f"!! {exc}", file=sys.stderr)
    finally:
        code = node.stop()
        if code not in (None, 0) and not broken:
            print(
                f"!! node exited {code} on SIGTERM; tail of {node.log}:\n{node.log_tail()}",
                file=sys.stderr,
            )
        if a.keep:
            print(f"# kept data dir {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    if not node.endpoint:  # nothing was ever measured
        return SuiteResult("standalone", broken=True, notes=[broken or "node did not start"])
    res = _report(a, out, node, big_ran, mpu_peaks)
    res.notes[:0] = notes
    if broken:
        res.broken = True
        res.notes.append(broken)
    elif res.broken:
        print("!! at least one s3bench run crashed or timed out (see FAILED rows)", file=sys.stderr)
    return res
