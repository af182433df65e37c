"""Suite "priority" (issue 13): a client PUT's latency while background calls saturate the
link, through tests/bench/bench_priority.py (a server process, a client here, mTLS).

Its three phases are idle, background load as background calls (paced to the default
`background_rate`, their own connection) and the same load as client calls. Target: with
background load at the cap, the PUT p99 stays within 2x the idle p99.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from matrix import HERE
from proctree import run_child
from summary import SuiteResult, command

ROW = re.compile(
    r"^\s*(idle|background|unpaced)\s*\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)", re.M
)


def run(a: argparse.Namespace) -> SuiteResult:
    res = SuiteResult("priority: client PUT latency beside background traffic")
    log: Path = a.out / "shardfleet-priority.log"
    seconds = max(5.0, min(a.duration, 30.0))
    cmd = [sys.executable, str(HERE / "bench_priority.py"), "--seconds", f"{seconds:g}"]
    again = command("priority", "--duration", a.duration)
    print(f"\n## priority: {' '.join(cmd[1:])}", flush=True)
    with open(log, "wb") as f:
        rc = run_child(cmd, dict(os.environ), lambda: True, stdout=f, stderr=f,
                       timeout=3 * seconds + 120)  # fmt: skip
    text = log.read_text(errors="replace")
    print(text.rstrip())
    rows = {m[1]: (float(m[3]), float(m[4])) for m in ROW.finditer(text)}
    if rc != 0 or len(rows) != 3:
        res.broken = True
        res.notes.append(f"bench_priority.py exited {rc}; see {log}")
        res.add("FAIL", "PUT p99 with background load <= 2x idle", "NO RESULT", again)
        return res
    idle, bg, unpaced = rows["idle"][1], rows["background"][1], rows["unpaced"][1]
    res.judge(
        bg <= 2 * idle,
        "PUT p99 with background load <= 2x idle",
        f"{bg:.1f} ms vs {idle:.1f} ms idle ({bg / idle:.2f}x; unpaced {unpaced / idle:.1f}x)",
        again,
    )
    print("\n## priority targets\n")
    res.print_verdicts()
    return res
