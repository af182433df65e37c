"""A real browser uploads through a CORS preflight: headless Chromium (Debian's `chromium`,
which `make test` installs when missing) loads a page from one origin and PUTs to presigned
URLs of a node on another. A PUT is never a "simple" request, so Chromium sends its OPTIONS
preflight first and sends the PUT only if the node's answer allows it.

- a bucket whose rules allow the page's origin: the upload lands byte for byte, and the
  page can read the ETag because the rule exposes it;
- a bucket whose rules allow another origin only: Chromium refuses the fetch (a TypeError
  in the page) and nothing is stored.

The node's metrics show the preflights it answered, 200 and 403.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.exceptions import ClientError

from tests.support.nodeproc import NodeProcess

pytestmark = pytest.mark.timeout(180)

BODY = "uploaded by headless chromium \u2713"

PAGE = """<!doctype html><meta charset="utf-8"><title>upload</title><script>
async function upload(name, url) {
  let result;
  try {
    const resp = await fetch(url, {method: "PUT", body: %(body)s,
                                   headers: {"Content-Type": "application/octet-stream"}});
    result = {name, ok: resp.ok, status: resp.status, etag: resp.headers.get("ETag")};
  } catch (err) {
    result = {name, ok: false, error: String(err)};
  }
  await fetch("/result", {method: "POST", body: JSON.stringify(result)});
}
(async () => {
  await upload("allowed", %(allowed)s);
  await upload("refused", %(refused)s);
})();
</script>"""


class _PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, page: str) -> None:
        super().__init__(("127.0.0.1", 0), _PageHandler)
        self.page = page.encode()
        self.results: list[dict] = []
        self.arrived = threading.Condition()


class _PageHandler(BaseHTTPRequestHandler):
    server: _PageServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.server.page)))
        self.end_headers()
        self.wfile.write(self.server.page)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        result = json.loads(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()
        with self.server.arrived:
            self.server.results.append(result)
            self.server.arrived.notify_all()

    def log_message(self, *args: object) -> None:
        pass


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is missing: `make clients` installs Debian's package"
    return path


def _preflights(endpoint: str) -> dict[str, float]:
    with urllib.request.urlopen(endpoint + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.findall(
        r'^shardfleet_s3_requests_total\{op="PreflightRequest",status="(\d+)"\} (\S+)$', text, re.M
    )
    return {status: float(n) for status, n in found}


def test_presigned_put_from_a_browser_page(node_factory, tmp_path):
    node: NodeProcess = node_factory("browser")
    s3 = node.client(signature_version="s3v4", retries={"max_attempts": 1})
    page_server = _PageServer("")
    origin = f"http://127.0.0.1:{page_server.server_address[1]}"
    for bucket, allowed in (("page-ok", origin), ("page-other", "https://elsewhere.example")):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_cors(
            Bucket=bucket,
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedOrigins": [allowed],
                        "AllowedMethods": ["PUT"],
                        "AllowedHeaders": ["content-type"],
                        "ExposeHeaders": ["ETag"],
                        "MaxAgeSeconds": 30,
                    }
                ]
            },
        )
    urls = {
        name: s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": "from-browser"},
            ExpiresIn=300,
        )
        for name, bucket in (("allowed", "page-ok"), ("refused", "page-other"))
    }
    page_server.page = (
        PAGE % {"body": json.dumps(BODY), **{k: json.dumps(v) for k, v in urls.items()}}
    ).encode()
    threading.Thread(target=page_server.serve_forever, daemon=True).start()
    browser = subprocess.Popen(
        [
            _chromium(),
            "--headless=new",
            "--no-sandbox",  # as root in a container: no user namespaces for its sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'chromium'}",
            origin + "/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "chromium.log", "wb"),  # noqa: SIM115 - closed with the process
        start_new_session=True,  # its helper processes are ours to end: one group
    )
    try:
        deadline = time.monotonic() + 90
        with page_server.arrived:
            while len(page_server.results) < 2 and time.monotonic() < deadline:
                page_server.arrived.wait(timeout=1)
                assert browser.poll() is None or page_server.results, (
                    "chromium exited: " + (tmp_path / "chromium.log").read_text()[-2000:]
                )
        results = {r["name"]: r for r in page_server.results}
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait(timeout=30)
        page_server.shutdown()
        page_server.server_close()
    assert set(results) == {"allowed", "refused"}, results
    allowed, refused = results["allowed"], results["refused"]
    assert allowed["ok"] and allowed["status"] == 200, allowed
    stored = s3.get_object(Bucket="page-ok", Key="from-browser")
    assert stored["Body"].read() == BODY.encode()
    assert allowed["etag"] == stored["ETag"]  # readable: the rule exposes it
    assert not refused["ok"] and "TypeError" in refused["error"], refused
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket="page-other", Key="from-browser")
    assert caught.value.response["Error"]["Code"] == "404"
    preflights = _preflights(node.endpoint)
    assert preflights.get("200", 0) >= 1 and preflights.get("403", 0) >= 1, preflights
