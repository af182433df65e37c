"""Keep glibc's malloc from handing big buffers back to the kernel between requests.

A node allocates and frees blocks of 64 KB to a few MiB all the time (QUIC packets,
shard blocks, read batches). With glibc's defaults every free that leaves more than
128 KiB at the top of the heap is trimmed back to the kernel, and blocks above the
(dynamic) mmap threshold get their own mapping, so the next allocation of the same size
page-faults all of it in again: measured ~11 minor faults per 64 KB datagram sent, about
a seventh of the sending CPU on this VM. Raising both thresholds keeps that memory in
the process for reuse. It is bounded (the trim threshold caps what stays free at the top
of each heap) and the per-node RSS targets are measured with it on (`make bench`).
"""

from __future__ import annotations

import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

TRIM_THRESHOLD = 8 << 20  # free bytes kept at the top of a heap before trimming
MMAP_THRESHOLD = 4 << 20  # allocations below this come from a heap, not their own mmap
ARENA_MAX = 2  # heaps the threads share; glibc's default is up to 8 per core


def _mallopt():  # noqa: ANN202 - a ctypes function, or None off glibc
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols, libc among them
    except (OSError, AttributeError):  # musl and others have no mallopt
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def limit_arenas() -> bool:
    """Before the node starts its threads: at most ARENA_MAX malloc heaps.

    glibc gives each thread that allocates its own heap (arena), up to 8 per core; the
    node has an I/O pool of 32 threads and a CPU pool whose zfec output the loop thread
    frees, and every arena keeps up to TRIM_THRESHOLD free at its top and fragments on its
    own. Measured on the multipart bench cell (4 uploads of 16 MiB parts in flight): the
    node's peak RSS crept up with every upload; with two arenas it stays flat. Must run
    before the threads exist (an arena, once made, stays)."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, ARENA_MAX))


def tune_allocator() -> bool:
    """Set the thresholds on glibc; False (and nothing done) on any other libc."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
