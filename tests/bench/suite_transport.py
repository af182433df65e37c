"""Suite "transport" (issue 4): shard shipping between two processes over QUIC with mTLS.

Runs the transport engineer's tests/bench/bench_transport.py unchanged (it starts a server
process itself, measures our loopback datagram size and then 1452 bytes) and reads its
"measured N B datagrams: up X MB/s, down Y MB/s" lines.  Each of its phases is capped at
--duration seconds (its --max-seconds), the whole run at 4 x that + 120 s.
Targets (MB = 10^6 bytes, as bench_transport prints): upload >= 100 MB/s at the default size
and >= 5x the 1452-byte figure; download is judged the same way (GETs ship shards too).
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

BASELINE = 1452
MEASURED = re.compile(
    r"measured (\d+) B datagrams: up ([\d.]+) MB/s, down ([\d.]+) MB/s", re.IGNORECASE
)


RATIO = re.compile(r"^\s*ratio\s*\|\s*([\d.]+)x\s*\|\s*([\d.]+)x", re.MULTILINE)


def parse(text: str) -> dict[int, tuple[float, float]]:
    """datagram size -> (upload MB/s, download MB/s), in the order measured."""
    return {int(m[1]): (float(m[2]), float(m[3])) for m in MEASURED.finditer(text)}


def run(a: argparse.Namespace) -> SuiteResult:
    res = SuiteResult("transport: QUIC shard shipping, two processes, mTLS")
    out: Path = a.out
    log = out / "shardfleet-transport.log"
    cmd = [
        sys.executable,
        str(HERE / "bench_transport.py"),
        *("--max-seconds", f"{a.duration:g}", "--total-mib", str(a.transport_mib)),
    ]
    again = command("transport", "--duration", a.duration, "--transport-mib", a.transport_mib)
    bound = 4 * a.duration + 120
    print(f"\n## transport: {' '.join(cmd[1:])} (bounded to {bound:.0f}s)", flush=True)
    with open(log, "wb") as f:
        rc = run_child(cmd, dict(os.environ), lambda: True, stdout=f, stderr=f, timeout=bound)
    text = log.read_text(errors="replace")
    print(text.rstrip())
    got = parse(text)
    if rc != 0 or len(got) < 2 or BASELINE not in got:
        res.broken = True
        res.notes.append(f"bench_transport.py exited {rc}, {len(got)} measurement(s); see {log}")
        for what in ("upload", "download"):
            res.add("FAIL", f"transport {what} >= 100 MB/s and >= 5x 1452 B", "NO RESULT", again)
        return res
    default = next(d for d in got if d != BASELINE)
    printed = RATIO.search(text)  # its own ratio, from unrounded rates
    for i, what in enumerate(("upload", "download")):
        rate, base = got[default][i], got[BASELINE][i]
        ratio = float(printed[i + 1]) if printed else rate / base if base else float("inf")
        res.judge(
            rate >= 100,
            f"transport {what} >= 100 MB/s",
            f"{rate:.1f} MB/s ({default} B datagrams)",
            again,
        )
        res.judge(
            ratio >= 5,
            f"transport {what} >= 5x the 1452 B figure",
            f"{ratio:.1f}x ({rate:.1f} vs {base:.1f} MB/s)",
            again,
        )
    if a.duration < 10:
        res.notes.append(f"phases capped at {a.duration:g}s: short runs include QUIC ramp-up")
    print("\n## transport targets\n")
    res.print_verdicts()
    return res
