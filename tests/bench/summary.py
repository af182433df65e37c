"""What every suite hands back, and the one summary `make bench` ends with.

Each target becomes a ``Verdict``: PASS/FAIL/SKIP, the figure that decided it, and the command
that measures it again on its own, so a FAIL in a long run can be re-checked in a minute.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

BENCH = ".venv/bin/python tests/bench/run_bench.py"


@dataclass(frozen=True)
class Verdict:
    verdict: str  # PASS, FAIL or SKIP
    target: str
    figure: str
    command: str


@dataclass
class SuiteResult:
    """One suite's outcome. ``broken``: the measurement itself failed (exit code 1)."""

    name: str
    verdicts: list[Verdict] = field(default_factory=list)
    broken: bool = False
    notes: list[str] = field(default_factory=list)

    def add(self, verdict: str, target: str, figure: str, command: str) -> None:
        self.verdicts.append(Verdict(verdict, target, figure, command))

    def judge(self, ok: bool, target: str, figure: str, command: str) -> None:
        self.add("PASS" if ok else "FAIL", target, figure, command)

    def print_verdicts(self) -> None:
        """The suite's own target lines, in the layout targets.Report uses."""
        for v in self.verdicts:
            print(f"  {v.verdict:<4}  {v.target:<44} {v.figure}")


def command(suite: str, *args: str | float) -> str:
    """The run_bench.py command line that runs ``suite`` with ``args`` (shell-quoted)."""
    parts = [f"--suite {suite}"]
    for arg in args:
        text = f"{arg:g}" if isinstance(arg, float) else str(arg)
        parts.append(text if text.startswith("--") else shlex.quote(text))
    return " ".join([BENCH, *parts])


def print_summary(results: list[SuiteResult]) -> None:
    """Every target of every suite that ran, PASS/FAIL with its figure and command."""
    print("\n" + "=" * 100 + "\n# SUMMARY: every target (MiB = 2^20 bytes, MB = 10^6 bytes)\n")
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    for res in results:
        state = "  (MEASUREMENT BROKEN: see above)" if res.broken else ""
        print(f"## {res.name}{state}")
        shown = [v for v in res.verdicts if v.verdict != "SKIP"]
        skipped = len(res.verdicts) - len(shown)
        for v in shown:
            print(f"  {v.verdict:<4}  {v.target:<46} {v.figure}")
            print(f"        $ {v.command}")
        if skipped:
            print(f"  ({skipped} targets skipped: their cells were not run)")
        for note in res.notes:
            print(f"  note: {note}")
        for v in res.verdicts:
            counts[v.verdict] += 1
        print()
    print(f"{counts['PASS']} pass, {counts['FAIL']} fail, {counts['SKIP']} skipped")
