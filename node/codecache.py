"""Start-up: the code that dataclasses and typing compile from generated source, cached.

Every ``@dataclass`` compiles the source of the methods it writes (``__init__``,
``__repr__``, ``__eq__``, and ``__setattr__``/``__delattr__`` when frozen) with exec(), and
every ``typing.ForwardRef`` compiles its string. A node's imports make ~500 such
functions and annotations (ours, pydantic's, annotated_types') from the same source text
every time: 30-40 ms of compile() in a ~0.5 s start. Like Python's own __pycache__, `CodeCache` keeps the
compiled code objects in a marshal file (in this package's __pycache__, one per Python
version) keyed by their source text, so a start only compiles what it has not seen.

`install()` puts the cache in front of the exec() of dataclasses and the compile() of
typing (module globals shadowing the builtins, so nothing else in the process is touched)
and `uninstall()` takes it out again, once the imports are done. `save()` writes the file
when this start compiled something new (atomically; not under ``PYTHONDONTWRITEBYTECODE``,
and a read-only install simply keeps compiling). ``python -m shardfleet.node.codecache`` fills it
the way compileall fills __pycache__ (`make venv` runs both). The code objects are what
compile() returns for that text: a stale or foreign entry can only go unused, and an
unreadable file is ignored.

What a serve process imports before it runs (`serve_imports()`: pydantic without its
plugin scan, aiohttp.web and prometheus_client's metrics with their package __init__ left
pending, then node.app) is kept here too: warm() replays it, node.main's serve runs its
steps. It used to live in node.main, which imports this module to serve; warm()
importing node.main back was an import loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import marshal
import os
import sys
import typing
from pathlib import Path
from typing import Any

_FILE = Path(__file__).parent / "__pycache__" / f"codecache.{sys.implementation.cache_tag}.marshal"
_FORMAT = 2  # raised whenever entries are made differently: an older file is then ignored
_Key = tuple[str, str]  # (mode, source)


class CodeCache:
    def __init__(self, path: Path = _FILE) -> None:
        self.path = path
        self.known: dict[_Key, Any] = {}
        self.used: dict[_Key, Any] = {}
        self.installed = False
        try:
            loaded = marshal.loads(path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            loaded = None
        if isinstance(loaded, tuple) and len(loaded) == 2 and loaded[0] == _FORMAT:
            if isinstance(loaded[1], dict):
                self.known = loaded[1]

    def compile(self, source: str, mode: str) -> Any:
        key = (mode, source)
        code = self.known.get(key)
        if code is None:  # as dataclasses and typing compile it, without our __future__ flags
            code = compile(source, "<string>", mode, dont_inherit=True)
        self.used[key] = code
        return code

    def install(self) -> None:
        """dataclasses' exec() and typing's compile() of generated source go through here."""

        def exec_(source: Any, globals_: Any = None, locals_: Any = None) -> None:
            if isinstance(source, str):
                source = self.compile(source, "exec")
            exec(source, globals_, locals_)

        def compile_(source: Any, filename: str, mode: str, *args: Any, **kwargs: Any) -> Any:
            if isinstance(source, str) and filename == "<string>" and not args and not kwargs:
                return self.compile(source, mode)
            return compile(source, filename, mode, *args, **kwargs)

        dataclasses.exec = exec_  # type: ignore[attr-defined]
        typing.compile = compile_  # type: ignore[attr-defined]
        self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            del dataclasses.exec  # type: ignore[attr-defined]
            del typing.compile  # type: ignore[attr-defined]
            self.installed = False

    def save(self, *, asked: bool = False) -> bool:
        """Writes what this start used, if it compiled anything new; True if written.
        `asked`: written even under PYTHONDONTWRITEBYTECODE (as compileall writes .pyc)."""
        if (sys.dont_write_bytecode and not asked) or not self.used:
            return False
        if self.used.keys() <= self.known.keys():
            return False
        temp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(exist_ok=True)
            temp.write_bytes(marshal.dumps((_FORMAT, self.used)))
            os.replace(temp, self.path)
        except OSError:  # a read-only install: it keeps compiling, as without the cache
            with contextlib.suppress(OSError):
                temp.unlink()
            return False
        self.known = dict(self.used)
        return True

    def close(self) -> None:
        """Drops the entries: the code a process needs lives on in its classes."""
        self.uninstall()
        self.known, self.used = {}, {}


# -- what serve imports before it runs ------------------------------------------------------
def import_server_libraries() -> None:
    """Imports aiohttp.web, prometheus_client's metrics and pydantic, the biggest imports
    of a node. The package __init__ files of aiohttp (its HTTP client, and the CA bundle
    loads of the client's default SSL contexts) and prometheus_client (its exposition
    servers and default collectors) run once the node serves: see node.lazy_init. Measured
    against plain imports with only those CA loads deferred: ~45 ms sooner."""
    from shardfleet.node import lazy_init

    lazy_init.import_parts("aiohttp", "aiohttp.web", copy=("__version__",))
    lazy_init.import_parts(
        "prometheus_client",
        "prometheus_client.metrics",
        "prometheus_client.metrics_core",
        "prometheus_client.registry",
    )
    importlib.import_module("pydantic.main")


def no_pydantic_plugins() -> None:
    # A node uses no pydantic plugins; without this, pydantic's first model reads the entry
    # points of every installed distribution to look for some (~5 ms here). The variable is
    # pydantic's own switch; an operator who wants plugins sets it (empty enables them all).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    _no_plugin_loader()


def serve_imports() -> None:
    """Every import serve makes before it runs, in its order, for the tools that warm or
    time them (warm() below, the start-up benchmark)."""
    no_pydantic_plugins()
    import_server_libraries()
    import shardfleet.node.app  # noqa: F401
    import shardfleet.node.config  # noqa: F401


_PLUGIN_LOADER = "pydantic.plugin._loader"


def _no_plugin_loader() -> None:
    """With plugins disabled, pydantic's plugin loader only ever answers "no plugins", yet
    importing it imports importlib.metadata (~9 ms of start-up) for the entry-point scan it
    then skips. So, only while PYDANTIC_DISABLE_PLUGINS=__all__, a stand-in gives that
    answer; any other name asked of it loads the real module (tests/unit check both)."""
    if os.environ.get("PYDANTIC_DISABLE_PLUGINS") != "__all__" or _PLUGIN_LOADER in sys.modules:
        return
    import types

    stand_in = types.ModuleType(_PLUGIN_LOADER)

    def get_plugins() -> tuple[()]:
        return ()

    def real(name: str) -> object:
        if name.startswith("__"):  # the import system asks for __path__ and the like
            raise AttributeError(name)
        sys.modules.pop(_PLUGIN_LOADER, None)
        return getattr(importlib.import_module(_PLUGIN_LOADER), name)

    stand_in.get_plugins = get_plugins  # type: ignore[attr-defined]
    stand_in.__getattr__ = real  # type: ignore[method-assign]
    sys.modules[_PLUGIN_LOADER] = stand_in


def warm() -> bool:
    """Runs a node's start-up imports through a cache and writes it."""
    cache = CodeCache()
    cache.install()
    try:
        serve_imports()
    finally:
        cache.uninstall()
    return cache.save(asked=True)


if __name__ == "__main__":
    warm()
