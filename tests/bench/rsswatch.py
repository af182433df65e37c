"""Per-process peak memory while something runs: s3bench only reports the *sum* over PIDs.

For the cluster each node has its own limit, so each node PID (with its descendants, if any)
gets its own peak.  Two sources, the larger wins:

* VmRSS sampled every ``interval`` seconds;
* VmHWM, the kernel's high-water mark, reset at start (``5`` into /proc/PID/clear_refs, which
  we may do for processes we started) and read at every sample, so a spike shorter than the
  interval still counts.  s3bench resets VmHWM itself at each phase start; reading VmHWM at
  every sample keeps what came before such a reset, except for growth in the last
  ``interval`` before it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from proctree import descendants


def _status_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB; (0, 0) if it is gone."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS; False if the kernel or permissions do not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssWatch:
    """Peak RSS per named process tree, sampled in a thread between start() and stop()."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.roots = pids
        self.interval = interval
        self.peak_kb = dict.fromkeys(pids, 0)
        self.hwm_reset = True
        self._trees: dict[str, list[int]] = {}
        self._trees_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _refresh_trees(self) -> None:
        now = time.monotonic()
        if now - self._trees_at > 1.0:
            self._trees = {n: [p, *descendants(p)] for n, p in self.roots.items()}
            self._trees_at = now

    def sample(self) -> None:
        self._refresh_trees()
        for name, tree in self._trees.items():
            rss = hwm = 0
            for pid in tree:
                r, h = _status_kb(pid)
                rss, hwm = rss + r, hwm + h
            self.peak_kb[name] = max(self.peak_kb[name], rss, hwm)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> RssWatch:
        self._refresh_trees()
        for tree in self._trees.values():
            for pid in tree:
                self.hwm_reset &= reset_hwm(pid)
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """Stop sampling; peak per name in MiB."""
        self._stop.set()
        self._thread.join(5)
        self.sample()
        return {n: kb / 1024 for n, kb in self.peak_kb.items()}
