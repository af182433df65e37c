"""Configuration errors name the field that is wrong."""

import subprocess
import sys
from pathlib import Path

import pytest

from shardfleet.node.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,field",
    [
        ('drives = ["/a", "/b", "/c", "/d"]\nec = "2-2"', "ec"),
        ('drives = ["/a", "/b", "/c", "/d"]\naddress = "nowhere"', "address"),
        ('drives = ["/a", "/b", "/c", "/d"]\nstripe_size = 10', "stripe_size"),
        ('drives = ["/a", "/b", "/c", "/d"]\nwrite_quorum = 2', "write_quorum"),
        ('drives = ["/a", "/b", "/c"]', "drives"),
        ('drives = ["/a", "/b", "/c", "/d"]\nlog_level = "loud"', "log_level"),
        ('drives = ["/a", "/b", "/c", "/d"]\nbogus = 1', "bogus"),
        ('drives = ["/a", "/b", "/c", "/d"]\naddress = "0.0.0.0:9000"', "access_key"),
    ],
)
def test_bad_config_names_its_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text), {}, env={})
    assert field in str(err.value)


def test_environment_and_flags_override_the_file(tmp_path):
    path = write(tmp_path, 'drives = ["/a", "/b", "/c", "/d"]\naddress = "0.0.0.0:9000"')
    cfg = load(
        path,
        {"ec": "3+1"},
        env={"SHARDFLEET_ACCESS_KEY": "ak-123", "SHARDFLEET_SECRET_KEY": "sk-12345678"},
    )
    assert cfg.credentials == ("ak-123", "sk-12345678") and cfg.ec == "3+1"


def test_config_check_command(tmp_path):
    bad = write(tmp_path, 'drives = ["/a"]\nec = "2+2"\n')
    out = subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 2 and "drives" in out.stderr
    good = ROOT / "deploy" / "configs" / "cluster-6node.toml"
    env = {
        "SHARDFLEET_ACCESS_KEY": "admin-key",
        "SHARDFLEET_SECRET_KEY": "admin-secret-key",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", "config", "check", str(good)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ok") == 6
