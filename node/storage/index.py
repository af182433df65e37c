"""A drive's ordered metadata index in LMDB, with group commit.

Named databases in one environment (`<drive>/index.lmdb`):

    buckets   bucket -> msgpack creation stamp
    objects   bucket NUL key -> packed ObjectMeta        (sorted: listing is a range scan)
    inline    bucket NUL key -> framed shard of a small object
    vids      vid -> bucket NUL key                     (which key a data directory belongs to)
    trash     vid -> bucket                              (old data directories still to remove)
    longkeys  index key -> full key, for keys too long for an LMDB key (see object_key)

Writes are applied by one thread per drive. Every caller that arrives while a transaction
commits joins the next one, so N concurrent writes cost one fsync instead of N; each
write runs in a nested transaction so one failing write does not abort its neighbours.
Reads are lock-free LMDB snapshots and cheap enough (a memory-mapped B-tree lookup) to run
on the event loop; scans, which may touch many pages, run in the I/O pool.
"""

from __future__ import annotations

import asyncio
import hashlib
from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any

import lmdb

SEP = b"\x00"
MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as it fills

WriteFn = Callable[["Txn"], Any]


INDEX_KEY_LIMIT = 448  # LMDB keys are at most 511 bytes; S3 keys up to 1024
LONG_MARK = b"\xff\xff"  # never appears in UTF-8, so it cannot be part of a real key
_HASH_LEN = 16


def object_key(bucket: str, key: str) -> bytes:
    """The index key of an object; sorts like the S3 key.

    A key that does not fit becomes its first bytes, LONG_MARK and a hash of the whole key.
    Only keys longer than the cut can share that head, and every one of them is longer than
    any short key with the same head, so the order against short keys is exact; within one
    head the order is by hash, which `scan_objects` puts right (the full key is kept in
    the `longkeys` database).
    """
    head = bucket.encode() + SEP
    kb = key.encode()
    cut = INDEX_KEY_LIMIT - len(head)
    if len(kb) <= cut:
        return head + kb
    return head + kb[:cut] + LONG_MARK + hashlib.blake2b(kb, digest_size=_HASH_LEN).digest()


def is_long(index_key: bytes, head_len: int) -> bool:
    cut = INDEX_KEY_LIMIT - head_len
    return len(index_key) == head_len + cut + len(LONG_MARK) + _HASH_LEN and (
        index_key[head_len + cut : head_len + cut + len(LONG_MARK)] == LONG_MARK
    )


def bucket_prefix(bucket: str) -> bytes:
    return bucket.encode() + SEP


def _short_rows(
    cur: Any, scope: bytes, head_len: int, whole_len: int, sa: bytes, limit: int
) -> list[tuple[str, bytes]] | None:
    """The scan when every key in reach is stored whole (the usual case), in C-speed steps.

    The cursor stands on the first key >= scope + start-after. Takes limit + 1 rows (the
    first may be start-after itself), cuts them at the first key outside the scope by
    bisection, and returns None if a key among them may be a long key's head, for the
    general walk to handle."""
    rows = list(islice(cur.iternext(), limit + 1))
    rows = rows[: bisect_left(rows, _after_scope(scope), key=itemgetter(0))]
    if rows and max(map(len, map(itemgetter(0), rows))) > whole_len:
        return None
    if rows and rows[0][0][head_len:] == sa:
        del rows[0]
    return [(k[head_len:].decode(), v) for k, v in rows[:limit]]


def _after_scope(scope: bytes) -> bytes:
    """The smallest byte string greater than every string that starts with `scope`."""
    stripped = scope.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1])


class Txn:
    """A write transaction with the index's databases at hand."""

    def __init__(self, txn: lmdb.Transaction, index: DriveIndex) -> None:
        self.txn = txn
        self.buckets = index.buckets
        self.objects = index.objects
        self.inline = index.inline
        self.vids = index.vids
        self.trash = index.trash
        self.longkeys = index.longkeys

    def get(self, db: Any, key: bytes) -> bytes | None:
        return self.txn.get(key, db=db)

    def put(self, db: Any, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=db)

    def delete(self, db: Any, key: bytes) -> None:
        self.txn.delete(key, db=db)

    def has_prefix(self, db: Any, prefix: bytes) -> bool:
        with self.txn.cursor(db=db) as cur:
            return cur.set_range(prefix) and cur.key().startswith(prefix)

    def any_with_prefix(self, db: Any, prefix: bytes, pred: Callable[[bytes], bool]) -> bool:
        """Whether some value under `prefix` satisfies `pred` (stops at the first)."""
        with self.txn.cursor(db=db) as cur:
            found = cur.set_range(prefix)
            while found and cur.key().startswith(prefix):
                if pred(cur.value()):
                    return True
                found = cur.next()
        return False

    def rows_with_prefix(self, db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
        with self.txn.cursor(db=db) as cur:
            found = cur.set_range(prefix)
            rows = []
            while found and cur.key().startswith(prefix):
                rows.append((cur.key(), cur.value()))
                found = cur.next()
        return rows

    def delete_prefix(self, db: Any, prefix: bytes) -> list[bytes]:
        """Deletes every entry under prefix; returns the deleted values."""
        values = []
        with self.txn.cursor(db=db) as cur:
            found = cur.set_range(prefix)
            while found and cur.key().startswith(prefix):
                values.append(cur.value())
                found = cur.delete()
        return values


class DriveIndex:
    def __init__(self, path: Path, *, map_size: int = MAP_SIZE) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=8,
            max_readers=1024,
            readahead=False,
            sync=True,
            metasync=True,
        )
        # one write transaction for all of them: on a new drive each open_db would otherwise
        # commit (and sync) on its own
        with self.env.begin(write=True) as txn:
            self.buckets = self.env.open_db(b"buckets", txn=txn)
            self.objects = self.env.open_db(b"objects", txn=txn)
            self.inline = self.env.open_db(b"inline", txn=txn)
            self.vids = self.env.open_db(b"vids", txn=txn)
            self.trash = self.env.open_db(b"trash", txn=txn)
            self.longkeys = self.env.open_db(b"longkeys", txn=txn)
        self._writer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"lmdb-{path.parent.name}"
        )
        self._pending: list[tuple[WriteFn, asyncio.Future[Any]]] = []
        self._running: asyncio.Task[None] | None = None

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.env.close()

    # -- reads (any thread) ---------------------------------------------------------
    def get(self, db: Any, key: bytes) -> bytes | None:
        with self.env.begin(db=db) as txn:
            return txn.get(key)

    def get_object(self, key: bytes) -> tuple[bytes | None, bytes | None]:
        with self.env.begin() as txn:
            return txn.get(key, db=self.objects), txn.get(key, db=self.inline)

    def scan_objects(
        self, bucket: str, prefix: str, start_after: str, limit: int
    ) -> list[tuple[str, bytes]]:
        """Up to `limit` (key, packed meta), key > start_after, key.startswith(prefix), in key
        order. Long keys sharing a head are read as a group and sorted by their full key."""
        head = bucket.encode() + SEP
        cut = INDEX_KEY_LIMIT - len(head)
        pb, sa = prefix.encode(), start_after.encode()
        scope = head + pb[:cut]
        out: list[tuple[bytes, bytes]] = []
        last_group: bytes | None = None
        hl = len(head)
        with self.env.begin() as txn, txn.cursor(db=self.objects) as cur:
            first = head + max(pb, sa)[:cut]
            if not cur.set_range(first):
                return []
            if len(pb) < cut and len(sa) < cut:
                rows = _short_rows(cur, scope, hl, hl + cut, sa, limit)
                if rows is not None:
                    return rows
                cur.set_range(first)  # a long key among them: the general walk
            for k, value in cur.iternext():
                if not k.startswith(scope):
                    break
                long = len(k) > hl + cut and is_long(k, hl)
                if len(out) >= limit and (not long or k[: hl + cut] != last_group):
                    break
                full = txn.get(k, db=self.longkeys) if long else k[hl:]
                if full is not None and full > sa and full.startswith(pb):
                    out.append((full, value))
                    last_group = k[: hl + cut] if long else None
        out.sort(key=lambda row: row[0])
        return [(full.decode(), value) for full, value in out[:limit]]

    def items(self, db: Any) -> list[tuple[bytes, bytes]]:
        with self.env.begin(db=db) as txn:
            return list(txn.cursor())

    # -- writes (group commit) --------------------------------------------------------
    async def write(self, fn: WriteFn) -> Any:
        """Runs fn(txn) in the next group transaction; returns its result once durable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((fn, fut))
        if self._running is None:
            self._running = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    outcomes = await loop.run_in_executor(self._writer, self._apply, batch)
                except BaseException as exc:  # the commit itself failed: nobody is durable
                    outcomes = [(False, exc)] * len(batch)
                for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        finally:
            self._running = None

    def _apply(self, batch: list[tuple[WriteFn, Any]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self.env.begin(write=True) as parent:
            for fn, _ in batch:
                child = self.env.begin(write=True, parent=parent)
                try:
                    value = fn(Txn(child, self))
                except Exception as exc:
                    child.abort()
                    outcomes.append((False, exc))
                else:
                    child.commit()
                    outcomes.append((True, value))
        return outcomes
