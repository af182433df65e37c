"""One node process: drives -> erasure sets -> object layer -> S3 front end.

`Node.start()` opens the drives (formatting them on first start), starts the HTTP site
and the background jobs (drive health probe, orphan sweep); `Node.stop()` stops
accepting, gives in-flight requests the grace period, then closes the drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.objects import ObjectLayer
from shardfleet.healing.buckets import BucketSync
from shardfleet.healing.mrf import MRF
from shardfleet.healing.reconstruct import Collect
from shardfleet.healing.scanner import PassDone, Scanner
from shardfleet.healing.uploads import UploadSweeper
from shardfleet.node import lazy_init
from shardfleet.node.config import ConfigError, NodeConfig
from shardfleet.node.logs import flush_periodically
from shardfleet.node.malloc import tune_allocator
from shardfleet.node.metrics import Metrics, bearer_matches, token_digest

if TYPE_CHECKING:
    from collections.abc import Callable

    from shardfleet.cluster.topology import ClusterTopology
    from shardfleet.node.clusterwire import ClusterRuntime
    from shardfleet.node.https import ServerTls
from shardfleet.node.admin import ADMIN_PREFIX, admin_api
from shardfleet.node.s3.bucketconf import BucketConfigs
from shardfleet.node.s3.context import S3Services
from shardfleet.node.s3.errors import ServiceUnavailable
from shardfleet.node.s3.identity import Users
from shardfleet.node.s3.limits import Limits
from shardfleet.node.s3.router import error_response, make_handler, new_request_id
from shardfleet.node.s3.server import S3Server
from shardfleet.node.storage.format import (
    FormatError,
    open_drives,
    opened_here,
    replacement_for,
)
from shardfleet.node.storage.local_drive import LocalDrive

log = logging.getLogger(__name__)

DRIVE_PROBE_INTERVAL = 2.0
HEAL_RETRY = 10.0  # s after a pass that left a replaced drive not fully healed: another
CANCEL_WAIT = 5.0
READ_BUFSIZE = 1 << 20
POOL_FREE_INTERVAL = 30.0  # after the grace: how long cancelled requests get to clean up


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.io_pool = ThreadPoolExecutor(
            max_workers=max(16, 8 * len(config.drives)), thread_name_prefix="io"
        )
        self.layer: ObjectLayer | None = None
        self.cluster: ClusterRuntime | None = None
        self._topology: ClusterTopology | None = None
        self.runner: web.ServerRunner | None = None
        self.endpoint = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._inflight = 0
        self.metrics = Metrics(self._metrics_state)
        self._metrics_digest: bytes | None = None  # of metrics_token: see _metrics_response
        self.test_faults = None  # node/testfaults.py, only with SHARDFLEET_TEST_FAULTS=1
        self.tls: ServerTls | None = None  # HTTPS: node/https.py
        self.users = Users(config.credentials, config.users)  # node/s3/identity.py
        self.reread_config: Callable[[], NodeConfig] | None = None  # set by main, for SIGHUP

    # -- wiring -------------------------------------------------------------------------
    def _open_cluster(self) -> ObjectLayer:
        from shardfleet.node import clusterwire

        assert self._topology is not None
        self.cluster = clusterwire.build(
            self.config,
            self.io_pool,
            self._topology,
            observe_rpc=self.metrics.observe_rpc,
        )
        for warning in self.cluster.warnings:
            log.warning("topology: %s", warning)
        layer = ObjectLayer(
            self.cluster.sets,
            write_gate=self.cluster.has_majority,
            pool_usable=self.cluster.pool_joined,
            **self._hooks(),
        )
        self.cluster.on_new_sets.append(layer.add_sets)
        return layer

    async def _resolve_topology(self) -> None:
        """Pool-0 nodes read the topology from their drives; a node of a later pool asks a
        seed, then takes its drives and S3 address from its entry there."""
        from shardfleet.node import clusterwire

        config = self.config
        pool0 = clusterwire.first_pool(config)
        mine = [d for spec in pool0 if spec.id == config.node for d in spec.drives]
        if mine:
            self._topology = clusterwire.stored_topology(config, mine)
            return
        topology = await clusterwire.fetch_topology(config, config.seeds)
        found = topology.node(config.node or "")
        if found is None:
            raise FormatError(
                f"node {config.node!r} is in no pool of the cluster (ask admin add-pool first)"
            )
        spec = found[1]
        joined = config.model_copy(
            update={"drives": [Path(d) for d in spec.drives], "address": spec.s3}
        )
        if joined.dev_credentials and not joined.is_loopback:
            raise FormatError(
                f"refusing to listen on {spec.s3} with the printed development credentials: "
                "set SHARDFLEET_ACCESS_KEY and SHARDFLEET_SECRET_KEY"
            )
        self.config = joined
        self._topology = topology

    def _hooks(self) -> dict[str, object]:
        """Writes that missed drives and reads that decoded around bad shards: counted and
        logged here until the healer's MRF queue takes them."""

        def partial(
            bucket: str,
            key: str,
            vid: str,
            positions: list[int],
            place: tuple[str, str] | None = None,
        ) -> None:
            self.metrics.mrf.inc()
            log.warning(
                "write missed drives: %s/%s version %s, positions %s", bucket, key, vid, positions
            )
            if (mrf := getattr(self, "mrf", None)) is not None:
                mrf.add(bucket, key, vid, positions, place=place)

        def degraded(bucket: str, key: str, vid: str, positions: list[int]) -> None:
            self.metrics.degraded.inc()
            log.info(
                "degraded read: %s/%s version %s, bad positions %s", bucket, key, vid, positions
            )
            if (mrf := getattr(self, "mrf", None)) is not None:
                mrf.add(bucket, key, vid, positions)

        return {"on_partial": partial, "on_degraded": degraded}

    def _open(self) -> ObjectLayer:
        if self.config.cluster is not None:
            return self._open_cluster()
        opened = open_drives(self.config.drives, self.config.params, self.io_pool)
        sets = [
            ErasureSet(
                cluster_id=s.cluster_id,
                pool=0,
                index=s.index,
                params=s.params,
                drives=s.drives,
                write_quorum=self.config.write_quorum or 0,
            )
            for s in opened
        ]
        return ObjectLayer(sets, **self._hooks())

    def local_drives(self) -> list[LocalDrive]:
        assert self.layer is not None
        return opened_here(self.layer.all_drives)

    def _lookup_secret(self, access_key: str) -> str | None:
        ak, sk = self.config.credentials
        return sk if hmac.compare_digest(access_key.encode(), ak.encode()) else None

    def build_server(self) -> web.Server:
        assert self.layer is not None
        services = S3Services(
            layer=self.layer,
            region=self.config.region,
            owner_id=self.config.credentials[0],
            lookup_secret=self._lookup_secret,
            users=self.users,
            confs=BucketConfigs(self.layer),
            body_stall_timeout=self.config.body_stall_timeout,
            metrics=self.metrics,
            tls_enabled=self.config.https,
            cors_default=(self.config.cors_default.rule(),) if self.config.cors_default else None,
            limits=Limits.build(
                self.config.rate_limit_rps,
                self.config.rate_limit_burst,
                self.config.rate_limit_uploads,
                hold=self.config.rate_limit_hold,
                on_throttle=self.metrics.throttle,
            ),
        )
        s3 = make_handler(services)
        token = self.config.metrics_bearer
        self._metrics_digest = token_digest(token) if token is not None else None

        async def dispatch(request: web.Request) -> web.StreamResponse:
            if self._stopping.is_set():
                return self._shutting_down()
            self._inflight += 1
            try:
                return await route(request)
            finally:
                self._inflight -= 1

        async def route(request: web.Request) -> web.StreamResponse:
            if self.test_faults is not None and request.path == self.test_faults.path:
                return await self.test_faults.handle(request)
            if request.path.startswith(ADMIN_PREFIX):
                return await admin_api(
                    request,
                    layer=self.layer,
                    cluster=self.cluster,
                    config=self.config,
                    metrics=self.metrics,
                    lookup_secret=self._lookup_secret,
                    heal={
                        "mrf": self.mrf,
                        "scanner": self.scanner,
                        "healing_drives": self._healing_drives,
                    }
                    if hasattr(self, "scanner")
                    else None,
                )
            anonymous = (
                "Authorization" not in request.headers and "X-Amz-Algorithm" not in request.query
            )
            if anonymous and request.method in ("GET", "HEAD"):
                # unsigned: health and metrics; a signed request for these paths is S3
                if request.path.startswith("/health/"):
                    return self._health(request.path)
                if request.path == "/metrics":
                    return self._metrics_response(request)
            elif request.path == "/metrics" and request.method in ("GET", "HEAD"):
                scheme = request.headers.get("Authorization", "").partition(" ")[0]
                if scheme.lower() == "bearer":
                    return self._metrics_response(request)  # a scraper's token: not S3
            return await s3(request)

        # 1 MiB read buffer: with aiohttp's 64 KiB a large upload pauses and resumes the
        # socket for every few chunks. The timeouts and the cap bound connections that have
        # not sent a request (yet): see node.s3.server.
        return S3Server(
            dispatch,
            handler_cancellation=False,
            access_log=None,
            read_bufsize=READ_BUFSIZE,
            keepalive_timeout=self.config.keepalive_timeout,
            header_timeout=self.config.header_timeout,
            max_idle_connections=self.config.max_idle_connections,
            tls_enabled=self.config.https,  # HSTS on every response
        )

    def _metrics_response(self, request: web.Request) -> web.Response:
        """GET /metrics: open, or with metrics_token set only for `Authorization: Bearer
        <token>` (compared in constant time: node.metrics.bearer_matches)."""
        digest = self._metrics_digest
        if digest is not None and not bearer_matches(request.headers.get("Authorization"), digest):
            return web.Response(
                status=401,
                text="401: /metrics needs Authorization: Bearer <metrics_token>\n",
                headers={"WWW-Authenticate": 'Bearer realm="shardfleet metrics"'},
            )
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    @staticmethod
    def _shutting_down() -> web.Response:
        err = ServiceUnavailable("This node is shutting down; retry on another node.")
        response = error_response(err, "GET", "/", new_request_id())
        response.force_close()
        return response

    def _metrics_state(self) -> dict[str, object]:
        """Scrape-time figures: drive states (free space from the drive probe's last
        statvfs) and membership."""
        if self.layer is None:
            return {}
        drives = []
        for d in self.layer.all_drives:
            row = {
                "id": d.drive_id,
                "endpoint": d.endpoint,
                "online": d.online,
                "local": d.is_local,
            }
            if d.is_local:
                snap = d.snapshot()
                row.update(errors=snap.errors, free=snap.free, total=snap.total)
            drives.append(row)
        state: dict[str, object] = {"drives": drives}
        if self.cluster is not None:
            counts: dict[str, int] = {}
            for row in self.cluster.view.snapshot(time.monotonic()):
                counts[str(row["state"])] = counts.get(str(row["state"]), 0) + 1
            state["membership"] = counts
            endpoint = self.cluster.endpoint
            connected = sum(endpoint.peer_state(p).connected for p in self.cluster.peers.values())
            state["gauges"] = {
                "cluster_majority": 1.0 if self.cluster.has_majority() else 0.0,
                "quic_connections": float(connected),
            }
        sync = getattr(self, "bucket_sync", None)
        if sync is not None:
            gauges = state.setdefault("gauges", {})
            assert isinstance(gauges, dict)
            gauges["heal_bucket_passes"] = float(sync.passes)
            gauges["heal_buckets_restored"] = float(sync.created)
            gauges["heal_buckets_removed"] = float(sync.removed)
        for name, worker in (
            ("mrf", getattr(self, "mrf", None)),
            ("scanner", getattr(self, "scanner", None)),
        ):
            if worker is not None:
                gauges = state.setdefault("gauges", {})
                assert isinstance(gauges, dict)
                st = worker.status()
                gauges[f"heal_{name}_healed"] = float(st["healed"])  # type: ignore[arg-type]
                gauges[f"heal_{name}_failures"] = float(st["failed"])  # type: ignore[arg-type]
                gauges[f"heal_{name}_bytes"] = float(st["bytes"])  # type: ignore[arg-type]
                if name == "mrf":
                    gauges["heal_mrf_depth"] = float(st["depth"])  # type: ignore[arg-type]
                    gauges["heal_mrf_dropped"] = float(st["dropped"])  # type: ignore[arg-type]
                else:
                    gauges["heal_scan_running"] = 1.0 if st["running"] else 0.0
                    gauges["heal_scan_objects"] = float(st["scanned"])  # type: ignore[arg-type]
                    gauges["heal_scan_progress"] = float(st["progress"] or 0.0)  # type: ignore[arg-type]
        sweep = getattr(self, "upload_sweep", None)
        if sweep is not None:
            gauges = state.setdefault("gauges", {})
            assert isinstance(gauges, dict)
            gauges["multipart_uploads_expired"] = float(sweep.aborted)
        return state

    def _health(self, path: str) -> web.Response:
        if path == "/health/live":
            return web.json_response({"status": "live"})
        if path == "/health/ready":
            assert self.layer is not None
            ready = (
                not self._stopping.is_set()
                and all(len(s.online_positions()) >= s.write_quorum for s in self.layer.sets)
                and (self.cluster is None or self.cluster.has_majority())
            )
            body = {
                "status": "ready" if ready else "not ready",
                "sets": [
                    {"set": s.index, "online": len(s.online_positions()), "drives": s.params.n}
                    for s in self.layer.sets
                ],
            }
            return web.json_response(body, status=200 if ready else 503)
        return web.json_response({"error": "unknown health check"}, status=404)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> str:
        started = time.time()
        if self.config.https:  # before the drives: a bad certificate stops the start at once
            from shardfleet.node.https import ServerTls

            assert self.config.tls_cert is not None and self.config.tls_key is not None
            self.tls = ServerTls(
                self.config.tls_cert, self.config.tls_key, self.config.tls_min_version
            )
        if self.config.cluster is not None:
            await self._resolve_topology()
        self.layer = await asyncio.get_running_loop().run_in_executor(self.io_pool, self._open)
        if os.environ.get("SHARDFLEET_TEST_FAULTS") == "1":  # tests only: never imported else
            from shardfleet.node import testfaults

            self.test_faults = testfaults.install(self)
        if self.cluster is not None:
            await self.cluster.endpoint.start()
            await self.cluster.heartbeat.round()  # learn who is up before serving
            self.cluster.heartbeat.start()
        self.runner = web.ServerRunner(
            self.build_server(), shutdown_timeout=CANCEL_WAIT, handle_signals=False
        )
        await self.runner.setup()
        site = web.TCPSite(
            self.runner,
            self.config.host,
            self.config.port,
            backlog=1024,
            ssl_context=self.tls.context if self.tls else None,
        )
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.endpoint = f"{'https' if self.tls else 'http'}://{host}:{port}"
        asyncio.get_running_loop().call_later(1.0, self._after_start)
        self.bucket_sync = BucketSync(self.layer.sets, interval=self.config.bucket_sync_interval)
        self._spawn(self.bucket_sync.run_forever(self._stopping))
        if self.cluster is not None:
            self.cluster.heartbeat.on_alive.append(lambda peer: self.bucket_sync.wake())
        self.upload_sweep = UploadSweeper(
            self.layer,
            max_age=self.config.multipart_expiry,
            tombstone_ttl=self.config.multipart_tombstone_ttl,
            interval=self.config.multipart_sweep_interval,
            owns=_sweeps_here,
        )
        self._spawn(self.upload_sweep.run_forever(self._stopping))
        local = self.local_drives()
        self.mrf = MRF(
            self.layer,
            capacity=self.config.mrf_capacity,
            path=local[0].root / "mrf.msgpack" if local else None,
        )
        self.scanner = Scanner(
            self.layer,
            interval=self.config.scan_interval,
            deep_every=self.config.scan_deep_every,
            rate=self.config.scan_rate,
            owns=_sweeps_here,
            collect=Collect(
                tombstone_min_age=self.config.tombstone_min_age,
                tombstone_ttl=self.config.tombstone_ttl,
                dangling_after=self.config.dangling_age,
            ),
            on_pass=self._scanned,
        )
        self._spawn(self.mrf.run_forever(self._stopping))
        self._spawn(self.scanner.run_forever(self._stopping))
        self._heal_marked()  # replacements formatted at start-up, or not healed before a stop
        if self.cluster is not None:
            self.cluster.heartbeat.on_alive.append(lambda peer: self.mrf.wake())
        self._spawn(self._probe_drives())
        if self.cluster is not None:
            self._spawn(self._refresh_pool_free())
        self._spawn(self.metrics.watch_loop_lag())
        self._spawn(flush_periodically())
        self._spawn(self._sweep_orphans(started))
        return self.endpoint

    def reload(self) -> None:
        """SIGHUP: read again what can change without a restart (the TLS certificate, the
        users and their secrets, the /metrics token). What cannot be read is logged and the
        old kept."""
        if self.tls is not None:
            self.tls.reload()
        if self.reread_config is not None:
            try:
                fresh = self.reread_config()
                self.users.reload(fresh.credentials, fresh.users)
            except ConfigError as exc:
                log.error("SIGHUP: users not reloaded, the previous ones stay: %s", exc)
                return
            log.info("SIGHUP: %d credentials loaded", len(self.users))
            token = fresh.metrics_bearer
            self._metrics_digest = token_digest(token) if token is not None else None

    def _after_start(self) -> None:
        """Once serving: work that start-up need not pay for (a ctypes import; aiohttp's
        package __init__ with its HTTP client, and prometheus_client's: see node.lazy_init)."""
        tune_allocator()
        if lazy_init.pending() and not self._stopping.is_set():
            asyncio.get_running_loop().run_in_executor(self.io_pool, _complete_imports)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe_drives(self) -> None:
        while not self._stopping.is_set():
            for drive in self.local_drives():
                with contextlib.suppress(Exception):
                    if not await drive.check():
                        await self._replace_drive(drive)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), DRIVE_PROBE_INTERVAL)

    async def _replace_drive(self, old: LocalDrive) -> None:
        """An offline drive whose slot now holds an empty directory (a wiped drive, a new
        disk mounted in its place) is formatted into the slot and put to work at once: it
        gets the buckets, then the scanner heals every object of its sets onto it."""
        assert self.layer is not None
        others = [d for d in self.local_drives() if d is not old]
        fresh = await asyncio.get_running_loop().run_in_executor(
            self.io_pool, replacement_for, old, others, self.io_pool
        )
        if fresh is None:
            return
        for eset in self.layer.sets:
            drives = list(eset.drives)
            if old in drives:
                drives[drives.index(old)] = fresh
                eset.drives = drives
        if self.cluster is not None and old.drive_id in self.cluster.served:
            self.cluster.served[old.drive_id] = fresh
        log.warning(
            "drive %s (%s) replaced by an empty one: formatted, healing", fresh.drive_id, fresh.root
        )
        with contextlib.suppress(Exception):
            for bucket, created in (await self.layer.list_buckets()).items():
                with contextlib.suppress(Exception):
                    await fresh.make_bucket(bucket, created)
        # its sets are scanned here, whichever node owns them: nobody else knows it is new
        self.scanner.start(sets=[s for s in self.layer.sets if fresh in s.drives])

    def _sets_of(self, drive: LocalDrive) -> list[ErasureSet]:
        assert self.layer is not None
        return [s for s in self.layer.sets if drive in s.drives]

    def _healing_drives(self) -> list[str]:
        """Local drives formatted as replacements and not yet proven whole by a pass."""
        return [d.endpoint for d in self.local_drives() if d.healing_since is not None and d.online]

    def _heal_marked(self) -> None:
        """A scanner pass, here, over the sets of every local drive not yet fully healed."""
        marked = [d for d in self.local_drives() if d.healing_since is not None and d.online]
        sets = list({id(s): s for d in marked for s in self._sets_of(d)}.values())
        if sets:
            self.scanner.start(sets=sets)

    def _scanned(self, done: PassDone) -> None:
        """A whole scanner pass ended: a drive formatted empty before it began, all of whose
        sets it covered and found whole, is fully healed; one that is not yet gets another
        pass soon (its "no such key" answers prove nothing until then)."""
        covered = {id(s) for s in done.sets}
        again = False
        for drive in self.local_drives():
            since = drive.healing_since
            if since is None or not drive.online:
                continue
            if not all(id(s) in covered for s in self._sets_of(drive)):
                continue
            if done.clean and since < done.started:
                with contextlib.suppress(OSError):
                    drive.mark_healed()
            else:
                again = True
        if again and not self._stopping.is_set():
            asyncio.get_running_loop().call_later(HEAL_RETRY, self._heal_marked)

    async def _refresh_pool_free(self) -> None:
        """Free space per pool, for placing new objects (the emptiest pool takes them)."""
        while not self._stopping.is_set():
            assert self.layer is not None
            for pool, sets in self.layer.pools.items():
                infos = await asyncio.gather(
                    *(d.info() for s in sets for d in s.drives if d.online), return_exceptions=True
                )
                free = sum(i.free for i in infos if not isinstance(i, BaseException))
                self.layer.pool_free[pool] = free
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), POOL_FREE_INTERVAL)

    async def _sweep_orphans(self, older_than: float) -> None:
        loop = asyncio.get_running_loop()
        for drive in self.local_drives():
            if drive.online:
                try:
                    await loop.run_in_executor(self.io_pool, drive.remove_orphans, older_than)
                except Exception:
                    log.exception("orphan sweep of drive %s failed", drive.drive_id)

    async def stop(self) -> None:
        """Graceful stop: stop listening, refuse new requests on open connections, let the
        requests in flight finish for up to the grace period, then cancel the rest (their
        writers drop what they staged).

        aiohttp's own shutdown closes every connection first, and a closed connection stops
        reading, so an upload in flight could never finish; hence the wait happens here,
        before handing over to the runner's cleanup."""
        self._stopping.set()
        if self.runner is not None:
            for site in list(self.runner.sites):
                await site.stop()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.shutdown_grace
            while self._inflight and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if self._inflight:
                log.warning("stopping: cancelling %d requests still running", self._inflight)
            await self.runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.heartbeat.stop()
            await self.cluster.endpoint.close()
        if self.layer is not None:
            for drive in self.local_drives():
                drive.close()
        self.io_pool.shutdown(wait=True)


def _sweeps_here(eset: ErasureSet) -> bool:
    """Whether this node sweeps a set's uploads: when the set's first online drive is one
    of its own, so each set is swept by one node (the same for every node's view)."""
    first = next((d for d in eset.drives if d.online), None)
    return first is not None and first.is_local


def _complete_imports() -> None:
    """lazy_init.complete() in a worker, where an exception would go unseen: it is logged
    (the server keeps what it imported; the package keeps what its __init__ did)."""
    try:
        lazy_init.complete()
    except Exception:
        log.exception("completing the imports left for after start-up")


def pid_banner(config: NodeConfig, endpoint: str) -> str:
    ak, sk = config.credentials
    lines = [
        f"shardfleet node ready (pid {os.getpid()})",
        f"  endpoint:   {endpoint}",
        f"  access key: {ak}",
        f"  secret key: {sk if config.dev_credentials else '(from the environment/config)'}",
        f"  erasure:    {config.ec} over {len(config.drives)} drives",
    ]
    if config.dev_credentials:
        lines.append("  (development credentials: set SHARDFLEET_ACCESS_KEY/SHARDFLEET_SECRET_KEY)")
    return "\n".join(lines)
