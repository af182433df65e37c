"""Suite "startup" (issue 5): from spawning a standalone node until /health/ready answers 200.

    python -m shardfleet.node.main serve --data DIR --drives 4 --ec 2+2 --address 127.0.0.1:0

The port is only known from the node's banner, so each run polls the log file (every 2 ms)
for the endpoint, then GETs /health/ready (every 2 ms) until it answers 200; the clock starts
just before the spawn.  ``--startup-runs`` runs (default 5) on a fresh empty data dir each, then
as many on one existing dir (formatted, holding a few hundred objects).  Target: median < 0.5 s.
The same target holds for the test fixture users import: `shardfleet.testing.serve()`, from
its import until it yields a serving node.

Most of it may be the interpreter and imports, so the same number of runs of
``python -c pass`` and of serve's imports alone (`IMPORTS`: the same steps as node/main.py's
serve, GC off, the code cache on, aiohttp's and prometheus_client's package __init__ left
pending) give the split.

Our packages are byte-compiled first (stale or missing .pyc files only), as a regular
``pip install`` (and ``make venv``) leaves them: with PYTHONDONTWRITEBYTECODE=1 an editable
checkout would otherwise compile them from source on every start. The start-up code cache
(node/codecache.py) is filled the same way, as ``make venv`` and a node's first start do.
"""

from __future__ import annotations

import argparse
import compileall
import http.client
import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchnode import _ENDPOINT, BenchNode, pick_data_base
from matrix import REPO, SHARED
from summary import SuiteResult, command

TARGET_S = 0.5
IMPORTS = (
    "import gc; gc.disable(); from node import main, codecache; "
    "codecache.CodeCache().install(); codecache.serve_imports()"
)
PACKAGES = ("erasure", "transport", "cluster", "healing", "node")


def _stale(source: Path) -> bool:
    """No .pyc for ``source``, or one compiled from another version of it."""
    try:
        header = Path(importlib.util.cache_from_source(str(source))).read_bytes()[:16]
        st = source.stat()
    except OSError:
        return True
    flags = int.from_bytes(header[4:8], "little")
    mtime, size = (int.from_bytes(header[i : i + 4], "little") for i in (8, 12))
    return (
        header[:4] != importlib.util.MAGIC_NUMBER
        or flags != 0
        or (mtime, size) != (int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF)
    )


def byte_compile() -> str:
    """Byte-compiles our packages where needed (like ``make venv``); says what it did."""
    sources = [f for pkg in PACKAGES for f in (REPO / pkg).rglob("*.py")]
    stale = sum(_stale(f) for f in sources)
    if not all(compileall.compile_dir(REPO / pkg, quiet=1) for pkg in PACKAGES):
        raise RuntimeError("compileall failed on our packages")
    # and, like `make venv`, the start-up code cache (node/codecache.py)
    warm = subprocess.run(
        [sys.executable, "-c", "import node.codecache as c; print(c.warm())"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if warm.returncode != 0:
        raise RuntimeError(f"shardfleet.node.codecache warm failed: {warm.stderr.strip()[-500:]}")
    cache = "written" if warm.stdout.strip() == "True" else "up to date"
    return (
        f"our {len(sources)} modules byte-compiled ({stale} of them stale or missing before); "
        f"start-up code cache {cache}"
    )


def _ready(endpoint: str) -> bool:
    url = urlsplit(endpoint)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=2)
    try:
        conn.request("GET", "/health/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def time_start(data: Path, log: Path) -> tuple[float, float]:
    """(seconds until the banner, seconds until /health/ready = 200) for one node start."""
    cmd = [sys.executable, "-m", "shardfleet.node.main", "serve", "--data", str(data)]
    cmd += ["--drives", "4", "--ec", "2+2", "--address", "127.0.0.1:0"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("SHARDFLEET_ACCESS_KEY", None)
    env.pop("SHARDFLEET_SECRET_KEY", None)
    with open(log, "wb") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = t0 + 30
        while not (found := _ENDPOINT.search(log.read_text(errors="replace"))):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"node did not start (exit {proc.poll()}), log {log}")
            time.sleep(0.002)
        banner = time.perf_counter() - t0
        while not _ready(found[1]):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"node never became ready (exit {proc.poll()}), log {log}")
            time.sleep(0.002)
        return banner, time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


FIXTURE = (
    "import time; t0 = time.perf_counter(); from shardfleet.testing import serve\n"
    "with serve() as server:\n"
    "    print(time.perf_counter() - t0, flush=True)\n"
)


def time_fixture() -> float:
    """Seconds from `from shardfleet.testing import serve` to a yielded, serving node
    (the user's view of the test fixture; the interpreter that imports it already runs)."""
    done = subprocess.run(
        [sys.executable, "-c", FIXTURE], cwd="/", capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def time_python(code: str) -> float:
    """Wall time of ``python -c code`` (cwd = repo, like the node)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    return time.perf_counter() - t0


def biggest_imports(top: int = 8) -> list[str]:
    """``-X importtime``: the heaviest modules at the first two levels, cumulative ms."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", IMPORTS],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    rows = []
    for line in err.splitlines()[1:]:
        parts = line.split("|")
        if len(parts) == 3 and len(parts[2]) - len(parts[2].lstrip()) <= 3:
            rows.append((int(parts[1]) / 1000, parts[2].strip()))
    return [f"{name} {ms:.0f} ms" for ms, name in sorted(rows, reverse=True)[:top]]


def fill(data: Path, log: Path, objects: int = 300) -> None:
    """Format ``data`` and leave ``objects`` 4 KiB objects in it (s3bench, no cleanup)."""
    node = BenchNode(data, log).start()
    try:
        subprocess.run(
            [sys.executable, str(SHARED / "s3bench.py"), "--endpoint", node.endpoint,
             "--access-key", node.access_key, "--secret-key", node.secret_key,
             "--bucket", "startup-existing", "--create-bucket", "--size", "4KiB", "-c", "16",
             "--procs", "1", "--duration", "0", "--ops", str(objects), "--phases", "put",
             "--json-only"],
            stdout=subprocess.DEVNULL, check=True, timeout=120,
        )  # fmt: skip
    finally:
        node.stop()


def _series(label: str, runs: list[tuple[float, float]]) -> tuple[float, str]:
    ready = statistics.median(r for _, r in runs)
    banner = statistics.median(b for b, _ in runs)
    each = " ".join(f"{r:.3f}" for _, r in runs)
    print(f"  {label:<28} median ready {ready:.3f}s (banner {banner:.3f}s); runs: {each}")
    return ready, f"median {ready:.3f}s of {len(runs)} (banner {banner:.3f}s; runs {each})"


def run(a: argparse.Namespace) -> SuiteResult:
    res = SuiteResult("startup: standalone node until /health/ready = 200")
    out: Path = a.out
    again = command("startup", "--startup-runs", a.startup_runs)
    base, disk = pick_data_base(REPO, a.tmpdir)
    tmp = Path(tempfile.mkdtemp(prefix="shardfleet-bench-startup-", dir=base))
    log = out / "shardfleet-startup.node.log"
    print(f"\n## startup: {a.startup_runs} runs fresh + {a.startup_runs} existing; data {tmp}")
    print(f"#   disk: {disk}", flush=True)
    fresh: list[tuple[float, float]] = []
    existing: list[tuple[float, float]] = []
    interp: list[float] = []
    imports: list[float] = []
    fixture: list[float] = []
    try:
        res.notes.append(f"bytecode: {(compiled := byte_compile())}")
        print(f"#   bytecode: {compiled}", flush=True)
        existing_dir = tmp / "existing"
        fill(existing_dir, out / "shardfleet-startup.fill.log")
        for k in range(a.startup_runs):  # interleaved, so drift in load hits every series
            (d := tmp / f"fresh{k}").mkdir()
            fresh.append(time_start(d, log))
            existing.append(time_start(existing_dir, log))
            interp.append(time_python("pass"))
            imports.append(time_python(IMPORTS))
            fixture.append(time_fixture())
        heavy = biggest_imports()
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        res.broken = True
        res.notes.append(f"startup measurement failed: {exc}")
        print(f"!! {exc}", file=sys.stderr)
        for what in ("fresh", "existing"):
            res.add("FAIL", f"startup ({what} data dir) < {TARGET_S} s", "NO RESULT", again)
        res.add("FAIL", f"test fixture serve() ready < {TARGET_S} s", "NO RESULT", again)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    f_med, f_fig = _series("fresh data dir", fresh)
    e_med, e_fig = _series("existing data dir (300 obj)", existing)
    i_med, m_med = statistics.median(interp), statistics.median(imports)
    print(f"  {'python -c pass':<28} median {i_med:.3f}s  (interpreter alone)")
    print(f"  {'serve imports alone':<28} median {m_med:.3f}s  (interpreter + imports)")
    print(f"  split of the fresh median {f_med:.3f}s: interpreter {i_med:.3f}s, imports "
          f"{m_med - i_med:.3f}s, the rest (config, drives, server) {f_med - m_med:.3f}s")  # fmt: skip
    print(f"  heaviest imports (-X importtime, cumulative): {', '.join(heavy)}")
    res.judge(f_med < TARGET_S, f"startup (fresh data dir) < {TARGET_S} s", f_fig, again)
    res.judge(e_med < TARGET_S, f"startup (existing data dir) < {TARGET_S} s", e_fig, again)
    x_med = statistics.median(fixture)
    x_fig = f"median {x_med:.3f}s of {len(fixture)} (runs {' '.join(f'{x:.3f}' for x in fixture)})"
    print(f"  {'shardfleet.testing.serve()':<28} median {x_med:.3f}s  (import to a serving node)")
    res.judge(x_med < TARGET_S, f"test fixture serve() ready < {TARGET_S} s", x_fig, again)
    res.notes.append(
        f"interpreter {i_med:.3f}s + imports {m_med - i_med:.3f}s = {m_med:.3f}s of it "
        "(medians of `python -c pass` / serve's imports alone)"
    )
    print("\n## startup targets\n")
    res.print_verdicts()
    return res
