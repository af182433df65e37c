"""`shardfleet serve` imports aiohttp in a thread while the main thread imports pydantic
(node/main.py, _import_server_libraries): the two must not share a module that neither
imported beforehand, or both threads could import it at the same time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _modules_added_by(target: str) -> set[str]:
    code = f"""
import importlib, json, sys
import node.main
for name in node.main._SHARED_IMPORTS:
    importlib.import_module(name)
before = set(sys.modules)
importlib.import_module({target!r})
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.timeout(60)
def test_aiohttp_and_pydantic_imports_are_disjoint() -> None:
    aiohttp = _modules_added_by("aiohttp.web")
    pydantic = _modules_added_by("pydantic.main")
    assert "aiohttp.connector" in aiohttp and "pydantic._internal._generate_schema" in pydantic
    shared = aiohttp & pydantic
    assert not shared, f"add to node.main._SHARED_IMPORTS: {sorted(shared)}"


def test_serve_imports_nothing_heavy_before_it_starts() -> None:
    """node.main itself stays light: pydantic and aiohttp come in through serve."""
    code = "import sys, node.main; print(sorted(m for m in ('pydantic', 'aiohttp') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
