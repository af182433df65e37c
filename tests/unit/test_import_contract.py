"""The layering contract of pyproject.toml's [tool.importlinter] holds (node -> healing ->
cluster -> transport | erasure; aioquic only from transport), so a plain pytest run
catches a new violation as `make lint` and `make test` do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def _lint_imports(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} missing: pip install -e '.[test]' (import-linter)")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_contracts_are_kept() -> None:
    out = _lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken." in out.stdout


def test_a_new_violation_breaks_the_contract(tmp_path) -> None:
    """On a copy of the tree with three forbidden imports added, each one is reported."""
    # laid out as installed: shardfleet/<folder>, a namespace package; on PYTHONPATH the copy
    # is found before the editable install's finder of the real tree
    assert all(p.startswith("shardfleet.") for p in CONFIG["root_packages"])
    for package in ("erasure", "transport", "cluster", "healing", "node"):
        shutil.copytree(
            REPO / package,
            tmp_path / "shardfleet" / package,
            ignore=shutil.ignore_patterns("*.pyc"),
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    added = {
        "shardfleet/cluster/quorum.py": "import shardfleet.node.config",
        "shardfleet/transport/errors.py": "import shardfleet.erasure.params",
        "shardfleet/healing/worker.py": "import aioquic",
    }
    for path, line in added.items():
        with (tmp_path / path).open("a") as f:
            f.write(f"\n{line}  # added by the test\n")
    out = _lint_imports(tmp_path, "--no-cache")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "0 kept, 2 broken" in out.stdout
    assert "- shardfleet.cluster.quorum -> shardfleet.node.config" in out.stdout
    assert "- shardfleet.transport.errors -> shardfleet.erasure.params" in out.stdout
    assert "shardfleet.healing.worker -> aioquic" in out.stdout
