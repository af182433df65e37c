"""The node's edge against clients that do not play fair, on real node processes over real
sockets: connections that send nothing or half a request head (slowloris) are closed at the
header timeout, no more than the cap may wait for a head at once (the longest-waiting go
first), kept-alive connections are closed when idle; meanwhile other clients are served.
And nothing a client puts in a request can forge a log line or put a raw control character
in one."""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import time
import unicodedata
import uuid
from collections.abc import Iterator
from urllib.parse import quote, unquote

import pytest

from tests.support.nodeproc import NodeProcess
from tests.support.raw_http import RawClient

pytestmark = pytest.mark.timeout(60)


def _start(node_factory, tmp_path, name: str, config: str, *args: str) -> NodeProcess:
    path = tmp_path / f"{name}.toml"
    path.write_text(config)
    return node_factory(name, args=["--config", str(path), *args])


def _address(node: NodeProcess) -> tuple[str, int]:
    host, _, port = node.endpoint.removeprefix("http://").rpartition(":")
    return host, int(port)


@contextlib.contextmanager
def _sockets() -> Iterator[list[socket.socket]]:
    """A list to put client sockets in; every one is closed on the way out."""
    socks: list[socket.socket] = []
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _connect(address: tuple[str, int], first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    if first:
        sock.sendall(first)
    sock.setblocking(False)
    return sock


def _closed_now(sock: socket.socket) -> bool:
    """True when the server has closed it (EOF or reset); False while it is open and quiet."""
    try:
        return sock.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _wait_closed(socks: list[socket.socket], within: float) -> dict[socket.socket, float]:
    """Waits up to `within` seconds; returns when (time.monotonic()) each one was closed."""
    closed: dict[socket.socket, float] = {}
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as sel:  # epoll: no FD_SETSIZE limit
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while len(closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if _closed_now(sock):
                    closed[sock] = time.monotonic()
                    sel.unregister(sock)
    return closed


def _open(socks: list[socket.socket]) -> list[socket.socket]:
    """The ones the server has not closed (nothing is expected to be readable on them)."""
    return [s for s in socks if not _closed_now(s)]


def _put_get(s3, bucket: str, body: bytes) -> float:
    started = time.monotonic()
    key = f"k-{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    return time.monotonic() - started


# -- slowloris -----------------------------------------------------------------------------
SHORT = "header_timeout = 1.0\nkeepalive_timeout = 2.5\n"
HALF_LINE = b"GET /edge/some-ke"
HALF_HEADERS = b"GET /edge/k HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Da"


def test_silent_and_half_sent_connections_are_closed_at_the_header_timeout(node_factory, tmp_path):
    node = _start(node_factory, tmp_path, "slow", SHORT)
    s3 = node.client()
    s3.create_bucket(Bucket="edge")
    _put_get(s3, "edge", b"warm")  # the client's connection and the node's first request
    address = _address(node)
    with _sockets() as socks:
        opened: dict[socket.socket, float] = {}
        for i in range(400):
            first = b"" if i < 300 else HALF_LINE if i < 350 else HALF_HEADERS
            sock = _connect(address, first)
            socks.append(sock)
            opened[sock] = time.monotonic()
        silent, half = socks[:300], socks[300:]

        # the node answers other clients while they hang on
        took = _put_get(s3, "edge", b"x" * 100_000)
        assert took < 2.0, took
        if time.monotonic() - opened[socks[0]] < 0.8:  # (as it should be, by a wide margin)
            assert len(_open(socks)) == len(socks), "closed before the header timeout"

        closed = _wait_closed(socks, within=4.0)
        assert len(closed) == len(socks), (
            f"still open: {sum(s not in closed for s in silent)} silent, "
            f"{sum(s not in closed for s in half)} half-sent"
        )
        lived = sorted(closed[s] - opened[s] for s in socks)
        assert lived[0] > 0.9, f"closed after {lived[0]:.2f}s, before the 1s header timeout"
        assert lived[-1] < 2.2, f"closed after {lived[-1]:.2f}s, well past the 1s header timeout"
        assert _put_get(s3, "edge", b"after") < 2.0


def test_connections_over_the_cap_are_dropped_longest_waiting_first(node_factory, tmp_path):
    # a header timeout far longer than the test: whatever closes here, the cap closed
    node = _start(
        node_factory, tmp_path, "capped", "header_timeout = 30\nmax_idle_connections = 100\n"
    )
    s3 = node.client()
    s3.create_bucket(Bucket="edge")
    _put_get(s3, "edge", b"warm")
    address = _address(node)
    with _sockets() as socks:
        for i in range(300):
            socks.append(_connect(address, HALF_LINE if i % 3 == 0 else b""))
        # 300 waiting, and the client's idle kept-alive one: the oldest 201 of them go at once
        closed = _wait_closed(socks[:200], within=3.0)
        assert len(closed) == 200, f"only {len(closed)} of the oldest 200 were closed"
        assert len(_open(socks[200:])) == 100, "a connection within the cap was closed"

        # a real client still gets in (its connection displaces the oldest waiting one)
        assert _put_get(s3, "edge", b"y" * 50_000) < 2.0
        still = _open(socks[200:])
        assert len(still) >= 95, len(still)
        assert still == socks[300 - len(still) :], "the cap closed a newer connection first"

        # and a new connection over the cap pushes out the next oldest, not itself
        newest = _connect(address)
        socks.append(newest)
        assert _wait_closed([still[0]], within=2.0), "the oldest waiting connection stayed"
        assert not _closed_now(newest)


def test_a_slowly_sent_body_is_not_cut_by_the_header_timeout(node_factory, tmp_path):
    node = _start(node_factory, tmp_path, "body", SHORT)
    s3 = node.client()
    s3.create_bucket(Bucket="edge")
    raw = RawClient(node.endpoint)
    body = bytes(range(256)) * 64
    pieces = [body[i : i + 2048] for i in range(0, len(body), 2048)]  # 8 pieces, 0.4 s apart
    target = "/edge/slow-body"
    headers = raw.sign("PUT", target, {"Content-Length": str(len(body))}, body)
    head = f"PUT {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(raw.address, timeout=10) as sock:
        sock.sendall((head + "Connection: close\r\n\r\n").encode("latin-1"))
        for piece in pieces:
            time.sleep(0.4)  # 3.2 s in all: past the 1 s header and the 2.5 s keep-alive timeouts
            sock.sendall(piece)
        reply = b""
        while chunk := sock.recv(1 << 16):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert s3.get_object(Bucket="edge", Key="slow-body")["Body"].read() == body


def _read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length on a blocking socket; returns its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(4096)
    assert len(rest) == length, "more than one response"
    return head


def test_kept_alive_connections_are_bounded_when_idle_and_mid_head(node_factory, tmp_path):
    node = _start(node_factory, tmp_path, "keepalive", SHORT)
    address = _address(node)
    request = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with _sockets() as socks:
        for _ in range(3):
            sock = socket.create_connection(address, timeout=5)
            socks.append(sock)
            sock.sendall(request)
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
        idle, reused, half = socks

        time.sleep(0.5)  # kept alive: a second request on the same connection is served
        reused.sendall(request)
        assert _read_response(reused).startswith(b"HTTP/1.1 200")

        half.sendall(request[:20])  # the next head, begun and never finished
        started = time.monotonic()
        for sock in socks:
            sock.setblocking(False)
        closed = _wait_closed(socks, within=5.0)
        assert set(closed) == set(socks)
        assert 0.8 < closed[half] - started < 1.8, "half a head outlived the header timeout"
        # the idle ones go at the keep-alive timeout (2.5 s after their last response)
        assert 1.8 < closed[idle] - started < 3.5, closed[idle] - started
        assert 2.3 < closed[reused] - started < 3.5, closed[reused] - started


# -- log injection -------------------------------------------------------------------------
# Each raw path is written to the socket as is (percent-encoded: raw control bytes in a
# request line are refused by the HTTP parser before anything is logged).
HOSTILE = [
    "%0A2026-01-01%2000:00:00,000%20ERROR%20shardfleet.access:%20FORGED-LF",
    "%0D2026-01-01%2000:00:00,000%20ERROR%20shardfleet.access:%20FORGED-CR",
    "%0D%0AFORGED-CRLF",
    "nul%00byte",
    "esc%1B[2J%1B[31mred",
    "tab%09and%0Bvt%0Cff%08bs",
    "del%7Fc1-nel%C2%85csi%C2%9B",
    "ls%E2%80%A8ps%E2%80%A9FORGED-LS",
    "back%5Cslash%5Cn-not-a-newline",
    "%01%02%03%1F",
]
UNSAFE_CATEGORIES = {"Cc", "Zl", "Zp", "Cs"}
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
FAKE_STAMP = re.compile("2026-01-01 00:00:00,000")


def _raw_get(address: tuple[str, int], target: str, headers: str = "") -> str:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    request_id = head.partition("x-amz-request-id: ")[2].partition("\r\n")[0]
    assert request_id, head
    return request_id.upper()


def _cut_get(raw: RawClient, target: str) -> str:
    """A signed GET the client abandons after the first bytes (RST): the node's GET path
    logs that the client went away, with the key in the message."""
    headers = raw.sign("GET", target)
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection(raw.address, timeout=10)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall((head + "\r\n").encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 200"), data[:300]
        request_id = data.lower().partition(b"x-amz-request-id: ")[2].partition(b"\r\n")[0]
        time.sleep(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    finally:
        sock.close()
    return request_id.decode().upper()


def _lines_with(node: NodeProcess, ids: list[str], within: float = 5.0) -> list[str]:
    """The node's output once every request id has shown up in it (lines flush in batches)."""
    deadline = time.monotonic() + within
    while True:
        lines = list(node.output)
        if all(any(i in line for line in lines) for i in ids) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_control_characters_in_requests_are_escaped_in_every_log_line(node_factory, tmp_path, fmt):
    node = _start(node_factory, tmp_path, f"log-{fmt}", f'log_format = "{fmt}"\n')
    address = _address(node)
    s3 = node.client()
    s3.create_bucket(Bucket="logs")
    targets = [f"/logs/{p}" for p in HOSTILE] + [f"/{HOSTILE[0]}", f"/logs/k?{HOSTILE[1]}=1"]
    ids = {_raw_get(address, t): unquote(t.partition("?")[0]) for t in targets}
    # a key with control characters, stored, then read by a client that goes away mid-body:
    # a log line of the GET path (not the access log) that carries the key
    key = "big\nFORGED-KEY\x1b[0m"
    s3.put_object(Bucket="logs", Key=key, Body=b"z" * (8 << 20))
    cut = _cut_get(RawClient(node.endpoint), f"/logs/{quote(key, safe='')}")
    lines = _lines_with(node, [*ids, cut])

    for line in lines:
        text = line.removesuffix("\n")
        raw = [c for c in text if unicodedata.category(c) in UNSAFE_CATEGORIES]
        assert not raw, f"raw control characters {raw!r} in the log line {text!r}"
        if text.startswith(("shardfleet node ready", "  ")):
            continue  # the start-up banner
        # every other line is one whole record: none begins with what a request carried
        if fmt == "json":
            assert isinstance(json.loads(text), dict), text
        else:
            assert LOG_LINE.match(text) and not FAKE_STAMP.match(text), f"forged: {text!r}"
    log_lines = [line for line in lines if any(i in line for i in [*ids, cut])]
    for request_id, resource in ids.items():
        mine = [line for line in log_lines if request_id in line]
        assert len(mine) == 1, (request_id, mine)
        if fmt == "json":
            entry = json.loads(mine[0])
            assert entry["resource"] == resource  # the JSON value is exactly what came in
            assert entry["request_id"] == request_id
        else:
            assert mine[0].startswith(tuple("0123456789")), mine[0]
            assert " INFO shardfleet.access: " in mine[0]
            escaped = resource.translate({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x5C: "\\\\"})
            for c in set(escaped):
                if unicodedata.category(c) in UNSAFE_CATEGORIES:
                    code = ord(c)
                    escaped = escaped.replace(
                        c, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                    )
            assert f" {escaped} " in mine[0], (escaped, mine[0])
    went_away = [line for line in log_lines if cut in line and "shardfleet.access" not in line]
    assert went_away, f"no GET-path line for request {cut}: {lines[-5:]}"
    for line in went_away:
        if fmt == "json":
            assert key in json.loads(line)["msg"]
        else:
            assert "big\\nFORGED-KEY\\x1b[0m" in line
