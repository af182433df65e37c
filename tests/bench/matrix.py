"""The shared yardstick, driven the same way for a standalone node and for a cluster.

run_matrix.sh accepts a comma list of endpoints (requests spread round-robin) and SERVER_PID
as a comma list (s3bench sums RSS and CPU over them), so one code path serves both suites;
only the label (the "server" column of the table) and the endpoints/PIDs differ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from proctree import run_child
from rsswatch import RssWatch
from summary import SuiteResult, command
from targets import Report, Run, error_samples, load

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench")).resolve()
CELL_NAMES = {"1": "4KiB", "2": "1MiB", "3": "64MiB", "4": "1GiB", "5": "1GiB-mpu"}
CELL_NUMBERS = {name: num for num, name in CELL_NAMES.items()}
CELL_PHASES = {"1": 5, "2": 3, "3": 2, "4": 2, "5": 2}
# cells 4 and 5 run one op per phase (--ops 1 --duration 0): DURATION does not bound them
CELL_UNTIMED = {"4", "5"}
MPU_CELL_NUM = "5"  # 1 GiB multipart, 16 MiB parts, 4 in flight, then GET (run_matrix.sh)
MPU_PART, MPU_PARTS_IN_FLIGHT = "16MiB", 4  # as run_matrix.sh's cell 5
MPU_PROBE_SIZE = "256MiB"  # the same upload, a quarter the size: does memory grow with it?
MPU_PROBES = (f"{MPU_PROBE_SIZE}-mpu-before", f"{MPU_PROBE_SIZE}-mpu-after")  # cell 5's sides
BIG_SLACK_BYTES = 2 << 30  # free space needed beyond 2x the big object (2+2: 2x in shards)
UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def size_bytes(text: str) -> int:
    """'2GiB' -> 2147483648 (KiB/MiB/GiB, as s3bench takes them)."""
    for unit, mult in UNITS.items():
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * mult
    raise ValueError(f"size {text!r}: want e.g. 2GiB, 256MiB")


def big_cell(size: str) -> str:
    """Cell name of the big single-stream object: "2GiB", or "big-SIZE" for a quick check."""
    return size if size == "2GiB" else f"big-{size}"


CELL_HARD_STOP = 600  # run_matrix.sh's own `timeout 600` per cell


def matrix_bound(cells: list[str], duration: float) -> float:
    """Seconds the whole matrix may take: timed phases + prefill/cleanup slack per cell.

    An untimed cell (one 1 GiB op per phase) gets run_matrix.sh's own hard stop: its time is
    the server's speed, not DURATION, and that stop records the cell as failed (ours would
    lose its line).
    """
    per_cell = [
        CELL_HARD_STOP
        if c in CELL_UNTIMED
        else min(CELL_HARD_STOP, CELL_PHASES[c] * duration + 200)
        for c in cells
    ]
    return sum(per_cell) + 30


def run_matrix(
    label: str,
    endpoints: list[str],
    pids: list[int],
    keys: tuple[str, str],
    alive: Callable[[], bool],
    out: Path,
    *,
    cells: list[str],
    duration: float,
    procs: int,
    append: bool = False,
) -> int:
    """run_matrix.sh for ``cells``; writes <out>/<label>.jsonl and one log per cell.

    ``append``: keep the lines an earlier call wrote (run_matrix.sh truncates the file); its
    stdout goes to <label>.matrix-<cells>.log instead of <label>.matrix.log.
    """
    jsonl = out / f"{label}.jsonl"
    earlier = jsonl.read_text() if append and jsonl.exists() else ""
    env = dict(
        os.environ,
        SERVER_PID=",".join(map(str, pids)),
        LABEL=label,
        CELLS=" ".join(cells),
        OUT=str(out),
        DURATION=f"{duration:g}",
        PROCS=str(procs),
        PYTHON=sys.executable,
    )
    cmd = ["bash", str(SHARED / "run_matrix.sh"), ",".join(endpoints), *keys]
    bound = matrix_bound(cells, duration)
    print(
        f"\n## {label}: run_matrix.sh cells {' '.join(cells)!r}, {duration:g}s per phase, "
        f"{procs} client procs, {len(endpoints)} endpoint(s); bounded to {bound:.0f}s",
        flush=True,
    )
    # its stdout is only a repeat of our table: keep it in a log; progress (stderr) streams
    log = out / (f"{label}.matrix-{'-'.join(cells)}.log" if append else f"{label}.matrix.log")
    try:
        with open(log, "wb") as f:
            return run_child(cmd, env, alive, stdout=f, timeout=bound)
    finally:
        if earlier:
            jsonl.write_text(earlier + (jsonl.read_text() if jsonl.exists() else ""))


def run_once(
    label: str,
    cell: str,
    endpoint: str,
    pids: list[int],
    keys: tuple[str, str],
    alive: Callable[[], bool],
    out: Path,
    size: str,
    args: str,
    timeout: float,
) -> int:
    """One s3bench run of ``size`` objects (more flags in ``args``), its JSON line appended to
    <out>/<label>.jsonl.

    A crash or timeout is recorded as a "failed" JSON line, like run_matrix.sh does, so the
    report sees it.  Returns s3bench's exit code.
    """
    log = out / f"{label}.{cell}.log"
    cmd = [
        *(sys.executable, str(SHARED / "s3bench.py"), "--endpoint", endpoint),
        *("--access-key", keys[0], "--secret-key", keys[1], "--size", size, *args.split()),
        *("--server-pid", ",".join(map(str, pids)), "--label", f"{label}|{cell}"),
    ]
    with open(log, "wb") as f:
        rc = run_child(
            cmd, dict(os.environ), alive, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
        )
    lines = log.read_text(errors="replace").splitlines()
    for line in lines:
        if not line.startswith("{"):
            print(line, file=sys.stderr)
    with open(out / f"{label}.jsonl", "a") as f:
        if lines and lines[-1].startswith('{"s3bench"'):
            f.write(lines[-1] + "\n")
        else:
            failed = f"s3bench crashed or timed out, rc={rc} (see {log})"
            line = {"s3bench": 1, "label": f"{label}|{cell}", "size": size_bytes(size)}
            line["phases"] = []
            f.write(json.dumps({**line, "failed": failed}) + "\n")
    return rc


def run_2gib(
    label: str,
    endpoint: str,
    pids: list[int],
    keys: tuple[str, str],
    alive: Callable[[], bool],
    data: Path,
    out: Path,
    size: str = "2GiB",
) -> bool:
    """One big (2 GiB) PUT then GET, single stream; its JSON line goes to <out>/<label>.jsonl.

    Returns False if it did not run for lack of disk space.
    """
    free = shutil.disk_usage(data).free
    cell = big_cell(size)
    if free < 2 * size_bytes(size) + BIG_SLACK_BYTES:
        print(
            f"!! skipping {size} run: only {free / 2**30:.1f} GiB free under {data}",
            file=sys.stderr,
        )
        return False
    fixed = (
        "--bucket s3bench-big --create-bucket --cleanup --cleanup-timeout 90 -c 1"
        " --ops 1 --duration 0 --phases put,get --procs 1"
    )
    print(f"\n## {label}: {size} object through {endpoint}: PUT then GET, RSS sampled", flush=True)
    run_once(label, cell, endpoint, pids, keys, alive, out, size, fixed, timeout=900)
    return True


def _rss_now(pids: dict[str, int]) -> dict[str, float]:
    watch = RssWatch(pids)
    watch.sample()
    return {n: max(kb, 0) / 1024 for n, kb in watch.peak_kb.items()}


def _per_process(values: dict[str, float]) -> str:
    return ", ".join(f"{n} {v:.1f}" for n, v in values.items())


def run_mpu(
    label: str,
    endpoints: list[str],
    pids: dict[str, int],
    keys: tuple[str, str],
    alive: Callable[[], bool],
    out: Path,
    *,
    duration: float,
    procs: int,
) -> tuple[int, dict[str, dict[str, float]], list[str]]:
    """Cell 5 between two runs of the same multipart upload at a quarter of the size.

    All three run under an RssWatch (VmRSS sampled every 50 ms, VmHWM read at each sample),
    so each server process gets its own peak in each: the cell's memory target is per
    process, and a 1 GiB peak above both 256 MiB ones means the server holds the object, not
    its parts in flight.  Why one on each side: a node's RSS creeps up over its first
    uploads, whatever their size (glibc keeps freed memory in per-thread arenas), so a
    256 MiB upload before the cell alone would blame the size for what is only the cell
    coming later; the one after it has seen as many uploads as the cell, plus one.  Cell 5
    itself is run_matrix.sh's, like the peers'.

    Returns (run_matrix.sh's exit code, {cell name: {process name: peak MiB}}, notes: each
    process's RSS before and after each run); whether each run succeeded is in its JSON line
    (targets.check_mpu_rss judges only successful ones).
    """
    args = (
        "--region us-east-1 --create-bucket --cleanup --cleanup-timeout 90 -c 1 --ops 1 "
        f"--duration 0 --phases mpu,get --part-size {MPU_PART} "
        f"--part-concurrency {MPU_PARTS_IN_FLIGHT} --procs 1"
    )
    cell = CELL_NAMES[MPU_CELL_NUM]
    peaks: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    mrc = 0
    hwm_reset = True
    for name in (MPU_PROBES[0], cell, MPU_PROBES[1]):
        before = _rss_now(pids)
        if name != cell:
            print(
                f"\n## {label}: {name}: one multipart upload of {MPU_PROBE_SIZE} then its GET "
                "(cell 5 at a quarter of its size), RSS per process sampled",
                flush=True,
            )
        watch = RssWatch(pids).start()
        try:
            if name == cell:
                mrc = run_matrix(
                    label, endpoints, list(pids.values()), keys, alive, out,
                    cells=[MPU_CELL_NUM], duration=duration, procs=procs, append=True,
                )  # fmt: skip
            else:
                run_once(label, name, ",".join(endpoints), list(pids.values()), keys, alive,
                         out, MPU_PROBE_SIZE, f"--bucket s3bench-{name.lower()} {args}",
                         timeout=300)  # fmt: skip
        finally:
            peaks[name] = watch.stop()
        hwm_reset &= watch.hwm_reset
        notes.append(
            f"{name} RSS per process (MiB): {_per_process(before)} before, peak "
            f"{_per_process(peaks[name])}, {_per_process(_rss_now(pids))} after"
        )
        print(f"# {notes[-1]}", flush=True)
    if not hwm_reset:
        notes.append("VmHWM could not be reset: the multipart peaks are VmRSS samples only")
    return mrc, peaks, notes


def print_table(*jsonls: Path, peers: bool = True) -> None:
    """matrix_table.py over the peers' rows (optional) and ours: the one table format."""
    files = sorted((SHARED / "peers").glob("*.jsonl")) if peers else []
    files += [p for p in jsonls if p.exists()]
    subprocess.run([sys.executable, str(SHARED / "matrix_table.py"), *map(str, files)], check=False)


def swift_runs() -> list[Run]:
    path = SHARED / "peers" / "swift.jsonl"
    return load(path) if path.exists() else []


def loud_errors(label: str, runs: list[Run], out: Path) -> None:
    """s3bench error samples, and a banner if any GET body failed verification."""
    samples = error_samples(runs)
    if samples:
        print(f"\n## {label}: s3bench error samples", file=sys.stderr)
        print("\n".join(samples), file=sys.stderr)
    bad = []
    for log in sorted(out.glob(f"{label}.*.log")):
        bad += [
            f"  {log.name}: {ln}"
            for ln in log.read_text(errors="replace").splitlines()
            if "VERIFY" in ln
        ]
    if bad or any(ph.get("verify_fail") for r in runs for ph in r.phases):
        print(
            "\n" + "!" * 72 + "\n!!! WRONG BYTES: the server returned data that failed "
            "verification\n" + "!" * 72,
            file=sys.stderr,
        )
        print("\n".join(bad), file=sys.stderr)


def suspicious(log_text: str) -> list[str]:
    """Log lines that look like trouble (tracebacks, errors, 5xx), for the report."""
    keys = ("Traceback", "ERROR", "CRITICAL", "Exception", " 500 ", " 503 ")
    return [ln for ln in log_text.splitlines() if any(k in ln for k in keys)]


def add_report(
    res: SuiteResult, rep: Report, suite: str, duration: float, big: str = "2GiB"
) -> None:
    """targets.Report lines as summary verdicts, each with the command for just its cell."""
    for verdict, what, detail in rep.items:
        words = what.replace(":", " ").split()
        cell = next((w for w in words if w in CELL_NUMBERS or w == big_cell(big)), None)
        if cell == big_cell(big):
            args: tuple[str, ...] = ("--cells", "", *(("--big-size", big) if big != "2GiB" else ()))
        elif cell is not None:
            args = ("--cells", CELL_NUMBERS[cell], "--skip-2gib")
        else:
            args = ()
        res.add(verdict, what, detail, command(suite, *args, "--duration", duration))


def report_suspicious(res: SuiteResult, log: Path, problems: list[str], limit: int) -> None:
    """Suspicious node-log lines to stderr (the first `limit`), counted in the suite notes."""
    if not problems:
        return
    print(f"\n## {log}: {len(problems)} suspicious lines, first {limit}:", file=sys.stderr)
    print("\n".join(problems[:limit]), file=sys.stderr)
    res.notes.append(f"{len(problems)} suspicious lines in {log}")
