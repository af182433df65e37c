"""Suite "edge" (issue 16): what access control and the edge cost, on a standalone node.

policy     Alice owns two buckets: one without a policy, one with a 10-statement policy
           (Allow and Deny, Principal / NotPrincipal, NotAction, Resource mismatches and the
           common Conditions) that grants Bob what s3bench does. Rounds alternate Alice on
           the plain bucket (no policy to evaluate: the owner's own) and Bob on the policy
           bucket (every request evaluated against all 10 statements), on one node, for the
           4 KiB (-c 16, put/get) and 64 MiB (-c 4, put/get) cells. Target: < 5 % slower.
tls        The same two cells through a node serving plain HTTP and one serving HTTPS
           (tls_cert/tls_key, a certificate from a throwaway CA; s3bench trusts it through
           SSL_CERT_FILE), alternating, a fresh node per round on the same data. Reported.
ratelimit  A node with rate_limit_rps = 100 per access key. A quiet key GETs one 4 KiB
           object 20 times a second (its own process, one connection); a noisy key floods
           the node from another process with 32 loops (most answered 503 SlowDown). The
           quiet key's p99 latency while flooded over its p99 alone (rounds alternate):
           target at most 3x, and the quiet key is never refused. The same flood on a node
           without limits is shown beside it, as what the limit buys.

Rounds alternate (the policy part in ABBA order: which side runs first swaps each round)
so drift on the two shared cores hits both sides alike; each side's figure is the mean
over its rounds (--edge-rounds, default 2).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchnode import BenchNode, pick_data_base
from matrix import REPO, SHARED, print_table
from proctree import NodeDied, run_child, stop_tree
from summary import SuiteResult, command
from targets import Run, load

LABEL = "shardfleet-edge"
POLICY_TARGET_PCT = 5.0
RATE_TARGET_X = 3.0
RATE_RPS = 100
QUIET_RPS = 20.0
FLOOD_LOOPS = 32
CELLS = (("4KiB", 16), ("64MiB", 4))  # the matrix's cells 1 and 3 (put, get)
ALICE = ("alice-bench", "alice-bench-secret-key", "alice")
BOB = ("bob-bench", "bob-bench-secret-key", "bob")
QUIET = ("quiet-bench", "quiet-bench-secret-key", "quiet")
NOISY = ("noisy-bench", "noisy-bench-secret-key", "noisy")


def users_toml(*users: tuple[str, str, str], extra: str = "") -> str:
    out = extra
    for ak, sk, name in users:
        out += f'[[users]]\naccess_key = "{ak}"\nsecret_key = "{sk}"\ndisplay_name = "{name}"\n'
    return out


def bench_policy(bucket: str) -> str:
    """Ten statements, every one of which the engine must look at for Bob's requests: only
    the grants match; the denies miss on principal, resource, action or condition."""
    arn, objects = f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"
    bob = "arn:aws:iam::shardfleet:user/bob"
    carol = "arn:aws:iam::shardfleet:user/carol"
    statements = [
        {"Sid": "BobObjects", "Effect": "Allow", "Principal": {"AWS": [bob]},
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": objects,
         "Condition": {"StringLikeIfExists": {"aws:UserAgent": "*"}}},
        {"Sid": "BobList", "Effect": "Allow", "Principal": {"AWS": bob},
         "Action": "s3:ListBucket", "Resource": arn,
         "Condition": {"StringLikeIfExists": {"s3:prefix": ["*"]},
                       "NumericLessThanEqualsIfExists": {"s3:max-keys": "1000"}}},
        {"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"{arn}/public/*"},
        {"Sid": "NoCarol", "Effect": "Deny", "Principal": {"AWS": [carol]}, "Action": "s3:*",
         "Resource": [arn, objects]},
        {"Sid": "OnlyLoopback", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": objects, "Condition": {"NotIpAddress": {"aws:SourceIp": ["127.0.0.0/8"]}}},
        {"Sid": "Private", "Effect": "Deny", "Principal": "*", "Action": "s3:Get*",
         "Resource": f"{arn}/private/*"},
        {"Sid": "SecureOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": f"{arn}/secure/*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": "OnlyKnown", "Effect": "Deny", "NotPrincipal": {"AWS": [bob, carol]},
         "Action": "s3:DeleteObject", "Resource": f"{arn}/keep/*"},
        {"Sid": "BobNothingElse", "Effect": "Deny", "Principal": {"AWS": bob},
         "NotAction": ["s3:Get*", "s3:Put*", "s3:List*", "s3:Delete*"], "Resource": [arn, objects]},
        {"Sid": "UntilWhen", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": objects, "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2099-01-01T00:00:00Z"}}},
    ]  # fmt: skip
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def s3_client(endpoint: str, ak: str, sk: str, ca: Path | None = None):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        region_name="us-east-1",
        verify=str(ca) if ca else None,
        config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def s3bench(
    a: argparse.Namespace,
    node: BenchNode,
    creds: tuple[str, str],
    bucket: str,
    size: str,
    conc: int,
    label: str,
    log: Path,
    env: dict[str, str] | None = None,
    create: bool = False,
) -> Run:
    """One s3bench put,get run of a cell; its JSON line is appended to the suite's file."""
    cmd = [
        *(sys.executable, str(SHARED / "s3bench.py"), "--endpoint", node.endpoint),
        *("--access-key", creds[0], "--secret-key", creds[1], "--bucket", bucket),
        *(["--create-bucket"] if create else []),
        *("--cleanup", "--cleanup-timeout", "120", "--size", size, "-c", str(conc)),
        *("--procs", str(a.procs), "--duration", f"{a.duration:g}", "--phases", "put,get"),
        *("--server-pid", str(node.pid), "--label", label),
    ]
    with open(log, "wb") as f:
        rc = run_child(
            cmd, env or dict(os.environ), node.alive, stdout=f, stderr=f,
            timeout=2 * a.duration + 240,
        )  # fmt: skip
    lines = log.read_text(errors="replace").splitlines()
    if rc != 0 or not lines or not lines[-1].startswith('{"s3bench"'):
        raise RuntimeError(f"s3bench exited {rc} ({label}); see {log}")
    with open(a.out / f"{LABEL}.jsonl", "a") as f:
        f.write(lines[-1] + "\n")
    return load(log)[-1]


def figure(run: Run, op: str, size: str) -> float:
    """ops/s for small cells, MiB/s for 64 MiB (how the matrix judges them)."""
    got = run.op(op)
    if got is None:
        return float("nan")
    return float(got[1]["mib_s" if size == "64MiB" else "ops_s"])


def errors_of(runs: list[Run]) -> int:
    return sum(ph.get("errors") or 0 for r in runs for ph in r.phases)


@dataclass
class Sides:
    """Figures per side (a, b), cell and op, over the rounds."""

    names: tuple[str, str]
    figures: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)

    def add(self, side: str, size: str, run: Run) -> None:
        self.runs.append(run)
        for op in ("put", "get"):
            self.figures.setdefault((side, size, op), []).append(figure(run, op, size))

    def compare(self, size: str, op: str) -> tuple[float, float, float] | None:
        """(mean a, mean b, how much slower b is than a in %), None if a side is missing."""
        a = self.figures.get((self.names[0], size, op), [])
        b = self.figures.get((self.names[1], size, op), [])
        if not a or not b:
            return None
        ma, mb = statistics.mean(a), statistics.mean(b)
        return ma, mb, 100 * (ma - mb) / ma if ma else float("nan")


def _judge_sides(res: SuiteResult, sides: Sides, what: str, target: float | None, again: str):
    for size, _ in CELLS:
        unit = "MiB/s" if size == "64MiB" else "ops/s"
        for op in ("put", "get"):
            got = sides.compare(size, op)
            name = f"{size} {op.upper()} {what}" + (f" < {target:.0f}%" if target else "")
            if got is None:
                res.add("FAIL", name, "NO RESULT", again)
                continue
            ma, mb, pct = got
            fig = f"{pct:+.1f}% ({sides.names[0]} {ma:.1f} vs {sides.names[1]} {mb:.1f} {unit})"
            if target is None:
                res.add("PASS", name + " (reported)", fig, again)
            else:
                res.judge(pct < target, name, fig, again)
    if errors_of(sides.runs):
        res.add("FAIL", f"{what}: no request errors", f"{errors_of(sides.runs)} errors", again)


# -- policy ------------------------------------------------------------------------------
def run_policy(a: argparse.Namespace, data: Path, res: SuiteResult) -> None:
    out: Path = a.out
    config = out / f"{LABEL}.policy.toml"
    config.write_text(users_toml(ALICE, BOB))
    node = BenchNode(data, out / f"{LABEL}.node-policy.log", extra_args=("--config", str(config)))
    node.start()
    sides = Sides(("owner", "policy"))
    try:
        alice = s3_client(node.endpoint, ALICE[0], ALICE[1])
        for bucket in ("edge-plain", "edge-policy"):
            alice.create_bucket(Bucket=bucket)
        alice.put_bucket_policy(Bucket="edge-policy", Policy=bench_policy("edge-policy"))
        bob = s3_client(node.endpoint, BOB[0], BOB[1])
        bob.put_object(Bucket="edge-policy", Key="probe", Body=b"x")  # the grant works
        bob.delete_object(Bucket="edge-policy", Key="probe")
        for k in range(1, a.edge_rounds + 1):
            for size, conc in CELLS:
                order = [("owner", ALICE, "edge-plain"), ("policy", BOB, "edge-policy")]
                # ABBA: which side runs first swaps every round
                for side, who, bucket in order if k % 2 else order[::-1]:
                    label = f"shardfleet-{side}|{size} r{k}"
                    log = out / f"{LABEL}.policy-{side}-{size}-r{k}.log"
                    sides.add(side, size, s3bench(a, node, who[:2], bucket, size, conc, label, log))
                    print(f"  policy round {k} {size} {side}: done", flush=True)
    finally:
        node.stop()
    again = command("edge", "--edge-parts", "policy", "--duration", a.duration)
    _judge_sides(res, sides, "policy evaluation overhead", POLICY_TARGET_PCT, again)


# -- tls ---------------------------------------------------------------------------------
def make_cert(where: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1: (ca.crt, node.crt, node.key)."""
    from shardfleet.transport import create_ca, issue_node_cert

    create_ca(where / "ca", "bench")
    files = issue_node_cert(where / "ca", "bench-node", ["127.0.0.1", "localhost"], where / "node")
    return files.ca_cert, files.cert, files.key


def run_tls(a: argparse.Namespace, data: Path, res: SuiteResult) -> None:
    out: Path = a.out
    certs = Path(tempfile.mkdtemp(prefix="shardfleet-bench-certs-"))
    sides = Sides(("http", "https"))
    try:
        ca, cert, key = make_cert(certs)
        env = dict(os.environ, SSL_CERT_FILE=str(ca))
        modes = {"http": (), "https": ("--tls-cert", str(cert), "--tls-key", str(key))}
        for k in range(1, a.edge_rounds + 1):
            for side, args in modes.items():
                node = BenchNode(data, out / f"{LABEL}.node-{side}{k}.log", extra_args=args)
                node.start()
                try:
                    for size, conc in CELLS:
                        label = f"shardfleet-{side}|{size} r{k}"
                        log = out / f"{LABEL}.tls-{side}-{size}-r{k}.log"
                        creds = (node.access_key, node.secret_key)
                        run = s3bench(
                            a, node, creds, "edge-tls", size, conc, label, log, env, create=True
                        )
                        sides.add(side, size, run)
                        print(f"  tls round {k} {size} {side}: done", flush=True)
                finally:
                    node.stop()
    finally:
        shutil.rmtree(certs, ignore_errors=True)
    again = command("edge", "--edge-parts", "tls", "--duration", a.duration)
    _judge_sides(res, sides, "TLS overhead", None, again)


# -- rate limits -------------------------------------------------------------------------
def _signer(ak: str, sk: str):
    spec = importlib.util.spec_from_file_location("s3bench", SHARED / "s3bench.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Signer(ak, sk)


async def _loop_gets(
    endpoint: str, ak: str, sk: str, path: str, *, loops: int, seconds: float, rps: float
) -> dict[str, object]:
    """`loops` connections GETting `path` for `seconds`: as fast as they can (rps 0) or
    paced at `rps` in all; latencies of the 200s, counts by status."""
    import aiohttp

    signer = _signer(ak, sk)
    host = endpoint.split("://", 1)[1]
    lat: list[float] = []
    status: dict[int, int] = {}
    timeout = aiohttp.ClientTimeout(total=30)
    end = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=loops)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            headers = signer.headers("GET", host, path, [])
            t0 = time.monotonic()
            try:
                async with session.get(endpoint + path, headers=headers) as r:
                    await r.read()
                    code = r.status
            except (TimeoutError, aiohttp.ClientError):
                code = 0
            if code == 200:
                lat.append(time.monotonic() - t0)
            status[code] = status.get(code, 0) + 1

        async def loop(offset: float) -> None:
            nxt = time.monotonic() + offset
            while time.monotonic() < end:
                if rps > 0:
                    await asyncio.sleep(max(0.0, nxt - time.monotonic()))
                    nxt += loops / rps
                await one()

        await asyncio.gather(*(loop(i / rps if rps else 0.0) for i in range(loops)))
    lat.sort()

    def pct(p: float) -> float | None:
        return lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1000 if lat else None

    return {
        "ok": len(lat),
        "status": {str(k): v for k, v in sorted(status.items())},
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": lat[-1] * 1000 if lat else None,
        "rps": sum(status.values()) / seconds,
        "lat": lat,
    }


def gets_main(argv: list[str]) -> int:
    """`suite_edge.py gets ENDPOINT AK SK PATH LOOPS SECONDS RPS`: one JSON line."""
    endpoint, ak, sk, path, loops, seconds, rps = argv
    got = asyncio.run(
        _loop_gets(endpoint, ak, sk, path, loops=int(loops), seconds=float(seconds), rps=float(rps))
    )
    print(json.dumps(got))
    return 0


def _gets(
    node: BenchNode, who: tuple[str, str, str], path: str, loops: int, seconds: float, rps: float
) -> subprocess.Popen[bytes]:
    cmd = [
        *(sys.executable, str(Path(__file__).resolve()), "gets", node.endpoint, who[0], who[1]),
        *(path, str(loops), f"{seconds:g}", f"{rps:g}"),
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def _collect(proc: subprocess.Popen[bytes], node: BenchNode, timeout: float) -> dict:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_tree(proc)
        raise RuntimeError("a GET loop did not finish in time") from None
    if not node.alive():
        raise NodeDied("the node died during the rate-limit rounds")
    if proc.returncode != 0:
        raise RuntimeError(f"GET loop exited {proc.returncode}: {stderr.decode()[-500:]}")
    return json.loads(stdout.decode().strip().splitlines()[-1])


def rate_rounds(a: argparse.Namespace, data: Path, limited: bool, rounds: int) -> dict:
    """Quiet alone, then quiet beside the flood, `rounds` times: the quiet latencies pooled."""
    out: Path = a.out
    side = "limited" if limited else "unlimited"
    config = out / f"{LABEL}.rate-{side}.toml"
    config.write_text(
        users_toml(QUIET, NOISY, extra=f"rate_limit_rps = {RATE_RPS if limited else 0}\n")
    )
    data = data / side  # each side its own node and drives
    data.mkdir()
    node = BenchNode(
        data, out / f"{LABEL}.node-rate-{side}.log", extra_args=("--config", str(config))
    )
    node.start()
    pooled: dict[str, list[float]] = {"idle": [], "flood": []}
    refused = {"idle": 0, "flood": 0}
    noisy: list[dict] = []
    try:
        for who, bucket in ((QUIET, "edge-quiet"), (NOISY, "edge-noisy")):
            c = s3_client(node.endpoint, who[0], who[1])
            c.create_bucket(Bucket=bucket)
            c.put_object(Bucket=bucket, Key="obj", Body=os.urandom(4096))
        time.sleep(1.5)  # full token buckets again
        seconds = a.duration
        for _ in range(rounds):
            for mode in ("idle", "flood"):
                flood = None
                if mode == "flood":
                    flood = _gets(node, NOISY, "/edge-noisy/obj", FLOOD_LOOPS, seconds + 2, 0)
                    time.sleep(1.0)  # the flood is at full speed before the quiet key starts
                quiet = _gets(node, QUIET, "/edge-quiet/obj", 1, seconds, QUIET_RPS)
                q = _collect(quiet, node, seconds + 60)
                if flood is not None:
                    n = _collect(flood, node, seconds + 60)
                    n.pop("lat")
                    noisy.append(n)
                pooled[mode] += q["lat"]
                refused[mode] += sum(v for k, v in q["status"].items() if k != "200")
                print(
                    f"  rate {side} {mode:<5}: quiet p50 {q['p50_ms']:.1f} ms p99 "
                    f"{q['p99_ms']:.1f} ms, statuses {q['status']}"
                    + (f"; noisy {n['rps']:.0f} req/s, statuses {n['status']}" if flood else ""),
                    flush=True,
                )
                time.sleep(1.5)
    finally:
        node.stop()
    p99 = {m: _p(sorted(v), 99) for m, v in pooled.items()}
    p50 = {m: _p(sorted(v), 50) for m, v in pooled.items()}
    return {"p99": p99, "p50": p50, "refused": refused, "noisy": noisy}


def _p(lat: list[float], p: float) -> float:
    return lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1000 if lat else float("nan")


def run_rate(a: argparse.Namespace, data: Path, res: SuiteResult) -> None:
    again = command("edge", "--edge-parts", "ratelimit", "--duration", a.duration)
    lim = rate_rounds(a, data, True, a.edge_rounds)
    ref = rate_rounds(a, data, False, 1)
    x = lim["p99"]["flood"] / lim["p99"]["idle"]
    ok_noisy = sum(n["status"].get("200", 0) for n in lim["noisy"])
    slow = sum(n["status"].get("503", 0) for n in lim["noisy"])
    secs = max(1e-9, len(lim["noisy"]) * (a.duration + 2))
    res.judge(
        x <= RATE_TARGET_X,
        f"quiet key p99 under a {FLOOD_LOOPS}-loop flood <= {RATE_TARGET_X:.0f}x idle",
        f"{x:.2f}x (p99 {lim['p99']['idle']:.1f} -> {lim['p99']['flood']:.1f} ms, p50 "
        f"{lim['p50']['idle']:.1f} -> {lim['p50']['flood']:.1f} ms; noisy got "
        f"{ok_noisy / secs:.0f}/s 200 and {slow / secs:.0f}/s 503 SlowDown)",
        again,
    )
    refused = lim["refused"]["idle"] + lim["refused"]["flood"]
    res.judge(refused == 0, "the quiet key is never refused", f"{refused} non-200 answers", again)
    ref_x = ref["p99"]["flood"] / ref["p99"]["idle"]
    noisy_rps = sum(n["status"].get("200", 0) for n in ref["noisy"]) / (a.duration + 2)
    res.add(
        "PASS",
        "the same flood without rate limits (reported)",
        f"{ref_x:.2f}x (p99 {ref['p99']['idle']:.1f} -> {ref['p99']['flood']:.1f} ms; "
        f"noisy got {noisy_rps:.0f}/s 200)",
        again,
    )


PARTS = {"policy": run_policy, "tls": run_tls, "ratelimit": run_rate}


def run(a: argparse.Namespace) -> SuiteResult:
    res = SuiteResult("edge: policy evaluation, TLS, rate-limit isolation (standalone node)")
    out: Path = a.out
    (out / f"{LABEL}.jsonl").write_text("")
    parts = [p.strip() for p in a.edge_parts.split(",") if p.strip()]
    base, disk = pick_data_base(REPO, a.tmpdir)
    print(
        f"\n## edge: {', '.join(parts)}; {a.edge_rounds} rounds per side, {a.duration:g}s "
        f"per phase\n#   data under {base} ({disk})",
        flush=True,
    )
    for part in parts:
        data = Path(tempfile.mkdtemp(prefix=f"shardfleet-bench-edge-{part}-", dir=base))
        try:
            PARTS[part](a, data, res)
        except (RuntimeError, NodeDied, OSError) as exc:
            res.broken = True
            res.notes.append(f"edge {part} measurement failed: {exc}")
            print(f"!! edge {part}: {exc}", file=sys.stderr)
        finally:
            if not a.keep:
                shutil.rmtree(data, ignore_errors=True)
    if (out / f"{LABEL}.jsonl").read_text():
        print("\n## edge rounds (label shardfleet-SIDE, r = round)\n", flush=True)
        print_table(out / f"{LABEL}.jsonl", peers=False)
    print("\n## edge targets\n")
    res.print_verdicts()
    return res


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "gets":
        sys.exit(gets_main(sys.argv[2:]))
    sys.exit("run through run_bench.py --suite edge")
