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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


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


class NodeDied(RuntimeError):
    """The server exited while a client was running against it."""


def run_child(
    cmd: list[str],
    env: dict[str, str],
    server_alive: Callable[[], bool],
    *,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | int | None = None,
    timeout: float | None = None,
) -> int:
    """Run a client command in its own session; stop its whole tree on any way out.

    Own session: Ctrl-C reaches only the driver, which then tears clients down in order.
    Polls ``server_alive`` meanwhile: if the server dies there is nothing left to measure, so
    the client is stopped at once (NodeDied) instead of logging connection errors until its
    phases time out.  Returns the client's exit code (negative = killed by a signal).
    """
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while proc.poll() is None:
            if not server_alive():
                raise NodeDied("the node exited while a client was running")
            if deadline and time.monotonic() > deadline:
                print(f"!! {Path(cmd[1]).name} timed out after {timeout:.0f}s", file=sys.stderr)
                break
            time.sleep(0.25)
    finally:
        stop_tree(proc)
    return proc.returncode
