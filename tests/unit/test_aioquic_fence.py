"""`import shardfleet.transport` refuses an aioquic outside the range its patches were tested against.

The start-up tests run Python in a subprocess with a stand-in `aioquic` package first on
PYTHONPATH, whose __init__ is what an installed release's is (one `__version__` line) and
nothing else: an import that reached any of aioquic's modules before the check would fail
with ModuleNotFoundError instead of the message asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import types
from importlib import metadata
from pathlib import Path

import pytest

from shardfleet.transport import _aioquic_fence
from shardfleet.transport._aioquic_fence import UnsupportedAioquic

REPO = Path(__file__).resolve().parents[2]
INSTALL = "pip install 'aioquic>=1.7.2,<1.8'"
INSTALLED = metadata.version("aioquic")

REPORT = """
import sys
try:
    import shardfleet.transport
except Exception as exc:
    loaded = sorted(m for m in sys.modules if m.startswith(("aioquic", "shardfleet.transport")))
    print(type(exc).__qualname__, loaded, sep="\\n")
    print(exc)
else:
    print("imported", shardfleet.transport._aioquic_fence.AIOQUIC_VERSION)
"""


def _python(
    args: list[str], fake_version: str | None, tmp_path: Path
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if fake_version is not None:
        fake = tmp_path / "site" / "aioquic"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text(f'__version__ = "{fake_version}"\n')
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake.parent), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("version", ["1.8.0", "2.0.0", "1.7.1", "1.0.0"])
def test_start_up_refuses_a_version_outside_the_range(version, tmp_path) -> None:
    out = _python(["-c", REPORT], version, tmp_path)
    assert out.returncode == 0, out.stderr
    kind, loaded, message = out.stdout.strip().split("\n")
    assert kind == "UnsupportedAioquic"
    # refused before any module that imports aioquic's internals, and the failed import
    # leaves nothing of transport behind (the next `import shardfleet.transport` checks again)
    assert loaded == str(["aioquic"])
    assert message == (
        f"aioquic {version} is installed, but shardfleet's transport supports aioquic "
        ">=1.7.2,<1.8 only (it patches aioquic internals written and tested against that "
        f"range). Install a supported release: {INSTALL}"
    )


@pytest.mark.parametrize("version", ["1.8.0", "1.7.1"])
def test_plain_import_fails_with_the_message_as_the_last_line(version, tmp_path) -> None:
    out = _python(["-c", "import shardfleet.transport.endpoint"], version, tmp_path)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"shardfleet.transport._aioquic_fence.UnsupportedAioquic: aioquic {version} "
    )
    assert last.endswith(INSTALL)


def test_the_installed_aioquic_imports(tmp_path) -> None:
    out = _python(["-c", REPORT], None, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"imported {INSTALLED}"
    assert out.stderr == ""


def test_missing_aioquic_is_refused_with_the_install_line(tmp_path) -> None:
    code = "import sys; sys.modules['aioquic'] = None\n" + REPORT
    out = _python(["-c", code], None, tmp_path)
    kind, _, message = out.stdout.strip().split("\n")
    assert kind == "UnsupportedAioquic"
    assert message.startswith("aioquic is not installed, but ") and message.endswith(INSTALL)


def test_cli_stops_with_the_message(tmp_path) -> None:
    certs = tmp_path / "certs"
    out = _python(
        ["-m", "shardfleet.node.main", "certs", "init", "--dir", str(certs)], "1.8.0", tmp_path
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].endswith(INSTALL)
    assert not certs.exists()


def test_cli_prints_no_traceback(tmp_path) -> None:
    out = _python(
        ["-m", "shardfleet.node.main", "certs", "init", "--dir", str(tmp_path)], "1.8.0", tmp_path
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().endswith(INSTALL)


# -- the check itself, in-process -----------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("1.7.2", True),
        ("1.7.3", True),
        ("1.7.10", True),
        ("1.7.2.post1", True),
        ("1.7.3rc1", True),
        ("1.7.2+local", True),
        ("1.7.2rc1", False),  # before 1.7.2
        ("1.7.2.dev0", False),
        ("1.7.1", False),
        ("1.7", False),
        ("1.0.0", False),
        ("0.9.25", False),
        ("1.8.0rc1", False),  # `<1.8` excludes 1.8's pre-releases, as pip does
        ("1.8", False),
        ("1.8.0", False),
        ("2.0.0", False),
        ("unknown", False),
        ("", False),
    ],
)
def test_is_supported(version, ok) -> None:
    assert _aioquic_fence.is_supported(version) is ok


def test_check_reads_the_installed_version(monkeypatch) -> None:
    assert _aioquic_fence.check() == INSTALLED
    monkeypatch.setattr(_aioquic_fence, "installed_version", lambda: "1.8.1")
    with pytest.raises(UnsupportedAioquic) as info:
        _aioquic_fence.check()
    assert info.value.installed == "1.8.1"
    assert info.value.requirement == "aioquic>=1.7.2,<1.8"
    assert isinstance(info.value, RuntimeError)


def test_an_aioquic_without_version_attribute_falls_back_to_its_metadata(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "aioquic", types.ModuleType("aioquic"))
    assert _aioquic_fence.installed_version() == INSTALLED  # the distribution's


def test_range_agrees_with_pyproject() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (line,) = [d for d in deps if d.split(">")[0].split("<")[0].split("=")[0] == "aioquic"]
    assert line == _aioquic_fence.REQUIREMENT
    low, high = _aioquic_fence.SUPPORTED
    assert line == f"aioquic>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
