"""Transport throughput: a server PROCESS, a client here, production mTLS and framing.

    .venv/bin/python tests/bench/bench_transport.py [--total-mib 512] [--streams 4]

For each datagram size (our loopback default, then 1452 bytes, the usual 1500-MTU LAN
value) it starts `python tests/bench/bench_transport.py --serve ...` as a separate process
with a "sink" handler (reads and discards the request body) and a "source" handler
(streams N bytes back), then ships `--total-mib` as shard-sized streamed calls: each call
sends a 16 MiB "shard" in 512 KiB `send()`s, `--streams` calls in flight at once on the
one connection, like a PUT fanning out to a remote drive. Then it reads the same amount
back through "source" (ranged shard reads of 16 MiB). Each phase stops after
`--max-seconds` (default 60) and reports what it moved. Prints a table; exits 0.
Targets: >= 100 MB/s upload at the default size and >= 5x the 1452-byte figure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shardfleet.node.malloc import tune_allocator  # noqa: E402
from shardfleet.transport import (  # noqa: E402
    Peer,
    Response,
    RpcEndpoint,
    TlsFiles,
    TransportConfig,
    create_ca,
    issue_node_cert,
)
from shardfleet.transport.config import LOOPBACK_DATAGRAM_SIZE  # noqa: E402

MIB = 1 << 20
SEND_SIZE = 512 * 1024
SHARD_SIZE = 16 * MIB


# -- server process ------------------------------------------------------------------------
def _config(datagram: int, overrides: list[str]) -> TransportConfig:
    """TransportConfig for one run: the datagram size plus `--set name=value` overrides."""
    fields = {f.name: f.type for f in dataclasses.fields(TransportConfig)}
    kwargs: dict[str, object] = {"max_datagram_size": datagram}
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in fields:
            raise SystemExit(f"unknown TransportConfig field {name!r}")
        kind = fields[name]
        kwargs[name] = int(value) if kind == "int" else float(value) if kind == "float" else value
    return TransportConfig(**kwargs)  # type: ignore[arg-type]


async def _serve(tls_dir: Path, config: TransportConfig) -> None:
    endpoint = RpcEndpoint(
        node_id="bench-server",
        tls=TlsFiles.in_dir(tls_dir),
        host="127.0.0.1",
        port=0,
        config=config,
    )

    async def sink(req):
        n = 0
        async for chunk in req.body:
            n += len(chunk)
        return Response({"n": n})

    async def source(req):
        size = int(req.header["n"])
        block = os.urandom(SEND_SIZE)

        async def chunks():
            left = size
            while left > 0:
                yield block[: min(left, SEND_SIZE)]
                left -= SEND_SIZE

        return Response({"n": size}, chunks())

    endpoint.register("sink", sink)
    endpoint.register("source", source)
    _, port = await endpoint.start()
    print(f"READY {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    await endpoint.close()


# -- client --------------------------------------------------------------------------------
async def _upload(ep: RpcEndpoint, peer: Peer, total: int, streams: int, deadline: float) -> int:
    block = os.urandom(SEND_SIZE)
    sent = 0
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal sent
        while True:
            async with lock:
                if sent >= total or time.monotonic() > deadline:
                    return
                sent += SHARD_SIZE
            call = await ep.open_stream(peer, "sink", {}, timeout=30)
            for _ in range(SHARD_SIZE // SEND_SIZE):
                await call.send(block)
            reply = await call.finish()
            assert reply.header["n"] == SHARD_SIZE, reply.header

    await asyncio.gather(*(worker() for _ in range(streams)))
    return sent


async def _download(ep: RpcEndpoint, peer: Peer, total: int, streams: int, deadline: float) -> int:
    got = 0
    started = 0
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal got, started
        while True:
            async with lock:
                if started >= total or time.monotonic() > deadline:
                    return
                started += SHARD_SIZE
            reply = await ep.call(peer, "source", {"n": SHARD_SIZE}, timeout=30)
            async for chunk in reply:
                got += len(chunk)

    await asyncio.gather(*(worker() for _ in range(streams)))
    return got


async def _measure(tls: Path, datagram: int, args: argparse.Namespace) -> tuple[float, float]:
    settings = [arg for item in args.set for arg in ("--set", item)] + ["--loop", args.loop]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(tls / "server"), "--datagram", str(datagram)]
        + settings,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    client = None
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"server did not start: {line!r}")
        port = int(line.split()[1])
        client = RpcEndpoint(
            node_id="bench-client",
            tls=TlsFiles.in_dir(tls / "client"),
            host="127.0.0.1",
            port=0,
            config=_config(datagram, args.set),
        )
        peer = Peer("bench-server", "127.0.0.1", port)
        await client.call(peer, "sink", {}, b"warm-up", timeout=10)
        total = args.total_mib * MIB
        rates = []
        for phase in (_upload, _download):
            t0 = time.monotonic()
            moved = await phase(client, peer, total, args.streams, t0 + args.max_seconds)
            rates.append(moved / (time.monotonic() - t0) / 1e6)
        return rates[0], rates[1]
    finally:
        if client is not None:
            await client.close()
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def _bench(args: argparse.Namespace) -> None:
    load = os.getloadavg()  # other work on the machine shows up in these numbers
    with tempfile.TemporaryDirectory() as tmp:
        tls = Path(tmp)
        create_ca(tls / "ca", "bench")
        issue_node_cert(tls / "ca", "bench-server", ["127.0.0.1"], tls / "server")
        issue_node_cert(tls / "ca", "bench-client", ["127.0.0.1"], tls / "client")
        results = {}
        for datagram in dict.fromkeys((args.datagram, 1452) if args.compare else (args.datagram,)):
            results[datagram] = await _measure(tls, datagram, args)
            up, down = results[datagram]
            print(f"  measured {datagram} B datagrams: up {up:.1f} MB/s, down {down:.1f} MB/s")
    if not args.compare:
        return
    base_up, base_down = results[1452]
    print()
    print(f"{args.total_mib} MiB, 16 MiB streamed calls of 512 KiB sends, {args.streams} in flight")
    print(
        f"event loop {args.loop}; load average before the runs {load[0]:.2f} ({os.cpu_count()} CPUs)"
    )
    print(f"{'datagram':>10} | {'upload MB/s':>11} | {'download MB/s':>13}")
    print(f"{'-' * 10}-+-{'-' * 11}-+-{'-' * 13}")
    for datagram, (up, down) in results.items():
        print(f"{datagram:>10} | {up:>11.1f} | {down:>13.1f}")
    up, down = results[args.datagram]
    print(f"{'ratio':>10} | {up / base_up:>10.1f}x | {down / base_down:>12.1f}x")
    verdict = "OK" if up >= 100 and up >= 5 * base_up else "BELOW TARGET"
    print(f"target: >= 100 MB/s upload and >= 5x the 1452-byte figure: {verdict}")


def _default_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--datagram", type=int, default=LOOPBACK_DATAGRAM_SIZE)
    parser.add_argument("--total-mib", type=int, default=512)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default=_default_loop(),
        help="event loop for both processes (default: uvloop if installed, as a node runs)",
    )  # fmt: skip
    parser.add_argument(
        "--no-compare", dest="compare", action="store_false",
        help="measure --datagram only, not also the 1452-byte baseline",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="override a TransportConfig field on both ends, e.g. --set congestion_control=cubic",
    )  # fmt: skip
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    tune_allocator()  # as a node does: both processes run with the node's malloc settings
    if args.serve is not None:
        asyncio.run(_serve(args.serve, _config(args.datagram, args.set)))
    else:
        asyncio.run(_bench(args))


if __name__ == "__main__":
    main()
