"""A standalone shardfleet node for benchmarking, as a real process, logging to a file.

Why not tests/support/nodeproc.NodeProcess: that helper keeps the node's output in memory and
runs the node in our process group.  For a benchmark we want (a) the node's log on disk, next
to the s3bench logs, so a crash or 5xx storm can be handed to whoever fixes it, and (b) the
node in its own session, so Ctrl-C reaches only the driver, which then shuts the clients down
first and the node last (SIGTERM, then SIGKILL after a timeout), instead of every process
racing to die at once.

Also here: choosing where the data lives.  A benchmark of a store that fsyncs every shard is
only honest on the real disk; on tmpfs fsync is free.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from proctree import descendants

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from shardfleet.node.devcluster import serve_command  # noqa: E402

DEV_ACCESS_KEY = "shardfleet-dev"
DEV_SECRET_KEY = "shardfleet-dev-secret-key"
_ENDPOINT = re.compile(r"^\s*endpoint:\s+(https?://\S+)\s*$", re.M)
_ACCESS = re.compile(r"^\s*access key:\s+(\S+)\s*$", re.M)
_SECRET = re.compile(r"^\s*secret key:\s+(\S+)\s*$", re.M)
_MEMORY_FS = {"tmpfs", "ramfs", "devtmpfs"}


@dataclass(frozen=True)
class Mount:
    """The filesystem a path lives on, as /proc/self/mountinfo tells it."""

    point: str
    fstype: str
    source: str


def mount_of(path: Path) -> Mount:
    """Longest mount point that contains ``path`` (so bind mounts and /tmp-on-tmpfs show)."""
    real = str(path.resolve())
    best = Mount("/", "?", "?")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        point = left.split()[4].replace("\\040", " ")
        fstype, source = (right.split() + ["?", "?"])[:2]
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best.point):
            best = Mount(point, fstype, source)
    return best


def pick_data_base(repo: Path, override: str | None) -> tuple[Path, str]:
    """Where to create the temp data dir, plus a one-line note on why it is honest.

    Prefers ``override`` (BENCH_TMPDIR), then /tmp when it is on the same filesystem as the
    repository (i.e. the real disk), else a gitignored folder inside the repository.
    """
    repo_dev = repo.stat().st_dev

    def describe(base: Path) -> str:
        m = mount_of(base)
        where = (
            "same filesystem as the repo"
            if base.stat().st_dev == repo_dev
            else "NOT the repo's filesystem"
        )
        memory = (
            "; MEMORY-BACKED: fsync is free, numbers flatter the store"
            if m.fstype in _MEMORY_FS
            else ""
        )
        return f"{m.fstype} on {m.source} (mounted at {m.point}; {where}{memory})"

    if override:  # the user asked for it: honour it, but say what it is
        base = Path(override)
        base.mkdir(parents=True, exist_ok=True)
        return base, describe(base)
    for base in (Path(tempfile.gettempdir()), repo / "matrix-results" / ".bench-tmp"):
        base.mkdir(parents=True, exist_ok=True)
        if mount_of(base).fstype not in _MEMORY_FS and base.stat().st_dev == repo_dev:
            return base, describe(base)
    raise SystemExit("no disk-backed temp directory found; set BENCH_TMPDIR")


class BenchNode:
    """``python -m shardfleet.node.main serve`` on a free port with dev credentials and a log file."""

    def __init__(
        self,
        data: Path,
        log: Path,
        *,
        drives: int = 4,
        ec: str = "2+2",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data = data
        self.extra_args = extra_args  # more `serve` flags, e.g. ("--log-level", "warning")
        self.log = log
        self.drives = drives
        self.ec = ec
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self.access_key = DEV_ACCESS_KEY
        self.secret_key = DEV_SECRET_KEY
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")  # one log per benchmark run, across restarts

    @property
    def pid(self) -> int:
        assert self.proc is not None, "node not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> BenchNode:
        """Start the node and wait for its banner; raise RuntimeError (with the log) if not."""
        cmd = serve_command(self.data, self.drives, self.ec, *self.extra_args)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("SHARDFLEET_ACCESS_KEY", None)  # unset -> the node uses the dev credentials
        env.pop("SHARDFLEET_SECRET_KEY", None)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # append: a restarted node keeps the earlier run's log; look for the banner after it
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[offset:]
            found = _ENDPOINT.search(text)
            if found:
                self.endpoint = found[1]
                if ak := _ACCESS.search(text):
                    self.access_key = ak[1]
                if (sk := _SECRET.search(text)) and not sk[1].startswith("("):
                    self.secret_key = sk[1]
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                rc = self.stop()
                raise RuntimeError(f"node did not start (exit {rc}); log {self.log}:\n{text}")
            time.sleep(0.05)

    def rss_mib(self) -> float:
        """Resident memory of the node and its children now, in MiB (as s3bench sums it)."""
        total_kb = 0
        for pid in [self.pid, *descendants(self.pid)]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
            except OSError:
                pass
        return total_kb / 1024

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def problems(self) -> list[str]:
        """Log lines that look like trouble (tracebacks, errors, 5xx), for the report."""
        keys = ("Traceback", "ERROR", "CRITICAL", "Exception", " 500 ", " 503 ")
        return [ln for ln in self.log_text().splitlines() if any(k in ln for k in keys)]

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the node shuts down cleanly), SIGKILL if it is still there after timeout."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(
                    f"node {self.proc.pid} ignored SIGTERM for {timeout:.0f}s: SIGKILL",
                    file=sys.stderr,
                )
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode
