"""/metrics behind an optional bearer token (metrics_token, $SHARDFLEET_METRICS_TOKEN or
metrics_token_file), on real node processes; open when none is set."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request

import pytest

from tests.support.raw_http import RawClient

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cr3t-metrics-token-0123456789"


def scrape(endpoint: str, authorization: str | None = None, method: str = "GET"):
    req = urllib.request.Request(endpoint + "/metrics", method=method)
    if authorization is not None:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def test_open_by_default(node) -> None:
    status, _, body = scrape(node.endpoint)
    assert status == 200 and b"shardfleet_s3_requests" in body
    status, _, body = scrape(node.endpoint, "Bearer whatever-a-scraper-sends")
    assert status == 200 and b"shardfleet_s3_requests" in body


def test_token_from_the_environment(node_factory) -> None:
    node = node_factory(env={"SHARDFLEET_METRICS_TOKEN": TOKEN})
    for auth in (None, "Bearer wrong-token-of-some-length", "Bearer ", f"Bearer {TOKEN}x"):
        status, headers, body = scrape(node.endpoint, auth)
        assert status == 401, auth
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert b"shardfleet_" not in body
    for auth in (f"Basic {TOKEN}", TOKEN):  # not a bearer token: an S3 request, refused
        status, _, body = scrape(node.endpoint, auth)
        assert 400 <= status < 500 and b"<Error>" in body, auth
    status, _, _ = scrape(node.endpoint, method="HEAD")
    assert status == 401
    for auth in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} "):
        status, _, body = scrape(node.endpoint, auth)
        assert status == 200, auth
        assert b"shardfleet_s3_requests" in body
    # the rest stays as it was: health open, a signed request for /metrics is S3's
    with urllib.request.urlopen(node.endpoint + "/health/ready", timeout=10) as resp:
        assert resp.status == 200
    reply = RawClient(node.endpoint).request("GET", "/metrics")
    assert reply.status == 404 and b"<Code>NoSuchBucket</Code>" in reply.body


def test_token_from_a_file(node_factory, tmp_path) -> None:
    secret = tmp_path / "metrics.token"
    secret.write_text(TOKEN + "\n")
    conf = tmp_path / "node.toml"
    conf.write_text(f'metrics_token_file = "{secret}"\n')
    node = node_factory(args=["--config", str(conf)])
    assert scrape(node.endpoint)[0] == 401
    assert scrape(node.endpoint, f"Bearer {TOKEN}")[0] == 200
    # rotated without a restart: the file's new token on SIGHUP, the old one refused
    rotated = TOKEN + "-rotated"
    secret.write_text(rotated + "\n")
    os.kill(node.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while scrape(node.endpoint, f"Bearer {rotated}")[0] != 200:
        assert time.monotonic() < deadline, "the rotated token was not taken on SIGHUP"
        time.sleep(0.1)
    assert scrape(node.endpoint, f"Bearer {TOKEN}")[0] == 401
