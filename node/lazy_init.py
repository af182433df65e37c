"""Two libraries imported without their package __init__ until the node serves.

A node needs a few submodules of aiohttp and prometheus_client to start, and their package
__init__ files import far more:

- aiohttp's imports the whole HTTP client (client, connector, cookiejar, tracing,
  client_ws and what they need: ~20 modules, ~45 ms of a node's ~0.5 s start), and
  aiohttp.connector makes two default client SSL contexts at import, each loading the
  system CA bundle (~100 ms of OpenSSL). A node's server uses none of it: nodes talk to
  each other over QUIC.
- prometheus_client's imports its exposition servers (http.server, wsgiref) and registers
  the process, platform and GC collectors on its default registry, probing the platform
  (~15 ms); a node keeps its metrics in a registry of its own.

`import_parts()` registers the package module without running its __init__ (the
submodules import each other by relative import; the few package attributes one of them
reads, like aiohttp's ``__version__``, are read from the __init__ source) and imports the
submodules asked for. `complete()` then runs each __init__ in that same module object, in
a worker thread once the node serves, after which the package is exactly what a plain
import makes. Before that, asking a pending package for any other name completes it on the
spot (a module ``__getattr__``), so code that wants the rest gets it and only pays the
import where it asks. Any surprise (the package already imported, another layout, a
missing attribute line, a failing import) falls back to the plain import.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import threading
from types import ModuleType

# names the import system looks up on a package while importing its submodules
_PROBED = frozenset({"__path__", "__file__", "__spec__", "__loader__", "__package__"})

_INIT_HEAD = 64 * 1024  # how much of an __init__ `copy` looks through (its top lines)

_lock = threading.RLock()  # the thread running an __init__ may ask again (see _running)
_pending: dict[str, ModuleType] = {}  # package name -> module whose __init__ has not run
_running: set[str] = set()  # __init__s being run, by the thread holding _lock
_quiet: set[str] = set()  # packages import_parts() is importing: a missing name is a submodule


def import_parts(package: str, *modules: str, copy: tuple[str, ...] = ()) -> list[ModuleType]:
    """Imports `modules` (full names, inside `package`) with the package's __init__ left
    pending. `copy`: package attributes the submodules read, assigned in the __init__ as
    string literals."""
    if package in sys.modules:
        return [importlib.import_module(name) for name in modules]
    spec = importlib.util.find_spec(package)
    values = _assignments(spec.origin, copy) if spec is not None and spec.origin else None
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        values = None
    if values is None:
        return [importlib.import_module(name) for name in modules]
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(values)
    module.__getattr__ = _completing_getattr(package, module)  # type: ignore[method-assign]
    with _lock:
        sys.modules[package] = module
        _pending[package] = module
        _quiet.add(package)
    try:
        return [importlib.import_module(name) for name in modules]
    except Exception:
        with _lock:
            _pending.pop(package, None)
            for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
                del sys.modules[name]
        return [importlib.import_module(name) for name in modules]
    finally:
        _quiet.discard(package)


def pending() -> bool:
    """Some package's __init__ has yet to run."""
    return bool(_pending)


def complete(package: str | None = None) -> None:
    """Runs the pending __init__ of `package` (default: of every pending package), once;
    then it is the real package."""
    with _lock:
        for name in [package] if package is not None else list(_pending):
            module = _pending.get(name)
            if module is None or name in _running:
                continue
            _running.add(name)
            try:
                assert module.__spec__ is not None and module.__spec__.loader is not None
                module.__spec__.loader.exec_module(module)
            finally:
                _running.discard(name)
                del _pending[name]
                if getattr(module.__dict__.get("__getattr__"), "completes", False):
                    del module.__getattr__  # the __init__ had none of its own to replace ours


def _completing_getattr(package: str, module: ModuleType) -> object:
    def __getattr__(name: str) -> object:
        """The pending package's: any name it lacks completes it, then is looked up."""
        if name in _PROBED or package in _quiet:
            raise AttributeError(name)  # the import system probing, or import_parts importing
        with _lock:  # another thread running the __init__: this waits for it
            if package in _running:  # this thread runs it: a submodule not imported yet
                raise AttributeError(name)
            complete(package)
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    __getattr__.completes = True  # type: ignore[attr-defined]
    return __getattr__


def _assignments(init_path: str, names: tuple[str, ...]) -> dict[str, str] | None:
    """``NAME = "literal"`` lines of the __init__ for each of `names`; None if one lacks."""
    try:
        with open(init_path, encoding="utf-8") as source:
            text = source.read(_INIT_HEAD)
    except OSError:
        return None
    values = {}
    for name in names:
        match = re.search(rf"""^{re.escape(name)}\s*=\s*["']([^"'\n]*)["']""", text, re.M)
        if match is None:
            return None
        values[name] = match[1]
    return values
