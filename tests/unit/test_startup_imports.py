"""`shardfleet serve` imports aiohttp with its CA bundle loads deferred (node.deferred_ca):
the contexts end up as aiohttp makes them, only later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.timeout(60)
def test_aiohttp_contexts_get_their_ca_certificates_later() -> None:
    code = """
import ssl
from node import deferred_ca
from node.main import _import_server_libraries
reference = ssl.create_default_context().cert_store_stats()["x509_ca"]
_import_server_libraries()
from aiohttp import connector
verified, unverified = connector._SSL_CONTEXT_VERIFIED, connector._SSL_CONTEXT_UNVERIFIED
before = (verified.cert_store_stats()["x509_ca"], deferred_ca.pending())
deferred_ca.load_deferred_ca()
after = (verified.cert_store_stats()["x509_ca"], deferred_ca.pending())
# the patch is gone: a context made now loads at once
now = ssl.create_default_context().cert_store_stats()["x509_ca"]
print(reference, before, after, now, verified.verify_mode == ssl.CERT_REQUIRED)
"""
    reference, *rest = _run(code).split(" ", 1)
    if int(reference) == 0:
        pytest.skip("this system has no default CA bundle")
    assert rest[0] == f"(0, 2) ({reference}, 0) {reference} True"


def test_serve_imports_nothing_heavy_before_it_starts() -> None:
    """node.main itself stays light: pydantic and aiohttp come in through serve."""
    code = "import sys, node.main; print(sorted(m for m in ('pydantic', 'aiohttp') if m in sys.modules))"
    assert _run(code) == "[]"


def test_pydantic_plugin_loader_stand_in() -> None:
    """serve's stand-in for pydantic's plugin loader: models build and validate, and a node
    imports all it serves with, without importlib.metadata (nor the crc32c package's
    __init__, which uses it); any other name of the loader brings the real module back."""
    code = """
import os, sys
os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
from node.main import _no_plugin_loader, _import_server_libraries
_no_plugin_loader()
_import_server_libraries()
from node.config import NodeConfig
cfg = NodeConfig.model_validate({"drives": ["/tmp/a", "/tmp/b"], "ec": "1+1"})
import node.app  # everything a node imports to serve
before = "importlib.metadata" in sys.modules or "crc32c" in sys.modules
from pydantic.plugin import _loader
group = _loader.PYDANTIC_ENTRY_POINT_GROUP
print(cfg.ec, before, group, "importlib.metadata" in sys.modules)
"""
    assert _run(code) == "1+1 False pydantic True"
