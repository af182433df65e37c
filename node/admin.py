"""The admin API (`/_shardfleet/admin/...`, root credentials, SigV4) and its CLI client.

The path prefix cannot collide with S3: '_' is not allowed in bucket names.

The server side is handed what it reads (object layer, cluster runtime, config, metrics,
the secret lookup), not the `Node`: node.app imports this module to route admin requests,
so naming node.app here, even for type checking only, was an import loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shardfleet.node.s3.context import send_continue, split_query
from shardfleet.node.s3.errors import (
    AccessDenied,
    InvalidRequest,
    S3Error,
    XAmzContentSHA256Mismatch,
    from_internal,
)
from shardfleet.node.s3.router import error_response, new_request_id
from shardfleet.node.s3.sigv4 import RequestView, verify_request

if TYPE_CHECKING:
    from shardfleet.cluster.objects import ObjectLayer
    from shardfleet.node.clusterwire import ClusterRuntime
    from shardfleet.node.config import NodeConfig
    from shardfleet.node.metrics import Metrics

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_shardfleet/admin/"


async def status(
    layer: ObjectLayer | None,
    cluster: ClusterRuntime | None,
    config: NodeConfig,
    metrics: Metrics,
) -> dict[str, Any]:
    assert layer is not None
    now = time.monotonic()
    pools: dict[int, list[dict[str, Any]]] = {}
    for eset in layer.sets:
        drives = []
        for pos, drive in enumerate(eset.drives):
            row: dict[str, Any] = {
                "position": pos,
                "drive_id": drive.drive_id,
                "endpoint": drive.endpoint,
                "online": drive.online,
                "local": drive.is_local,
            }
            if drive.is_local and drive.online:
                info = await drive.info()
                row.update(total=info.total, free=info.free, errors=info.errors)
            drives.append(row)
        pools.setdefault(eset.pool, []).append(
            {
                "set": eset.index,
                "ec": str(eset.params),
                "write_quorum": eset.write_quorum,
                "online": len(eset.online_positions()),
                "drives": drives,
            }
        )
    return {
        "traffic": traffic(metrics),
        "node": config.node or "standalone",
        "cluster_id": layer.cluster_id,
        "majority": cluster.has_majority() if cluster else True,
        "nodes": cluster.view.snapshot(now)
        if cluster
        else [{"node": "standalone", "state": "alive", "self": True}],
        "pools": [{"pool": p, "sets": sets} for p, sets in sorted(pools.items())],
    }


def traffic(m: Metrics) -> dict[str, float]:
    """Cumulative request counters; `admin top` turns two samples into rates."""
    requests = errors = 0.0
    for metric in m.requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                requests += sample.value
                if sample.labels.get("status", "200")[0] in "45":
                    errors += sample.value
    latency_sum = latency_count = 0.0
    for metric in m.latency.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                latency_sum += sample.value
            elif sample.name.endswith("_count"):
                latency_count += sample.value
    return {
        "requests": requests,
        "errors": errors,
        "bytes_in": m.bytes_in._value.get(),
        "bytes_out": m.bytes_out._value.get(),
        "inflight": m.inflight._value.get(),
        "latency_sum": latency_sum,
        "latency_count": latency_count,
        "loop_lag": m.loop_lag._value.get(),
        "time": time.time(),
    }


MAX_ADMIN_BODY = 1 << 20


async def add_pool(
    cluster: ClusterRuntime | None, config: NodeConfig, body: bytes
) -> dict[str, Any]:
    """Adds a pool of new nodes: validated, applied here, pushed to every peer. Existing
    pools and the objects in them do not change; new objects prefer the pool with the most
    free space. The new nodes then start with the cluster file and find their place from a
    seed."""
    from pydantic import ValidationError

    from shardfleet.cluster.topology import NodeSpec
    from shardfleet.node.config import ClusterNode

    if cluster is None:
        raise InvalidRequest("a standalone node has no pools to add to")
    try:
        doc = json.loads(body)
        entries = [ClusterNode.model_validate(n) for n in doc["nodes"]]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise InvalidRequest(f"bad pool description: {exc}") from None
    specs = [NodeSpec(e.id, e.s3, e.rpc, tuple(e.drives)) for e in entries]
    try:
        new = cluster.topology.with_pool(specs, config.params.n)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    added = await cluster.apply_async(new)
    pushed = await cluster.push_topology()
    return {
        "pool": len(new.pools) - 1,
        "version": new.version,
        "sets": len(added),
        "pushed": pushed,
    }


def heal_local(config: NodeConfig, heal: dict[str, Any]) -> dict[str, Any]:
    """This node's healing: its MRF queue and scanner; `done` when neither has work and no
    drive formatted here as a replacement is still waiting for the pass that proves it whole
    (a pass that failed on one object leaves it marked, and another pass is queued)."""
    mrf, scanner = heal["mrf"].status(), heal["scanner"].status()
    marked: list[str] = heal["healing_drives"]() if "healing_drives" in heal else []
    done = mrf["depth"] == 0 and not scanner["running"] and not scanner["pending"] and not marked
    return {
        "node": config.node or "standalone",
        "done": done,
        "mrf": mrf,
        "scanner": scanner,
        "healing_drives": marked,
    }


def _peer_endpoints(cluster: ClusterRuntime | None, config: NodeConfig) -> dict[str, str]:
    if cluster is None:
        return {}
    scheme = "https" if config.https else "http"  # every node of a cluster alike
    return {
        spec.id: f"{scheme}://{spec.s3}"
        for pool in cluster.topology.pools
        for spec in pool
        if spec.id != config.node
    }


async def heal_cluster(
    cluster: ClusterRuntime | None,
    config: NodeConfig,
    heal: dict[str, Any],
    what: str,
    method: str = "GET",
) -> dict[str, Any]:
    """This node's answer and every peer's (asked with `local=1`): `done` when every node
    that answered has nothing queued or running; peers that did not answer are listed."""
    import asyncio

    ak, sk = config.credentials
    peers = _peer_endpoints(cluster, config)
    context = await asyncio.to_thread(_peer_context, config) if config.https and peers else None

    async def ask(node: str, endpoint: str) -> tuple[str, dict[str, Any] | str]:
        try:
            return node, await asyncio.to_thread(
                _call,
                endpoint,
                method,
                what,
                ak,
                sk,
                region=config.region,
                timeout=3.0,
                context=context,
            )
        except (SystemExit, Exception) as exc:
            return node, str(exc)

    answers = await asyncio.gather(*(ask(n, e) for n, e in sorted(peers.items())))
    nodes = [heal_local(config, heal)]
    unreachable = []
    for node, answer in answers:
        if isinstance(answer, dict):
            nodes.append(answer)
        else:
            unreachable.append({"node": node, "error": answer[:300]})
    return {
        "done": all(n.get("done") for n in nodes),
        "nodes": nodes,
        "unreachable": unreachable,
    }


async def admin_api(
    request: web.Request,
    *,
    layer: ObjectLayer | None,
    cluster: ClusterRuntime | None,
    config: NodeConfig,
    metrics: Metrics,
    lookup_secret: Callable[[str], str | None],
    heal: dict[str, Any] | None = None,
) -> web.StreamResponse:
    request_id = new_request_id()
    raw_path, _, raw_query = request.raw_path.partition("?")
    try:
        view = RequestView(request.method, raw_path, split_query(raw_query), request.headers)
        auth = verify_request(view, lookup_secret, now=time.time(), region=config.region)
        if auth.access_key != config.credentials[0]:
            raise AccessDenied("The admin API needs the root credentials.")
        what = request.path[len(ADMIN_PREFIX) :]
        if request.method == "GET" and what == "status":
            return web.json_response(
                await status(layer, cluster, config, metrics),
                headers={"x-amz-request-id": request_id},
            )
        if what in ("heal/status", "heal/start") and heal is not None:
            local = request.query.get("local") == "1"
            if what == "heal/start":
                if request.method != "POST":
                    raise InvalidRequest("heal/start is a POST")
                bucket = request.query.get("bucket") or None
                deep = request.query.get("deep") == "1"
                heal["scanner"].start(bucket, deep=deep)
                if not local:
                    query = "&".join(
                        f"{k}={v}"
                        for k, v in (("bucket", bucket), ("deep", "1" if deep else None))
                        if v
                    )
                    target = "heal/start?local=1" + (f"&{query}" if query else "")
                    await heal_cluster(cluster, config, heal, target, "POST")
                return web.json_response(
                    {"started": True, "bucket": bucket, "deep": deep},
                    headers={"x-amz-request-id": request_id},
                )
            body = (
                heal_local(config, heal)
                if local
                else await heal_cluster(cluster, config, heal, "heal/status?local=1")
            )
            return web.json_response(body, headers={"x-amz-request-id": request_id})
        if request.method == "POST" and what == "pools":
            await send_continue(request)
            body = await request.content.read(MAX_ADMIN_BODY + 1)
            if len(body) > MAX_ADMIN_BODY:
                raise InvalidRequest("admin request body too large")
            if (
                auth.payload_mode == "SHA256"
                and hashlib.sha256(body).hexdigest() != auth.expected_sha256
            ):
                raise XAmzContentSHA256Mismatch()
            return web.json_response(
                await add_pool(cluster, config, body), headers={"x-amz-request-id": request_id}
            )
        return web.json_response({"error": f"no admin call {request.method} {what}"}, status=404)
    except Exception as exc:
        err: S3Error = from_internal(exc)
        if err.status >= 500:
            log.error("admin request %s %s failed", request_id, request.path, exc_info=exc)
        return error_response(err, request.method, request.path, request_id)


def _peer_context(config: NodeConfig) -> ssl.SSLContext:
    """How a node checks its peers' S3 certificates (the heal fan-out): the system's CAs,
    plus the cluster CA (the dev cluster issues its S3 certificates under it)."""
    from shardfleet.node.https import client_context

    context = client_context(None)
    if config.cluster is not None:
        with contextlib.suppress(OSError, ssl.SSLError):
            context.load_verify_locations(config.cluster.tls.ca)
    return context


# -- CLI client ---------------------------------------------------------------------------
def _call(
    endpoint: str,
    method: str,
    what: str,
    access_key: str,
    secret_key: str,
    *,
    body: bytes = b"",
    region: str = "us-east-1",
    timeout: float = 10.0,
    ca_bundle: str | Path | None = None,
    context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """One signed admin request; failures end the command with a readable message.

    An https:// endpoint is verified with `context`, else with the CAs of `ca_bundle`
    (else $AWS_CA_BUNDLE, else the system's: node.https.client_context)."""
    from shardfleet.node.s3.signer import sign

    url = endpoint.rstrip("/") + ADMIN_PREFIX + what
    if context is None and url.startswith("https://"):
        from shardfleet.node.https import client_context

        try:
            context = client_context(ca_bundle)
        except OSError as exc:
            raise SystemExit(f"shardfleet admin: {exc}") from None
    headers = sign(method, url, access_key, secret_key, region=region, body=body)
    req = urllib.request.Request(url, data=body or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise SystemExit(f"shardfleet admin: {endpoint} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        hint = (
            " (give the CA that issued its certificate: --ca-bundle or AWS_CA_BUNDLE)"
            if isinstance(reason, ssl.SSLCertVerificationError)
            else ""
        )
        raise SystemExit(f"shardfleet admin: cannot reach {endpoint}: {exc}{hint}") from None


def fetch_heal(
    endpoint: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    *,
    ca_bundle: str | Path | None = None,
) -> dict[str, Any]:
    return _call(
        endpoint, "GET", "heal/status", access_key, secret_key, region=region, ca_bundle=ca_bundle
    )


def start_heal(
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    bucket: str | None = None,
    deep: bool = False,
    region: str = "us-east-1",
    ca_bundle: str | Path | None = None,
) -> dict[str, Any]:
    query = "&".join(
        f"{k}={v}" for k, v in (("bucket", bucket), ("deep", "1" if deep else None)) if v
    )
    what = "heal/start" + (f"?{query}" if query else "")
    return _call(
        endpoint,
        "POST",
        what,
        access_key,
        secret_key,
        region=region,
        timeout=30.0,
        ca_bundle=ca_bundle,
    )


def render_heal(st: dict[str, Any]) -> str:
    """`admin heal status` for people: a line per node, a progress bar per running pass."""
    lines = [f"healing: {'done' if st['done'] else 'in progress'}"]
    for n in st["nodes"]:
        sc, mrf = n["scanner"], n["mrf"]
        bar = ""
        if sc["running"]:
            frac = sc["progress"] or 0.0
            filled = int(frac * 30)
            eta = f", ETA {sc['eta_s']:.0f}s" if sc.get("eta_s") is not None else ""
            bar = f"  [{'#' * filled}{'.' * (30 - filled)}] {frac:4.0%}{eta}"
        lines.append(
            f"  {n['node']}: scanned {sc['scanned']}, healed {sc['healed'] + mrf['healed']}, "
            f"failed {sc['failed'] + mrf['failed']}, bytes healed {sc['bytes'] + mrf['bytes']}, "
            f"MRF depth {mrf['depth']}{' (deep pass)' if sc['running'] and sc['deep'] else ''}{bar}"
        )
        for drive in n.get("healing_drives", []):
            lines.append(f"    drive {drive}: replaced, not yet fully healed")
    for n in st.get("unreachable", []):
        lines.append(f"  {n['node']}: unreachable ({n['error']})")
    return "\n".join(lines)


def fetch_status(
    endpoint: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    *,
    ca_bundle: str | Path | None = None,
) -> dict[str, Any]:
    return _call(
        endpoint, "GET", "status", access_key, secret_key, region=region, ca_bundle=ca_bundle
    )


def post_pool(
    endpoint: str,
    access_key: str,
    secret_key: str,
    nodes: list[dict[str, Any]],
    *,
    ca_bundle: str | Path | None = None,
) -> dict[str, Any]:
    body = json.dumps({"nodes": nodes}).encode()
    return _call(
        endpoint,
        "POST",
        "pools",
        access_key,
        secret_key,
        body=body,
        timeout=60.0,
        ca_bundle=ca_bundle,
    )


def render_status(st: dict[str, Any]) -> str:
    lines = [
        f"node {st['node']}  cluster {st['cluster_id']}  majority: {'yes' if st['majority'] else 'NO'}",
        "",
        "nodes:",
    ]
    for n in st["nodes"]:
        seen = n.get("last_seen_s")
        lines.append(
            f"  {n['node']:<16} {n['state']:<8}"
            + (f" last seen {seen}s ago" if seen is not None else "")
        )
    for pool in st["pools"]:
        for s in pool["sets"]:
            lines.append("")
            lines.append(
                f"pool {pool['pool']} set {s['set']}: {s['ec']}, {s['online']}/{len(s['drives'])} drives online, write quorum {s['write_quorum']}"
            )
            for d in s["drives"]:
                state = "online" if d["online"] else "OFFLINE"
                lines.append(f"  [{d['position']}] {state:<8} {d['endpoint']}")
    return "\n".join(lines)
