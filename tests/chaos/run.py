"""The chaos run: a bounded workload through random nodes of a dev cluster while a fault
injector breaks nodes, drives and bytes; then healing, then every invariant.

Workload (threads, each owning its keys, so the ledger is exact): PUT of 0 B to 3 MiB,
overwrite, GET (checked against the ledger as it streams), DELETE, CopyObject and, now and
then, a multipart upload, each through a random node. Faults, one at a time, at most one
node out at once (a 2+2 cluster's write tolerance): SIGKILL and restart of a node,
SIGSTOP/SIGCONT of a node (a hang), flipped bytes in a shard file, a deleted shard file, a
wiped drive (its node formats and heals it while running).

Invariants, after the faults stop and `admin heal` reports done: no acknowledged write lost,
no deleted key back, no wrong bytes ever read (during the run too), no error for any key at
the end, and a deep scan after healing finds nothing left to heal.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from shardfleet.node.devcluster import DevCluster
from tests.chaos.ledger import Ledger

MiB = 1 << 20
BUCKET = "chaos"


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=DEV_ACCESS_KEY,
        aws_secret_access_key=DEV_SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=30),
    )


def admin(endpoint: str, *args: str) -> dict:
    env = dict(
        os.environ, SHARDFLEET_ACCESS_KEY=DEV_ACCESS_KEY, SHARDFLEET_SECRET_KEY=DEV_SECRET_KEY
    )
    proc = subprocess.run(
        [sys.executable, "-m", "shardfleet.node.main", "admin", *args, "--endpoint", endpoint],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    return json.loads(proc.stdout)


@dataclass
class Report:
    seed: int
    ops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    keys_verified: int = 0
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)
    end_errors: list[str] = field(default_factory=list)
    bytes_healed: int = 0
    heal_seconds: float = 0.0
    left_to_heal: int = 0

    def text(self) -> str:
        return "\n".join(
            [
                f"chaos report (seed {self.seed})",
                f"  operations: {dict(self.ops)}",
                f"  operation errors (allowed while a node is out): {dict(self.errors)}",
                f"  faults: {dict(self.faults)} ({sum(self.faults.values())} in all)",
                f"  keys verified at the end: {self.keys_verified}",
                f"  lost acknowledged writes: {len(self.lost)} {self.lost[:5]}",
                f"  resurrected deletes: {len(self.resurrected)} {self.resurrected[:5]}",
                f"  wrong reads: {len(self.wrong)} {self.wrong[:5]}",
                f"  keys failing at the end: {len(self.end_errors)} {self.end_errors[:5]}",
                f"  bytes healed: {self.bytes_healed}",
                f"  last fault to full redundancy: {self.heal_seconds:.1f} s",
                f"  objects a deep scan still had to heal afterwards: {self.left_to_heal}",
            ]
        )


class Chaos:
    def __init__(self, cluster: DevCluster, seed: int, *, keys_per_worker: int = 12) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.report = Report(seed)
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.keys_per_worker = keys_per_worker
        self.lock = threading.Lock()
        self.down: set[int] = set()  # nodes killed or stopped right now

    # -- workload ------------------------------------------------------------------------
    def endpoints(self) -> list[str]:
        with self.lock:
            return [e for i, e in enumerate(self.cluster.endpoints, 1) if i not in self.down]

    def worker(self, wid: int, deadline: float) -> None:
        rng = random.Random(self.rng.random())
        keys = [f"w{wid}/k{i}" for i in range(self.keys_per_worker)]
        clients = {e: client(e) for e in self.cluster.endpoints}
        while time.monotonic() < deadline and not self.stop.is_set():
            key = rng.choice(keys)
            s3 = clients[rng.choice(self.endpoints() or self.cluster.endpoints)]
            op = rng.choices(["put", "get", "delete", "copy", "multipart"], [5, 6, 1, 1, 0.3])[0]
            self.report.ops[op] += 1
            try:
                self._one(s3, rng, op, key, keys)
            except (ClientError, BotoCoreError, OSError) as exc:
                response = getattr(exc, "response", None) or {}
                code = response.get("Error", {}).get("Code", type(exc).__name__)
                self.report.errors[f"{op}:{code}"] += 1

    def _one(self, s3, rng: random.Random, op: str, key: str, keys: list[str]) -> None:
        ledger = self.ledger
        if op == "get":
            try:
                data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "NoSuchKey":
                    raise
                data = None
            ledger.read(key, data)
            return
        if op == "delete":
            ledger.uncertain(key, None)
            s3.delete_object(Bucket=BUCKET, Key=key)
            ledger.acked(key, None)
            return
        if op == "copy":
            source = rng.choice([k for k in keys if k != key])
            allowed = ledger.allowed.get(source, set())
            if len(allowed) != 1 or "<deleted>" in allowed:
                return  # copy only from a settled, existing source: the result is known
            data = s3.get_object(Bucket=BUCKET, Key=source)["Body"].read()
            ledger.read(source, data)
            ledger.uncertain(key, data)
            s3.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": source})
            ledger.acked(key, data)
            return
        if op == "multipart":
            parts = [rng.randbytes(5 * MiB), rng.randbytes(rng.randrange(1, 300_000))]
            data = b"".join(parts)
            ledger.uncertain(key, data)
            uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
            done = []
            for n, body in enumerate(parts, 1):
                r = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n, Body=body)
                done.append({"PartNumber": n, "ETag": r["ETag"]})
            s3.complete_multipart_upload(
                Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={"Parts": done}
            )
            ledger.acked(key, data)
            return
        size = rng.choice([0, 1000, 100_000, 300_000, 1 * MiB, 3 * MiB + 7])
        data = rng.randbytes(size)
        ledger.uncertain(key, data)
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        ledger.acked(key, data)

    # -- faults --------------------------------------------------------------------------
    def faults(self, deadline: float, every: float) -> None:
        rng = random.Random(self.rng.random())
        nodes = list(range(1, self.cluster.spec.nodes + 1))
        while time.monotonic() < deadline and not self.stop.is_set():
            time.sleep(rng.uniform(0.5, 1.5) * every)
            kind = rng.choice(["kill", "stop", "flip", "unlink", "wipe"])
            node = rng.choice(nodes)
            try:
                getattr(self, f"_{kind}")(rng, node)
                self.report.faults[kind] += 1
                self.last_fault = time.monotonic()
            except FileNotFoundError:
                continue  # nothing of that kind there yet
            if kind in ("flip", "unlink", "wipe"):
                # damage stays within the tolerance: the next damaging fault comes once
                # this one is healed (as an operator replaces one disk at a time)
                self._heal_now(deep=kind == "flip")

    def _heal_now(self, *, deep: bool) -> None:
        endpoint = next(iter(self.endpoints()), None)
        if endpoint is None:
            return
        try:
            admin(endpoint, "heal", "start", *(["--deep"] if deep else []))
            self._wait_healed(endpoint, 120)
        except (RuntimeError, TimeoutError) as exc:
            self.report.errors[f"heal:{type(exc).__name__}"] += 1

    def _kill(self, rng: random.Random, node: int) -> None:
        with self.lock:
            self.down.add(node)
        self.cluster.kill_node(node)
        time.sleep(rng.uniform(0.5, 3))
        self.cluster.start_node(node)
        self.cluster.wait_ready([node], timeout=60)
        with self.lock:
            self.down.discard(node)

    def _stop(self, rng: random.Random, node: int) -> None:
        proc = self.cluster.procs[node]
        with self.lock:
            self.down.add(node)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            time.sleep(rng.uniform(0.5, 3))
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            with self.lock:
                self.down.discard(node)

    def _drives(self, node: int) -> list[Path]:
        base = self.cluster.spec.data / f"node{node}"
        return sorted(base.glob("drive*"))

    def _shards(self, node: int) -> list[Path]:
        return [p for d in self._drives(node) for p in (d / "data").rglob("part.1") if p.is_file()]

    def _flip(self, rng: random.Random, node: int) -> None:
        shards = [p for p in self._shards(node) if p.stat().st_size > 0]
        if not shards:
            raise FileNotFoundError
        path = rng.choice(shards)
        with open(path, "r+b") as f:
            off = rng.randrange(path.stat().st_size)
            f.seek(off)
            byte = f.read(1)
            f.seek(off)
            f.write(bytes([byte[0] ^ 0xFF]))

    def _unlink(self, rng: random.Random, node: int) -> None:
        shards = self._shards(node)
        if not shards:
            raise FileNotFoundError
        rng.choice(shards).unlink()

    def _wipe(self, rng: random.Random, node: int) -> None:
        drive = rng.choice(self._drives(node))
        shutil.rmtree(drive)
        drive.mkdir()
        time.sleep(3)  # its node notices within 2 s and formats it: one fault at a time

    # -- the run ---------------------------------------------------------------------------
    def run(self, *, seconds: float, workers: int = 4, fault_every: float = 3.0) -> Report:
        first = client(self.cluster.endpoints[0])
        first.create_bucket(Bucket=BUCKET)
        self.last_fault = time.monotonic()
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=self.worker, args=(w, deadline), daemon=True)
            for w in range(workers)
        ]
        threads.append(
            threading.Thread(target=self.faults, args=(deadline, fault_every), daemon=True)
        )
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 120)
        self.stop.set()
        self._settle()
        return self.report

    def _settle(self) -> None:
        """Every node up, healing done, then every key checked and a deep scan."""
        for i, proc in self.cluster.procs.items():
            if proc.poll() is not None:
                self.cluster.start_node(i)
                self.cluster.wait_ready([i], timeout=60)
        endpoint = self.cluster.endpoints[0]
        started = time.monotonic()
        time.sleep(3)  # drives wiped last are formatted; membership settles
        admin(endpoint, "heal", "start", "--deep")
        self._wait_healed(endpoint, 300)
        self.report.heal_seconds = time.monotonic() - max(self.last_fault, started - 3)
        st = admin(endpoint, "heal", "status", "--json")
        self.report.bytes_healed = sum(
            n["scanner"]["bytes"] + n["mrf"]["bytes"] for n in st["nodes"]
        )
        s3 = client(endpoint)
        for key in sorted(self.ledger.allowed):
            try:
                data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "NoSuchKey":
                    self.report.end_errors.append(f"{key}: {exc.response['Error']['Code']}")
                    continue
                data = None
            self.ledger.read(key, data)
            self.report.keys_verified += 1
        before = sum(n["scanner"]["healed"] for n in st["nodes"])
        admin(endpoint, "heal", "start", "--deep")
        self._wait_healed(endpoint, 300)
        st = admin(endpoint, "heal", "status", "--json")
        self.report.left_to_heal = sum(n["scanner"]["healed"] for n in st["nodes"]) - before
        self.report.lost = self.ledger.lost
        self.report.wrong = self.ledger.wrong
        self.report.resurrected = self.ledger.resurrected

    @staticmethod
    def _wait_healed(endpoint: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        time.sleep(1)
        while True:
            st = admin(endpoint, "heal", "status", "--json")
            if st["done"] and not st["unreachable"]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"healing not done after {timeout}s: {st}")
            time.sleep(0.5)
