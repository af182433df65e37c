"""Both ends of the drive RPC: RemoteDrive (client) and drive_handlers (server).

A RemoteDrive is a peer's drive seen through the transport; the object layer cannot tell
it from a LocalDrive. Every call names the drive by id; metadata travels as packed
ObjectMeta bytes, shard data as raw streamed bodies (never msgpack-wrapped). Drive errors
cross the wire by class name and are raised again on this side; a peer that cannot be
reached is DriveOffline, so quorum logic treats it like a dead disk.

    shard write  : one streamed call "drive.write_shard" per shard; the peer fsyncs when the
                   body ends and only then answers, so finish() means durable-but-staged.
    shard read   : one call per ranged read, the bytes as the response body.
    listing      : "drive.scan" sends rows; "drive.scan_digest" only their digest, for
                   the replicas listing checks against rows it already has.
    leases       : "drive.lock" / "drive.unlock", header only (cluster/keylock.py). Their
                   fields are checked before the drive sees them; bad ones answer the
                   typed error "bad-request" (DriveIOError on the calling side).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgpack

from cluster import drive as drv
from cluster.drive import (
    MAX_LOCK_OWNER,
    MAX_LOCK_RESOURCE,
    MAX_LOCK_TTL,
    Drive,
    DriveError,
    DriveInfo,
    DriveOffline,
    MetaRecord,
    ScanDigest,
    ShardWriter,
)
from cluster.meta import ObjectMeta
from transport.endpoint import Peer, Request, Response, RpcEndpoint, RpcFault, StreamCall
from transport.errors import RemoteError, TransportError

MAX_META_REPLY = 64 << 20
MAX_SHARD_READ = 64 << 20
WRITE_BATCH = 1 << 20  # a remote shard write reaches the drive in pieces of at least this

_ERRORS: dict[str, type[DriveError]] = {
    cls.__name__: cls
    for cls in (
        drv.DriveOffline,
        drv.DriveFull,
        drv.DriveIOError,
        drv.VolumeNotFound,
        drv.VolumeExists,
        drv.VolumeNotEmpty,
        drv.FileNotFound,
        drv.ShardNotFound,
    )
}


def _drive_error(exc: BaseException) -> DriveError:
    if isinstance(exc, RemoteError) and exc.kind in _ERRORS:
        return _ERRORS[exc.kind](exc.message)
    if isinstance(exc, RemoteError):
        return drv.DriveIOError(f"peer error {exc.kind}: {exc.message}")
    return DriveOffline(f"peer unreachable: {type(exc).__name__}: {exc}")


class RemoteShardWriter:
    def __init__(self, call: StreamCall, timeout: float) -> None:
        self._call = call
        self._timeout = timeout

    async def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        try:
            for chunk in chunks:
                await self._call.send(chunk)
        except TransportError as exc:
            raise _drive_error(exc) from exc

    async def finish(self) -> None:
        try:
            await self._call.finish()
        except TransportError as exc:
            raise _drive_error(exc) from exc

    async def abort(self) -> None:
        try:
            await self._call.cancel()
        except TransportError:
            pass


class RemoteDrive:
    """A drive on another node. `online` follows the membership view of that node."""

    is_local = False

    def __init__(
        self,
        endpoint: RpcEndpoint,
        peer: Peer,
        drive_id: str,
        path: str,
        *,
        is_alive: Callable[[str], bool],
        timeout: float = 10.0,
        shard_timeout: float = 60.0,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self._rpc = endpoint
        self.peer = peer
        self.drive_id = drive_id
        self.endpoint = f"{peer.node_id}:{path}"
        self._is_alive = is_alive
        self._timeout = timeout
        self._shard_timeout = shard_timeout
        self._observe = observe  # (method, seconds) of every unary call, for metrics

    @property
    def online(self) -> bool:
        return self._is_alive(self.peer.node_id)

    async def _call(self, method: str, header: dict[str, Any], body: bytes | None = None) -> Any:
        if not self.online:
            raise DriveOffline(f"node {self.peer.node_id} is offline")
        header["d"] = self.drive_id
        started = time.perf_counter()
        try:
            return await self._rpc.call(self.peer, method, header, body, timeout=self._timeout)
        except TransportError as exc:
            raise _drive_error(exc) from exc
        finally:
            if self._observe is not None:
                self._observe(method, time.perf_counter() - started)

    async def info(self) -> DriveInfo:
        try:
            reply = await self._call("drive.info", {})
        except DriveError:
            return DriveInfo(self.drive_id, self.endpoint, False, 0, 0, 0)
        h = reply.header
        return DriveInfo(
            self.drive_id, self.endpoint, h["online"], h["total"], h["free"], h["errors"]
        )

    async def make_bucket(self, bucket: str, created: int) -> None:
        await self._call("drive.make_bucket", {"b": bucket, "c": created})

    async def delete_bucket(self, bucket: str, *, force: bool = False) -> None:
        await self._call("drive.delete_bucket", {"b": bucket, "f": force})

    async def list_buckets(self) -> dict[str, int]:
        return (await self._call("drive.list_buckets", {})).header["buckets"]

    async def bucket_exists(self, bucket: str) -> bool:
        return (await self._call("drive.bucket_exists", {"b": bucket})).header["exists"]

    async def open_shard(self, bucket: str, vid: str, part: int) -> ShardWriter:
        if not self.online:
            raise DriveOffline(f"node {self.peer.node_id} is offline")
        header = {"d": self.drive_id, "b": bucket, "v": vid, "p": part}
        try:
            call = await self._rpc.open_stream(
                self.peer, "drive.write_shard", header, timeout=self._shard_timeout
            )
        except TransportError as exc:
            raise _drive_error(exc) from exc
        return RemoteShardWriter(call, self._shard_timeout)

    async def commit(self, bucket: str, key: str, meta: ObjectMeta, inline: bytes | None) -> None:
        await self._call("drive.commit", {"b": bucket, "k": key, "m": meta.pack(), "i": inline})

    async def abort(self, bucket: str, vid: str) -> None:
        await self._call("drive.abort", {"b": bucket, "v": vid})

    async def read_meta(self, bucket: str, key: str) -> MetaRecord:
        h = (await self._call("drive.read_meta", {"b": bucket, "k": key})).header
        return MetaRecord(ObjectMeta.unpack(h["m"]), h["i"])

    async def read_shard(self, bucket: str, vid: str, part: int, offset: int, length: int) -> bytes:
        if not self.online:
            raise DriveOffline(f"node {self.peer.node_id} is offline")
        header = {"d": self.drive_id, "b": bucket, "v": vid, "p": part, "o": offset, "n": length}
        try:
            reply = await self._rpc.call(
                self.peer, "drive.read_shard", header, None, timeout=self._shard_timeout
            )
            return await reply.read(min(length, MAX_SHARD_READ))
        except TransportError as exc:
            raise _drive_error(exc) from exc

    async def delete(self, bucket: str, key: str, *, vid: str | None = None) -> None:
        await self._call("drive.delete", {"b": bucket, "k": key, "v": vid})

    async def scan(
        self, bucket: str, prefix: str, start_after: str, limit: int
    ) -> list[tuple[str, ObjectMeta]]:
        reply = await self._call(
            "drive.scan", {"b": bucket, "p": prefix, "s": start_after, "l": limit}
        )
        try:
            rows = msgpack.unpackb(await reply.read(MAX_META_REPLY))
        except TransportError as exc:
            raise _drive_error(exc) from exc
        return [(key, packed) for key, packed in rows]

    async def scan_digest(
        self, bucket: str, prefix: str, start_after: str, limit: int
    ) -> ScanDigest:
        h = (
            await self._call(
                "drive.scan_digest", {"b": bucket, "p": prefix, "s": start_after, "l": limit}
            )
        ).header
        return ScanDigest(h["n"], h["last"], h["h"])

    async def lock(self, resource: str, owner: str, ttl: float) -> bool:
        h = (await self._call("drive.lock", {"r": resource, "o": owner, "t": ttl})).header
        return h.get("g") is True

    async def unlock(self, resource: str, owner: str) -> None:
        await self._call("drive.unlock", {"r": resource, "o": owner})


# -- server side ------------------------------------------------------------------------------
Handler = Callable[[Request], Awaitable[Response]]


def _bounded_str(h: dict[str, Any], field: str, what: str, most: int) -> str:
    value = h.get(field)
    if not isinstance(value, str) or not value:
        raise RpcFault("bad-request", f"{what} must be a non-empty string")
    if len(value) > most or len(value.encode("utf-8", "surrogatepass")) > most:
        raise RpcFault("bad-request", f"{what} longer than {most} bytes")
    return value


def _lock_fields(h: dict[str, Any]) -> tuple[str, str]:
    """The (resource, owner) of a lock or unlock call, checked; bad input is "bad-request"."""
    return (
        _bounded_str(h, "r", "lock resource", MAX_LOCK_RESOURCE),
        _bounded_str(h, "o", "lock owner", MAX_LOCK_OWNER),
    )


def _lock_ttl(h: dict[str, Any]) -> float:
    ttl = h.get("t")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_LOCK_TTL:
        raise RpcFault("bad-request", f"lock ttl must be a number in (0, {MAX_LOCK_TTL:.0f}]")
    return float(ttl)


def drive_handlers(drives: Mapping[str, Drive]) -> dict[str, Handler]:
    """The RPC methods that expose this node's drives to its peers."""

    def pick(req: Request) -> Drive:
        drive_id = req.header.get("d")
        drive = drives.get(drive_id) if isinstance(drive_id, str) else None
        if drive is None:
            raise RpcFault("DriveOffline", f"no drive {req.header.get('d')!r} on this node")
        return drive

    def wrap(fn: Callable[[Drive, dict[str, Any], Request], Awaitable[Response]]) -> Handler:
        async def handler(req: Request) -> Response:
            try:
                return await fn(pick(req), req.header, req)
            except DriveError as exc:
                raise RpcFault(type(exc).__name__, str(exc)) from exc

        return handler

    async def info(d: Drive, h: dict[str, Any], req: Request) -> Response:
        i = await d.info()
        return Response({"online": i.online, "total": i.total, "free": i.free, "errors": i.errors})

    async def make_bucket(d: Drive, h: dict[str, Any], req: Request) -> Response:
        await d.make_bucket(h["b"], h["c"])
        return Response({})

    async def delete_bucket(d: Drive, h: dict[str, Any], req: Request) -> Response:
        await d.delete_bucket(h["b"], force=h["f"])
        return Response({})

    async def list_buckets(d: Drive, h: dict[str, Any], req: Request) -> Response:
        return Response({"buckets": await d.list_buckets()})

    async def bucket_exists(d: Drive, h: dict[str, Any], req: Request) -> Response:
        return Response({"exists": await d.bucket_exists(h["b"])})

    async def write_shard(d: Drive, h: dict[str, Any], req: Request) -> Response:
        writer = await d.open_shard(h["b"], h["v"], h["p"])
        try:
            # one thread hop per ~1 MiB instead of per datagram (~40 us each, and GIL churn)
            async for chunks in req.batches(min_bytes=WRITE_BATCH):
                await writer.write(chunks)
            await writer.finish()
        except BaseException:
            await writer.abort()
            raise
        return Response({})

    async def commit(d: Drive, h: dict[str, Any], req: Request) -> Response:
        await d.commit(h["b"], h["k"], ObjectMeta.unpack(h["m"]), h["i"])
        return Response({})

    async def abort(d: Drive, h: dict[str, Any], req: Request) -> Response:
        await d.abort(h["b"], h["v"])
        return Response({})

    async def read_meta(d: Drive, h: dict[str, Any], req: Request) -> Response:
        rec = await d.read_meta(h["b"], h["k"])
        return Response({"m": rec.meta.pack(), "i": rec.inline})

    async def read_shard(d: Drive, h: dict[str, Any], req: Request) -> Response:
        data = await d.read_shard(h["b"], h["v"], h["p"], h["o"], min(h["n"], MAX_SHARD_READ))
        return Response({}, data)

    async def delete(d: Drive, h: dict[str, Any], req: Request) -> Response:
        await d.delete(h["b"], h["k"], vid=h["v"])
        return Response({})

    async def scan(d: Drive, h: dict[str, Any], req: Request) -> Response:
        rows = await d.scan(h["b"], h["p"], h["s"], min(h["l"], 1001))
        return Response({}, msgpack.packb(rows))

    async def scan_digest(d: Drive, h: dict[str, Any], req: Request) -> Response:
        got = await d.scan_digest(h["b"], h["p"], h["s"], min(h["l"], 1001))
        return Response({"n": got.count, "last": got.last_key, "h": got.digest})

    async def lock(d: Drive, h: dict[str, Any], req: Request) -> Response:
        resource, owner = _lock_fields(h)
        return Response({"g": await d.lock(resource, owner, _lock_ttl(h))})

    async def unlock(d: Drive, h: dict[str, Any], req: Request) -> Response:
        resource, owner = _lock_fields(h)
        await d.unlock(resource, owner)
        return Response({})

    table = {
        "info": info,
        "make_bucket": make_bucket,
        "delete_bucket": delete_bucket,
        "list_buckets": list_buckets,
        "bucket_exists": bucket_exists,
        "write_shard": write_shard,
        "commit": commit,
        "abort": abort,
        "read_meta": read_meta,
        "read_shard": read_shard,
        "delete": delete,
        "scan": scan,
        "scan_digest": scan_digest,
        "lock": lock,
        "unlock": unlock,
    }
    return {f"drive.{name}": wrap(fn) for name, fn in table.items()}
