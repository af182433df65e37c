"""The CPU pool: zfec, MD5 and CRC32C run here, never on the event loop.

Sized to the cores: these libraries release the GIL, so more threads than cores only
add switching. File I/O has its own pool (node/storage) so a slow disk never starves
encoding.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None


def cpu_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="cpu")
    return _pool


async def run_cpu(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(cpu_pool(), fn, *args)
