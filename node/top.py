"""`shardfleet admin top`: a live terminal view of a node or cluster, from the admin API.

Polls `/_shardfleet/admin/status` of every endpoint given, turns consecutive traffic
counters into rates, and redraws with rich. Bounded: it stops after --count refreshes
(0 = until Ctrl-C).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table

from shardfleet.node.admin import fetch_status


def _rates(prev: dict[str, float] | None, cur: dict[str, float]) -> dict[str, float]:
    if not prev:
        return {"rps": 0.0, "in": 0.0, "out": 0.0, "lat_ms": 0.0, "err": 0.0}
    dt = max(cur["time"] - prev["time"], 1e-6)
    count = cur["latency_count"] - prev["latency_count"]
    return {
        "rps": (cur["requests"] - prev["requests"]) / dt,
        "in": (cur["bytes_in"] - prev["bytes_in"]) / dt / 2**20,
        "out": (cur["bytes_out"] - prev["bytes_out"]) / dt / 2**20,
        "lat_ms": 1000 * (cur["latency_sum"] - prev["latency_sum"]) / count if count else 0.0,
        "err": (cur["errors"] - prev["errors"]) / dt,
    }


def render(statuses: dict[str, dict[str, Any]], rates: dict[str, dict[str, float]]) -> Group:
    traffic = Table(title="traffic (per second, since the last refresh)")
    for col in (
        "endpoint",
        "node",
        "req/s",
        "err/s",
        "in MiB/s",
        "out MiB/s",
        "avg ms",
        "in flight",
        "loop lag ms",
    ):
        traffic.add_column(col, justify="right" if col not in ("endpoint", "node") else "left")
    for ep, st in statuses.items():
        r = rates.get(ep, {})
        t = st.get("traffic", {})
        traffic.add_row(
            ep,
            st.get("node", "?"),
            f"{r.get('rps', 0):.0f}",
            f"{r.get('err', 0):.1f}",
            f"{r.get('in', 0):.1f}",
            f"{r.get('out', 0):.1f}",
            f"{r.get('lat_ms', 0):.1f}",
            f"{t.get('inflight', 0):.0f}",
            f"{1000 * t.get('loop_lag', 0):.1f}",
        )
    first = next(iter(statuses.values()), {})
    nodes = Table(title=f"nodes (majority: {'yes' if first.get('majority') else 'NO'})")
    nodes.add_column("node")
    nodes.add_column("state")
    nodes.add_column("last seen s", justify="right")
    for n in first.get("nodes", []):
        nodes.add_row(
            n["node"], n["state"], "" if n.get("last_seen_s") is None else f"{n['last_seen_s']:.1f}"
        )
    sets = Table(title="erasure sets")
    for col in ("pool", "set", "ec", "online", "write quorum", "offline drives"):
        sets.add_column(col)
    for pool in first.get("pools", []):
        for s in pool["sets"]:
            offline = ", ".join(d["endpoint"] for d in s["drives"] if not d["online"]) or "-"
            sets.add_row(
                str(pool["pool"]),
                str(s["set"]),
                s["ec"],
                f"{s['online']}/{len(s['drives'])}",
                str(s["write_quorum"]),
                offline,
            )
    return Group(traffic, nodes, sets)


def run(
    endpoints: list[str], access_key: str, secret_key: str, *, interval: float, count: int
) -> int:
    prev: dict[str, dict[str, float]] = {}
    shown = 0
    with Live(refresh_per_second=4, screen=False) as live:
        while count == 0 or shown < count:
            statuses, rates = {}, {}
            for ep in endpoints:
                try:
                    st = fetch_status(ep, access_key, secret_key)
                except SystemExit as exc:
                    st = {"node": f"unreachable: {exc}"[:60], "traffic": {}}
                statuses[ep] = st
                if "time" in st.get("traffic", {}):
                    rates[ep] = _rates(prev.get(ep), st["traffic"])
                    prev[ep] = st["traffic"]
            live.update(render(statuses, rates))
            shown += 1
            if count == 0 or shown < count:
                time.sleep(interval)
    return 0
