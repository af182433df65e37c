"""Test-only: FaultyDrive inside a real node process, armed over HTTP (SHARDFLEET_TEST_FAULTS=1).

Off unless the node starts with SHARDFLEET_TEST_FAULTS=1 in its environment: node/app.py
imports this module only then (lazily, at start), so an ordinary node never loads it nor
cluster/faulty_drive.py, and has no such route (tests/integration/test_faulty_drive.py
checks both). With it, every local drive of the node is wrapped in a FaultyDrive
(cluster/faulty_drive.py) with nothing armed, and one route, root credentials (SigV4)
only, arms and clears faults on a drive while the node runs:

    POST /_test/faults?drive=N&kind=fail&method=commit[&error=io|full|offline][&times=T][&after=1]
    POST /_test/faults?drive=N&kind=delay&method=read_shard&seconds=3
    POST /_test/faults?drive=N&kind=enospc
    POST /_test/faults?drive=N&kind=clear[&method=M]       (drive=0: every drive)
    GET  /_test/faults                                     the drives and the faults fired

N is the drive's place (from 1) in the node's list of drives; methods are FaultyDrive's
(Drive method names, "shard.write", "shard.finish"). Every armed fault expires after `ttl`
seconds (default 60, at most 600): a test that dies cannot leave a drive faulty for good.

How the wrapping works. The node keeps holding its LocalDrive objects (they are probed,
swept, replaced and closed by their class: node.storage.format.opened_here), so a drive is
not swapped for a wrapper: the LocalDrive's Drive methods are shadowed on the instance by
the FaultyDrive's, which delegates to the class's own methods. So every caller, the
coordinator on this node, a peer through the RPC service and the healer, meets the faults.
A drive replaced while the node runs (a wiped drive formatted anew) is a new LocalDrive:
it is wrapped when a fault is first armed on it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shardfleet.cluster.drive import DriveFull, DriveIOError, DriveOffline
from shardfleet.cluster.faulty_drive import DRIVE_METHODS, FaultyDrive
from shardfleet.node.s3.context import split_query
from shardfleet.node.s3.errors import AccessDenied, InvalidRequest, S3Error, from_internal
from shardfleet.node.s3.router import error_response, new_request_id
from shardfleet.node.s3.sigv4 import RequestView, verify_request

if TYPE_CHECKING:
    import asyncio

    from shardfleet.node.app import Node
    from shardfleet.node.storage.local_drive import LocalDrive

log = logging.getLogger(__name__)

ENV = "SHARDFLEET_TEST_FAULTS"
PATH = "/_test/faults"
DEFAULT_TTL = 60.0
MAX_TTL = 600.0
ERRORS: dict[str, type[Exception]] = {
    "io": DriveIOError,
    "full": DriveFull,
    "offline": DriveOffline,
}


class _ClassMethods:
    """The drive as its class defines it: what the FaultyDrive delegates to, while the
    instance's own attributes send every caller through the FaultyDrive."""

    def __init__(self, drive: LocalDrive) -> None:
        self._drive = drive
        for name in DRIVE_METHODS:
            setattr(self, name, getattr(type(drive), name).__get__(drive))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._drive, name)


def wrap(drive: LocalDrive) -> FaultyDrive:
    """The FaultyDrive in front of `drive` (made and installed on first use)."""
    faulty = drive.__dict__.get("_test_faulty")
    if faulty is None:
        faulty = FaultyDrive(_ClassMethods(drive))  # type: ignore[arg-type]
        for name in DRIVE_METHODS:
            setattr(drive, name, getattr(faulty, name))
        drive.__dict__["_test_faulty"] = faulty
    return faulty


@dataclass
class FaultSwitch:
    node: Node
    path: str = PATH
    _expiry: dict[tuple[int, str], asyncio.TimerHandle] = field(default_factory=dict)

    def drives(self) -> list[LocalDrive]:
        """The node's local drives in the order of its configured drive list."""
        order = {Path(p).resolve(): i for i, p in enumerate(self.node.config.drives)}
        local = self.node.local_drives()
        return sorted(local, key=lambda d: order.get(Path(d.root).resolve(), len(order)))

    def _state(self) -> dict[str, Any]:
        rows = []
        for n, d in enumerate(self.drives(), 1):
            faulty = d.__dict__.get("_test_faulty")
            rows.append(
                {
                    "drive": n,
                    "drive_id": d.drive_id,
                    "path": str(d.root),
                    "injected": dict(faulty.injected) if faulty else {},
                }
            )
        return {"node": self.node.config.node or "standalone", "drives": rows}

    def _expire(self, key: tuple[int, str], ttl: float, undo: Any) -> None:
        import asyncio

        old = self._expiry.pop(key, None)
        if old is not None:
            old.cancel()
        self._expiry[key] = asyncio.get_running_loop().call_later(ttl, undo)

    def _cancel(self, n: int, method: str | None) -> None:
        for key in [k for k in self._expiry if n in (0, k[0]) and method in (None, k[1])]:
            self._expiry.pop(key).cancel()

    def _arm(self, q: dict[str, str]) -> dict[str, Any]:
        kind = q.get("kind", "")
        try:
            n = int(q.get("drive", "0"))
            ttl = float(q.get("ttl", DEFAULT_TTL))
        except ValueError as exc:
            raise InvalidRequest(f"bad number: {exc}") from None
        if not 0 < ttl <= MAX_TTL:
            raise InvalidRequest(f"ttl must be in (0, {MAX_TTL}]")
        drives = self.drives()
        if kind == "clear" and n == 0:
            targets = drives
        elif 1 <= n <= len(drives):
            targets = [drives[n - 1]]
        else:
            raise InvalidRequest(f"drive must be 1..{len(drives)} (0 only to clear all)")
        method = q.get("method") or None
        try:
            for drive in targets:
                faulty = wrap(drive)
                if kind == "clear":
                    faulty.clear(method)
                    self._cancel(n, method)
                elif kind == "enospc":
                    faulty.enospc()
                    self._expire((n, "enospc"), ttl, faulty.clear)
                elif kind in ("fail", "delay") and method:
                    if kind == "fail":
                        error = ERRORS.get(q.get("error", "io"))
                        if error is None:
                            raise InvalidRequest(f"error must be one of {sorted(ERRORS)}")
                        times = int(q["times"]) if q.get("times") else None
                        faulty.fail(method, error, times, after=q.get("after") == "1")
                    else:
                        faulty.delay(method, float(q.get("seconds", "")))
                    self._expire((n, method), ttl, lambda f=faulty, m=method: f.clear(m))
                else:
                    raise InvalidRequest("kind must be fail|delay (with method), enospc or clear")
                log.warning("test fault on drive %s (%s): %s", n, drive.root, q)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return self._state()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        config = self.node.config
        raw_path, _, raw_query = request.raw_path.partition("?")
        try:
            view = RequestView(request.method, raw_path, split_query(raw_query), request.headers)
            auth = verify_request(
                view, self.node._lookup_secret, now=time.time(), region=config.region
            )
            if auth.access_key != config.credentials[0]:
                raise AccessDenied("Test faults need the root credentials.")
            if request.method == "GET":
                body = self._state()
            elif request.method == "POST":
                body = self._arm(dict(request.query))
            else:
                raise InvalidRequest("GET or POST")
            return web.json_response(body, headers={"x-amz-request-id": request_id})
        except Exception as exc:
            err: S3Error = from_internal(exc)
            return error_response(err, request.method, request.path, request_id)


def install(node: Node) -> FaultSwitch:
    """Wraps the node's local drives; the route's handler."""
    faults = FaultSwitch(node)
    for drive in faults.drives():
        wrap(drive)
    log.warning("%s=1: test faults armable on %s", ENV, PATH)
    return faults


# -- client ----------------------------------------------------------------------------------
def call(
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    http_method: str = "POST",
    region: str = "us-east-1",
    timeout: float = 10.0,
    **params: object,
) -> dict[str, Any]:
    """One signed request to a node's fault route, the query from `params`:
    call(ep, ak, sk, drive=1, kind="delay", method="commit", seconds=3)."""
    from shardfleet.node.s3.signer import sign

    query = urllib.parse.urlencode(sorted((k, str(v)) for k, v in params.items()))
    url = endpoint.rstrip("/") + PATH + (f"?{query}" if query else "")
    headers = sign(http_method, url, access_key, secret_key, region=region)
    req = urllib.request.Request(url, headers=headers, method=http_method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise RuntimeError(f"{url}: {exc.code} {detail}") from None
