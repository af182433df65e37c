"""Stop a process we started *and everything it started*, by PID.

Why not a process group: run_matrix.sh runs s3bench under GNU ``timeout``, which moves itself
into a process group of its own, so ``killpg`` on the shell's group would miss s3bench and its
client processes.  Walking /proc for descendants and signalling each PID reaches all of them
without ever touching a process that is not ours (no pkill, no name matching).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def _parent_map() -> dict[int, list[int]]:
    """ppid -> child PIDs for every process visible in /proc right now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # field 2 (comm) may contain spaces and parentheses: split after the last ")"
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """All descendants of ``pid``, parents before children."""
    children = _parent_map()
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); treat it as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_tree(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` and all its descendants, SIGKILL whatever is left after ``timeout``.

    The tree is snapshotted *before* signalling, because once a parent dies its children are
    re-parented and could no longer be found from ``proc``.
    """
    if proc.poll() is not None and not descendants(proc.pid):
        return
    tree = [proc.pid, *descendants(proc.pid)]
    _signal(tree, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap our direct child so it does not linger as a zombie
        if not any(_alive(p) for p in tree):
            break
        time.sleep(0.1)
    _signal([p for p in tree if _alive(p)], signal.SIGKILL)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
