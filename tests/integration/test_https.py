"""HTTPS on the S3 listener, against real node processes: boto3 and the AWS CLI with a
custom CA bundle (including the aws-chunked bodies with CRC32 trailers botocore sends over
HTTPS), /health and the admin CLI over HTTPS, plain HTTP and unverified clients refused,
and certificate rotation on SIGHUP (a bad new pair keeps the old one)."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import SSLError
from cryptography import x509

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY, ConfigError, load
from shardfleet.transport.tls import create_ca, issue_node_cert
from tests.support.nodeproc import NodeProcess

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
_SIBLING = Path(sys.executable).with_name("aws")
AWS = _SIBLING if _SIBLING.exists() else ROOT / ".venv/bin/aws"
HOSTS = ["127.0.0.1", "localhost"]


# -- certificates -------------------------------------------------------------------------
class Pki:
    """A CA, and server certificates issued under it into `dir`/NAME/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_dir = root / "ca"
        create_ca(self.ca_dir, "https-test")
        self.ca = self.ca_dir / "ca.crt"

    def issue(self, name: str) -> tuple[Path, Path]:
        files = issue_node_cert(self.ca_dir, name, HOSTS, self.root / name)
        return files.cert, files.key


def install(src: tuple[Path, Path], dst: tuple[Path, Path]) -> None:
    """Put a certificate and key in place the way a renewal job does (write, rename)."""
    for s, d in zip(src, dst, strict=True):
        tmp = d.with_name(d.name + ".new")
        tmp.write_bytes(s.read_bytes())
        os.replace(tmp, d)


def tls_config(tmp: Path, name: str, cert: Path, key: Path, extra: str = "") -> list[str]:
    path = tmp / f"{name}.toml"
    path.write_text(f'tls_cert = "{cert}"\ntls_key = "{key}"\n{extra}')
    return ["--config", str(path)]


def address(node: NodeProcess) -> tuple[str, int]:
    host, _, port = node.endpoint.removeprefix("https://").rpartition(":")
    return host, int(port)


def served_cert(node: NodeProcess, ca: Path, **context: object) -> x509.Certificate:
    """The certificate a new connection is shown (verified against `ca`)."""
    host, port = address(node)
    ctx = ssl.create_default_context(cafile=str(ca))
    for name, value in context.items():
        setattr(ctx, name, value)
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def client(node: NodeProcess, ca: Path | bool, **config: object):
    return boto3.client(
        "s3",
        endpoint_url=node.endpoint,
        aws_access_key_id=DEV_ACCESS_KEY,
        aws_secret_access_key=DEV_SECRET_KEY,
        region_name="us-east-1",
        verify=str(ca) if isinstance(ca, Path) else ca,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30, **config),
    )


def data_of(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"https-{seed}".encode()).digest() * 32
    return (block * (size // len(block) + 1))[:size]


def wait_for_line(node: NodeProcess, text: str, seen: int = 0, timeout: float = 10.0) -> None:
    """Wait until the node's output has `text` in a line past the first `seen` ones."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in node.output[seen:]):
        assert time.monotonic() < deadline, f"no {text!r} in:\n{''.join(node.output)}"
        time.sleep(0.05)


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("https")
    cert, key = pki.issue("s3")
    proc = NodeProcess(tmp / "node", args=tls_config(tmp, "node", cert, key))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def s3(server: NodeProcess, pki: Pki):
    return client(server, pki.ca)


@pytest.fixture
def bucket(s3) -> str:
    name = f"tls-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def no_ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_")
        and k not in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    }
    env.update(
        AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=DEV_SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_PAGER="",
        AWS_CA_BUNDLE=str(pki.ca),
        HOME=str(tmp_path_factory.mktemp("awscli-home")),
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


# -- configuration ------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['tls_cert = "/c.pem"', 'tls_key = "/k.pem"'])
def test_cert_and_key_go_together(tmp_path, text):
    path = tmp_path / "node.toml"
    path.write_text(f'drives = ["/a", "/b", "/c", "/d"]\n{text}\n')
    with pytest.raises(ConfigError) as err:
        load(path, {}, env={})
    assert "tls_cert/tls_key" in str(err.value)


def test_tls_min_version_is_checked(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('drives = ["/a", "/b", "/c", "/d"]\ntls_min_version = "1.0"\n')
    with pytest.raises(ConfigError) as err:
        load(path, {}, env={})
    assert "tls_min_version" in str(err.value)


def test_unusable_certificate_stops_the_start(tmp_path, pki):
    cert, key = pki.issue("s3-start")
    _, other_key = pki.issue("s3-other")
    cases = [
        (tmp_path / "missing.crt", key, "cannot read it"),
        (cert, other_key, "does not belong"),
        (key, key, "not a PEM certificate"),
    ]
    for bad_cert, bad_key, why in cases:
        out = subprocess.run(
            [sys.executable, "-m", "shardfleet.node.main", "serve", "--data", str(tmp_path / "d"),
             "--drives", "4", "--address", "127.0.0.1:0",
             "--tls-cert", str(bad_cert), "--tls-key", str(bad_key)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 1, out.stderr
        assert "cannot start" in out.stderr and why in out.stderr, out.stderr


# -- clients ------------------------------------------------------------------------------
def test_endpoint_is_https_and_health_answers(server, pki):
    assert server.endpoint.startswith("https://")
    assert any(f"endpoint:   {server.endpoint}" in line for line in server.output)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    with urllib.request.urlopen(server.endpoint + "/health/ready", context=ctx, timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(server.endpoint + "/metrics", context=ctx, timeout=5) as r:
        assert b"shardfleet_" in r.read()


def test_tls12_is_accepted_and_alpn_is_http11(server, pki):
    host, port = address(server)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() == "TLSv1.2"
        assert tls.selected_alpn_protocol() == "http/1.1"


def test_boto3_small_and_multipart_with_checksum_trailers(s3, bucket, tmp_path):
    sent: list[tuple[str, str, str]] = []

    def text(value: str | bytes | None) -> str:
        return value.decode("latin-1") if isinstance(value, bytes) else str(value or "")

    def record(request, event_name: str = "", **kwargs):
        h = request.headers
        sent.append((event_name, text(h.get("x-amz-content-sha256")), text(h.get("x-amz-trailer"))))

    s3.meta.events.register("before-send.s3", record)
    try:
        small = data_of(70_000, 1)
        s3.put_object(Bucket=bucket, Key="small", Body=small)
        assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == small

        big = data_of(20 << 20, 2)
        src = tmp_path / "big.bin"
        src.write_bytes(big)
        cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
        s3.upload_file(str(src), bucket, "big", Config=cfg)
        head = s3.head_object(Bucket=bucket, Key="big")
        assert head["ContentLength"] == len(big)
        assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 4 MiB
        dst = tmp_path / "back.bin"
        s3.download_file(bucket, "big", str(dst), Config=cfg)
        assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(big).digest()
    finally:
        s3.meta.events.unregister("before-send.s3", record)
    # over HTTPS botocore streams bodies unsigned, aws-chunked, with a CRC32 trailer
    for op in ("PutObject", "UploadPart"):
        bodies = [(mode, trailer) for event, mode, trailer in sent if event.endswith(op)]
        assert bodies, (op, sent)
        assert all(
            mode == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" and trailer == "x-amz-checksum-crc32"
            for mode, trailer in bodies
        ), (op, bodies)


def test_aws_cli_cp_both_ways(server, bucket, cli_env, tmp_path):
    files = {"small.bin": data_of(5000, 3), "large.bin": data_of(9 << 20, 4)}  # 2 parts
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    def aws(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(AWS), "--endpoint-url", server.endpoint, *args],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert out.returncode == 0, f"aws {' '.join(args)}: rc={out.returncode}\n{out.stderr}"
        return out

    aws("s3", "cp", "--recursive", str(tmp_path), f"s3://{bucket}/up/")
    down = tmp_path / "down"
    aws("s3", "cp", "--recursive", f"s3://{bucket}/up/", str(down))
    for name, data in files.items():
        assert (down / name).read_bytes() == data, name
    # the same CLI without the bundle refuses the certificate
    env = {k: v for k, v in cli_env.items() if k != "AWS_CA_BUNDLE"}
    out = subprocess.run(
        [str(AWS), "--endpoint-url", server.endpoint, "s3", "ls", f"s3://{bucket}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode != 0 and "SSL" in out.stderr, out.stderr


def test_client_without_the_ca_fails_verification(server, no_ca_env):
    with pytest.raises(SSLError):
        client(server, True).list_buckets()
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(server.endpoint + "/health/live", timeout=5)
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)


def test_plain_http_to_the_tls_port_fails_cleanly(server, pki):
    host, port = address(server)
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        try:
            while chunk := sock.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
    assert not got.startswith(b"HTTP/"), got  # closed (maybe after a TLS alert), no answer
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(f"http://{host}:{port}/health/live", timeout=5)
    # and the listener is unharmed
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    with urllib.request.urlopen(server.endpoint + "/health/live", context=ctx, timeout=5) as r:
        assert r.status == 200


def test_admin_cli_over_https(server, pki, no_ca_env):
    def admin(*extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SHARDFLEET_")}
        return subprocess.run(
            [sys.executable, "-m", "shardfleet.node.main", "admin", "status",
             "--endpoint", server.endpoint, "--json", *extra],
            capture_output=True, text=True, timeout=60, env={**base, **(env or {})},
        )  # fmt: skip

    flag = admin("--ca-bundle", str(pki.ca))
    assert flag.returncode == 0 and '"standalone"' in flag.stdout, flag.stderr
    from_env = admin(env={"AWS_CA_BUNDLE": str(pki.ca)})
    assert from_env.returncode == 0, from_env.stderr
    unverified = admin()
    assert unverified.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in unverified.stderr and "--ca-bundle" in unverified.stderr


# -- rotation -----------------------------------------------------------------------------
def test_sighup_rotates_the_certificate_and_refuses_a_bad_one(node_factory, tmp_path, pki):
    live = (tmp_path / "live.crt", tmp_path / "live.key")
    install(pki.issue("s3-first"), live)
    # TLS 1.3 only, on this node: checked on the way
    node = node_factory("rot", args=tls_config(tmp_path, "rot", *live, 'tls_min_version = "1.3"'))
    first = served_cert(node, pki.ca)
    assert cn(first) == "s3-first"
    with pytest.raises(ssl.SSLError):
        served_cert(node, pki.ca, maximum_version=ssl.TLSVersion.TLSv1_2)

    s3 = client(node, pki.ca)
    s3.create_bucket(Bucket="rot")
    s3.put_object(Bucket="rot", Key="before", Body=b"old connection")
    # a kept-alive connection opened before the rotation
    host, port = address(node)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    kept = ctx.wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname=host)

    def ask_kept() -> bytes:
        kept.sendall(f"GET /health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return kept.recv(4096)

    try:
        assert ask_kept().startswith(b"HTTP/1.1 200")

        install(pki.issue("s3-second"), live)
        seen = len(node.output)
        os.kill(node.pid, signal.SIGHUP)
        wait_for_line(node, "TLS reloaded", seen)
        second = served_cert(node, pki.ca)
        assert cn(second) == "s3-second" and second.serial_number != first.serial_number
        # connections from before carry on
        assert ask_kept().startswith(b"HTTP/1.1 200")
        der = kept.getpeercert(binary_form=True)
        assert der is not None and x509.load_der_x509_certificate(der) == first
        assert s3.get_object(Bucket="rot", Key="before")["Body"].read() == b"old connection"
        s3.put_object(Bucket="rot", Key="after", Body=b"x" * 100_000)

        # a key that does not match, then a certificate cut off halfway: both refused
        cert3, _ = pki.issue("s3-third")
        _, key4 = pki.issue("s3-fourth")
        for bad in ((cert3, key4), (cert3, cert3)):
            install(bad, live)
            seen = len(node.output)
            os.kill(node.pid, signal.SIGHUP)
            wait_for_line(node, "TLS reload refused", seen)
            assert cn(served_cert(node, pki.ca)) == "s3-second"
        live[0].write_bytes(cert3.read_bytes()[:200])
        seen = len(node.output)
        os.kill(node.pid, signal.SIGHUP)
        wait_for_line(node, "TLS reload refused", seen)
        assert cn(served_cert(node, pki.ca)) == "s3-second"
        fresh = client(node, pki.ca)
        assert fresh.get_object(Bucket="rot", Key="after")["Body"].read() == b"x" * 100_000
        assert node.proc is not None and node.proc.poll() is None
    finally:
        kept.close()
