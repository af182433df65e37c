"""The pytest plugin `pip install shardfleet` registers (entry point `pytest11`): a real
shardfleet for your tests, with no conftest code.

Fixtures:

    shardfleet_server     session scope: the running server (`shardfleet.testing.S3Server`:
                          endpoint(s), credentials, `client()`, `reset()`), started on
                          first use and stopped at the end of the session
    shardfleet_s3         function scope: a boto3 client to it, on a clean slate (every
                          bucket and upload of earlier tests removed before the test)
    shardfleet_s3_session session scope: a boto3 client, nothing cleaned between tests

Options (command line, or the same names in the ini file with dashes as underscores):

    --shardfleet-nodes N  a dev cluster of N node processes instead of one node
    --shardfleet-keep     no clean slate for shardfleet_s3 (tests share what they store)

Importing this module costs nothing: shardfleet starts only when a test asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shardfleet", "a real shardfleet S3 endpoint (shardfleet.testing)")
    group.addoption(
        "--shardfleet-nodes",
        type=int,
        default=None,
        help="serve the shardfleet fixtures from a dev cluster of N node processes",
    )
    group.addoption(
        "--shardfleet-keep",
        action="store_true",
        default=None,
        help="do not empty shardfleet between tests using shardfleet_s3",
    )
    parser.addini("shardfleet_nodes", "dev cluster size for the shardfleet fixtures (0: one node)")
    parser.addini("shardfleet_keep", "do not empty shardfleet between tests", type="bool")


def _option(config: pytest.Config, name: str, default: Any) -> Any:
    value = config.getoption(f"--shardfleet-{name}")
    if value is None:
        value = config.getini(f"shardfleet_{name}") or default
    return value


@pytest.fixture(scope="session")
def shardfleet_server(pytestconfig: pytest.Config) -> Iterator[Any]:
    from . import serve  # relative: this folder installs as shardfleet.testing

    nodes = int(_option(pytestconfig, "nodes", 0) or 0)
    with serve(nodes=nodes) as server:
        yield server


@pytest.fixture(scope="session")
def shardfleet_s3_session(shardfleet_server: Any) -> Any:
    return shardfleet_server.client()


@pytest.fixture
def shardfleet_s3(shardfleet_server: Any, shardfleet_s3_session: Any, pytestconfig: Any) -> Any:
    if not _option(pytestconfig, "keep", False):
        shardfleet_server.reset(client=shardfleet_s3_session)
    return shardfleet_s3_session
