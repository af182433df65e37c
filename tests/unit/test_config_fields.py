"""Every configuration field is in README's configuration reference; the metrics token and
rate-limit fields validate as documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shardfleet.node.config import ClusterConfig, ConfigError, NodeConfig, load

README = Path(__file__).resolve().parents[2] / "README.md"
TOKEN = "0123456789abcdef-token"


def _reference() -> str:
    text = README.read_text()
    start = text.index("## 3. Configuration reference")
    return text[start : text.index("\n## 4.", start)]


@pytest.mark.parametrize(
    ("model", "name"),
    [(NodeConfig, n) for n in NodeConfig.model_fields]
    + [(ClusterConfig, n) for n in ClusterConfig.model_fields],
)
def test_every_field_is_documented(model, name) -> None:
    reference = _reference()
    row = re.search(rf"^\| `{re.escape(name)}` \|", reference, re.M)
    section = re.search(rf"`\[\[?(\w+\.)?{re.escape(name)}\]\]?`", reference)  # [cluster.tls]
    assert row or section, f"{model.__name__}.{name} is not in README's configuration reference"


def _load(tmp_path: Path, text: str = "", env: dict[str, str] | None = None) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return load(path, {"drives": [tmp_path / f"d{i}" for i in range(4)]}, env=env or {})


def test_defaults_are_off(tmp_path) -> None:
    cfg = _load(tmp_path)
    assert cfg.metrics_bearer is None
    assert (cfg.rate_limit_rps, cfg.rate_limit_burst, cfg.rate_limit_uploads) == (0, 0, 0)
    assert cfg.rate_limit_hold == 0.5


def test_metrics_token_sources(tmp_path) -> None:
    assert _load(tmp_path, f'metrics_token = "{TOKEN}"').metrics_bearer == TOKEN
    secret = tmp_path / "token"
    secret.write_text(f"  {TOKEN}x\n")
    cfg = _load(tmp_path, f'metrics_token_file = "{secret}"')
    assert cfg.metrics_bearer == TOKEN + "x"
    assert cfg.model_copy(update={"region": "x"}).metrics_bearer == TOKEN + "x"
    env = {"SHARDFLEET_METRICS_TOKEN": TOKEN + "env"}  # the environment wins over the file
    assert _load(tmp_path, f'metrics_token_file = "{secret}"', env).metrics_bearer == TOKEN + "env"
    assert _load(tmp_path, f'metrics_token = "{TOKEN}"', env).metrics_bearer == TOKEN + "env"


@pytest.mark.parametrize(
    "text",
    [
        'metrics_token = "short"',
        'metrics_token = "has a space in it, this token"',
        'metrics_token_file = "/nonexistent/metrics.token"',
        'metrics_token = "0123456789abcdef-token"\nmetrics_token_file = "/etc/hostname"',
        "rate_limit_rps = -1",
        "rate_limit_uploads = -1",
        "rate_limit_burst = 1.5",
        "rate_limit_hold = -1",
        "rate_limit_hold = 11",
    ],
)
def test_bad_values_name_their_field(tmp_path, text) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    field = text.split(" ", 1)[0]
    assert field in str(info.value)


def test_a_token_file_that_is_not_a_token(tmp_path) -> None:
    secret = tmp_path / "token"
    secret.write_text("two words\n")
    with pytest.raises(ConfigError, match="metrics_token_file"):
        _load(tmp_path, f'metrics_token_file = "{secret}"')
