"""CRC32C per shard block: the bitrot check verified on every read.

The hardware-accelerated `crc32c` package is used when present; `crcmod` (pure,
table-driven, ~30x slower) is the portable fallback and the test oracle.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

from erasure.errors import BitrotError


@functools.cache
def _crcmod_fun() -> Callable[[bytes], int]:
    # built on first use: only the fallback and the tests need it (saves ~3 ms of start-up)
    import crcmod.predefined

    return crcmod.predefined.mkCrcFun("crc-32c")


def crc32c_crcmod(data: bytes | memoryview) -> int:
    return _crcmod_fun()(bytes(data))


def _load_hw_crc32c() -> Callable[[bytes | memoryview], int] | None:
    """The `crc32c` package's C function, loaded straight from its extension module.

    The package's __init__ only re-exports it, but first reads its own version through
    importlib.metadata: ~13 ms of a node's ~0.5 s start. The extension does not need the
    package, so it is loaded from the package's folder without running the __init__;
    any surprise in that layout falls back to the plain import."""
    import sys

    module = sys.modules.get("crc32c._crc32c")
    if module is None:
        try:
            from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
            from importlib.util import find_spec, module_from_spec, spec_from_loader

            package = find_spec("crc32c")  # locates the package; does not import it
            folder = (package.submodule_search_locations or [None])[0] if package else None
            if folder is None:
                return None
            for suffix in EXTENSION_SUFFIXES:
                path = f"{folder}/_crc32c{suffix}"
                try:
                    loader = ExtensionFileLoader("crc32c._crc32c", path)
                    spec = spec_from_loader("crc32c._crc32c", loader)
                    assert spec is not None
                    module = module_from_spec(spec)
                    break
                except ImportError:
                    continue
            if module is None:
                return None
            loader.exec_module(module)
            sys.modules["crc32c._crc32c"] = module  # `import crc32c` later reuses it
        except (ImportError, AssertionError, OSError):
            try:
                from crc32c import crc32c as plain
            except ImportError:
                return None
            return plain
    return getattr(module, "crc32c", None)


_hw_crc32c = _load_hw_crc32c()
if _hw_crc32c is not None:
    crc32c: Callable[[bytes | memoryview], int] = _hw_crc32c
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
