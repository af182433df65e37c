"""Fault injection on real drives: find, corrupt and remove shard files (Tahoe's GridTestMixin)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import lmdb


def version_dirs(drive: Path, bucket: str) -> list[Path]:
    base = drive / "data" / bucket
    return sorted(p for fan in base.iterdir() for p in fan.iterdir()) if base.exists() else []


def shard_files(drive: Path, bucket: str) -> list[Path]:
    return [p / "part.1" for p in version_dirs(drive, bucket) if (p / "part.1").exists()]


def flip_bytes(path: Path, offsets: list[int]) -> None:
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            byte = f.read(1)
            f.seek(off)
            f.write(bytes([byte[0] ^ 0xFF]))


def remove_drive(drive: Path) -> None:
    shutil.rmtree(drive)


def staged_files(drive: Path) -> list[Path]:
    """Files and directories under the drive's tmp/ (a node removing some as we walk is
    retried: the walk itself must not fail on a directory that just went)."""
    tmp = drive / "tmp"
    for _ in range(50):
        try:
            return list(tmp.rglob("*")) if tmp.exists() else []
        except FileNotFoundError:
            continue
    return list(tmp.rglob("*"))


@contextlib.contextmanager
def index_writes_held(drive: Path) -> Iterator[None]:
    """Holds the drive index's LMDB write lock from this (the test's) process.

    LMDB's writer mutex is shared between processes, so a node's metadata commit on this
    drive waits here with its version directory already installed in data/: the test can
    kill the node at exactly that moment instead of racing a window of milliseconds."""
    env = lmdb.open(str(drive / "index.lmdb"), max_dbs=8, readahead=False)
    try:
        txn = env.begin(write=True)
        try:
            yield
        finally:
            txn.abort()
    finally:
        env.close()


def upload_completed_on(drive: Path, bucket: str) -> bool:
    """Whether the drive's index holds a completed upload's tombstone in the bucket's
    "+mp" volume (read from the test process, without the node's help)."""
    env = lmdb.open(str(drive / "index.lmdb"), max_dbs=8, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            objects = env.open_db(b"objects", txn=txn, create=False)
            prefix = f"{bucket}+mp".encode() + b"\x00u"
            with txn.cursor(db=objects) as cur:
                found = cur.set_range(prefix)
                while found and cur.key().startswith(prefix):
                    if b"completed" in cur.value():
                        return True
                    found = cur.next()
        return False
    finally:
        env.close()
