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
and a read-only install simply keeps compiling). ``python -m node.codecache`` fills it
the way compileall fills __pycache__ (`make venv` runs both). The code objects are what
compile() returns for that text: a stale or foreign entry can only go unused, and an
unreadable file is ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
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


def warm() -> bool:
    """Runs a node's start-up imports through a cache and writes it."""
    from node import main

    cache = CodeCache()
    cache.install()
    try:
        main.serve_imports()
    finally:
        cache.uninstall()
    return cache.save(asked=True)


if __name__ == "__main__":
    warm()
