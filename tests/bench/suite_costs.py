"""Suite "costs": the CPU one 64 MiB PUT on the default dev cluster cannot avoid.

The 64 MiB PUT cell is where the dev cluster trails Swift EC 4+2. This suite says why, in
figures anyone can measure again: it times each piece of work a 2+2 PUT must do, whatever
the HTTP, RPC and drive code around it looks like. Each piece runs alone, on this machine,
through the code the nodes run. Their sum goes beside the server CPU per object of Swift's
run in the peers' file (s3bench's server_cpu_s / ops) and of ours, when the cluster suite
has left its JSON lines.

  stripe jobs    cluster.put._encode_stripe over 64 stripes of 1 MiB: MD5 (the ETag S3
                 clients check), zfec 2+2, CRC32C framing
  client body    64 MiB over loopback TCP, sender and receiver (kernel work only)
  shard files    4 x 32 MiB through node.storage.shardfile.ShardFile (O_DIRECT) + fdatasync
  remote shards  96 MiB (3 of 4 shards leave the node that takes the PUT) at the QUIC
                 transport's CPU per byte. bench_transport.py runs twice as a child, 16 MiB
                 and --transport-mib each way; the per-byte figure is the difference in
                 user+system CPU of both its processes over the difference in bytes (so
                 start-up and handshakes cancel)

The first three rows are the work itself. The fourth is the transport as it stands: aioquic
(fixed by the stack) handles every 64 KB packet in Python. Two cores give 2 CPU-seconds per
second, so 2 x 64 MiB / a server's MiB/s is its budget per object, the client's share
included. This suite judges nothing: when the sum alone passes Swift's CPU per object, no
tuning of the rest of our Python can reach Swift's figure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from benchnode import pick_data_base
from matrix import CELL_NAMES, HERE, REPO, swift_runs
from suite_cluster import LABEL as CLUSTER_LABEL
from summary import SuiteResult, command
from targets import Run, load

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shardfleet.cluster.put import _encode_stripe  # noqa: E402
from shardfleet.erasure.codec import Codec  # noqa: E402
from shardfleet.erasure.params import ErasureParams  # noqa: E402
from shardfleet.node.storage.shardfile import ShardFile  # noqa: E402

MIB = 1 << 20
SIZE = 64 * MIB
STRIPE = 1 * MIB
EC = "2+2"
SMALL_MIB = 16  # the transport run whose CPU is subtracted (start-up, handshakes)
REPEATS = 3  # in-process pieces: the least CPU of this many runs


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def least_cpu(job: Callable[[], None], repeats: int = REPEATS) -> float:
    """CPU seconds (all threads of this process) of the cheapest of ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        t0 = _cpu()
        job()
        best = min(best, _cpu() - t0)
    return best


def stripe_jobs(data: memoryview, params: ErasureParams) -> None:
    codec, md5 = Codec(params), hashlib.md5()
    for off in range(0, len(data), params.stripe_size):
        _encode_stripe(codec, md5, data[off : off + params.stripe_size])
    md5.digest()


def client_body(data: memoryview) -> None:
    """The body crossing loopback TCP: both ends' kernel work, as client and node pay it."""
    with (
        socket.create_server(("127.0.0.1", 0)) as srv,
        socket.create_connection(srv.getsockname(), timeout=30) as sender,
    ):
        receiver, _ = srv.accept()
        with receiver:
            receiver.settimeout(30)

            def drain() -> None:
                buf, left = bytearray(256 << 10), len(data)
                while left:
                    got = receiver.recv_into(buf)
                    if not got:
                        break
                    left -= got

            t = threading.Thread(target=drain)
            t.start()
            try:
                sender.sendall(data)
            finally:
                sender.shutdown(socket.SHUT_WR)
                t.join(60)


def shard_files(data: memoryview, params: ErasureParams, folder: Path) -> None:
    shard, block = len(data) // params.k, params.block_size
    for i in range(params.n):
        path = folder / f"shard.{i}"
        f = ShardFile(path)
        try:
            for off in range(0, shard, block):
                f.append([data[off : off + block]])
            f.finish()
        finally:
            f.close()
            path.unlink(missing_ok=True)


def transport_cpu(total_mib: int, timeout: float) -> float:
    """User+system CPU of bench_transport.py (client and its server) moving total_mib each way."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, str(HERE / "bench_transport.py"), "--no-compare",
         "--total-mib", str(total_mib), "--max-seconds", str(timeout)],
        check=True, cwd=REPO, stdout=subprocess.DEVNULL, timeout=timeout * 2 + 60,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu_per_put(runs: list[Run], cell: str = CELL_NAMES["3"]) -> tuple[float, float] | None:
    """(server CPU s per PUT, MiB/s) of a run's 64 MiB put phase, if it measured CPU."""
    for run in runs:
        got = run.op("put") if run.cell == cell else None
        if got and got[0].get("server_cpu_s") and got[1].get("ops"):
            return got[0]["server_cpu_s"] / got[1]["ops"], float(got[1]["mib_s"])
    return None


def measure(a: argparse.Namespace) -> list[tuple[str, float]]:
    """(what, CPU seconds per 64 MiB PUT) for each piece of work."""
    params = ErasureParams.parse(EC, STRIPE)
    shard = SIZE // params.k
    remote = (params.n - 1) * shard
    data = memoryview(os.urandom(SIZE))
    base, disk = pick_data_base(REPO, a.tmpdir)
    print(f"# costs: shard files in {base} ({disk})", flush=True)
    jobs = least_cpu(lambda: stripe_jobs(data, params))
    rows = [
        (f"stripe jobs: MD5 + zfec {EC} + CRC32C, 64 x 1 MiB", jobs),
        ("client body: 64 MiB over loopback TCP", least_cpu(lambda: client_body(data))),
    ]
    with tempfile.TemporaryDirectory(prefix="shardfleet-bench-costs-", dir=base) as tmp:
        files = least_cpu(lambda: shard_files(data, params, Path(tmp)))
    rows.append((f"shard files: {params.n} x {shard // MIB} MiB, O_DIRECT + fdatasync", files))
    big = max(a.transport_mib, 4 * SMALL_MIB)
    moved = 2 * (big - SMALL_MIB) * MIB  # each run ships its total up, then down
    per_byte = (transport_cpu(big, 300) - transport_cpu(SMALL_MIB, 300)) / moved
    name = f"remote shards: {remote // MIB} MiB over QUIC at {per_byte * 1e9:.2f} ns/B"
    rows.append((name, per_byte * remote))
    return rows


def run(a: argparse.Namespace) -> SuiteResult:
    res = SuiteResult("costs: the CPU a 64 MiB PUT on the default dev cluster cannot avoid")
    try:
        rows = measure(a)
    except (subprocess.SubprocessError, OSError) as exc:
        res.broken = True
        res.notes.append(f"measurement failed: {exc}")
        return res
    floor = sum(cpu for _, cpu in rows)
    print("\n64 MiB PUT, default dev cluster (2+2, 4 nodes): CPU seconds it cannot avoid")
    for name, cpu in rows:
        print(f"  {name:<62} {cpu:6.3f}")
    print(f"  {'sum':<62} {floor:6.3f}")
    parts = "; ".join(f"{name.split(':')[0]} {cpu:.3f}" for name, cpu in rows)
    res.notes.append(f"unavoidable CPU per 64 MiB PUT: {floor:.3f} s ({parts})")
    for who, runs in (
        ("Swift EC 4+2 (peers' run)", swift_runs()),
        ("shardfleet (cluster suite)", _ours(a.out)),
    ):
        got = cpu_per_put(runs)
        if got is None:
            continue
        cpu, mib_s = got
        line = f"{who}: server CPU per 64 MiB PUT {cpu:.3f} s at {mib_s:.1f} MiB/s"
        print(f"  {line}; budget on 2 cores {2 * 64 / mib_s:.3f} s")
        res.notes.append(line)
    res.notes.append(f"again: {command('costs')}")
    return res


def _ours(out: Path) -> list[Run]:
    path = out / f"{CLUSTER_LABEL}.jsonl"
    return load(path) if path.exists() else []
