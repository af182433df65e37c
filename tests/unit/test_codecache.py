"""shardfleet.node.codecache: dataclasses and ForwardRefs built through the cache are the same as
without it, a second start compiles nothing, and the file is written only when it should."""

from __future__ import annotations

import dataclasses
import marshal
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from shardfleet.node.codecache import CodeCache

REPO = Path(__file__).resolve().parents[2]


def _make() -> tuple[type, typing.ForwardRef]:
    @dataclasses.dataclass(frozen=True, order=True)
    class Point:
        x: int
        y: int = 2
        tags: list[str] = dataclasses.field(default_factory=list)

    return Point, typing.ForwardRef("dict[str, int] | None")


def _through(cache: CodeCache) -> tuple[type, typing.ForwardRef]:
    cache.install()
    try:
        return _make()
    finally:
        cache.uninstall()


def test_classes_built_through_the_cache_behave_the_same(tmp_path: Path) -> None:
    plain_cls, plain_ref = _make()
    first = CodeCache(tmp_path / "cache")
    cached_cls, cached_ref = _through(first)
    assert first.save(asked=True)
    second = CodeCache(tmp_path / "cache")
    again_cls, again_ref = _through(second)
    for cls in (cached_cls, again_cls):
        a, b = cls(1), cls(1, 3, ["t"])
        assert repr(a) == repr(plain_cls(1)).replace(plain_cls.__qualname__, cls.__qualname__)
        assert a == cls(1) and a < b and a != b
        with pytest.raises(dataclasses.FrozenInstanceError):
            a.x = 5  # type: ignore[misc]
        assert a.tags == [] and a.tags is not cls(1).tags
        # the generated methods' annotations are evaluated as without the cache (the
        # cache's module has `from __future__ import annotations`: it must not leak in)
        assert cls.__init__.__annotations__ == plain_cls.__init__.__annotations__
    assert cached_ref == plain_ref == again_ref
    assert eval(again_ref.__forward_code__, {}) == dict[str, int] | None
    # the second build compiled nothing: everything it used came from the file
    assert second.used and second.used.keys() <= second.known.keys()
    assert not second.save(asked=True)


def test_uninstall_leaves_the_builtins() -> None:
    cache = CodeCache(Path("/nonexistent/cache"))
    cache.install()
    assert "exec" in vars(dataclasses) and "compile" in vars(typing)
    cache.uninstall()
    assert "exec" not in vars(dataclasses) and "compile" not in vars(typing)


def test_unreadable_or_older_file_is_ignored_and_other_compiles_pass_through(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cache"
    path.write_bytes(b"not marshal data")
    assert CodeCache(path).known == {}
    path.write_bytes(marshal.dumps({("exec", "x = 1"): compile("x = 2", "<string>", "exec")}))
    assert CodeCache(path).known == {}  # the first format: a bare dict
    cache = CodeCache(path)
    cache.install()
    try:
        code = typing.compile("1 + 1", "file.py", "eval")  # type: ignore[attr-defined]
    finally:
        cache.uninstall()
    assert eval(code) == 2 and code.co_filename == "file.py" and not cache.used


def test_save_respects_dont_write_bytecode_and_read_only_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CodeCache(tmp_path / "cache")
    _through(cache)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert not cache.save() and not (tmp_path / "cache").exists()
    blocked = CodeCache(tmp_path / "file" / "cache")
    (tmp_path / "file").write_text("a file where the directory should be")
    _through(blocked)
    assert not blocked.save(asked=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no temp file left


def test_serve_uses_the_cache_and_leaves_it_out_afterwards(tmp_path: Path) -> None:
    """A serve process's imports go through the cache, which is gone once they are done."""
    code = """
import dataclasses, typing, sys
from pathlib import Path
from shardfleet.node import codecache
cache = codecache.CodeCache(Path(sys.argv[1]))
cache.install()
codecache.import_server_libraries()
import shardfleet.node.app
cache.uninstall()
print(len(cache.used) > 100, "exec" in vars(dataclasses), cache.save(asked=True))
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "c")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == ["True", "False", "True"]
