"""Reading byte ranges of shard files, with O_DIRECT where the file system allows it.

Shard files are written with O_DIRECT (`shardfile`), so they are not in the page cache
when a GET reads them, and a buffered read would put them there: the kernel allocates a
page-cache page for every 4 KiB read and copies it out again. Measured on these machines,
a first buffered read of a 64 MiB shard costs ~80 ms of CPU (most of it taking fresh
pages), an O_DIRECT read into memory the process already uses ~10 ms, and a page-cache
hit ~6 ms. A large shard read is part of streaming an object once, so caching it rarely
pays and it pushes the drive index and small files out of the cache: reads of at least
DIRECT_MIN bytes go direct; smaller ones, and every read on a file system that refuses
O_DIRECT (tmpfs), go through the page cache.

O_DIRECT wants the file offset, the length and the memory aligned: the aligned range
around the request is read into a fresh bytearray (from the heap, so its pages are warm)
at an aligned address inside it, and a read-only view of the requested bytes is returned.
"""

from __future__ import annotations

import errno
import os

ALIGN = 4096  # covers 512-byte and 4 KiB logical blocks
DIRECT_MIN = 64 << 10


def _aligned_view(size: int) -> memoryview:
    """A writable view of `size` bytes starting at an ALIGN-aligned address."""
    import ctypes  # here: only large reads need it, never start-up

    buf = bytearray(size + ALIGN)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    start = -address % ALIGN
    return memoryview(buf)[start : start + size]


def _read_direct(fd: int, offset: int, length: int) -> memoryview:
    start = offset - offset % ALIGN
    end = -(-(offset + length) // ALIGN) * ALIGN
    view = _aligned_view(end - start)
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], start + got)
        if n == 0:  # end of file (the last block of a shard is not a whole page)
            break
        got += n
        if got % ALIGN:  # a short read ends at the end of the file
            break
    lo = offset - start
    return view[lo : max(lo, min(got, lo + length))].toreadonly()


class RangeReader:
    """Blocking reads of shard file ranges; shared by one drive's I/O threads."""

    def __init__(self) -> None:
        self.direct = hasattr(os, "O_DIRECT")

    def read(self, path: os.PathLike[str] | str, offset: int, length: int) -> bytes | memoryview:
        """Up to `length` bytes at `offset` (fewer at the end of the file)."""
        if self.direct and length >= DIRECT_MIN:
            data = self._read_direct(path, offset, length)
            if data is not None:
                return data
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def _read_direct(
        self, path: os.PathLike[str] | str, offset: int, length: int
    ) -> memoryview | None:
        """The range read with O_DIRECT; None (and direct reads off) where it is refused."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.direct = False  # this file system refuses O_DIRECT
            return None
        try:
            return _read_direct(fd, offset, length)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.direct = False  # alignment this device does not accept
            return None
        finally:
            os.close(fd)
