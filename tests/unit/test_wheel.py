"""The built wheel installs one import name, `shardfleet`: a user's own `node` or `cluster`
module never collides with ours, and the console script still is `shardfleet`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("erasure", "transport", "cluster", "healing", "node")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    src = out / "src"
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("shardfleet-*.whl")
    return built


def test_only_top_level_name_is_shardfleet(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = zf.read(entry_points).decode()
        top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert tops == {"shardfleet"}
    assert "shardfleet = shardfleet.node.main:main" in scripts
    if top_level:  # setuptools writes it for some layouts only
        with zipfile.ZipFile(wheel) as zf:
            assert zf.read(top_level[0]).decode().split() == ["shardfleet"]
    # every folder of the repository is there, each under shardfleet/
    for folder in FOLDERS:
        assert f"shardfleet/{folder}/__init__.py" in names
    assert "shardfleet/node/s3/router.py" in names
    assert "shardfleet/node/storage/local_drive.py" in names
    # the public test fixture and its pytest plugin, under their own name only
    assert "shardfleet/testing/__init__.py" in names
    assert "shardfleet/testing/plugin.py" in names
    assert not any(n.startswith("shardfleet/node/testing/") for n in names)
    assert "[pytest11]" in scripts and "shardfleet = shardfleet.testing.plugin" in scripts
    assert not any(n.startswith("tests/") for n in names)


def test_installed_wheel_imports_under_shardfleet_only(wheel: Path, tmp_path: Path) -> None:
    """Installed alone into a directory and imported from elsewhere (no editable finder, no
    source tree on the path), a node's modules load and nothing top-level of ours appears;
    a user's own `cluster` module next to it stays theirs."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "cluster.py").write_text("MINE = True\n")
    code = f"""
import sys
sys.path[:0] = [{str(tmp_path / "user")!r}, {str(target)!r}]
sys.path.append({sysconfig.get_paths()["purelib"]!r})  # dependencies, without .pth files
import shardfleet.node.app, shardfleet.node.main
ours = sorted({{m.split(".")[0] for m in sys.modules}} & {set(FOLDERS)!r})
import cluster
print(shardfleet.node.app.__file__.startswith({str(target)!r}), ours, cluster.MINE)
"""
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "[]", "True"]
