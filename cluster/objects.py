"""ObjectLayer: the one object the S3 handlers call.

Buckets live on every drive of every set; objects on the drives of the set their key
hashes to. Today a layer has one pool; pools added later keep their sets, and a key is
looked up in each (adding capacity never moves data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence

from shardfleet.cluster.drive import (
    DriveError,
    FileNotFound,
    StaleVersion,
    VolumeExists,
    VolumeNotFound,
)
from shardfleet.cluster.erasure_set import ErasureSet
from shardfleet.cluster.errors import (
    BucketExists,
    BucketNotEmpty,
    ClusterPartitioned,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    ReadQuorumLost,
)
from shardfleet.cluster.get import Chunk, Getter, ReadHandle
from shardfleet.cluster.hlc import HybridClock
from shardfleet.cluster.keylock import hold
from shardfleet.cluster.listing import PAST, ListPage, list_objects
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.cluster.multipart import (
    Choose,
    Completed,
    UploadPage,
    Uploads,
    upload_pool,
)
from shardfleet.cluster.placement import set_index
from shardfleet.cluster.put import Body, Condition, PutRequest, Putter
from shardfleet.cluster.quorum import fan_out, reach_quorum

log = logging.getLogger(__name__)

Hook = Callable[..., None]  # (bucket, key, vid, positions[, place=...]): see cluster/put.py


def _log_hook(what: str) -> Hook:
    def hook(bucket: str, key: str, vid: str, positions: list[int], **place: object) -> None:
        log.warning("%s: %s/%s version %s, drive positions %s", what, bucket, key, vid, positions)

    return hook


class ObjectLayer:
    def __init__(
        self,
        sets: Sequence[ErasureSet],
        *,
        clock: HybridClock | None = None,
        on_partial: Hook | None = None,
        on_degraded: Hook | None = None,
        write_gate: Callable[[], bool] | None = None,
        pool_usable: Callable[[int], bool] | None = None,
    ) -> None:
        if not sets:
            raise ValueError("an object layer needs at least one erasure set")
        self.sets = list(sets)
        self.cluster_id = sets[0].cluster_id
        self.clock = clock or HybridClock()
        self._on_partial = on_partial or _log_hook("write missed drives")
        self._on_degraded = on_degraded or _log_hook("degraded read")
        self._write_gate = write_gate
        self.pool_free: dict[int, int] = {}  # free bytes per pool, refreshed by the node
        self._usable = pool_usable or (lambda pool: True)
        self._bucket_in_pool: set[tuple[int, str]] = set()

    def _check_writable(self) -> None:
        """A node cut off from the cluster's majority must not accept writes it cannot make
        durable where the rest of the cluster will look for them."""
        if self._write_gate is not None and not self._write_gate():
            raise ClusterPartitioned("this node cannot see a majority of the cluster")

    # -- placement ----------------------------------------------------------------------
    @property
    def active_sets(self) -> list[ErasureSet]:
        """Sets of the first pool and of every pool whose nodes have joined; a pool just
        announced holds nothing yet and is left out rather than failing every request."""
        first = self.sets[0].pool
        return [s for s in self.sets if s.pool == first or self._usable(s.pool)]

    @property
    def pools(self) -> dict[int, list[ErasureSet]]:
        pools: dict[int, list[ErasureSet]] = {}
        for eset in self.active_sets:
            pools.setdefault(eset.pool, []).append(eset)
        return pools

    async def _has_bucket(self, pool: int, bucket: str) -> bool:
        """Whether a pool's sets already carry the bucket (a new pool gets buckets from the
        catch-up worker; until then new objects go elsewhere)."""
        if pool == self.sets[0].pool or (pool, bucket) in self._bucket_in_pool:
            return True
        for eset in self.pools.get(pool, []):
            ok, _ = await fan_out(
                [(lambda d=d: d.bucket_exists(bucket)) for d in eset.drives],
                timeout=eset.timeouts.meta,
                need=eset.write_quorum,
                grace=eset.timeouts.meta_grace,
            )
            if sum(ok.values()) < eset.write_quorum:
                return False
        self._bucket_in_pool.add((pool, bucket))
        return True

    def add_sets(self, sets: Sequence[ErasureSet]) -> None:
        """A new pool joins: its sets take new objects; nothing already stored moves."""
        self.sets.extend(sets)

    def set_for(self, bucket: str, key: str, pool: int | None = None) -> ErasureSet:
        """The set of `key` within a pool (by default the first): hash mod the pool's set
        count, which is fixed when the pool is formed."""
        pools = self.pools
        sets = pools[pool if pool is not None else min(pools)]
        return sets[set_index(self.cluster_id, bucket, key, len(sets))]

    async def _pool_for_put(self, bucket: str, key: str) -> int:
        """Where a PUT goes: the pool that already holds the key (an overwrite stays in its
        pool), else the pool with the most free space."""
        pools = self.pools
        if len(pools) == 1:
            return next(iter(pools))
        try:
            found = await self._find_all(bucket, key)
            return max(found, key=lambda h: h.meta.order).eset.pool  # type: ignore[union-attr]
        except NoSuchKey:
            pass
        unmeasured = [p for p in pools if p not in self.pool_free]
        if unmeasured:
            choice = max(unmeasured)  # a pool just added: nothing measured yet, and empty
        else:
            most = max(self.pool_free[p] for p in pools)
            # pools within 5% of the most free space count as equal: the newest takes it
            # (it was added for capacity; pools sharing one file system report the same)
            choice = max(p for p in pools if self.pool_free[p] >= most * 0.95)
        return choice if await self._has_bucket(choice, bucket) else min(pools)

    async def _find_all(self, bucket: str, key: str) -> list[ReadHandle]:
        """The key's handle in every pool that has it (at least one); raises NoSuchKey when
        none has it, and any other error of any pool."""
        pools = sorted(self.pools)
        outcomes = await asyncio.gather(
            *(self._getter(bucket, key, p).open(bucket, key) for p in pools), return_exceptions=True
        )
        found = [o for o in outcomes if isinstance(o, ReadHandle)]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        hard = [o for o in failures if not isinstance(o, NoSuchKey | NoSuchBucket)]
        if hard:
            raise hard[0]  # a pool we cannot read may hold a newer version: never serve stale
        if found:
            return found
        if all(isinstance(o, NoSuchBucket) for o in failures):
            raise NoSuchBucket(bucket)
        raise NoSuchKey(key)

    @property
    def all_drives(self) -> list:
        return [d for s in self.sets for d in s.drives]

    # -- buckets ------------------------------------------------------------------------
    async def make_bucket(self, bucket: str) -> None:
        self._check_writable()
        created = self.clock.now()
        for eset in self.active_sets:
            ok, _ = await reach_quorum(
                [(lambda d=d: d.make_bucket(bucket, created)) for d in eset.drives],
                need=eset.write_quorum,
                timeout=eset.timeouts.meta,
                grace=eset.timeouts.meta_grace,
                what="make bucket",
                counts=(VolumeExists,),
            )
            if not ok:
                raise BucketExists(bucket)

    async def bucket_exists(self, bucket: str) -> bool:
        eset = self.sets[0]
        ok, errors = await fan_out(
            [(lambda d=d: d.bucket_exists(bucket)) for d in eset.drives],
            timeout=eset.timeouts.meta,
            need=eset.write_quorum,
            grace=eset.timeouts.meta_grace,
        )
        yes = sum(ok.values())
        if yes >= eset.read_quorum:
            return True
        if len(ok) - yes >= eset.read_quorum:
            return False
        raise ReadQuorumLost("bucket lookup", eset.read_quorum, len(ok), len(eset.drives), errors)

    async def require_bucket(self, bucket: str) -> None:
        if not await self.bucket_exists(bucket):
            raise NoSuchBucket(bucket)

    async def precheck_bucket(self, bucket: str) -> None:
        """Before a PUT reads its body: NoSuchBucket for a bucket that is not there.

        Only a fail-fast: the commit checks the bucket again on every drive, inside the
        index transaction, and that check decides. So a drive of this node that holds the
        bucket is enough here (no RPCs: a quorum lookup cost three per PUT); without one,
        the quorum decides as in `require_bucket`."""
        for drive in self.all_drives:
            if drive.is_local and drive.online:
                with contextlib.suppress(DriveError):
                    if await drive.bucket_exists(bucket):
                        return
        await self.require_bucket(bucket)

    async def list_buckets(self) -> dict[str, int]:
        eset = self.sets[0]
        ok, _ = await reach_quorum(
            [d.list_buckets for d in eset.drives],
            need=eset.read_quorum,
            timeout=eset.timeouts.meta,
            grace=eset.timeouts.meta_grace,
            what="list buckets",
            write=False,
        )
        seen: dict[str, list[int]] = {}
        for buckets in ok.values():
            for name, created in buckets.items():
                seen.setdefault(name, []).append(created)
        return {
            name: min(stamps)
            for name, stamps in sorted(seen.items())
            if len(stamps) >= eset.read_quorum
        }

    async def delete_bucket(self, bucket: str) -> None:
        self._check_writable()
        page = await self.list_objects(bucket, max_keys=1)
        if page.objects or page.prefixes:
            raise BucketNotEmpty(bucket)
        for i, eset in enumerate(self.active_sets):
            ok, errors = await reach_quorum(
                [(lambda d=d: d.delete_bucket(bucket, force=True)) for d in eset.drives],
                need=eset.write_quorum,
                timeout=eset.timeouts.meta,
                grace=eset.timeouts.meta_grace,
                what="delete bucket",
                counts=(VolumeNotFound,),
            )
            gone = sum(isinstance(e, VolumeNotFound) for e in errors.values())
            if i == 0 and not ok and gone >= eset.read_quorum:
                raise NoSuchBucket(bucket)

    # -- objects ------------------------------------------------------------------------
    async def put_object(self, req: PutRequest, body: Body) -> ObjectMeta:
        self._check_writable()
        pool = await self._pool_for_put(req.bucket, req.key)
        eset = self.set_for(req.bucket, req.key, pool)
        putter = Putter(
            eset, self.clock, self._on_partial, lock_set=self.lock_set(req.bucket, req.key)
        )
        return await putter.put(req, body)

    def lock_set(self, bucket: str, key: str) -> ErasureSet:
        """Where the key's lock lives: its set in the first pool, whichever pool holds it."""
        return self.set_for(bucket, key, self.sets[0].pool)

    async def open_object(self, bucket: str, key: str) -> ReadHandle:
        if len(self.pools) == 1:
            handle = await self._getter(bucket, key).open(bucket, key)
        else:
            handle = max(await self._find_all(bucket, key), key=lambda h: h.meta.order)
        self.clock.observe(handle.meta.mtime)
        return handle

    def read_object(self, handle: ReadHandle, start: int, end: int) -> AsyncGenerator[Chunk, None]:
        eset = handle.eset or self.set_for(handle.bucket, handle.key)
        return Getter(eset, self._on_degraded).stream(handle, start, end)

    def _getter(self, bucket: str, key: str, pool: int | None = None) -> Getter:
        return Getter(self.set_for(bucket, key, pool), self._on_degraded)

    async def delete_object(
        self, bucket: str, key: str, *, condition: Condition | None = None
    ) -> None:
        """Idempotent: deleting a missing key succeeds, as in S3. Removes the key from every
        pool (an older copy in another pool must not reappear).

        With a `condition`, it is checked against the current version under the key's lock
        and only that version is deleted (by version id), so a write that lands meanwhile
        is never the one removed."""
        self._check_writable()
        if condition is None:
            await self._delete_everywhere(bucket, key, None)
            return
        async with hold(self.lock_set(bucket, key), bucket, key):
            try:
                handle: ReadHandle | None = await self.open_object(bucket, key)
            except NoSuchKey:
                handle = None
            condition(handle.meta if handle is not None else None)
            if handle is not None:
                # a tombstone stamped just above the checked version deletes that version
                # and nothing written since (a newer write wins over it); older copies in
                # other pools go regardless
                pool = handle.eset.pool if handle.eset is not None else self.sets[0].pool
                await self._delete_everywhere(bucket, key, (pool, handle.meta.mtime + 1))

    async def _delete_everywhere(self, bucket: str, key: str, only: tuple[int, int] | None) -> None:
        first = self.sets[0].pool
        for pool in sorted(self.pools):
            stamp = only[1] if only is not None and only[0] == pool else None
            try:
                await self._delete_in(self.set_for(bucket, key, pool), bucket, key, stamp)
            except NoSuchBucket:
                if pool == first:
                    raise  # later pools may not have the bucket yet: nothing to delete there

    async def _delete_in(
        self, eset: ErasureSet, bucket: str, key: str, stamp: int | None = None
    ) -> None:
        """Leaves a tombstone (stamped now, or `stamp`) on every drive of the set, so a
        drive that missed the delete can never bring the old version back: the drives that
        missed it go to the MRF queue, which carries the tombstone to them, and the scanner
        collects it once every drive has it."""

        def no_bucket(errors: dict[int, BaseException]) -> None:
            if sum(isinstance(e, VolumeNotFound) for e in errors.values()) >= eset.read_quorum:
                raise NoSuchBucket(bucket)

        tomb = ObjectMeta.tombstone(uuid.uuid4().hex, stamp or self.clock.now())
        _, errors = await reach_quorum(
            [(lambda d=d: d.delete(bucket, key, tombstone=tomb)) for d in eset.drives],
            need=eset.write_quorum,
            timeout=eset.timeouts.meta,
            grace=eset.timeouts.meta_grace,
            what="delete",
            # no record there (nothing to shadow), or a newer write (it wins: last writer)
            counts=(FileNotFound, StaleVersion),
            on_short=no_bucket,
        )
        no_bucket(errors)  # a quorum of "no such key" on drives that lost the bucket
        missed = [
            i
            for i, e in errors.items()
            if not isinstance(e, FileNotFound | StaleVersion | VolumeNotFound)
        ]
        if missed:
            self._on_partial(bucket, key, tomb.vid, sorted(missed))

    async def delete_objects(
        self,
        bucket: str,
        keys: Sequence[str],
        *,
        conditions: Sequence[Condition | None] | None = None,
        parallel: int = 16,
    ) -> list[BaseException | None]:
        gate = asyncio.Semaphore(parallel)
        conds = conditions if conditions is not None else [None] * len(keys)

        async def one(key: str, condition: Condition | None) -> BaseException | None:
            async with gate:
                try:
                    await self.delete_object(bucket, key, condition=condition)
                except Exception as exc:  # reported per key in the DeleteResult
                    return exc
                return None

        return list(await asyncio.gather(*(one(k, c) for k, c in zip(keys, conds, strict=True))))

    async def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        start_after: str = "",
        max_keys: int = 1000,
    ) -> ListPage:
        outcomes = await asyncio.gather(
            *(
                list_objects(
                    eset,
                    bucket,
                    prefix=prefix,
                    delimiter=delimiter,
                    start_after=start_after,
                    max_keys=max_keys,
                )
                for eset in self.active_sets
            ),
            return_exceptions=True,
        )
        pages: list[ListPage] = []
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, NoSuchBucket) and i > 0:
                continue  # a newer pool without the bucket yet holds none of its objects
            if isinstance(outcome, BaseException):
                raise outcome
            pages.append(outcome)
        return pages[0] if len(pages) == 1 else merge_pages(pages, max_keys)

    # -- multipart uploads (cluster/multipart.py) --------------------------------------------
    def uploads_in(self, eset: ErasureSet) -> Uploads:
        """The multipart operations of one set (the upload sweeper walks set by set)."""
        return Uploads(eset, self.clock, self._on_partial)

    def _uploads(self, bucket: str, key: str, uid: str) -> Uploads:
        """The set of an upload: its key's, in the pool its id names (NoSuchUpload for an id
        of no active pool, or not shaped like one)."""
        pool = upload_pool(uid)
        if pool not in self.pools:
            raise NoSuchUpload(uid)
        return Uploads(self.set_for(bucket, key, pool), self.clock, self._on_partial)

    async def create_upload(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str,
        user: dict[str, str],
        headers: dict[str, str],
    ) -> str:
        self._check_writable()
        pool = await self._pool_for_put(bucket, key)
        uploads = Uploads(self.set_for(bucket, key, pool), self.clock, self._on_partial)
        return await uploads.create(
            bucket, key, pool=pool, content_type=content_type, user=user, headers=headers
        )

    async def upload_record(self, bucket: str, key: str, uid: str) -> ObjectMeta:
        return await self._uploads(bucket, key, uid).record(bucket, key, uid)

    async def upload_part(
        self,
        bucket: str,
        key: str,
        uid: str,
        number: int,
        body: Body,
        *,
        size: int,
        content_md5: bytes | None,
        headers: dict[str, str],
        opened: ObjectMeta | None = None,
    ) -> ObjectMeta:
        self._check_writable()
        return await self._uploads(bucket, key, uid).upload_part(
            bucket, key, uid, number, body, size=size, content_md5=content_md5,
            headers=headers, opened=opened,
        )  # fmt: skip

    async def list_parts(
        self, bucket: str, key: str, uid: str, *, after: int, limit: int
    ) -> tuple[ObjectMeta, list[tuple[int, ObjectMeta]], bool]:
        return await self._uploads(bucket, key, uid).list_parts(
            bucket, key, uid, after=after, limit=limit
        )

    async def complete_upload(self, bucket: str, key: str, uid: str, choose: Choose) -> Completed:
        self._check_writable()
        done = await self._uploads(bucket, key, uid).complete(bucket, key, uid, choose)
        self.clock.observe(done.meta.mtime)
        return done

    async def abort_upload(self, bucket: str, key: str, uid: str) -> None:
        self._check_writable()
        await self._uploads(bucket, key, uid).abort(bucket, key, uid)

    async def list_uploads(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        uid_marker: str = "",
        max_uploads: int = 1000,
    ) -> UploadPage:
        outcomes = await asyncio.gather(
            *(
                Uploads(eset, self.clock, self._on_partial).list_uploads(
                    bucket,
                    prefix=prefix,
                    delimiter=delimiter,
                    key_marker=key_marker,
                    uid_marker=uid_marker,
                    max_uploads=max_uploads,
                )  # fmt: skip
                for eset in self.active_sets
            ),
            return_exceptions=True,
        )
        pages: list[UploadPage] = []
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, NoSuchBucket) and i > 0:
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            pages.append(outcome)
        return merge_upload_pages(pages, max_uploads)


def merge_upload_pages(pages: Sequence[UploadPage], max_uploads: int) -> UploadPage:
    """Merges the pages of several sets listed from the same markers, in (key, uid) order
    with common prefixes among them, as S3 counts them."""
    if len(pages) == 1:
        return pages[0]
    items: dict[tuple[str, str], object] = {}
    for page in pages:
        items.update(((u.key, u.uid), u) for u in page.uploads)
        items.update(((cp, ""), None) for cp in page.prefixes)
    ordered = sorted(items)
    merged = UploadPage(truncated=len(ordered) > max_uploads or any(p.truncated for p in pages))
    for name, uid in ordered[:max_uploads]:
        entry = items[(name, uid)]
        if entry is None:
            merged.prefixes.append(name)
        else:
            merged.uploads.append(entry)  # type: ignore[arg-type]
        merged.next_key, merged.next_uid = name, uid
    return merged


def merge_pages(pages: Sequence[ListPage], max_keys: int) -> ListPage:
    """Merges the pages of several sets listed from the same marker."""
    items: dict[str, tuple[str, int, str, int] | None] = {}
    for page in pages:
        items.update((entry[0], entry) for entry in page.objects)
        items.update(dict.fromkeys(page.prefixes))
    ordered = sorted(items)
    merged = ListPage(truncated=len(ordered) > max_keys or any(p.truncated for p in pages))
    for name in ordered[:max_keys]:
        entry = items[name]
        if entry is None:
            merged.prefixes.append(name)
            merged.next_marker = name + PAST
        else:
            merged.objects.append(entry)
            merged.next_marker = name
    return merged
