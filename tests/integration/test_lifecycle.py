"""Graceful stop and abandoned uploads: nothing partial survives, no descriptor leaks."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.support.shards import staged_files, version_dirs

SIZE = 24 << 20


class _UnsignedPayloadAuth(S3SigV4Auth):
    def payload(self, request):  # noqa: ANN001 - botocore's signature
        return "UNSIGNED-PAYLOAD"


def signed_put_head(endpoint: str, target: str, size: int) -> bytes:
    return signed_head("PUT", endpoint, target, {"Content-Length": str(size)})


def signed_head(method: str, endpoint: str, target: str, headers: dict[str, str]) -> bytes:
    req = AWSRequest(method=method, url=endpoint + target, headers=headers)
    req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    _UnsignedPayloadAuth(Credentials(DEV_ACCESS_KEY, DEV_SECRET_KEY), "s3", "us-east-1").add_auth(
        req
    )
    host = endpoint.split("//", 1)[1]
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(endpoint: str) -> socket.socket:
    host, port = endpoint.split("//", 1)[1].split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def open_drive_files(pid: int, data: Path) -> list[str]:
    """Descriptors of the node pointing at shard files (LMDB's own files excluded)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(data)) and "index.lmdb" not in target:
            out.append(target)
    return out


def wait_clean(node, bucket: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        leftovers = [
            p
            for i in range(1, node.drives + 1)
            for p in staged_files(node.drive_path(i)) + version_dirs(node.drive_path(i), bucket)
        ]
        fds = open_drive_files(node.pid, node.data) if node.proc.poll() is None else []
        if not leftovers and not fds:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: {leftovers} open: {fds}")
        time.sleep(0.1)


def test_killed_client_leaves_nothing(node):
    node.client().create_bucket(Bucket="abandon")
    for sent in (1 << 20, 9 << 20):
        sock = connect(node.endpoint)
        sock.sendall(signed_put_head(node.endpoint, "/abandon/big", SIZE))
        sock.sendall(os.urandom(sent))
        time.sleep(0.3)
        # RST instead of FIN: the client process died
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        wait_clean(node, "abandon")
    assert node.client().list_objects_v2(Bucket="abandon")["KeyCount"] == 0


def test_client_gone_mid_get_leaves_nothing_open(node):
    """The GET reads ahead (several shard reads in flight): a client that dies after the
    first MiB must cancel them all, with no descriptor or stray task left behind."""
    s3 = node.client()
    s3.create_bucket(Bucket="readers")
    body = os.urandom(SIZE)
    s3.put_object(Bucket="readers", Key="big", Body=body)
    for _ in range(3):
        sock = connect(node.endpoint)
        sock.sendall(signed_head("GET", node.endpoint, "/readers/big", {}))
        got = 0
        while got < 1 << 20:
            piece = sock.recv(1 << 16)
            assert piece, f"the node closed the GET after {got} bytes"
            got += len(piece)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    deadline = time.monotonic() + 10
    while open_drive_files(node.pid, node.data):
        assert time.monotonic() < deadline, open_drive_files(node.pid, node.data)
        time.sleep(0.1)
    assert s3.get_object(Bucket="readers", Key="big")["Body"].read() == body
    deadline = time.monotonic() + 10  # access lines are written in batches
    while len(cut := [line for line in node.output if "GET /readers/big 499 " in line]) < 3:
        assert time.monotonic() < deadline, "".join(node.output)[-3000:]
        time.sleep(0.1)
    log = "".join(node.output)
    assert "Traceback" not in log, log[-3000:]  # a client going away is routine
    assert len(cut) == 3, log[-3000:]  # access log: "client closed", bytes actually sent
    assert all(0 < int(line.split(" out=")[1].split()[0]) < SIZE for line in cut)
    assert "never retrieved" not in log and "destroyed but it is pending" not in log


def slow_upload(endpoint: str, target: str, stop_after: int | None, result: dict) -> None:
    """Sends SIZE bytes in 1 MiB pieces, 50 ms apart; stops sending after stop_after bytes."""
    try:
        sock = connect(endpoint)
        sock.sendall(signed_put_head(endpoint, target, SIZE))
        piece = os.urandom(1 << 20)
        sent = 0
        while sent < SIZE and (stop_after is None or sent < stop_after):
            sock.sendall(piece)
            sent += len(piece)
            result["sent"] = sent
            time.sleep(0.05)
        reply = sock.recv(4096)
        result["reply"] = reply.decode(errors="replace")
        sock.close()
    except OSError as exc:
        result["error"] = repr(exc)


def test_sigterm_lets_an_upload_finish_within_the_grace(node_factory):
    node = node_factory("grace", args=["--shutdown-grace", "20"])
    node.client().create_bucket(Bucket="grace")
    result: dict = {}
    t = threading.Thread(target=slow_upload, args=(node.endpoint, "/grace/obj", None, result))
    t.start()
    while result.get("sent", 0) < (4 << 20):
        time.sleep(0.05)
    node.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert result.get("reply", "").startswith("HTTP/1.1 200"), result
    assert node.proc.wait(30) == 0
    node.start()
    assert node.client().head_object(Bucket="grace", Key="obj")["ContentLength"] == SIZE


def test_sigterm_aborts_and_cleans_what_overruns_the_grace(node_factory):
    node = node_factory("overrun", args=["--shutdown-grace", "1"])
    node.client().create_bucket(Bucket="overrun")
    result: dict = {}
    t = threading.Thread(target=slow_upload, args=(node.endpoint, "/overrun/obj", 6 << 20, result))
    t.start()
    while result.get("sent", 0) < (6 << 20):
        time.sleep(0.05)
    time.sleep(0.3)
    started = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(30) == 0
    assert time.monotonic() - started < 10
    t.join(30)
    for i in range(1, node.drives + 1):  # checked before any restart could tidy up
        assert not staged_files(node.drive_path(i))
        assert not version_dirs(node.drive_path(i), "overrun")
    node.start()
    assert node.client().list_objects_v2(Bucket="overrun")["KeyCount"] == 0
