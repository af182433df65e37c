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
from summary import SuiteResult, command
from targets import Report, Run, error_samples, load

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench")).resolve()
CELL_NAMES = {"1": "4KiB", "2": "1MiB", "3": "64MiB", "4": "1GiB", "5": "1GiB-mpu"}
CELL_NUMBERS = {name: num for num, name in CELL_NAMES.items()}
CELL_PHASES = {"1": 5, "2": 3, "3": 2, "4": 2, "5": 2}
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
    """Seconds the whole matrix may take: timed phases + prefill/cleanup slack per cell."""
    per_cell = [min(CELL_HARD_STOP, CELL_PHASES[c] * duration + 200) for c in cells]
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
) -> int:
    """run_matrix.sh for ``cells``; writes <out>/<label>.jsonl and one log per cell."""
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
    with open(out / f"{label}.matrix.log", "wb") as f:
        return run_child(cmd, env, alive, stdout=f, timeout=bound)


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

    Returns False if it did not run for lack of disk space.  A crash or timeout is recorded as
    a "failed" JSON line, like run_matrix.sh does, so the report sees it.
    """
    free = shutil.disk_usage(data).free
    cell = big_cell(size)
    if free < 2 * size_bytes(size) + BIG_SLACK_BYTES:
        print(
            f"!! skipping {size} run: only {free / 2**30:.1f} GiB free under {data}",
            file=sys.stderr,
        )
        return False
    log = out / f"{label}.{cell}.log"
    fixed = (
        f"--bucket s3bench-big --create-bucket --cleanup --cleanup-timeout 90 --size {size} -c 1"
        " --ops 1 --duration 0 --phases put,get --procs 1"
    ).split()
    cmd = [
        *(sys.executable, str(SHARED / "s3bench.py"), "--endpoint", endpoint),
        *("--access-key", keys[0], "--secret-key", keys[1], *fixed),
        *("--server-pid", ",".join(map(str, pids)), "--label", f"{label}|{cell}"),
    ]
    print(f"\n## {label}: {size} object through {endpoint}: PUT then GET, RSS sampled", flush=True)
    with open(log, "wb") as f:
        rc = run_child(
            cmd, dict(os.environ), alive, stdout=f, stderr=subprocess.STDOUT, timeout=900
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
    return True


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
