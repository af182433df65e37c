"""The Grafana dashboard (deploy/grafana/shardfleet-dashboard.json) imports cleanly and
matches what a real node serves on /metrics: every heal metric is on it, and it queries
no metric a node does not export."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/shardfleet-dashboard.json"
#: what only a cluster node exports (or, for the RPC histogram, only once a remote drive
#: was called): a standalone node cannot show them
CLUSTER_ONLY = {
    "shardfleet_membership_nodes",
    "shardfleet_cluster_majority",
    "shardfleet_rpc_seconds_bucket",
}
#: the heal metrics README's Healing section promises
HEAL_METRICS = {
    "shardfleet_heal_mrf_depth",
    "shardfleet_heal_mrf_healed",
    "shardfleet_heal_mrf_failures",
    "shardfleet_heal_mrf_bytes",
    "shardfleet_heal_scanner_healed",
    "shardfleet_heal_scanner_failures",
    "shardfleet_heal_scanner_bytes",
    "shardfleet_heal_scan_running",
    "shardfleet_heal_scan_objects",
    "shardfleet_heal_scan_progress",
}
METRIC = re.compile(r"\bshardfleet_[a-z0-9_]+")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queried(doc: dict) -> set[str]:
    return {
        name
        for p in doc["panels"]
        for t in p.get("targets", [])
        for name in METRIC.findall(t["expr"])
    }


def test_dashboard_is_one_consistent_grafana_document() -> None:
    doc = dashboard()
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), ids
    used: dict[tuple[int, int], int] = {}
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in used, f"panel {p['id']} overlaps panel {used[(x, y)]}"
                used[(x, y)] = p["id"]
    required = {r["id"] for r in doc["__requires"] if r["type"] == "panel"}
    for p in doc["panels"]:
        if p["type"] == "row":
            continue
        assert p["type"] in required, p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]
            assert 'instance=~"$node"' in t["expr"], (p["title"], t["expr"])
    # the Healing row holds the heal panels: they come after it, before any later row
    rows = sorted((p["gridPos"]["y"], p["title"]) for p in doc["panels"] if p["type"] == "row")
    healing_y = next(y for y, title in rows if title == "Healing")
    after = [y for y, _ in rows if y > healing_y]
    for p in doc["panels"]:
        if any(m.startswith("shardfleet_heal_") for m in queried({"panels": [p]})):
            assert healing_y < p["gridPos"]["y"] < min(after, default=10**9), p["title"]


def test_the_dashboard_shows_every_heal_metric_and_only_real_metrics(node) -> None:
    node.client().list_buckets()  # (the request metrics have a series once one was served)
    with urllib.request.urlopen(node.endpoint + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    exported = {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    heal = {name for name in exported if name.startswith("shardfleet_heal_")}
    assert HEAL_METRICS <= heal, HEAL_METRICS - heal
    on_dashboard = queried(dashboard())
    assert heal <= on_dashboard, f"not on the dashboard: {sorted(heal - on_dashboard)}"
    unknown = on_dashboard - exported - CLUSTER_ONLY
    assert not unknown, f"the dashboard queries metrics no node exports: {sorted(unknown)}"
