"""CRC32C per shard block: the bitrot check verified on every read.

The hardware-accelerated `crc32c` package is used when present; `crcmod` (pure,
table-driven, ~30x slower) is the portable fallback and the test oracle.
"""

from __future__ import annotations

import functools
import os
import struct
import sys
from collections.abc import Callable
from types import ModuleType

from shardfleet.erasure.errors import BitrotError


@functools.cache
def _crcmod_fun() -> Callable[[bytes], int]:
    # built on first use: only the fallback and the tests need it (saves ~3 ms of start-up)
    import crcmod.predefined

    return crcmod.predefined.mkCrcFun("crc-32c")


def crc32c_crcmod(data: bytes | memoryview) -> int:
    return _crcmod_fun()(bytes(data))


def _extension_alone(package: str, name: str) -> ModuleType | None:
    """`package.name`, an extension module, loaded without running the package's
    __init__ (None when it is not where expected)."""
    from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
    from importlib.util import find_spec, module_from_spec, spec_from_loader

    spec = find_spec(package)  # locates the package; does not import it
    if spec is None or not spec.submodule_search_locations:
        return None
    full = f"{package}.{name}"
    for suffix in EXTENSION_SUFFIXES:
        path = os.path.join(spec.submodule_search_locations[0], name + suffix)
        if os.path.exists(path):
            loader = ExtensionFileLoader(full, path)
            module = module_from_spec(spec_from_loader(full, loader))  # type: ignore[arg-type]
            loader.exec_module(module)
            sys.modules[full] = module  # a later `import crc32c` reuses it
            return module
    return None


def _load_hw_crc32c() -> Callable[[bytes | memoryview], int] | None:
    """The `crc32c` package's C function, loaded straight from its extension module.

    The package's __init__ only re-exports it, but first reads its own version through
    importlib.metadata: ~13 ms of a node's ~0.5 s start. Any surprise in the package's
    layout falls back to the plain import."""
    try:
        module = sys.modules.get("crc32c._crc32c") or _extension_alone("crc32c", "_crc32c")
    except (ImportError, OSError):
        module = None
    if module is not None and hasattr(module, "crc32c"):
        return module.crc32c
    try:
        from crc32c import crc32c as plain
    except ImportError:
        return None
    return plain


#: The C function, crc32c(data, value=0) (incremental), or None without the package.
hardware_crc32c = _load_hw_crc32c()
if hardware_crc32c is not None:
    crc32c: Callable[[bytes | memoryview], int] = hardware_crc32c
else:  # pragma: no cover - depends on the platform's wheels
    crc32c = crc32c_crcmod

_HEADER = struct.Struct(">I")


def frame_header(block: bytes | memoryview) -> bytes:
    """The 4 bytes written in front of a shard block."""
    return _HEADER.pack(crc32c(block))


def verify_block(framed: bytes | memoryview, block_len: int) -> memoryview:
    """Checks one framed block and returns its payload; raises BitrotError."""
    view = memoryview(framed)
    if len(view) != block_len + 4:
        raise BitrotError(f"framed block is {len(view)} bytes, expected {block_len + 4}")
    (want,) = _HEADER.unpack_from(view)
    body = view[4:]
    if crc32c(body) != want:
        raise BitrotError("CRC32C mismatch")
    return body
