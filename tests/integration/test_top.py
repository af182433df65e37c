"""`shardfleet admin top` against a real standalone node: besides traffic, nodes and sets, a
healing table per node (MRF depth, objects and MiB healed with their rates since the last
refresh, failures, the scanner pass's progress and ETA), from the same `heal/status` call
as `admin heal status`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from shardfleet.node.top import _duration, _heal_rates, _scan_cell, render
from tests.support.shards import shard_files

ENV = dict(os.environ, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY, SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY)
COLUMNS = ["node", "MRF depth", "healed", "healed/s", "MiB healed", "MiB/s", "failed", "scan pass"]


def cli(*args: str, timeout: float = 60) -> str:
    cmd = [sys.executable, "-m", "shardfleet.node.main", "admin", *args]
    # not a terminal: rich draws the last refresh once, COLUMNS wide (no cell cut short)
    env = dict(ENV, COLUMNS="220")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def heal_status(node) -> dict:
    return json.loads(cli("heal", "status", "--json", "--endpoint", node.endpoint))


def top(*endpoints: str, count: int = 1, interval: float = 0.5) -> str:
    args = [a for ep in endpoints for a in ("--endpoint", ep)]
    return cli("top", *args, "--count", str(count), "--interval", str(interval))


def healing(text: str) -> tuple[str, dict[str, dict[str, str]]]:
    """The healing table of a `top` frame: its title and a row per node, by column."""
    start = text.index("healing: ")
    title = text[start:].splitlines()[0].strip()
    rows = {}
    for line in text[start:].splitlines():
        if line.startswith("│"):  # data rows (the header's bars are ┃)
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            rows[cells[0]] = dict(zip(COLUMNS, cells, strict=True))
    return title, rows


def wait_done(node, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while not (st := heal_status(node))["done"]:
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    return st


def make_node(node_factory, tmp_path: Path, name: str, **config: float):
    path = tmp_path / f"{name}.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in config.items()))
    return node_factory(name, args=["--config", str(path)])


def test_top_shows_mrf_depth_and_what_was_healed(node):
    s3 = node.client()
    s3.create_bucket(Bucket="heal")
    for n in (300_000, 1 << 20, 3 << 20):
        s3.put_object(Bucket="heal", Key=f"obj-{n}", Body=os.urandom(n))
    lost = shard_files(node.drive_path(2), "heal")
    assert len(lost) == 3
    for path in lost:
        path.unlink()
    cli("heal", "start", "--endpoint", node.endpoint)
    st = wait_done(node)
    [me] = st["nodes"]
    assert me["scanner"]["healed"] == 3 and me["scanner"]["bytes"] > 0, me

    title, rows = healing(top(node.endpoint))
    assert title.startswith("healing: done"), title
    row = rows["standalone"]
    assert row["MRF depth"] == "0" and row["healed"] == "3" and row["failed"] == "0", row
    assert row["MiB healed"] == f"{me['scanner']['bytes'] / 2**20:.1f}" != "0.0", row
    assert row["scan pass"] == "idle", row

    tmp: Path = node.drive_path(4) / "tmp"
    shutil.rmtree(tmp)
    tmp.write_text("not a directory")  # drive 4 cannot stage a shard: the write misses it
    s3.put_object(Bucket="heal", Key="missed", Body=os.urandom(2 << 20))
    assert heal_status(node)["nodes"][0]["mrf"]["depth"] == 1
    # an endpoint that does not answer first: healing comes from the next one
    text = top("http://127.0.0.1:1", node.endpoint)
    title, rows = healing(text)
    assert title.startswith("healing: in progress"), title
    assert rows["standalone"]["MRF depth"] == "1", rows
    assert "unreachable" in text  # (in the traffic table)

    tmp.unlink()
    tmp.mkdir()  # writes reach drive 4 again: the MRF queue heals the object
    st = wait_done(node)
    title, rows = healing(top(node.endpoint))
    assert title.startswith("healing: done"), title
    assert rows["standalone"]["MRF depth"] == "0", rows
    assert rows["standalone"]["healed"] == "4", rows  # 3 by the scanner, 1 by the MRF queue


def test_top_shows_a_running_pass_with_progress_eta_and_heal_rates(node_factory, tmp_path):
    node = make_node(node_factory, tmp_path, "slow", scan_rate=10)  # 60 objects: a 6 s pass
    s3 = node.client()
    s3.create_bucket(Bucket="heal")
    for i in range(60):
        s3.put_object(Bucket="heal", Key=f"k{i:02d}", Body=os.urandom(200_000))
    cli("heal", "start", "--endpoint", node.endpoint)
    # a node's first pass has no previous pass to measure against: no %, objects so far
    title, rows = healing(top(node.endpoint))
    assert title.startswith("healing: in progress"), title
    assert rows["standalone"]["scan pass"].startswith("running, "), rows
    assert rows["standalone"]["scan pass"].endswith(" checked"), rows
    wait_done(node)

    for path in shard_files(node.drive_path(2), "heal"):
        path.unlink()  # the second pass heals every object as it goes
    cli("heal", "start", "--endpoint", node.endpoint)
    time.sleep(1.0)
    title, rows = healing(top(node.endpoint, count=2, interval=1.5))
    row = rows["standalone"]
    assert title.startswith("healing: in progress"), title
    pct, _, eta = row["scan pass"].partition(", ETA ")
    assert pct.endswith("%") and 0 < int(pct[:-1]) < 100, row
    assert eta.endswith("s") and eta[:-1].isdigit(), row
    assert int(row["healed"]) > 0 and float(row["MiB healed"]) > 0, row
    # rates between the two refreshes: the pass heals ~10 objects of 200 KB a second
    assert float(row["healed/s"]) > 0 and float(row["MiB/s"]) > 0, row
    st = wait_done(node)
    assert st["nodes"][0]["scanner"]["healed"] == 60, st


# -- the rendering alone ------------------------------------------------------------------
def test_scan_cell_and_durations() -> None:
    assert _scan_cell({"running": False, "pending": False}) == "idle"
    assert _scan_cell({"running": False, "pending": True}) == "pending"
    running = {"running": True, "deep": True, "progress": 0.421, "eta_s": 3725.0}
    assert _scan_cell(running) == "42% deep, ETA 1h02m"
    assert _scan_cell(running | {"deep": False, "eta_s": None}) == "42%, ETA ?"
    assert _scan_cell({"running": True, "progress": None, "pass_scanned": 7}) == (
        "running, 7 checked"
    )
    assert [_duration(s) for s in (0.4, 59, 61, 3600)] == ["0s", "59s", "1m01s", "1h00m"]


def test_heal_rates_are_per_second_and_never_negative() -> None:
    prev = {"healed": 10, "bytes": 0, "time": 100.0}
    cur = {"healed": 30, "bytes": 4 << 20, "time": 102.0}
    assert _heal_rates(None, cur) == {"healed": 0.0, "mib": 0.0}
    assert _heal_rates(prev, cur) == {"healed": 10.0, "mib": 2.0}
    restarted = {"healed": 0, "bytes": 0, "time": 103.0}  # counters back to 0
    assert _heal_rates(cur, restarted) == {"healed": 0.0, "mib": 0.0}


def _text(group) -> str:
    import io

    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(group)
    return console.export_text()


def test_render_healing_unavailable_and_unreachable_peers() -> None:
    text = _text(render({}, {}, "shardfleet admin: cannot reach http://x: refused"))
    assert "healing: unavailable" in text and "cannot reach http://x" in text
    zero = {"depth": 0, "healed": 0, "failed": 0, "bytes": 0}
    heal = {
        "done": False,
        "nodes": [{"node": "n1", "mrf": zero | {"depth": 5}, "scanner": zero | {"running": False}}],
        "unreachable": [{"node": "n2", "error": "timed out"}],
    }
    _, rows = healing(_text(render({}, {}, heal, {"n1": {"healed": 2.5, "mib": 1.25}})))
    assert rows["n1"]["MRF depth"] == "5" and rows["n1"]["healed/s"] == "2.5", rows
    assert rows["n1"]["MiB/s"] == "1.2" and rows["n1"]["scan pass"] == "idle", rows
    assert rows["n2"]["scan pass"] == "unreachable: timed out", rows
