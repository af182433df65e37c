"""`shardfleet admin top`: a live terminal view of a node or cluster, from the admin API.

Polls `/_shardfleet/admin/status` of every endpoint given and `/_shardfleet/admin/heal/status`
of the first one that answers (the cluster-wide answer: every node's MRF queue and scanner,
the same call as `admin heal status`), turns consecutive counters into rates, and redraws
with rich. Bounded: it stops after --count refreshes (0 = until Ctrl-C).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table

from shardfleet.node.admin import fetch_heal, fetch_status


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


def _heal_sample(node: dict[str, Any], now: float) -> dict[str, float]:
    """A node's cumulative heal counters (MRF queue and scanner together)."""
    mrf, sc = node["mrf"], node["scanner"]
    return {
        "healed": mrf["healed"] + sc["healed"],
        "bytes": mrf["bytes"] + sc["bytes"],
        "time": now,
    }


def _heal_rates(prev: dict[str, float] | None, cur: dict[str, float]) -> dict[str, float]:
    if not prev:
        return {"healed": 0.0, "mib": 0.0}
    dt = max(cur["time"] - prev["time"], 1e-6)
    return {  # a node restarted meanwhile starts again from 0: no negative rates
        "healed": max(0.0, cur["healed"] - prev["healed"]) / dt,
        "mib": max(0.0, cur["bytes"] - prev["bytes"]) / dt / 2**20,
    }


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _scan_cell(sc: dict[str, Any]) -> str:
    """The scanner pass: progress and ETA while one runs (a node's first pass has no size
    to measure against: objects checked so far), else pending or idle."""
    if sc.get("running"):
        deep = " deep" if sc.get("deep") else ""
        if sc.get("progress") is None:
            return f"running{deep}, {sc.get('pass_scanned', 0)} checked"
        eta = sc.get("eta_s")
        return f"{sc['progress']:.0%}{deep}, ETA {'?' if eta is None else _duration(eta)}"
    return "pending" if sc.get("pending") else "idle"


def _healing(heal: dict[str, Any] | str | None, rates: dict[str, dict[str, float]]) -> Table:
    if heal is None or isinstance(heal, str):
        table = Table(title="healing: unavailable")
        table.add_column("why")
        table.add_row((heal or "not asked")[:200])
        return table
    table = Table(
        title=f"healing: {'done' if heal.get('done') else 'in progress'} "
        "(per second: since the last refresh)"
    )
    for col in (
        "node",
        "MRF depth",
        "healed",
        "healed/s",
        "MiB healed",
        "MiB/s",
        "failed",
        "scan pass",
    ):
        table.add_column(col, justify="left" if col in ("node", "scan pass") else "right")
    for n in heal.get("nodes", []):
        mrf, sc = n["mrf"], n["scanner"]
        r = rates.get(n["node"], {})
        table.add_row(
            n["node"],
            str(mrf["depth"]),
            str(mrf["healed"] + sc["healed"]),
            f"{r.get('healed', 0):.1f}",
            f"{(mrf['bytes'] + sc['bytes']) / 2**20:.1f}",
            f"{r.get('mib', 0):.1f}",
            str(mrf["failed"] + sc["failed"]),
            _scan_cell(sc),
        )
    for n in heal.get("unreachable", []):
        table.add_row(n["node"], *[""] * 6, f"unreachable: {n.get('error', '')}"[:60])
    return table


def render(
    statuses: dict[str, dict[str, Any]],
    rates: dict[str, dict[str, float]],
    heal: dict[str, Any] | str | None = None,
    heal_rates: dict[str, dict[str, float]] | None = None,
) -> Group:
    """`heal`: the `heal/status` answer (an error message if no node gave one)."""
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
    return Group(traffic, nodes, sets, _healing(heal, heal_rates or {}))


def _fetch_heal(
    endpoints: list[str], access_key: str, secret_key: str, ca_bundle: str | Path | None = None
) -> dict[str, Any] | str:
    """`heal/status` from the first of `endpoints` that answers: one call covers every node
    of the cluster (the node asks its peers). Else why not, for the healing table."""
    why = "no node answered the status call"
    for ep in endpoints:
        try:
            return fetch_heal(ep, access_key, secret_key, ca_bundle=ca_bundle)
        except SystemExit as exc:
            why = str(exc)
    return why


def run(
    endpoints: list[str],
    access_key: str,
    secret_key: str,
    *,
    interval: float,
    count: int,
    ca_bundle: str | Path | None = None,
) -> int:
    prev: dict[str, dict[str, float]] = {}
    heal_prev: dict[str, dict[str, float]] = {}
    shown = 0
    with Live(refresh_per_second=4, screen=False) as live:
        while count == 0 or shown < count:
            statuses, rates = {}, {}
            for ep in endpoints:
                try:
                    st = fetch_status(ep, access_key, secret_key, ca_bundle=ca_bundle)
                except SystemExit as exc:
                    st = {"node": f"unreachable: {exc}"[:60], "traffic": {}}
                statuses[ep] = st
                if "time" in st.get("traffic", {}):
                    rates[ep] = _rates(prev.get(ep), st["traffic"])
                    prev[ep] = st["traffic"]
            heal = _fetch_heal(
                [ep for ep, st in statuses.items() if "pools" in st],
                access_key,
                secret_key,
                ca_bundle,
            )
            heal_rates = {}
            if isinstance(heal, dict):
                now = time.monotonic()
                for n in heal.get("nodes", []):
                    cur = _heal_sample(n, now)
                    heal_rates[n["node"]] = _heal_rates(heal_prev.get(n["node"]), cur)
                    heal_prev[n["node"]] = cur
            live.update(render(statuses, rates, heal, heal_rates))
            shown += 1
            if count == 0 or shown < count:
                time.sleep(interval)
    return 0
