"""Both ends of the drive RPC: its messages, RemoteDrive (client) and drive_handlers (server).

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
    leases       : "drive.lock" / "drive.unlock", header only (cluster/keylock.py).

Messages are typed at the edge (cluster/rpc_schema.py). Each method's request and reply
header is declared once, in the table below; the server checks the request before its
handler reads a field, the caller checks the reply before it reads one. A request that
fails is answered with the typed error "bad-request" and logged once (WARNING, peer and
method; DriveIOError on the calling side); a reply that fails is DriveIOError("malformed
... reply"). Either way no malformed value reaches a drive or the object layer, where it
would surface as a KeyError or TypeError, or as a path: bucket names and version ids
name directories on the serving drive, so they are held to a charset that cannot climb
out of them. Every request also carries "d", the drive id, looked up among the drives
this node serves: a value that names none of them (of any type) is DriveOffline.
Fields a schema does not name are ignored (nothing reads them).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgpack

from shardfleet.cluster import drive as drv
from shardfleet.cluster.drive import (
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
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.cluster.parts import PartTable
from shardfleet.cluster.rpc_schema import (
    BOOL,
    I64,
    Field,
    Rpc,
    SchemaError,
    blob,
    integer,
    list_of,
    map_of,
    number,
    optional,
    parsed,
    pattern,
    text,
    tuple_of,
)
from shardfleet.transport.endpoint import Peer, Request, Response, RpcEndpoint, RpcFault, StreamCall
from shardfleet.transport.errors import BodyTooLarge, RemoteError, TransportError

log = logging.getLogger(__name__)

MAX_META_REPLY = 64 << 20
MAX_SHARD_READ = 64 << 20  # bytes one read_shard asks for at most
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
        drv.NotYetHealed,
        drv.ShardNotFound,
        drv.StaleVersion,
    )
}


# -- the messages -----------------------------------------------------------------------------
MAX_KEY = 1024 + 64  # bytes of a drive key: an S3 key (1024, node/s3/names.py) or an
# upload record's key in a "+mp" volume (cluster/parts.py: the S3 key, a NUL and the uid)
MAX_LISTING_ARG = 16 << 10  # bytes of a scan's prefix or start-after (a client's, not a key)
MAX_PART = 10_000
MAX_SCAN = 1001  # rows one scan answers at most (cluster/listing.py's MAX_BATCH)
MAX_SCAN_ASK = 1 << 20  # a scan may ask for more than MAX_SCAN (and gets MAX_SCAN), not this
MAX_PACKED = 1 << 20  # bytes of a packed ObjectMeta or an inline shard (a header is <= 1 MiB)
MAX_TEXT = 16 << 10  # bytes of a stored header value, a user metadata name or value
MAX_BUCKETS = 100_000

# A bucket name and a version id are directory names on the serving drive.
BUCKET = pattern(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}(?:\+mp)?",
    "a bucket name (1 to 63 of A-Z a-z 0-9 . _ -, the first a letter or digit), or its"
    " multipart volume (the name and +mp)",
)
VID = pattern(r"[0-9a-f]{32}", "a version id (32 lowercase hex digits)")
KEY = text(MAX_KEY, empty=False)
PART = integer(0, MAX_PART)
COUNT = integer(0, I64)  # sizes, offsets, byte counts
STAMP = integer(0, I64)  # nanoseconds (bucket creation) or HLC stamps
LISTING_ARG = text(MAX_LISTING_ARG)
INLINE = optional(blob(MAX_PACKED))
SHORT_TEXT = text(MAX_TEXT)

# The layout of ObjectMeta.pack (cluster/meta.py), position by position.
_META_FIELDS = (
    VID,
    STAMP,  # mtime
    COUNT,  # size
    text(256),  # etag: hex MD5 (-N for a multipart object), or a state word in a +mp volume
    integer(1, 256),  # k
    integer(0, 255),  # m
    integer(1, I64),  # stripe
    list_of(integer(0, 255), 256),  # dist
    BOOL,  # inline
    SHORT_TEXT,  # content type
    map_of(SHORT_TEXT, SHORT_TEXT, 4096),  # user metadata
    map_of(SHORT_TEXT, SHORT_TEXT, 4096),  # stored headers
)
META_RECORD = tuple_of(
    integer(1, 1),  # the record format version (meta._VERSION)
    *_META_FIELDS,
    what="a packed ObjectMeta record",
)
META_RECORD_PARTS = tuple_of(
    integer(2, 2),  # a multipart object's record (meta._VERSION_PARTS)
    *_META_FIELDS,
    integer(1, MAX_PART),  # parts
    blob(16, least=16),  # parts_digest
    what="a packed multipart ObjectMeta record",
)
META_RECORD_DELETED = tuple_of(
    integer(3, 3),  # a tombstone (meta._VERSION_DELETED)
    VID,
    STAMP,
    what="a packed tombstone record",
)
_check_record = META_RECORD.ok
_check_parts = META_RECORD_PARTS.ok
_check_deleted = META_RECORD_DELETED.ok


def unpack_meta(packed: bytes) -> ObjectMeta:
    """ObjectMeta.unpack of bytes from a peer: ValueError unless they are a record whose
    every field has its type (one decode, no exception from deep inside msgpack)."""
    try:
        fields = msgpack.unpackb(packed)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"not a msgpack value ({type(exc).__name__})") from None
    if _check_deleted(fields):
        return ObjectMeta.tombstone(fields[1], fields[2])
    if not _check_record(fields) and not _check_parts(fields):
        if isinstance(fields, list) and fields and fields[0] == 2:
            raise ValueError(META_RECORD_PARTS.explain(fields))
        if isinstance(fields, list) and fields and fields[0] == 3:
            raise ValueError(META_RECORD_DELETED.explain(fields))
        raise ValueError(META_RECORD.explain(fields))
    return ObjectMeta(*fields[1:])


PACKED_META = parsed(blob(MAX_PACKED), unpack_meta, "a packed ObjectMeta record")


def unpack_tombstone(packed: bytes) -> ObjectMeta:
    meta = unpack_meta(packed)
    if not meta.deleted:
        raise ValueError("a record, not a tombstone")
    return meta


TOMBSTONE = parsed(blob(MAX_PACKED), unpack_tombstone, "a packed tombstone record")
# a scan row's metadata is compared packed and decoded only for the winning copy (listing),
# so the row check stops at "bytes of a record": a 13-item array then version 1, or a
# 15-item array then version 2 (a multipart object), or a 3-item one then 3 (a tombstone)
PACKED_ROW_META = Field(
    "a packed ObjectMeta record",
    src="type({v}) is bytes and {v}[:2] in {p}",
    consts={"p": (b"\x9d\x01", b"\x9f\x02", b"\x93\x03")},
)
MAX_TABLE = 1 << 20  # bytes of a packed part table (10,000 parts with SHA-256: ~0.75 MB)

INFO = Rpc(
    "drive.info",
    {},
    {"online": BOOL, "total": COUNT, "free": COUNT, "errors": integer(-I64, I64)},
)
MAKE_BUCKET = Rpc("drive.make_bucket", {"b": BUCKET, "c": STAMP}, {})
DELETE_BUCKET = Rpc("drive.delete_bucket", {"b": BUCKET, "f": BOOL}, {})
LIST_BUCKETS = Rpc("drive.list_buckets", {}, {"buckets": map_of(BUCKET, STAMP, MAX_BUCKETS)})
BUCKET_EXISTS = Rpc("drive.bucket_exists", {"b": BUCKET}, {"exists": BOOL})
WRITE_SHARD = Rpc(
    "drive.write_shard",
    {"b": BUCKET, "v": VID, "p": PART},
    {},
    body="request: the shard's bytes, streamed; the reply comes once they are durable",
)
COMMIT = Rpc("drive.commit", {"b": BUCKET, "k": KEY, "m": PACKED_META, "i": INLINE}, {})
ABORT = Rpc("drive.abort", {"b": BUCKET, "v": VID}, {})
INSTALL = Rpc("drive.install", {"b": BUCKET, "v": VID}, {})
READ_META = Rpc("drive.read_meta", {"b": BUCKET, "k": KEY}, {"m": PACKED_META, "i": INLINE})
READ_SHARD = Rpc(
    "drive.read_shard",
    {"b": BUCKET, "v": VID, "p": PART, "o": COUNT, "n": integer(0, MAX_SHARD_READ)},
    {},
    body="reply: up to n bytes of the shard from offset o",
)
DELETE = Rpc(
    "drive.delete",
    {"b": BUCKET, "k": KEY, "v": optional(VID), "t": optional(TOMBSTONE)},
    {},
)
_SCAN_ASK = {
    "b": BUCKET,
    "p": LISTING_ARG,
    "s": LISTING_ARG,
    "l": integer(0, MAX_SCAN_ASK),
    "e": BOOL,  # every: a drive not healed yet answers too (the scanner's listings)
}
SCAN = Rpc(
    "drive.scan",
    _SCAN_ASK,
    {},
    body="reply: msgpack [[key, packed meta], ...], sorted by key",
    reply_body=list_of(tuple_of(KEY, PACKED_ROW_META, what="a [key, meta] row"), MAX_SCAN),
)
SCAN_DIGEST = Rpc(
    "drive.scan_digest",
    _SCAN_ASK,
    {"n": integer(0, MAX_SCAN), "last": text(MAX_KEY), "h": blob(16, least=16)},
)
COMPLETE_UPLOAD = Rpc(
    "drive.complete_upload",
    {
        "b": BUCKET,
        "k": KEY,
        "u": VID,  # the upload id: 32 hex digits, like a version id
        "m": PACKED_META,
        "t": PACKED_META,  # the upload record's tombstone
    },
    {},
    body="request: msgpack [packed part table, tombstone's inline row]",
)
LOCK_ASK = {
    "r": text(MAX_LOCK_RESOURCE, empty=False),
    "o": text(MAX_LOCK_OWNER, empty=False),
}
LOCK = Rpc("drive.lock", LOCK_ASK | {"t": number(0, MAX_LOCK_TTL)}, {"g": BOOL})
UNLOCK = Rpc("drive.unlock", LOCK_ASK, {})

RPCS: tuple[Rpc, ...] = (
    INFO, MAKE_BUCKET, DELETE_BUCKET, LIST_BUCKETS, BUCKET_EXISTS, WRITE_SHARD, COMMIT, ABORT,
    READ_META, READ_SHARD, DELETE, SCAN, SCAN_DIGEST, LOCK, UNLOCK, COMPLETE_UPLOAD, INSTALL,
)  # fmt: skip


# -- client side ------------------------------------------------------------------------------
def _drive_error(exc: BaseException) -> DriveError:
    if isinstance(exc, RemoteError) and exc.kind in _ERRORS:
        return _ERRORS[exc.kind](exc.message)
    if isinstance(exc, RemoteError):
        return drv.DriveIOError(f"peer error {exc.kind}: {exc.message}")
    return DriveOffline(f"peer unreachable: {type(exc).__name__}: {exc}")


def _malformed(peer: Peer, why: object) -> drv.DriveIOError:
    return drv.DriveIOError(f"malformed reply from node {peer.node_id}: {why}")


class RemoteShardWriter:
    def __init__(self, call: StreamCall, peer: Peer) -> None:
        self._call = call
        self._peer = peer

    async def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        try:
            for chunk in chunks:
                await self._call.send(chunk)
        except TransportError as exc:
            raise _drive_error(exc) from exc

    async def finish(self) -> None:
        try:
            reply = await self._call.finish()
        except TransportError as exc:
            raise _drive_error(exc) from exc
        try:
            WRITE_SHARD.reply.check(reply.header)
        except SchemaError as exc:
            raise _malformed(self._peer, exc) from None

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
        self._background = False

    def snapshot(self) -> DriveInfo:
        return DriveInfo(self.drive_id, self.endpoint, self.online, 0, 0, 0)

    def background(self) -> RemoteDrive:
        """This drive for heal and scan traffic: the same drive, its calls on the peer's
        background connection with their bodies paced (`transport.pacing`), so a heal never
        crowds out a client's PUT. Shard calls get 4x the time, for the pacing."""
        view = copy.copy(self)
        view._background = True
        view._shard_timeout = 4 * self._shard_timeout
        return view

    @property
    def online(self) -> bool:
        return self._is_alive(self.peer.node_id)

    def _check_online(self) -> None:
        if not self.online:
            raise DriveOffline(f"node {self.peer.node_id} is offline")

    async def _call(
        self, rpc: Rpc, header: dict[str, Any], body: bytes | None = None
    ) -> tuple[dict[str, Any], Any]:
        """The reply's checked header, and the reply (for a body)."""
        self._check_online()
        header["d"] = self.drive_id
        started = time.perf_counter()
        try:
            reply = await self._rpc.call(
                self.peer, rpc.method, header, body, timeout=self._timeout,
                background=self._background,
            )  # fmt: skip
        except TransportError as exc:
            raise _drive_error(exc) from exc
        finally:
            if self._observe is not None:
                self._observe(rpc.method, time.perf_counter() - started)
        try:
            return rpc.reply.check(reply.header), reply
        except SchemaError as exc:
            raise _malformed(self.peer, exc) from None

    async def info(self) -> DriveInfo:
        try:
            h, _ = await self._call(INFO, {})
        except DriveError:
            return DriveInfo(self.drive_id, self.endpoint, False, 0, 0, 0)
        return DriveInfo(
            self.drive_id, self.endpoint, h["online"], h["total"], h["free"], h["errors"]
        )

    async def make_bucket(self, bucket: str, created: int) -> None:
        await self._call(MAKE_BUCKET, {"b": bucket, "c": created})

    async def delete_bucket(self, bucket: str, *, force: bool = False) -> None:
        await self._call(DELETE_BUCKET, {"b": bucket, "f": force})

    async def list_buckets(self) -> dict[str, int]:
        return (await self._call(LIST_BUCKETS, {}))[0]["buckets"]

    async def bucket_exists(self, bucket: str) -> bool:
        return (await self._call(BUCKET_EXISTS, {"b": bucket}))[0]["exists"]

    async def open_shard(self, bucket: str, vid: str, part: int) -> ShardWriter:
        self._check_online()
        header = {"d": self.drive_id, "b": bucket, "v": vid, "p": part}
        try:
            call = await self._rpc.open_stream(
                self.peer, WRITE_SHARD.method, header, timeout=self._shard_timeout,
                background=self._background,
            )  # fmt: skip
        except TransportError as exc:
            raise _drive_error(exc) from exc
        return RemoteShardWriter(call, self.peer)

    async def commit(self, bucket: str, key: str, meta: ObjectMeta, inline: bytes | None) -> None:
        await self._call(COMMIT, {"b": bucket, "k": key, "m": meta.pack(), "i": inline})

    async def abort(self, bucket: str, vid: str) -> None:
        await self._call(ABORT, {"b": bucket, "v": vid})

    async def install(self, bucket: str, vid: str) -> None:
        await self._call(INSTALL, {"b": bucket, "v": vid})

    async def read_meta(self, bucket: str, key: str) -> MetaRecord:
        h, _ = await self._call(READ_META, {"b": bucket, "k": key})
        return MetaRecord(h["m"], h["i"])  # "m" arrives checked and decoded

    async def read_shard(self, bucket: str, vid: str, part: int, offset: int, length: int) -> bytes:
        self._check_online()
        length = min(length, MAX_SHARD_READ)  # "up to length bytes": a shorter read is legal
        header = {"d": self.drive_id, "b": bucket, "v": vid, "p": part, "o": offset, "n": length}
        try:
            reply = await self._rpc.call(
                self.peer, READ_SHARD.method, header, None, timeout=self._shard_timeout,
                background=self._background,
            )  # fmt: skip
        except TransportError as exc:
            raise _drive_error(exc) from exc
        try:
            READ_SHARD.reply.check(reply.header)
        except SchemaError as exc:
            raise _malformed(self.peer, exc) from None
        return await self._body(READ_SHARD, reply, length)

    async def _body(self, rpc: Rpc, reply: Any, limit: int) -> bytes:
        try:
            return await reply.read(limit)
        except BodyTooLarge:  # the peer answered, with more than it was asked for
            raise _malformed(self.peer, f"{rpc.method} reply body over {limit} bytes") from None
        except TransportError as exc:
            raise _drive_error(exc) from exc

    async def delete(
        self,
        bucket: str,
        key: str,
        *,
        vid: str | None = None,
        tombstone: ObjectMeta | None = None,
    ) -> None:
        packed = tombstone.pack() if tombstone is not None else None
        await self._call(DELETE, {"b": bucket, "k": key, "v": vid, "t": packed})

    async def scan(
        self, bucket: str, prefix: str, start_after: str, limit: int, *, every: bool = False
    ) -> list[tuple[str, bytes]]:
        ask = {"b": bucket, "p": prefix, "s": start_after, "l": limit, "e": every}
        _, reply = await self._call(SCAN, ask)
        raw = await self._body(SCAN, reply, MAX_META_REPLY)
        try:
            rows = msgpack.unpackb(raw)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            why = f"drive.scan reply body is not msgpack ({type(exc).__name__})"
            raise _malformed(self.peer, why) from None
        try:
            SCAN.check_reply_body(rows)
        except SchemaError as exc:
            raise _malformed(self.peer, exc) from None
        if len(rows) > max(limit, 0):
            why = f"drive.scan answered {len(rows)} rows for a limit of {limit}"
            raise _malformed(self.peer, why)
        return [(key, packed) for key, packed in rows]

    async def scan_digest(
        self, bucket: str, prefix: str, start_after: str, limit: int, *, every: bool = False
    ) -> ScanDigest:
        header = {"b": bucket, "p": prefix, "s": start_after, "l": limit, "e": every}
        h, _ = await self._call(SCAN_DIGEST, header)
        return ScanDigest(h["n"], h["last"], h["h"])

    async def complete_upload(
        self,
        bucket: str,
        key: str,
        uid: str,
        meta: ObjectMeta,
        table: bytes,
        tombstone: ObjectMeta,
        tomb_inline: bytes,
    ) -> None:
        header = {"b": bucket, "k": key, "u": uid, "m": meta.pack(), "t": tombstone.pack()}
        await self._call(COMPLETE_UPLOAD, header, msgpack.packb([table, tomb_inline]))

    async def lock(self, resource: str, owner: str, ttl: float) -> bool:
        h, _ = await self._call(LOCK, {"r": resource, "o": owner, "t": ttl})
        return h["g"]

    async def unlock(self, resource: str, owner: str) -> None:
        await self._call(UNLOCK, {"r": resource, "o": owner})


# -- server side ------------------------------------------------------------------------------
Handler = Callable[[Request], Awaitable[Response]]
Serve = Callable[[Drive, dict[str, Any], Request], Awaitable[Response]]


def drive_handlers(drives: Mapping[str, Drive]) -> dict[str, Handler]:
    """The RPC methods that expose this node's drives to its peers."""

    def pick(header: dict[str, Any]) -> Drive:
        drive_id = header.get("d")
        drive = drives.get(drive_id) if isinstance(drive_id, str) else None
        if drive is None:
            raise RpcFault("DriveOffline", f"no drive {drive_id!r:.80} on this node")
        return drive

    def serve(rpc: Rpc, fn: Serve) -> Handler:
        check = rpc.request.check

        async def handler(req: Request) -> Response:
            try:
                h = check(req.header)
            except SchemaError as exc:
                log.warning("bad-request from %s: %s", req.peer_id, exc)  # names the method
                raise RpcFault("bad-request", str(exc)) from None
            drive = pick(h)
            try:
                return await fn(drive, h, req)
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
        await d.commit(h["b"], h["k"], h["m"], h["i"])  # "m" arrives checked and decoded
        return Response({})

    async def abort(d: Drive, h: dict[str, Any], req: Request) -> Response:
        await d.abort(h["b"], h["v"])
        return Response({})

    async def install(d: Drive, h: dict[str, Any], req: Request) -> Response:
        await d.install(h["b"], h["v"])
        return Response({})

    async def read_meta(d: Drive, h: dict[str, Any], req: Request) -> Response:
        rec = await d.read_meta(h["b"], h["k"])
        return Response({"m": rec.meta.pack(), "i": rec.inline})

    async def read_shard(d: Drive, h: dict[str, Any], req: Request) -> Response:
        data = await d.read_shard(h["b"], h["v"], h["p"], h["o"], h["n"])
        return Response({}, data)

    async def delete(d: Drive, h: dict[str, Any], req: Request) -> Response:
        await d.delete(h["b"], h["k"], vid=h["v"], tombstone=h["t"])
        return Response({})

    async def scan(d: Drive, h: dict[str, Any], req: Request) -> Response:
        rows = await d.scan(h["b"], h["p"], h["s"], min(h["l"], MAX_SCAN), every=h["e"])
        return Response({}, msgpack.packb(rows))

    async def scan_digest(d: Drive, h: dict[str, Any], req: Request) -> Response:
        got = await d.scan_digest(h["b"], h["p"], h["s"], min(h["l"], MAX_SCAN), every=h["e"])
        return Response({"n": got.count, "last": got.last_key, "h": got.digest})

    async def complete_upload(d: Drive, h: dict[str, Any], req: Request) -> Response:
        try:
            raw = await req.read(2 * MAX_TABLE + MAX_PACKED)
        except BodyTooLarge:
            raise RpcFault("bad-request", "drive.complete_upload body too large") from None
        try:
            table, tomb_inline = msgpack.unpackb(raw)
            if not isinstance(table, bytes) or not isinstance(tomb_inline, bytes):
                raise ValueError("not two byte strings")
            if len(table) > MAX_TABLE:
                raise ValueError("part table too large")
            if PartTable.unpack(table).digest() != h["m"].parts_digest or not h["m"].parts:
                raise ValueError("part table does not match the record's digest")
        except Exception as exc:
            log.warning("bad-request from %s: drive.complete_upload body: %s", req.peer_id, exc)
            raise RpcFault("bad-request", f"drive.complete_upload body: {exc}") from None
        await d.complete_upload(h["b"], h["k"], h["u"], h["m"], table, h["t"], tomb_inline)
        return Response({})

    async def lock(d: Drive, h: dict[str, Any], req: Request) -> Response:
        return Response({"g": await d.lock(h["r"], h["o"], float(h["t"]))})

    async def unlock(d: Drive, h: dict[str, Any], req: Request) -> Response:
        await d.unlock(h["r"], h["o"])
        return Response({})

    table: dict[Rpc, Serve] = {
        INFO: info,
        MAKE_BUCKET: make_bucket,
        DELETE_BUCKET: delete_bucket,
        LIST_BUCKETS: list_buckets,
        BUCKET_EXISTS: bucket_exists,
        WRITE_SHARD: write_shard,
        COMMIT: commit,
        ABORT: abort,
        READ_META: read_meta,
        READ_SHARD: read_shard,
        DELETE: delete,
        SCAN: scan,
        SCAN_DIGEST: scan_digest,
        LOCK: lock,
        UNLOCK: unlock,
        COMPLETE_UPLOAD: complete_upload,
        INSTALL: install,
    }
    return {rpc.method: serve(rpc, fn) for rpc, fn in table.items()}
