"""aiohttp's import-time CA bundle loads, moved to after the node serves.

Importing aiohttp creates its two default client SSL contexts (aiohttp.connector does it at
import time, on purpose, so no event loop ever blocks on it), and each loads the system's
CA bundle: ~100 ms of a node's ~0.5 s start, for an HTTP client that a node's server never
uses (nodes talk over QUIC, with the cluster CA). `defer_ca_loading()` wraps that import
and records the contexts instead of loading their CA certificates; `load_deferred_ca()`
loads them later, in a worker thread, once the node serves. After that the contexts are
exactly what aiohttp made. In between, a client request through them would fail
certificate verification: closed, never open.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_pending: list[ssl.SSLContext] = []
_lock = threading.Lock()


@contextmanager
def defer_ca_loading() -> Iterator[None]:
    """Within: SSLContext.set_default_verify_paths (which load_default_certs and
    create_default_context call) records the context instead of loading the bundle."""
    original = ssl.SSLContext.set_default_verify_paths

    def record(self: ssl.SSLContext) -> None:
        with _lock:
            _pending.append(self)

    ssl.SSLContext.set_default_verify_paths = record  # type: ignore[method-assign]
    try:
        yield
    finally:
        ssl.SSLContext.set_default_verify_paths = original  # type: ignore[method-assign]


def pending() -> int:
    return len(_pending)


def load_deferred_ca() -> None:
    """Loads the default CA certificates into every context recorded so far."""
    with _lock:
        contexts = list(_pending)
        _pending.clear()
    for context in contexts:
        try:
            context.set_default_verify_paths()
        except (OSError, ssl.SSLError) as exc:  # as aiohttp's own import would have raised
            logging.getLogger(__name__).warning("default CA certificates: %s", exc)
