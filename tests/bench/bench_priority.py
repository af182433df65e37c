"""A client PUT's latency while background traffic saturates the link, with and without
the transport's background class (own connection, bodies paced to `background_rate`).

    .venv/bin/python tests/bench/bench_priority.py [--seconds 15] [--put-kib 1024]

A server PROCESS (bench_transport.py --serve: "sink" reads a body, "source" streams one
back) and a client here, production mTLS and framing. The client times "PUTs": one
streamed call of --put-kib in 512 KiB sends, one after another, like a PUT shipping a
shard to a remote drive. Three phases of --seconds each:

    idle         PUTs alone
    background   PUTs while 2 uploaders and 1 downloader move 16 MiB shards without end
                 as background calls (what heal and scan traffic will be)
    unpaced      the same load sent as client calls: what a heal would cost without the
                 background class

Prints p50/p99 PUT latency and the background MB/s of each phase; exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shardfleet.transport import (  # noqa: E402
    Peer,
    RpcEndpoint,
    TlsFiles,
    TransportConfig,
    create_ca,
    issue_node_cert,
)

MIB = 1 << 20
SEND = 512 * 1024
SHARD = 16 * MIB


async def _put(ep: RpcEndpoint, peer: Peer, block: bytes, size: int) -> float:
    t0 = time.perf_counter()
    call = await ep.open_stream(peer, "sink", {}, timeout=30)
    for i in range(0, size, SEND):
        await call.send(block[: min(SEND, size - i)])
    reply = await call.finish()
    assert reply.header["n"] == size
    return time.perf_counter() - t0


async def _load(ep: RpcEndpoint, peer: Peer, background: bool, stop: asyncio.Event) -> int:
    """Background-like traffic until `stop`: returns bytes moved."""
    block = os.urandom(SEND)
    moved = 0

    async def upload() -> None:
        nonlocal moved
        while not stop.is_set():
            call = await ep.open_stream(peer, "sink", {}, timeout=120, background=background)
            for _ in range(SHARD // SEND):
                if stop.is_set():
                    break
                await call.send(block)
                moved += SEND
            await call.cancel() if stop.is_set() else await call.finish()

    async def download() -> None:
        nonlocal moved
        while not stop.is_set():
            reply = await ep.call(peer, "source", {"n": SHARD}, timeout=120, background=background)
            async for chunk in reply:
                moved += len(chunk)
                if stop.is_set():
                    break
            await reply.aclose()

    tasks = [asyncio.ensure_future(f()) for f in (upload, upload, download)]
    await stop.wait()
    await asyncio.wait(tasks, timeout=30)
    for t in tasks:
        t.cancel()
    return moved


async def _phase(ep, peer, name, load, seconds, put_size) -> dict:
    block = os.urandom(SEND)
    stop = asyncio.Event()
    loader = asyncio.ensure_future(_load(ep, peer, load == "background", stop)) if load else None
    if loader:
        await asyncio.sleep(1.0)  # let the load reach its pace
    t0 = time.monotonic()
    times = []
    while time.monotonic() - t0 < seconds and len(times) < 2000:
        times.append(await _put(ep, peer, block, put_size))
    elapsed = time.monotonic() - t0
    stop.set()
    moved = await loader if loader else 0
    times.sort()
    return {
        "phase": name,
        "puts": len(times),
        "p50": statistics.median(times) * 1e3,
        "p99": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3,
        "load": moved / (elapsed + 1.0) / 1e6 if loader else 0.0,
    }


async def _bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tls = Path(tmp)
        create_ca(tls / "ca", "bench")
        issue_node_cert(tls / "ca", "bench-server", ["127.0.0.1"], tls / "server")
        issue_node_cert(tls / "ca", "bench-client", ["127.0.0.1"], tls / "client")
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("bench_transport.py")),
             "--serve", str(tls / "server")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        client = None
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("READY "):
                raise RuntimeError(f"server did not start: {line!r}")
            peer = Peer("bench-server", "127.0.0.1", int(line.split()[1]))
            client = RpcEndpoint(
                node_id="bench-client", tls=TlsFiles.in_dir(tls / "client"),
                host="127.0.0.1", port=0, config=TransportConfig(),
            )  # fmt: skip
            await client.call(peer, "sink", {}, b"warm-up", timeout=10)
            size = args.put_kib * 1024
            rows = [
                await _phase(client, peer, name, load, args.seconds, size)
                for name, load in (("idle", None), ("background", "background"),
                                   ("unpaced", "unpaced"))
            ]  # fmt: skip
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
    rate = TransportConfig().background_rate / MIB
    print(f"client PUT of {args.put_kib} KiB (streamed call), background_rate {rate:g} MiB/s")
    print(f"{'phase':>11} | {'PUTs':>5} | {'p50 ms':>7} | {'p99 ms':>7} | {'load MB/s':>9}")
    print(f"{'-' * 11}-+-{'-' * 5}-+-{'-' * 7}-+-{'-' * 7}-+-{'-' * 9}")
    for r in rows:
        print(
            f"{r['phase']:>11} | {r['puts']:>5} | {r['p50']:>7.2f} | {r['p99']:>7.2f} | "
            f"{r['load']:>9.1f}"
        )
    idle, bg = rows[0], rows[1]
    print(
        f"measured priority: p99 {bg['p99'] / idle['p99']:.2f}x idle with background load, "
        f"{rows[2]['p99'] / idle['p99']:.2f}x unpaced"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--put-kib", type=int, default=1024)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_bench(parser.parse_args()))


if __name__ == "__main__":
    main()
