"""PASS/FAIL against shardfleet's performance targets, read from s3bench's JSON lines.

Why a separate check instead of eyeballing the table: the targets are the point of running the
benchmark, and they mix units (ops/s for small objects, MiB/s for big ones, peak RSS for the
2 GiB object).  A target whose cell was not run is SKIPped, never silently passed; a cell whose
s3bench run crashed FAILs.  Errors and bad bytes are reported on their own lines, loudly,
because a fast server that returns wrong data is not fast.

Units: MiB = 2**20 bytes (s3bench's unit), both for throughput and for RSS.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

BIG_OBJECT = 64 << 20  # at and above this size a cell is judged by MiB/s, below by ops/s
RSS_LIMIT_MIB = 150.0
# cell 5 (1 GiB multipart, 16 MiB parts, 4 in flight, then GET), standalone: ahead of every
# peer, i.e. above the best peer's figure in ../shared/bench/peers (s3rver's multipart
# 166.7 MiB/s, moto's GET 801.7 MiB/s), rounded up as the yardstick's README prints them
MPU_CELL = "1GiB-mpu"
MPU_PUT_GOAL_MIB_S = 167.0
MPU_GET_GOAL_MIB_S = 802.0
MPU_RSS_LIMIT_MB = 150.0  # MB = 10^6 bytes: each server process, during the cell
MPU_RSS_GROWTH_MIB = 16.0  # 1 GiB upload's peak over the 256 MiB ones': under one part


@dataclass
class Run:
    """One s3bench JSON line: a cell (label "server|cell") and its phases."""

    server: str
    cell: str
    size: int
    failed: str | None
    phases: list[dict] = field(default_factory=list)

    def op(self, name: str) -> tuple[dict, dict] | None:
        """(phase, op row) for op ``name``, or None if that op was not measured."""
        for ph in self.phases:
            for row in ph["ops"]:
                if row["op"] == name:
                    return ph, row
        return None


def load(path: Path) -> list[Run]:
    """Every s3bench summary line in ``path`` (other lines are ignored)."""
    runs: list[Run] = []
    for line in path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        server, _, cell = (d.get("label") or "").partition("|")
        runs.append(
            Run(server, cell, int(d.get("size") or 0), d.get("failed"), d.get("phases") or [])
        )
    return runs


def _metric(run: Run, row: dict) -> tuple[float, str]:
    if run.size >= BIG_OBJECT:
        return float(row["mib_s"]), "MiB/s"
    return float(row["ops_s"]), "ops/s"


def _peak_rss(phase: dict) -> float | None:
    """Server peak RSS in MiB: the 100 ms samples, or the kernel's high-water mark if larger.

    VmHWM (reset at each phase start) catches a spike shorter than the sampling interval.
    """
    vals = [phase.get("server_rss_peak_mib")]
    if phase.get("server_hwm_reset"):
        vals.append(phase.get("server_hwm_sum_mib"))
    nums = [float(v) for v in vals if v is not None]
    return max(nums) if nums else None


class Report:
    """Collects PASS/FAIL/SKIP lines and counts them."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.lines: list[str] = []
        self.items: list[tuple[str, str, str]] = []  # (verdict, what, detail), for the summary
        self.counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}

    def missing(self, what: str, cell: str, detail: str = "") -> None:
        """A cell with no result: FAIL if it was asked for, else SKIP."""
        if cell in self.wanted:
            self.add("FAIL", what, f"NO RESULT (cell {cell} was cut short) {detail}".rstrip())
        else:
            self.add("SKIP", what, f"(cell {cell} not run) {detail}".rstrip())

    def add(self, verdict: str, what: str, detail: str) -> None:
        self.counts[verdict] += 1
        self.items.append((verdict, what, detail))
        self.lines.append(f"  {verdict:<4}  {what:<44} {detail}")

    def at_least(self, what: str, runs: dict[str, Run], cell: str, op: str, goal: float) -> None:
        run = runs.get(cell)
        if run is None:
            self.missing(what, cell)
            return
        got = run.op(op)
        if got is None:
            self.add("FAIL", what, f"no {op} result" + (f": {run.failed}" if run.failed else ""))
            return
        value, unit = _metric(run, got[1])
        self.add("PASS" if value >= goal else "FAIL", what, f"{value:.1f} {unit}")

    def above(self, what: str, runs: dict[str, Run], cell: str, op: str, goal: float) -> None:
        """Like at_least, but the figure must beat ``goal`` (a peer's), not equal it."""
        run = runs.get(cell)
        got = run.op(op) if run else None
        if run is None or got is None or got[1]["ops"] < 1:
            self.at_least(what, runs, cell, op, goal)  # its SKIP/FAIL wording
            return
        value, unit = _metric(run, got[1])
        ratio = f" ({value / goal:.2f}x)" if goal else ""
        self.add(
            "PASS" if value > goal else "FAIL", what, f"{value:.1f} vs {goal:.1f} {unit}{ratio}"
        )


def check(
    ours: list[Run],
    swift: list[Run],
    wanted: set[str],
    *,
    absolute: bool = True,
    rss_limit_mib: float | None = RSS_LIMIT_MIB,
    big_cell: str = "2GiB",
) -> Report:
    """Evaluate every target; ``ours`` and ``swift`` are the loaded JSON lines.

    ``wanted`` names the cells this run asked for: one of them without a result is a FAIL (the
    run was cut short), a cell nobody asked for is a SKIP.  ``absolute``: also the standalone
    node's own ops/s and MiB/s goals; ``rss_limit_mib``: the 2 GiB object's limit on the summed
    server RSS (None: not judged here, e.g. the cluster judges each node on its own).
    """
    rep = Report(wanted)
    by_cell = {r.cell: r for r in ours}

    # 1. ahead of Swift EC 4+2 in every cell/op both have measured
    for theirs in swift:
        mine = by_cell.get(theirs.cell)
        for ph in theirs.phases:
            for row in ph["ops"]:
                what = f"ahead of Swift: {theirs.cell} {row['op']}"
                goal, unit = _metric(theirs, row)
                if mine is None:
                    rep.missing(what, theirs.cell, f"Swift {goal:.1f} {unit}")
                    continue
                got = mine.op(row["op"])
                if got is None:
                    rep.add("FAIL", what, f"not measured; Swift {goal:.1f} {unit}")
                    continue
                value, _ = _metric(mine, got[1])
                rep.add(
                    "PASS" if value > goal else "FAIL",
                    what,
                    f"{value:.1f} vs {goal:.1f} {unit} ({value / goal:.2f}x)" if goal else "",
                )

    # 2./3. absolute throughput goals
    if absolute:
        rep.at_least("4KiB PUT >= 300 ops/s (c=16)", by_cell, "4KiB", "put", 300)
        rep.at_least("4KiB GET >= 1000 ops/s (c=16)", by_cell, "4KiB", "get", 1000)
        rep.at_least("64MiB PUT >= 150 MiB/s (c=4)", by_cell, "64MiB", "put", 150)
        rep.at_least("64MiB GET >= 400 MiB/s (c=4)", by_cell, "64MiB", "get", 400)
        for op, goal in (("mpu", MPU_PUT_GOAL_MIB_S), ("get", MPU_GET_GOAL_MIB_S)):
            what = f"{MPU_CELL} {op.upper()} > {goal:.0f} MiB/s (every peer)"
            rep.above(what, by_cell, MPU_CELL, op, goal)

    # 4. memory stays flat for a 2 GiB object
    big = by_cell.get(big_cell)
    for op in ("put", "get") if rss_limit_mib is not None else ():
        what = f"{big_cell} {op.upper()}: server peak RSS < {rss_limit_mib:.0f} MiB"
        got = big.op(op) if big else None
        if big is None:
            rep.missing(what, big_cell)
        elif got is None or got[1]["ops"] < 1:
            rep.add("FAIL", what, "no successful " + op + (f": {big.failed}" if big.failed else ""))
        else:
            rss = _peak_rss(got[0])
            mib_s = got[1]["mib_s"]
            if rss is None:
                rep.add("FAIL", what, "no RSS measured (was --server-pid given?)")
            else:
                rep.add(
                    "PASS" if rss < rss_limit_mib else "FAIL",
                    what,
                    f"{rss:.1f} MiB peak ({mib_s:.1f} MiB/s)",
                )

    # correctness: any error or bad byte is worth a line of its own
    for run in ours:
        if run.failed:
            rep.add("FAIL", f"s3bench run {run.cell} completed", f"CRASHED: {run.failed}")
        for ph in run.phases:
            if ph.get("verify_fail"):
                rep.add(
                    "FAIL",
                    f"{run.cell} {ph['phase']}: data verified",
                    f"!!! {ph['verify_fail']} WRONG-BYTES responses (verify_fail)",
                )
            if ph.get("errors"):
                rep.add(
                    "FAIL", f"{run.cell} {ph['phase']}: no request errors", f"{ph['errors']} errors"
                )
    if (
        ours
        and not any(r.failed for r in ours)
        and not any(ph.get("errors") or ph.get("verify_fail") for r in ours for ph in r.phases)
    ):
        rep.add("PASS", "no errors, every GET byte verified", "")
    return rep


def _succeeded(run: Run | None, ops: tuple[str, ...]) -> bool:
    return run is not None and all((run.op(o) or ({}, {"ops": 0}))[1]["ops"] >= 1 for o in ops)


def check_mpu_rss(
    rep: Report,
    ours: list[Run],
    peaks: dict[str, dict[str, float]] | None,
    probes: tuple[str, ...],
    *,
    limit_mb: float = MPU_RSS_LIMIT_MB,
    growth_mib: float = MPU_RSS_GROWTH_MIB,
) -> None:
    """Cell 5's memory targets, per server process, from matrix.run_mpu's RssWatch peaks.

    ``peaks``: {cell: {process: peak MiB}} for the cell and for ``probes`` (the same upload at
    256 MiB, just before and just after it), or None if cell 5 was not run.  Each process's
    peak during the cell stays under ``limit_mb`` MB, and exceeds the higher of its peaks for
    the 256 MiB uploads by less than ``growth_mib`` MiB (memory does not grow with the
    object).  Only runs whose multipart upload and GET both succeeded are judged: the memory
    of a failed upload says nothing.
    """
    by_cell = {r.cell: r for r in ours}
    ops = ("mpu", "get")
    small = probes[0].split("-")[0] if probes else "smaller"
    what_rss = f"{MPU_CELL} MPU+GET: peak RSS < {limit_mb:.0f} MB per process"
    what_growth = f"{MPU_CELL} peak RSS vs {small}: grows < {growth_mib:.0f} MiB"
    if peaks is None or MPU_CELL not in peaks:
        rep.missing(what_rss, MPU_CELL)
        rep.missing(what_growth, MPU_CELL)
        return
    cell = by_cell.get(MPU_CELL)
    if not _succeeded(cell, ops):
        why = "the 1 GiB multipart upload/GET did not succeed"
        why += f": {cell.failed}" if cell and cell.failed else ""
        rep.add("FAIL", what_rss, why)
        rep.add("FAIL", what_growth, why)
        return
    for name, mib in peaks[MPU_CELL].items():
        mb = mib * (1 << 20) / 1e6
        rep.add(
            "PASS" if mb < limit_mb else "FAIL",
            f"{MPU_CELL} MPU+GET: {name} peak RSS < {limit_mb:.0f} MB",
            f"{mb:.1f} MB peak ({mib:.1f} MiB)",
        )
    failed = [p for p in probes if p not in peaks or not _succeeded(by_cell.get(p), ops)]
    if failed or not probes:
        rep.add("FAIL", what_growth, f"no successful {' / '.join(failed) or 'smaller'} run")
        return
    for name, mib in peaks[MPU_CELL].items():
        sides = [peaks[p].get(name, 0.0) for p in probes]
        grew = mib - max(sides)
        rep.add(
            "PASS" if grew < growth_mib else "FAIL",
            f"{MPU_CELL} {name} peak RSS vs {small}: grows < {growth_mib:.0f} MiB",
            f"{grew:+.1f} MiB ({mib:.1f} MiB; {small} before/after: "
            + " / ".join(f"{v:.1f}" for v in sides)
            + ")",
        )


def error_samples(runs: Iterable[Run]) -> list[str]:
    """s3bench's error samples, one line each, for phases that had errors or bad data."""
    out: list[str] = []
    for run in runs:
        for ph in run.phases:
            for s in ph.get("error_samples") or []:
                out.append(f"  [{run.cell} {ph['phase']}] {s}")
    return out
