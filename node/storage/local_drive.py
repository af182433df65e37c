"""LocalDrive: one directory on this host, implementing cluster.drive.Drive.

Layout of a drive root:

    format.json                         cluster id, drive id, pool/set/position (topology)
    healing.mark                        present while a drive formatted empty into a slot
                                        of a running cluster is not fully healed yet
    index.lmdb/                         ordered metadata index (node/storage/index.py)
    tmp/<vid>/part.<n>                  shards being written (gone after a restart)
    data/<bucket>/<vid[:2]>/<vid>/part.<n>   committed shards; paths never derive from keys
    data/<bucket>+mp/<pvid[:2]>/<pvid>/part.1  multipart part versions (cluster/parts.py)

A bucket's multipart uploads and parts live in its "+mp" volume: index rows under
"<bucket>+mp" NUL ..., directories under data/<bucket>+mp/. The volume has no bucket row:
it exists while its bucket does and goes with it. A completed multipart object's part
table is its inline row, and its part versions' `vids` rows point at the object's key.

A PUT never overwrites in place. Shards are written and fsynced under tmp/, the version
directory is renamed into data/ (and its parent fsynced), then the metadata commit makes it
current; the previous version's directory is removed only after that commit is durable. A
crash at any point leaves the old or the new version, and start-up removes what no
metadata references (`reconcile`). A commit never replaces a newer version with an older
one (`ObjectMeta.order`): it is refused as StaleVersion and its directory removed.

Any OSError or LMDB error makes the drive check itself: a missing root or format.json
marks it offline for good (until restart); other errors are counted and reported as
DriveIOError. An offline drive answers DriveOffline at once and never crashes the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgpack

from shardfleet.cluster.drive import (
    DriveError,
    DriveFull,
    DriveInfo,
    DriveIOError,
    DriveOffline,
    FileNotFound,
    LeaseTable,
    MetaRecord,
    NotYetHealed,
    ScanDigest,
    ShardNotFound,
    StaleVersion,
    VolumeExists,
    VolumeNotEmpty,
    VolumeNotFound,
    scan_digest,
)
from shardfleet.cluster.meta import ObjectMeta, is_deleted_packed
from shardfleet.cluster.parts import (
    is_tombstone,
    mp_volume,
    parts_prefix,
    table_pvids,
    upload_key,
    volume_bucket,
)
from shardfleet.cluster.topology import DriveFormat
from shardfleet.node.storage.fsutil import fsync_dir, makedirs_durable, remove_tree
from shardfleet.node.storage.index import DriveIndex, Txn, bucket_prefix, is_long, object_key
from shardfleet.node.storage.shardfile import ShardFile
from shardfleet.node.storage.shardread import RangeReader

log = logging.getLogger(__name__)
T = TypeVar("T")

#: written (before format.json) into a drive formatted empty into the slot of one that held
#: data: until a scanner pass over all its sets has healed it, its "no such key" answers
#: and its listing rows are no evidence (NotYetHealed); removed by `mark_healed`
HEAL_MARK = "healing.mark"


class LocalShardWriter:
    """A staged shard file being written (see shardfile.py for how bytes reach the disk)."""

    def __init__(self, drive: LocalDrive, vid: str, part: int, file: ShardFile) -> None:
        self._drive = drive
        self._vid = vid
        self._part = part
        self._file: ShardFile | None = file

    async def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        file = self._file
        if file is None:
            raise DriveIOError("shard writer is closed")
        await self._drive._io(file.append, list(chunks))

    async def finish(self) -> None:
        file, self._file = self._file, None
        if file is None:
            raise DriveIOError("shard writer is closed")

        def sync_close() -> None:
            try:
                file.finish()  # data and size; the directory entry is synced at install
            finally:
                file.close()

        try:
            await self._drive._io(sync_close)
        finally:
            self._drive._writing.discard((self._vid, self._part))

    async def abort(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
        self._drive._writing.discard((self._vid, self._part))
        await self._drive.abort_staged(self._vid)


class LocalDrive:
    is_local = True

    def __init__(self, root: Path, fmt: DriveFormat, io_pool: Executor) -> None:
        self.root = root
        self.format = fmt
        self.drive_id = fmt.drive_id
        self.endpoint = str(root)
        self._pool = io_pool
        self._root_ino = root.stat().st_ino
        self._offline_reason: str | None = None
        self.errors = 0
        self.last_statvfs: tuple[int, int] | None = None  # (free, total) from the last probe
        self._inflight: set[str] = set()  # vids staged or being committed
        self._writing: set[tuple[str, int]] = set()  # (vid, part) shard files open for writing
        self._reader = RangeReader()
        self._trash_done: list[bytes] = []
        self.leases = LeaseTable()  # per-key locks (cluster/keylock.py): memory only
        self._tmp = root / "tmp"
        self._data = root / "data"
        self._tmp.mkdir(exist_ok=True)
        self._data.mkdir(exist_ok=True)
        self.index = DriveIndex(root / "index.lmdb")
        #: when it was formatted as a replacement (HEAL_MARK's mtime), None once healed
        self.healing_since: float | None = None
        with contextlib.suppress(FileNotFoundError):
            self.healing_since = (root / HEAL_MARK).stat().st_mtime

    def mark_healed(self) -> None:
        """A full pass over every set of this drive healed it (or it never needed it)."""
        if self.healing_since is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.root / HEAL_MARK).unlink()
            fsync_dir(self.root)
        self.healing_since = None
        log.info("drive %s (%s) is fully healed", self.drive_id, self.root)

    # -- health -----------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self._offline_reason is None

    def _healthy(self) -> str | None:
        """Why the drive is unusable, or None."""
        try:
            if os.stat(self.root).st_ino != self._root_ino:
                return "drive directory was replaced"
            os.stat(self.root / "format.json")
        except OSError as exc:
            return f"drive directory unreachable: {exc.strerror or exc}"
        return None

    def mark_offline(self, reason: str) -> None:
        if self._offline_reason is None:
            self._offline_reason = reason
            log.error("drive %s (%s) is offline: %s", self.drive_id, self.root, reason)

    async def check(self) -> bool:
        """Periodic probe: notices a drive that vanished while idle; refreshes free space."""
        if self.online:
            reason = await self._io(self._healthy, guard=False)
            if reason:
                self.mark_offline(reason)
            else:
                info = await self.info()
                self.last_statvfs = (info.free, info.total)
        return self.online

    def _fail(self, exc: BaseException) -> DriveError:
        """Maps an OS or LMDB failure to a drive error, checking the drive first."""
        reason = self._healthy()
        if reason:
            self.mark_offline(reason)
            return DriveOffline(reason)
        self.errors += 1
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return DriveFull(str(exc))
        return DriveIOError(f"{type(exc).__name__}: {exc}")

    def _guard(self) -> None:
        if self._offline_reason is not None:
            raise DriveOffline(self._offline_reason)

    async def _io(self, fn: Callable[..., T], *args: Any, guard: bool = True) -> T:
        if guard:
            self._guard()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except (OSError, lmdb.Error) as exc:
            if not guard:
                raise
            raise self._fail(exc) from exc

    async def _write(self, fn: Callable[[Txn], T]) -> T:
        self._guard()
        try:
            return await self.index.write(fn)
        except (OSError, lmdb.Error) as exc:
            raise self._fail(exc) from exc

    def _read(self, fn: Callable[[], T]) -> T:
        self._guard()
        try:
            return fn()
        except (OSError, lmdb.Error) as exc:
            raise self._fail(exc) from exc

    async def info(self) -> DriveInfo:
        total = free = 0
        if self.online:
            with contextlib.suppress(DriveError):
                st = await self._io(os.statvfs, self.root)
                total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        return DriveInfo(self.drive_id, self.endpoint, self.online, total, free, self.errors)

    # -- paths --------------------------------------------------------------------------
    def _version_dir(self, bucket: str, vid: str) -> Path:
        return self._data / bucket / vid[:2] / vid

    # -- buckets ------------------------------------------------------------------------
    async def make_bucket(self, bucket: str, created: int) -> None:
        def apply(t: Txn) -> None:
            if t.get(t.buckets, bucket.encode()) is not None:
                raise VolumeExists(bucket)
            t.put(t.buckets, bucket.encode(), msgpack.packb(created))

        await self._write(apply)

    async def delete_bucket(self, bucket: str, *, force: bool = False) -> None:
        """Removes the bucket and its "+mp" volume (open uploads, their parts) together."""
        volume = mp_volume(bucket)

        def apply(t: Txn) -> None:
            if t.get(t.buckets, bucket.encode()) is None:
                raise VolumeNotFound(bucket)
            live = t.any_with_prefix  # tombstones do not keep a bucket from going
            if not force and live(
                t.objects, bucket_prefix(bucket), lambda r: not is_deleted_packed(r)
            ):
                raise VolumeNotEmpty(bucket)
            for name in (bucket, volume):
                prefix = bucket_prefix(name)
                for ik, _ in t.rows_with_prefix(t.inline, prefix):
                    raw = t.get(t.objects, ik)
                    if raw is not None and ObjectMeta.unpack(raw).parts:
                        for pvid in table_pvids(t.get(t.inline, ik) or b""):
                            t.txn.delete(pvid.encode(), db=t.vids)
                for meta in t.delete_prefix(t.objects, prefix):
                    t.txn.delete(ObjectMeta.unpack(meta).vid.encode(), db=t.vids)
                t.delete_prefix(t.inline, prefix)
                t.delete_prefix(t.longkeys, prefix)
            t.delete(t.buckets, bucket.encode())

        await self._write(apply)
        await self._io(remove_tree, self._data / bucket)
        await self._io(remove_tree, self._data / volume)

    async def list_buckets(self) -> dict[str, int]:
        items = self._read(lambda: self.index.items(self.index.buckets))
        return {k.decode(): msgpack.unpackb(v) for k, v in items}

    def bucket_created(self, bucket: str) -> int | None:
        """The creation stamp of a bucket (of a "+mp" volume: of its bucket), or None."""
        name = volume_bucket(bucket).encode()
        raw = self._read(lambda: self.index.get(self.index.buckets, name))
        return None if raw is None else msgpack.unpackb(raw)

    async def bucket_exists(self, bucket: str) -> bool:
        return self.bucket_created(bucket) is not None

    # -- shards -------------------------------------------------------------------------
    async def open_shard(self, bucket: str, vid: str, part: int) -> LocalShardWriter:
        """A staged file left by a write that was never committed nor aborted here (its
        coordinator gave up on this drive after its grace) is replaced: it holds this very
        shard of this very version, and a heal must be able to write it again. One still
        being written is not (DriveIOError)."""
        if (vid, part) in self._writing:
            raise DriveIOError(f"{vid}/part.{part} is being written")
        self._inflight.add(vid)
        self._writing.add((vid, part))

        def create() -> ShardFile:
            directory = self._tmp / vid
            directory.mkdir(exist_ok=True)
            path = directory / f"part.{part}"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale leftover (see above)
            return ShardFile(path)

        try:
            file = await self._io(create)
        except BaseException:
            self._inflight.discard(vid)
            self._writing.discard((vid, part))
            raise
        return LocalShardWriter(self, vid, part, file)

    async def abort_staged(self, vid: str) -> None:
        self._inflight.discard(vid)
        if self.online:
            with contextlib.suppress(DriveError):
                await self._io(remove_tree, self._tmp / vid)

    async def abort(self, bucket: str, vid: str) -> None:
        await self.abort_staged(vid)

    async def read_shard(
        self, bucket: str, vid: str, part: int, offset: int, length: int
    ) -> bytes | memoryview:
        path = self._version_dir(bucket, vid) / f"part.{part}"
        try:
            return await self._io(self._reader.read, path, offset, length)
        except DriveIOError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                self.errors -= 1  # a missing shard is for the healer, not a failing disk
                raise ShardNotFound(f"{bucket}/{vid}/part.{part}") from exc
            raise

    # -- metadata -----------------------------------------------------------------------
    async def commit(self, bucket: str, key: str, meta: ObjectMeta, inline: bytes | None) -> None:
        """Makes `meta` the key's current version unless the drive holds a newer one.

        Inside the index transaction the incoming version's `order` (HLC stamp, vid) is
        compared with the current record's: older -> StaleVersion, the current version
        stays and the incoming one's installed data directory is removed (nothing of it
        stays visible or on disk); newer -> it replaces the current one, whose data is
        removed once the commit is durable; the same vid -> a retry (or a healer
        rewriting shards of that version), which succeeds. So a healer writing an old
        version back can never roll back a PUT that landed in the meantime.

        Limit: a key with no record is accepted whatever the stamp, so a commit of an old
        version arriving after a DELETE brings the key back. Refusing it needs a tombstone
        that remembers the deleted version's order (or the delete's stamp); tombstones come
        with the healing issue (see tests/integration/test_commit_order.py).
        """
        vid = meta.vid
        ok = object_key(bucket, key)
        staged = self._tmp / vid
        target = self._version_dir(bucket, vid)
        self._inflight.add(vid)
        # a multipart object's files are its parts'; a tombstone has none
        has_files = not meta.inline and not meta.parts and not meta.deleted
        try:
            if has_files:
                await self._io(self._install, staged, target)
            old_dirs: list[Path] = []

            def apply(t: Txn) -> None:
                self._flush_trash(t)
                if t.get(t.buckets, volume_bucket(bucket).encode()) is None:
                    raise VolumeNotFound(bucket)
                old = t.get(t.objects, ok)
                old_meta = None if old is None else ObjectMeta.unpack(old)
                if old_meta is not None and old_meta.vid != vid and old_meta.order > meta.order:
                    raise StaleVersion(
                        f"{bucket}/{key}: version {vid} (stamp {meta.mtime}) is older than "
                        f"the current {old_meta.vid} (stamp {old_meta.mtime})"
                    )
                if old_meta is not None and old_meta.vid != vid:
                    keep = table_pvids(inline) if meta.parts and inline else set()
                    self._retire(t, bucket, ok, old_meta, old_dirs, keep)
                t.put(t.objects, ok, meta.pack())
                if inline is not None and not meta.deleted:
                    t.put(t.inline, ok, inline)
                else:
                    t.txn.delete(ok, db=t.inline)
                if not meta.deleted:
                    t.put(t.vids, vid.encode(), ok)
                if meta.parts and inline:
                    for pvid in table_pvids(inline):  # its parts' data belong to the key
                        t.put(t.vids, pvid.encode(), ok)
                if is_long(ok, len(bucket_prefix(bucket))):
                    t.put(t.longkeys, ok, key.encode())

            try:
                await self._write(apply)
            except asyncio.CancelledError:
                # The group commit goes on in the index's thread and may still make this
                # version current: its directory stays (an orphan for `remove_orphans` if
                # the commit did not land), never a current version without its data.
                raise
            except BaseException:
                if has_files:
                    await self._drop_uncommitted(target)
                raise
            if old_dirs:
                await self._remove_retired(old_dirs)
        finally:
            self._inflight.discard(vid)

    async def install(self, bucket: str, vid: str) -> None:
        """Installs shards staged for a version the index already references (a healer
        rewriting a missing or rotten shard of it, or a part of a multipart object), each
        file replaced atomically. FileNotFound, and the staged files dropped, when nothing
        references `vid`: a heal must never bring back data of a version that is gone."""
        staged = self._tmp / vid
        target = self._version_dir(bucket, vid)
        self._inflight.add(vid)
        try:
            if self._read(lambda: self.index.get(self.index.vids, vid.encode())) is None:
                await self.abort_staged(vid)
                raise FileNotFound(f"{bucket}: no version {vid} to install shards of")
            await self._io(self._install, staged, target)
            # deleted while we installed: take it out again, as an uncommitted version
            if self._read(lambda: self.index.get(self.index.vids, vid.encode())) is None:
                await self._drop_uncommitted(target)
                raise FileNotFound(f"{bucket}: version {vid} went while its shards were installed")
        finally:
            self._inflight.discard(vid)

    async def _drop_uncommitted(self, target: Path) -> None:
        """Removes a version directory the commit installed but did not make current.

        Never one the index references: a failed retry of the current version must not take
        that version's data with it. If the index cannot be read the directory stays (an
        orphan for `remove_orphans`, not a current version without its shards)."""

        def drop() -> None:
            if self.index.get(self.index.vids, target.name.encode()) is None:
                remove_tree(target)

        with contextlib.suppress(DriveError):
            await self._io(drop)

    def _install(self, staged: Path, target: Path) -> None:
        """Moves a staged version directory into data/, durably.

        A retry of a commit finds nothing staged and the version installed: nothing to do.
        Shards staged again for an installed version (a healer rewriting a shard of it)
        replace its files one by one, each rename atomic."""
        if not staged.exists() and target.is_dir():
            return
        fsync_dir(staged)
        makedirs_durable(target.parent)
        try:
            os.rename(staged, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not target.is_dir():
                raise
            for part in staged.iterdir():
                os.replace(part, target / part.name)
            fsync_dir(target)
            remove_tree(staged)
        fsync_dir(target.parent)

    def _retire(
        self,
        t: Txn,
        bucket: str,
        ok: bytes,
        old: ObjectMeta,
        old_dirs: list[Path],
        keep: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """Queues the data of a version being replaced or deleted for removal (before its
        inline row is overwritten: a multipart version's part table is that row). Part
        versions in `keep` (also in the version replacing it) stay. A tombstone has none."""
        if old.deleted:
            return
        t.txn.delete(old.vid.encode(), db=t.vids)
        if old.parts:
            volume = mp_volume(bucket)
            for pvid in table_pvids(t.get(t.inline, ok) or b"") - keep:
                self._trash(t, volume, pvid, old_dirs)
        elif not old.inline:
            self._trash(t, bucket, old.vid, old_dirs)

    def _trash(self, t: Txn, volume: str, vid: str, old_dirs: list[Path]) -> None:
        t.txn.delete(vid.encode(), db=t.vids)
        t.put(t.trash, vid.encode(), volume.encode())
        old_dirs.append(self._version_dir(volume, vid))

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
        """Completes a multipart upload on this drive in one index transaction.

        `meta` (with `table` as its inline row) becomes the key's current version unless
        the drive holds a newer one; the upload's part rows go, the chosen part versions
        now belong to the key (`vids`), every other attempt is retired, and the upload's
        record becomes `tombstone` (what a retry, an abort or the sweeper needs to roll the
        same completion forward on drives that missed it). No shard moves. A drive where
        the upload was already completed as `meta.vid` answers success (a retry); FileNotFound
        if the upload is unknown here or was completed otherwise; StaleVersion when a newer
        version of the key is current (the parts are retired: the upload is still done)."""
        volume = mp_volume(bucket)
        ok = object_key(bucket, key)
        uk = object_key(volume, upload_key(key, uid))
        pp = object_key(volume, parts_prefix(uid))
        old_dirs: list[Path] = []

        def apply(t: Txn) -> bool:
            self._flush_trash(t)
            if t.get(t.buckets, bucket.encode()) is None:
                raise VolumeNotFound(bucket)
            raw = t.get(t.objects, uk)
            if raw is None:
                raise FileNotFound(f"upload {uid} of {bucket}/{key}")
            record = ObjectMeta.unpack(raw)
            if is_tombstone(record):
                if record.vid == meta.vid:
                    return False  # this completion, retried
                raise FileNotFound(f"upload {uid} of {bucket}/{key} was completed otherwise")
            old = t.get(t.objects, ok)
            old_meta = None if old is None else ObjectMeta.unpack(old)
            stale = (
                old_meta is not None and old_meta.vid != meta.vid and old_meta.order > meta.order
            )
            keep = set() if stale else table_pvids(table)
            for pk, prow in t.rows_with_prefix(t.objects, pp):
                part = ObjectMeta.unpack(prow)
                t.delete(t.objects, pk)
                if part.vid in keep:
                    t.put(t.vids, part.vid.encode(), ok)
                else:
                    self._trash(t, volume, part.vid, old_dirs)
            t.put(t.objects, uk, tombstone.pack())
            t.put(t.inline, uk, tomb_inline)
            if stale:
                return True
            if old_meta is not None and old_meta.vid != meta.vid:
                self._retire(t, bucket, ok, old_meta, old_dirs, keep)
            t.put(t.objects, ok, meta.pack())
            t.put(t.inline, ok, table)
            if is_long(ok, len(bucket_prefix(bucket))):
                t.put(t.longkeys, ok, key.encode())
            return False

        stale = await self._write(apply)
        if old_dirs:
            await self._remove_retired(old_dirs)
        if stale:
            raise StaleVersion(f"{bucket}/{key}: a newer version is current")

    def _flush_trash(self, t: Txn) -> None:
        """Forgets trash entries whose directories are gone (no extra fsync: idempotent)."""
        done, self._trash_done = self._trash_done, []
        for vid in done:
            t.txn.delete(vid, db=t.trash)

    async def _remove_retired(self, dirs: list[Path]) -> None:
        with contextlib.suppress(DriveError):
            await self._io(lambda: [remove_tree(d) for d in dirs])
            self._trash_done.extend(d.name.encode() for d in dirs)

    async def read_meta(self, bucket: str, key: str) -> MetaRecord:
        raw, inline = self._read(lambda: self.index.get_object(object_key(bucket, key)))
        if raw is None:
            if self.bucket_created(bucket) is None:
                raise VolumeNotFound(bucket)
            if self.healing_since is not None:
                raise NotYetHealed(f"{bucket}/{key} (drive not healed yet)")
            raise FileNotFound(f"{bucket}/{key}")
        return MetaRecord(ObjectMeta.unpack(raw), inline)

    async def delete(
        self,
        bucket: str,
        key: str,
        *,
        vid: str | None = None,
        tombstone: ObjectMeta | None = None,
    ) -> None:
        ok = object_key(bucket, key)
        old_dirs: list[Path] = []

        def apply(t: Txn) -> None:
            self._flush_trash(t)
            old = t.get(t.objects, ok)
            if old is None:
                if t.get(t.buckets, volume_bucket(bucket).encode()) is None:
                    raise VolumeNotFound(bucket)
                if tombstone is None:
                    raise FileNotFound(f"{bucket}/{key}")
                t.put(t.objects, ok, tombstone.pack())
                if is_long(ok, len(bucket_prefix(bucket))):
                    t.put(t.longkeys, ok, key.encode())
                return
            old_meta = ObjectMeta.unpack(old)
            if tombstone is not None:
                if old_meta.vid == tombstone.vid:
                    return  # this delete, retried
                if old_meta.order > tombstone.order:
                    raise StaleVersion(f"{bucket}/{key}: a version newer than the delete")
            elif vid is not None and old_meta.vid != vid:
                raise FileNotFound(f"{bucket}/{key} version {vid}")
            self._retire(t, bucket, ok, old_meta, old_dirs)
            t.txn.delete(ok, db=t.inline)
            if tombstone is not None:
                t.put(t.objects, ok, tombstone.pack())  # its long-key row stays with it
                return
            t.delete(t.objects, ok)
            t.txn.delete(ok, db=t.longkeys)

        await self._write(apply)
        if old_dirs:
            await self._remove_retired(old_dirs)

    async def scan(
        self, bucket: str, prefix: str, start_after: str, limit: int, *, every: bool = False
    ) -> list[tuple[str, bytes]]:
        # On the loop, like read_meta: py-lmdb releases the GIL around every cursor step, and
        # in a worker thread each of those thousand steps waits behind the busy loop thread
        # for the GIL (a 1,000-key page took ~100 ms that way, ~1 ms here).
        rows = self._read(lambda: self.index.scan_objects(bucket, prefix, start_after, limit))
        if not rows and self.bucket_created(bucket) is None:
            raise VolumeNotFound(bucket)
        if self.healing_since is not None and not every and not bucket.endswith("+mp"):
            raise NotYetHealed(f"{bucket}: drive not healed yet, its listing proves nothing")
        return rows

    async def scan_digest(
        self, bucket: str, prefix: str, start_after: str, limit: int, *, every: bool = False
    ) -> ScanDigest:
        return scan_digest(await self.scan(bucket, prefix, start_after, limit, every=every))

    # -- per-key leases ----------------------------------------------------------------
    async def lock(self, resource: str, owner: str, ttl: float) -> bool:
        """See Drive.lock: in memory, on the loop, no disk I/O. An offline drive grants
        nothing (DriveOffline), like every other call: it must not vote in a majority."""
        self._guard()
        return self.leases.grant(resource, owner, ttl)

    async def unlock(self, resource: str, owner: str) -> None:
        self._guard()
        self.leases.release(resource, owner)

    def snapshot(self) -> DriveInfo:
        free, total = self.last_statvfs or (0, 0)
        return DriveInfo(self.drive_id, self.endpoint, self.online, total, free, self.errors)

    def background(self) -> LocalDrive:
        return self  # the transport paces background traffic; a local disk is not paced

    # -- start-up and shutdown ----------------------------------------------------------
    def reconcile_startup(self) -> None:
        """Synchronous, cheap part of start-up: staged writes and retired versions."""
        for entry in self._tmp.iterdir():
            remove_tree(entry)
        trash = self.index.items(self.index.trash)
        for vid, bucket in trash:
            remove_tree(self._version_dir(bucket.decode(), vid.decode()))
        if trash:
            with self.index.env.begin(write=True, db=self.index.trash) as txn:
                for vid, _ in trash:
                    txn.delete(vid)

    def remove_orphans(self, older_than: float) -> int:
        """Removes version directories no metadata references (a crash between installing
        a version and committing it). Skips versions in flight and anything newer than
        `older_than` (a write that started after start-up). Returns the number removed."""
        removed = 0
        buckets = self.index_buckets()
        known_buckets = set(buckets) | {mp_volume(b) for b in buckets}
        for bucket_dir in list(self._data.iterdir()):
            if bucket_dir.name not in known_buckets:
                if bucket_dir.stat().st_mtime < older_than:
                    remove_tree(bucket_dir)
                continue
            for fan in list(bucket_dir.iterdir()):
                for vdir in list(fan.iterdir()):
                    vid = vdir.name
                    if vid in self._inflight or vdir.stat().st_mtime >= older_than:
                        continue
                    if self.index.get(self.index.vids, vid.encode()) is None:
                        remove_tree(vdir)
                        removed += 1
        if removed:
            log.info("drive %s: removed %d orphan version directories", self.drive_id, removed)
        return removed

    def index_buckets(self) -> list[str]:
        return [k.decode() for k, _ in self.index.items(self.index.buckets)]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.index.close()
