"""Per-requester limits on real node processes: a client hammering past rate_limit_rps gets
503 SlowDown with Retry-After (held back rate_limit_hold) while requests under the limit
all pass; anonymous and signed requesters have separate budgets; rate_limit_uploads
refuses an upload over the limit before its body is sent, and stores nothing for it.
boto3 retries are off, so every answer is the node's own."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.support.nodeproc import NodeProcess
from tests.support.raw_http import RawClient

pytestmark = pytest.mark.timeout(120)

RPS = 20
NO_RETRIES = {"retries": {"total_max_attempts": 1, "mode": "standard"}}


def _start(node_factory, tmp_path, name: str, config: str) -> NodeProcess:
    path = tmp_path / f"{name}.toml"
    path.write_text(config)
    return node_factory(name, args=["--config", str(path)])


def _throttled(endpoint: str, reason: str) -> float:
    with urllib.request.urlopen(endpoint + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(rf'^shardfleet_s3_throttled_total{{reason="{reason}"}} (\S+)$', text, re.M)
    assert match, text
    return float(match[1])


def _anonymous_get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def _check_slowdown(err: ClientError) -> None:
    response = err.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert response["Error"]["Code"] == "SlowDown"
    assert int(response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1


def test_rate_limit(node_factory, tmp_path) -> None:
    node = _start(node_factory, tmp_path, "rps", f"rate_limit_rps = {RPS}\n")
    s3 = node.client(**NO_RETRIES)
    bucket = f"rl-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    time.sleep(1.2)  # a full bucket of tokens again

    # under the limit: every request passes
    for _ in range(int(RPS * 1.5)):
        started = time.monotonic()
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
        time.sleep(max(0.0, 2 / RPS - (time.monotonic() - started)))  # half the rate
    time.sleep(1.2)

    # a client hammering from threads
    ok, refused, other = [], [], []
    stop = time.monotonic() + 1.5
    lock = threading.Lock()

    def hammer() -> None:
        client = node.client(**NO_RETRIES)
        while time.monotonic() < stop:
            try:
                client.get_object(Bucket=bucket, Key="k")["Body"].read()
                with lock:
                    ok.append(1)
            except ClientError as exc:
                with lock:
                    (refused if exc.response["Error"]["Code"] == "SlowDown" else other).append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert not other, other[:3]
    assert refused, f"{len(ok)} requests in {elapsed:.2f}s, none refused"
    for err in refused:
        _check_slowdown(err)
    # one burst (RPS) plus RPS per second, give or take a token
    assert RPS <= len(ok) <= RPS + RPS * elapsed + 2, (len(ok), elapsed)

    # the signed key is out of tokens; an anonymous request from the same address is not
    # (it is refused as it always is: the bucket is private)
    status, _, body = _anonymous_get(f"{node.endpoint}/{bucket}/k")
    assert status == 403 and b"<Code>AccessDenied</Code>" in body, (status, body)

    def timed_get(_: int) -> tuple[float, tuple[int, dict[str, str], bytes]]:
        began = time.monotonic()
        got = _anonymous_get(f"{node.endpoint}/{bucket}/k")
        return time.monotonic() - began, got

    with ThreadPoolExecutor(8) as pool:
        timed = list(pool.map(timed_get, range(RPS * 2)))
    anonymous = [t[1] for t in timed]
    statuses = [a[0] for a in anonymous]
    assert set(statuses) == {403, 503}, statuses
    slow = next(a for a in anonymous if a[0] == 503)
    assert b"<Code>SlowDown</Code>" in slow[2] and int(slow[1]["Retry-After"]) >= 1
    # a refusal is held back (rate_limit_hold, 0.5 s by default, jittered to >= half)
    assert min(t for t, a in timed if a[0] == 503) >= 0.24
    assert max(t for t, a in timed if a[0] == 403) < 0.24

    assert _throttled(node.endpoint, "rps") >= len(refused) + statuses.count(503)
    assert _throttled(node.endpoint, "uploads") == 0

    time.sleep(1.2)  # Retry-After honored: served again
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def _open_upload(raw: RawClient, target: str, size: int, first: bytes) -> socket.socket:
    """A PUT whose head and the first bytes of its body are sent; the rest is up to the test."""
    headers = raw.sign(
        "PUT", target, {"Content-Length": str(size)}, payload_hash="UNSIGNED-PAYLOAD"
    )
    head = f"PUT {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection(raw.address, timeout=20)
    sock.sendall(head.encode("latin-1") + b"\r\n" + first)
    return sock


def _reply(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_uploads_in_flight(node_factory, tmp_path) -> None:
    node = _start(node_factory, tmp_path, "uploads", "rate_limit_uploads = 1\n")
    s3 = node.client(**NO_RETRIES)
    raw = RawClient(node.endpoint)
    bucket = f"ul-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="old", Body=b"old")
    size = 256 * 1024
    body = bytes(range(256)) * (size // 256)

    first = _open_upload(raw, f"/{bucket}/first", size, body[: size // 4])
    try:
        time.sleep(0.5)  # the node has admitted it and reads its body

        # a second upload: refused at once, before its body is sent (no 100 Continue)
        headers = raw.sign(
            "PUT",
            f"/{bucket}/second",
            {"Content-Length": str(size), "Expect": "100-continue"},
            payload_hash="UNSIGNED-PAYLOAD",
        )
        head = f"PUT /{bucket}/second HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        with socket.create_connection(raw.address, timeout=10) as sock:
            sock.sendall(head.encode("latin-1"))
            reply = _reply(sock).decode("latin-1")
        assert reply.startswith("HTTP/1.1 503"), reply
        assert re.search(r"(?im)^retry-after: [1-9]", reply), reply

        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=bucket, Key="second", Body=b"y" * 1000)
        _check_slowdown(info.value)
        with pytest.raises(ClientError) as info:
            s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "old"})
        _check_slowdown(info.value)
        assert s3.get_object(Bucket=bucket, Key="old")["Body"].read() == b"old"  # reads pass

        first.sendall(body[size // 4 :])
        assert _reply(first).startswith(b"HTTP/1.1 200"), "the first upload failed"
    finally:
        first.close()

    for key in ("second", "copy"):  # nothing stored for the refused ones
        with pytest.raises(ClientError) as info:
            s3.head_object(Bucket=bucket, Key=key)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert s3.get_object(Bucket=bucket, Key="first")["Body"].read() == body
    s3.put_object(Bucket=bucket, Key="second", Body=b"y")  # its slot is free again
    assert _throttled(node.endpoint, "uploads") >= 3
