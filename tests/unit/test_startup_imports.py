"""`shardfleet serve` imports aiohttp.web and prometheus_client's metrics with their package
__init__ files left for after start-up (node.lazy_init): the packages end up as a plain
import makes them."""

from __future__ import annotations

import json
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


PLAIN = """
import json, aiohttp, aiohttp.web, prometheus_client
print(json.dumps([aiohttp.__version__, sorted(vars(aiohttp)), sorted(vars(prometheus_client))]))
"""


@pytest.mark.timeout(60)
def test_serve_imports_no_client_and_no_exposition_until_complete() -> None:
    code = """
import json, ssl, sys
from shardfleet.node.codecache import import_server_libraries
from shardfleet.node import lazy_init
import_server_libraries()
import shardfleet.node.app  # everything a node imports to serve
import aiohttp, prometheus_client
rest = ("aiohttp.client", "aiohttp.connector", "aiohttp.cookiejar", "aiohttp.tracing",
        "prometheus_client.exposition", "prometheus_client.platform_collector")
before = [lazy_init.pending(), [m for m in rest if m in sys.modules]]
metrics = shardfleet.node.app.Metrics().render()  # a scrape before completion works
lazy_init.complete()
from aiohttp import connector
print(json.dumps({
    "before": before,
    "after": [lazy_init.pending(), [m for m in rest if m in sys.modules]],
    "version": aiohttp.__version__,
    "aiohttp": sorted(vars(aiohttp)),
    "prometheus": sorted(vars(prometheus_client)),
    "session": aiohttp.ClientSession.__module__,
    "scrape": b"shardfleet_" in metrics,
    "ca": connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "reference_ca": ssl.create_default_context().cert_store_stats()["x509_ca"],
}))
"""
    lazy = json.loads(_run(code))
    version, aiohttp_names, prometheus_names = json.loads(_run(PLAIN))
    assert lazy["before"] == [True, []]
    assert lazy["after"][0] is False and len(lazy["after"][1]) == 6
    assert lazy["version"] == version
    assert set(aiohttp_names) <= set(lazy["aiohttp"])  # every name of the real packages
    assert set(prometheus_names) <= set(lazy["prometheus"])
    assert lazy["session"] == "aiohttp.client"
    assert lazy["scrape"]
    assert lazy["ca"] == lazy["reference_ca"]  # the client's contexts load the CA bundle


def test_a_name_asked_of_a_pending_package_completes_it() -> None:
    code = """
import sys, threading
from shardfleet.node import lazy_init
lazy_init.import_parts("aiohttp", "aiohttp.web", copy=("__version__",))
import aiohttp
pending = lazy_init.pending()
from aiohttp import ClientTimeout  # completes it here
worker = threading.Thread(target=lazy_init.complete)  # a second completion is a no-op
worker.start(); worker.join()
print(pending, lazy_init.pending(), ClientTimeout.__name__, aiohttp.ClientSession.__name__)
"""
    assert _run(code) == "True False ClientTimeout ClientSession"


def test_complete_racing_a_lookup_in_another_thread() -> None:
    code = """
import threading
from shardfleet.node import lazy_init
lazy_init.import_parts("aiohttp", "aiohttp.web", copy=("__version__",))
import aiohttp
worker = threading.Thread(target=lazy_init.complete)
worker.start()
session = aiohttp.ClientSession  # waits for the worker's __init__, or runs it itself
worker.join()
print(session is aiohttp.client.ClientSession, lazy_init.pending())
"""
    assert _run(code) == "True False"


def test_plain_import_when_already_imported_or_an_attribute_is_missing() -> None:
    code = """
import aiohttp
from shardfleet.node import lazy_init
web, = lazy_init.import_parts("aiohttp", "aiohttp.web", copy=("__version__",))
metrics, = lazy_init.import_parts("prometheus_client", "prometheus_client.metrics",
                                  copy=("__no_such_line__",))
import prometheus_client
print(lazy_init.pending(), web.__name__, metrics.__name__, hasattr(prometheus_client, "REGISTRY"))
"""
    assert _run(code) == "False aiohttp.web prometheus_client.metrics True"


def test_serve_imports_nothing_heavy_before_it_starts() -> None:
    """shardfleet.node.main itself stays light: pydantic and aiohttp come in through serve."""
    code = "import sys, shardfleet.node.main; print(sorted(m for m in ('pydantic', 'aiohttp') if m in sys.modules))"
    assert _run(code) == "[]"


def test_pydantic_plugin_loader_stand_in() -> None:
    """serve's stand-in for pydantic's plugin loader: models build and validate, and a node
    imports all it serves with, without importlib.metadata (nor the crc32c package's
    __init__, which uses it); any other name of the loader brings the real module back."""
    code = """
import os, sys
os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
from shardfleet.node.codecache import _no_plugin_loader, import_server_libraries
_no_plugin_loader()
import_server_libraries()
from shardfleet.node.config import NodeConfig
cfg = NodeConfig.model_validate({"drives": ["/tmp/a", "/tmp/b"], "ec": "1+1"})
import shardfleet.node.app  # everything a node imports to serve
before = "importlib.metadata" in sys.modules or "crc32c" in sys.modules
from pydantic.plugin import _loader
group = _loader.PYDANTIC_ENTRY_POINT_GROUP
print(cfg.ec, before, group, "importlib.metadata" in sys.modules)
"""
    assert _run(code) == "1+1 False pydantic True"
