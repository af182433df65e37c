"""The chaos run: a bounded workload through random nodes of a dev cluster while a fault
injector breaks nodes, drives, bytes and links; then healing, then every invariant.

Workload (threads, each owning its keys, so the ledger is exact): PUT of 0 B to 3 MiB,
overwrite, GET (checked against the ledger as it streams), DELETE, CopyObject and, now and
then, a multipart upload, each through a random node. Faults, one at a time, at most one
node out at once (a 2+2 cluster's write tolerance), each bounded in time and undone before
the next:

  kill          SIGKILL of a node, restarted 0.5-3 s later
  stop          SIGSTOP of a node, SIGCONT 0.5-3 s later (a hang)
  flip          one byte of a shard file inverted (bitrot)
  unlink        a shard file deleted
  wipe          a drive emptied (its node formats and heals it while running; a drive that
                is a mount point keeps its mount and loses its contents, as a new disk)
  enospc        the one small tmpfs drive (Chaos(full_drive=...), see conftest.py) filled to
                ENOSPC by a filler file for 1-3 s, then the filler removed: writes go on
                without it (counted; one refused then is reported) and its misses go to the
                MRF queue
  slow_read     a drive's read_shard delayed 3 s, for 1-3 s    } FaultyDrive in the node
  slow_commit   a drive's commit delayed 3 s, for 1-3 s        } (node/testfaults.py, with
  fail_commit   a drive's commit fails (DriveIOError), 1-3 s   } SHARDFLEET_TEST_FAULTS=1)
  partition     a node cut off from its peers, both ways, 1-4 s } only on a cluster that
  partition_in  ... only what its peers send it is dropped       } can (tests/chaos/netns.py:
  partition_out ... only what it sends its peers is dropped      } network namespaces); then
                                                                   until all see all again

The kinds a run draws from are the ones its cluster supports (Chaos(kinds=...) narrows
them; rotate=True takes them in turn). Damaging faults (flip, unlink, wipe) are healed before the next fault, as an operator
replaces one disk at a time: damage stays within the tolerance.

Invariants, after the faults stop and `admin heal` reports done: no acknowledged write lost,
no deleted key back, no wrong bytes ever read (during the run too), no error for any key at
the end, no write refused while only the small drive was full, and a deep scan after
healing finds nothing left to heal (nor anything it cannot heal).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shardfleet.node import admin as admin_api
from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from shardfleet.node.devcluster import DevCluster
from tests.chaos.ledger import Ledger

MiB = 1 << 20
BUCKET = "chaos"
FILLER = ".chaos-filler"  # the file that fills the small drive
DAMAGING = ("flip", "unlink", "wipe")
BASIC = ("kill", "stop", "flip", "unlink", "wipe")
DRIVE_FAULTS = ("slow_read", "slow_commit", "fail_commit")
PARTITIONS = {"partition": "both", "partition_in": "in", "partition_out": "out"}


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
    """`shardfleet admin heal start [--deep]` / `heal status --json`, in this process (the
    CLI's own calls: a subprocess per poll cost a second of interpreter start each)."""
    try:
        if args[:2] == ("heal", "start"):
            return admin_api.start_heal(
                endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY, deep="--deep" in args
            )
        if args[:2] == ("heal", "status"):
            return admin_api.fetch_heal(endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY)
    except SystemExit as exc:  # the CLI client's way of failing
        raise RuntimeError(str(exc)) from None
    raise ValueError(f"no such admin call here: {args}")


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
    failed_to_heal: int = 0  # objects that deep scan found damaged and could not heal
    full_writes: Counter = field(default_factory=Counter)  # writes while a drive was full
    full_writes_failed: list[str] = field(default_factory=list)
    fault_errors: list[str] = field(default_factory=list)  # faults that could not be injected
    evidence: list[str] = field(default_factory=list)  # per broken invariant: who, when

    def text(self) -> str:
        return "\n".join(
            [
                f"chaos report (seed {self.seed})",
                f"  operations: {dict(self.ops)}",
                f"  operation errors (allowed while a node is out): {dict(self.errors)}",
                f"  faults: {dict(self.faults)} ({sum(self.faults.values())} in all)",
                f"  writes while a drive was full: {self.full_writes['acked']} acknowledged,"
                f" {self.full_writes['failed']} failed {self.full_writes_failed[:3]}",
                f"  faults that could not be injected: {len(self.fault_errors)}"
                f" {self.fault_errors[:3]}",
                f"  keys verified at the end: {self.keys_verified}",
                f"  lost acknowledged writes: {len(self.lost)} {self.lost[:5]}",
                f"  resurrected deletes: {len(self.resurrected)} {self.resurrected[:5]}",
                f"  wrong reads: {len(self.wrong)} {self.wrong[:5]}",
                f"  keys failing at the end: {len(self.end_errors)} {self.end_errors[:5]}",
                f"  bytes healed: {self.bytes_healed}",
                f"  last fault to full redundancy: {self.heal_seconds:.1f} s",
                f"  objects a deep scan still had to heal afterwards: {self.left_to_heal}"
                f" (and failed to heal: {self.failed_to_heal})",
                *(f"  evidence: {e}" for e in self.evidence[:10]),
            ]
        )


class Chaos:
    def __init__(
        self,
        cluster: DevCluster,
        seed: int,
        *,
        keys_per_worker: int = 12,
        full_drive: Path | None = None,
        kinds: tuple[str, ...] | None = None,
        rotate: bool = False,
    ) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.report = Report(seed)
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.faulting = threading.Event()  # set until the fault thread is done
        self.keys_per_worker = keys_per_worker
        self.lock = threading.Lock()
        self.down: set[int] = set()  # nodes killed or stopped right now
        self.full_drive = full_drive  # a small mount of its own, for the ENOSPC fault
        self.full = threading.Event()  # set while it is full
        supported = self.supported()
        if kinds is not None:
            unknown = set(kinds) - set(supported)
            if unknown:
                raise ValueError(f"this cluster cannot inject {sorted(unknown)}")
            supported = kinds
        self.kinds = supported
        self.rotate = rotate  # the kinds in turn (a short run sees each), not at random
        self.started = time.monotonic()
        self.timeline: list[tuple[float, str, int, float]] = []  # at, kind, node, seconds

    def supported(self) -> tuple[str, ...]:
        """The fault kinds this cluster allows: the basic ones always; ENOSPC with a small
        drive of its own; FaultyDrive faults when its nodes run with SHARDFLEET_TEST_FAULTS=1;
        partitions on a cluster of network namespaces."""
        kinds = list(BASIC)
        if self.full_drive is not None:
            kinds.append("enospc")
        env = {**os.environ, **(self.cluster.env or {})}
        if env.get("SHARDFLEET_TEST_FAULTS") == "1":
            kinds += DRIVE_FAULTS
        if hasattr(self.cluster, "cut"):
            kinds += PARTITIONS
        return tuple(kinds)

    # -- workload ------------------------------------------------------------------------
    def endpoints(self) -> list[str]:
        with self.lock:
            return [e for i, e in enumerate(self.cluster.endpoints, 1) if i not in self.down]

    def worker(self, wid: int, deadline: float) -> None:
        rng = random.Random(self.rng.random())
        keys = [f"w{wid}/k{i}" for i in range(self.keys_per_worker)]
        clients = {e: client(e) for e in self.cluster.endpoints}
        while (time.monotonic() < deadline or self.faulting.is_set()) and not self.stop.is_set():
            key = rng.choice(keys)
            s3 = clients[rng.choice(self.endpoints() or self.cluster.endpoints)]
            op = rng.choices(["put", "get", "delete", "copy", "multipart"], [5, 6, 1, 1, 0.3])[0]
            self.report.ops[op] += 1
            full = self.full.is_set() and op in ("put", "copy", "multipart")
            try:
                self._one(s3, rng, op, key, keys)
                if full and self.full.is_set():
                    self.report.full_writes["acked"] += 1
            except (ClientError, BotoCoreError, OSError) as exc:
                response = getattr(exc, "response", None) or {}
                code = response.get("Error", {}).get("Code", type(exc).__name__)
                self.report.errors[f"{op}:{code}"] += 1
                if full and self.full.is_set():
                    self.report.full_writes["failed"] += 1
                    self.report.full_writes_failed.append(f"{op} {key}: {code}")

    def _where(self, s3, op: str, answer: dict) -> str:
        """Which node answered, when, with which request id: to find it in the node logs."""
        rid = answer.get("ResponseMetadata", {}).get("RequestId", "?")
        node = s3.meta.endpoint_url.rsplit(":", 1)[-1]
        return f"{op} via :{node} at {time.monotonic() - self.started:.1f} s, request {rid}"

    def _get(self, s3, key: str) -> tuple[bytes | None, str]:
        try:
            answer = s3.get_object(Bucket=BUCKET, Key=key)
            data = answer["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchKey":
                raise
            return None, self._where(s3, "GET 404", exc.response)
        return data, self._where(s3, "GET", answer)

    def _one(self, s3, rng: random.Random, op: str, key: str, keys: list[str]) -> None:
        ledger = self.ledger
        if op == "get":
            data, where = self._get(s3, key)
            ledger.read(key, data, where)
            return
        if op == "delete":
            ledger.uncertain(key, None)
            answer = s3.delete_object(Bucket=BUCKET, Key=key)
            ledger.acked(key, None, self._where(s3, "DELETE", answer))
            return
        if op == "copy":
            source = rng.choice([k for k in keys if k != key])
            allowed = ledger.allowed.get(source, set())
            if len(allowed) != 1 or "<deleted>" in allowed:
                return  # copy only from a settled, existing source: the result is known
            answer = s3.get_object(Bucket=BUCKET, Key=source)
            data = answer["Body"].read()
            ledger.read(source, data, self._where(s3, "GET", answer))
            ledger.uncertain(key, data)
            answer = s3.copy_object(
                Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": source}
            )
            ledger.acked(key, data, self._where(s3, "COPY", answer))
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
            answer = s3.complete_multipart_upload(
                Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={"Parts": done}
            )
            ledger.acked(key, data, self._where(s3, "COMPLETE", answer))
            return
        size = rng.choice([0, 1000, 100_000, 300_000, 1 * MiB, 3 * MiB + 7])
        data = rng.randbytes(size)
        ledger.uncertain(key, data)
        answer = s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        ledger.acked(key, data, self._where(s3, "PUT", answer))

    # -- faults --------------------------------------------------------------------------
    def faults(self, deadline: float, every: float, at_least: int, cap: float) -> None:
        """Faults until the deadline, and past it (the workers go on while this runs, up to
        `cap`) until `at_least` were injected: how many fit in the time depends on how long
        the damaging ones take to heal, which a busy machine stretches."""
        rng = random.Random(self.rng.random())
        nodes = list(range(1, self.cluster.spec.nodes + 1))

        def more() -> bool:
            now = time.monotonic()
            short = sum(self.report.faults.values()) < at_least
            return (now < deadline or (short and now < cap)) and not self.stop.is_set()

        while more():
            time.sleep(rng.uniform(0.5, 1.5) * every)
            if self.rotate:
                kind = self.kinds[sum(self.report.faults.values()) % len(self.kinds)]
            else:
                kind = rng.choice(self.kinds)
            node = rng.choice(nodes)
            if kind == "enospc":  # always the one small drive
                assert self.full_drive is not None
                node = int(self.full_drive.parent.name.removeprefix("node"))
            began = time.monotonic()
            try:
                getattr(self, f"_{kind}")(rng, node)
                self.report.faults[kind] += 1
                self.last_fault = time.monotonic()
                self.timeline.append((began - self.started, kind, node, self.last_fault - began))
            except FileNotFoundError:
                continue  # nothing of that kind there yet
            except Exception as exc:  # noqa: BLE001 - the injector's own failure: reported
                self.report.fault_errors.append(f"{kind} on node{node}: {exc!r}"[:300])
                self.undo()
                if kind not in DAMAGING:
                    continue  # (a damaging one may have done part of its damage: healed)
            if kind in DAMAGING:
                # damage stays within the tolerance: the next damaging fault comes once
                # this one is healed (as an operator replaces one disk at a time)
                began = time.monotonic()
                self._heal_now(deep=kind == "flip")
                self.timeline.append((began - self.started, "heal", 0, time.monotonic() - began))

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
        drives = self._drives(node)
        # Beside a mount point only a mount point is adopted as a replacement (the node's
        # guard against a disk that failed to mount), so on a node with one, only it is
        # replaced: by an empty file system on the same mount, as a new disk would be.
        mounts = [d for d in drives if os.path.ismount(d)]
        drive = rng.choice(mounts or drives)
        if drive in mounts:  # what the node writes meanwhile (data/, tmp/) it clears itself
            for child in list(drive.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        else:  # pulled out at once (a write in flight cannot race the removal), then gone
            gone = drive.with_name(f".wiped-{drive.name}-{time.monotonic_ns()}")
            drive.rename(gone)
            drive.mkdir()
            shutil.rmtree(gone, ignore_errors=True)
        # its node notices within 2 s and formats it: one fault at a time
        deadline = time.monotonic() + 10
        while not (drive / "format.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)

    def _enospc(self, rng: random.Random, node: int) -> None:
        """Fills the small drive to ENOSPC for a few seconds, then frees it."""
        if self.full_drive is None:
            raise FileNotFoundError
        filler = self.full_drive / FILLER
        try:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                st = os.statvfs(self.full_drive)
                with contextlib.suppress(OSError):
                    os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize)
                os.lseek(fd, 0, os.SEEK_END)
                chunk = b"\0" * 4096
                while True:  # what fallocate left, to the last page
                    try:
                        os.write(fd, chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
            finally:
                os.close(fd)
            self.full.set()
            time.sleep(rng.uniform(1, 3))
        finally:
            self.full.clear()
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()

    def _drive_fault(self, rng: random.Random, node: int, **arm: object) -> None:
        """Arms a FaultyDrive fault on one drive of a node for a few seconds (the node's
        test-only route, node/testfaults.py), then clears it. It expires by itself too."""
        from shardfleet.node import testfaults

        endpoint = self.cluster.endpoint(node)
        drive = rng.randrange(1, self.cluster.spec.drives_per_node + 1)
        hold = rng.uniform(1, 3)
        testfaults.call(endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY, drive=drive, ttl=hold + 30, **arm)
        try:
            time.sleep(hold)
        finally:
            testfaults.call(endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY, drive=drive, kind="clear")

    def _slow_read(self, rng: random.Random, node: int) -> None:
        self._drive_fault(rng, node, kind="delay", method="read_shard", seconds=3)

    def _slow_commit(self, rng: random.Random, node: int) -> None:
        self._drive_fault(rng, node, kind="delay", method="commit", seconds=3)

    def _fail_commit(self, rng: random.Random, node: int) -> None:
        self._drive_fault(rng, node, kind="fail", method="commit", error="io")

    def _cut(self, rng: random.Random, node: int, direction: str) -> None:
        """Partitions a node from its peers (clients still reach every node), then mends
        the links and waits (at most 15 s) until every node sees every other again."""
        self.cluster.cut(node, direction)
        try:
            time.sleep(rng.uniform(1, 4))
        finally:
            self.cluster.mend(node)
        if not self.cluster.wait_converged(timeout=15):
            self.report.errors[f"{direction}-partition:not-converged-after-15s"] += 1

    def _partition(self, rng: random.Random, node: int) -> None:
        self._cut(rng, node, PARTITIONS["partition"])

    def _partition_in(self, rng: random.Random, node: int) -> None:
        self._cut(rng, node, PARTITIONS["partition_in"])

    def _partition_out(self, rng: random.Random, node: int) -> None:
        self._cut(rng, node, PARTITIONS["partition_out"])

    # -- the run ---------------------------------------------------------------------------
    def run(
        self, *, seconds: float, workers: int = 4, fault_every: float = 3.0, min_faults: int = 0
    ) -> Report:
        """Load and faults for `seconds`; with `min_faults`, both go on (for at most as long
        again) until that many faults were injected."""
        first = client(self.cluster.endpoints[0])
        first.create_bucket(Bucket=BUCKET)
        self.last_fault = self.started = time.monotonic()
        deadline = time.monotonic() + seconds
        self.faulting.set()
        faulter = threading.Thread(
            target=self.faults,
            args=(deadline, fault_every, min_faults, deadline + seconds),
            daemon=True,
        )
        loaders = [
            threading.Thread(target=self.worker, args=(w, deadline), daemon=True)
            for w in range(workers)
        ]
        try:
            for t in (faulter, *loaders):
                t.start()
            faulter.join(2 * seconds + 120)
            self.faulting.clear()  # the workers finish what they are doing and stop
            for t in loaders:
                t.join(120)
        finally:
            self.stop.set()
            self.undo()
        self._settle()
        return self.report

    def undo(self) -> None:
        """Whatever fault may still be in force, undone (each fault undoes itself; this is
        for a run cut short): links mended, nodes continued, filler removed, drive faults
        cleared."""
        from shardfleet.node import testfaults

        self.full.clear()
        if self.full_drive is not None:
            with contextlib.suppress(OSError):
                (self.full_drive / FILLER).unlink()
        if hasattr(self.cluster, "cut"):
            for i in self.cluster.procs:
                self.cluster.mend(i)
        for i, proc in self.cluster.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGCONT)
                if set(DRIVE_FAULTS) & set(self.kinds):
                    with contextlib.suppress(Exception):
                        testfaults.call(
                            self.cluster.endpoint(i), DEV_ACCESS_KEY, DEV_SECRET_KEY,
                            drive=0, kind="clear", timeout=5,
                        )  # fmt: skip
        with self.lock:
            self.down.clear()

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
        self.timeline.append((started - self.started, "settle:heal", 0, time.monotonic() - started))
        st = admin(endpoint, "heal", "status", "--json")
        self.report.bytes_healed = sum(
            n["scanner"]["bytes"] + n["mrf"]["bytes"] for n in st["nodes"]
        )
        s3 = client(endpoint)
        for key in sorted(self.ledger.allowed):
            try:
                data, where = self._get(s3, key)
            except ClientError as exc:
                self.report.end_errors.append(f"{key}: {exc.response['Error']['Code']}")
                continue
            self.ledger.read(key, data, "at the end: " + where)
            self.report.keys_verified += 1
        before = sum(n["scanner"]["healed"] for n in st["nodes"])
        failed = sum(n["scanner"]["failed"] for n in st["nodes"])
        began = time.monotonic()
        admin(endpoint, "heal", "start", "--deep")
        self._wait_healed(endpoint, 300)
        self.timeline.append((began - self.started, "settle:deep", 0, time.monotonic() - began))
        st = admin(endpoint, "heal", "status", "--json")
        self.report.left_to_heal = sum(n["scanner"]["healed"] for n in st["nodes"]) - before
        self.report.failed_to_heal = sum(n["scanner"]["failed"] for n in st["nodes"]) - failed
        self.report.lost = self.ledger.lost
        self.report.wrong = self.ledger.wrong
        self.report.resurrected = self.ledger.resurrected
        self.report.evidence = self.ledger.evidence

    @staticmethod
    def _wait_healed(endpoint: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        time.sleep(0.3)  # the pass just asked for shows as running or pending by then
        while True:
            st = admin(endpoint, "heal", "status", "--json")
            if st["done"] and not st["unreachable"]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"healing not done after {timeout}s: {st}")
            time.sleep(0.25)
