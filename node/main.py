"""The `shardfleet` command line."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from shardfleet.node.codecache import CodeCache
    from shardfleet.node.config import NodeConfig


def _serve_args(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run a standalone node")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--address", help="HOST:PORT for S3 (default 127.0.0.1:9000; port 0 = any)")
    p.add_argument("--data", type=Path, help="directory holding the drives drive1..driveN")
    p.add_argument("--drives", type=int, help="number of drives under --data")
    p.add_argument("--drive", type=Path, action="append", help="a drive directory (repeatable)")
    p.add_argument("--ec", help="erasure coding K+M, e.g. 2+2")
    p.add_argument("--stripe-size", type=int, help="object bytes per stripe")
    p.add_argument("--write-quorum", type=int, help="drives that must commit a write")
    p.add_argument("--region", help="SigV4 region (default us-east-1)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--body-stall-timeout", type=float, help="seconds a request body may stall")
    p.add_argument(
        "--shutdown-grace", type=float, help="seconds in-flight requests get after SIGTERM"
    )
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve S3 over HTTPS")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--node", help="in a cluster: which node of the config file this is")
    p.add_argument(
        "--join",
        action="append",
        help="QUIC HOST:PORT of a node to learn the topology from (repeatable)",
    )


CA_HELP = (
    "CA certificates (PEM) to verify an https:// endpoint with "
    "(default: $AWS_CA_BUNDLE, else the system's)"
)


def _cluster_args(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev-cluster", help="run N node processes on this host")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--drives-per-node", type=int, default=2)
    p.add_argument("--ec", default="2+2")
    p.add_argument("--data", type=Path, default=Path(".data/dev-cluster"))
    p.add_argument(
        "--base-port", type=int, default=9000, help="node i serves S3 on BASE+i, QUIC on BASE+100+i"
    )
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument(
        "--tls", action="store_true", help="serve S3 over HTTPS, certificates from the dev CA"
    )

    certs = sub.add_parser("certs", help="cluster CA and node certificates")
    csub = certs.add_subparsers(dest="certs_command", required=True)
    init = csub.add_parser("init", help="create the cluster CA")
    init.add_argument("--dir", type=Path, default=Path("certs"))
    init.add_argument("--name", default="shardfleet")
    issue = csub.add_parser("issue", help="issue a node certificate")
    issue.add_argument("node")
    issue.add_argument("--dir", type=Path, default=Path("certs"), help="where the CA is")
    issue.add_argument(
        "--host", action="append", default=[], help="IP or DNS name of the node (repeatable)"
    )
    issue.add_argument("--out", type=Path, help="output directory (default: DIR)")

    admin = sub.add_parser("admin", help="administer a running node or cluster")
    asub = admin.add_subparsers(dest="admin_command", required=True)
    st = asub.add_parser("status", help="nodes, states, drives and sets")
    st.add_argument("--endpoint", default="http://127.0.0.1:9000")
    st.add_argument("--json", action="store_true")
    st.add_argument("--ca-bundle", type=Path, help=CA_HELP)
    st.add_argument("--region", default="us-east-1")
    ap = asub.add_parser("add-pool", help="add a pool of new nodes to a running cluster")
    ap.add_argument("--endpoint", default="http://127.0.0.1:9000")
    ap.add_argument(
        "--pool",
        type=Path,
        required=True,
        help="TOML file with [[nodes]] entries (id, s3, rpc, drives)",
    )
    ap.add_argument("--ca-bundle", type=Path, help=CA_HELP)
    heal = asub.add_parser("heal", help="healing: status, or start a pass now")
    hsub = heal.add_subparsers(dest="heal_command", required=True)
    hst = hsub.add_parser("status", help="per node: scanned, healed, failed, MRF depth, progress")
    hst.add_argument("--endpoint", default="http://127.0.0.1:9000")
    hst.add_argument("--json", action="store_true", help="one JSON object; `done` when all idle")
    hst.add_argument("--watch", action="store_true", help="refresh every second until done")
    hst.add_argument("--region", default="us-east-1")
    hst.add_argument("--ca-bundle", type=Path, help=CA_HELP)
    hgo = hsub.add_parser("start", help="start a scanner pass now, cluster-wide")
    hgo.add_argument("--endpoint", default="http://127.0.0.1:9000")
    hgo.add_argument("--bucket", help="only this bucket")
    hgo.add_argument("--deep", action="store_true", help="check every block's CRC32C")
    hgo.add_argument("--region", default="us-east-1")
    hgo.add_argument("--ca-bundle", type=Path, help=CA_HELP)
    top = asub.add_parser("top", help="live view of nodes, drives, sets, traffic and healing")
    top.add_argument(
        "--endpoint", action="append", help="node endpoint (repeatable; default 127.0.0.1:9000)"
    )
    top.add_argument("--interval", type=float, default=1.0)
    top.add_argument("--ca-bundle", type=Path, help=CA_HELP)
    top.add_argument(
        "--count", type=int, default=0, help="refreshes before exiting (0 = until Ctrl-C)"
    )

    config = sub.add_parser("config", help="configuration tools")
    csub2 = config.add_subparsers(dest="config_command", required=True)
    check = csub2.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.add_argument("--node", help="check as this node of the cluster (default: every node)")


def _drive_paths(args: argparse.Namespace) -> list[Path] | None:
    from shardfleet.node.config import ConfigError

    paths = list(args.drive or [])
    if args.data is not None or args.drives is not None:
        if args.data is None or args.drives is None:
            raise ConfigError("--data and --drives go together")
        if args.drives < 1:
            raise ConfigError("--drives: must be at least 1")
        paths += [args.data / f"drive{i}" for i in range(1, args.drives + 1)]
    return paths or None


def serve(args: argparse.Namespace) -> int:
    gc.disable()  # until everything is imported: see _keep_imports_out_of_gc
    try:
        return _serve(args)
    finally:
        gc.enable()


def _keep_imports_out_of_gc() -> None:
    """Imports leave ~50,000 objects that live as long as the process (modules, classes,
    functions); the cyclic GC only scanned them again and again while they piled up (~115
    collections, ~60 ms of a ~0.6 s start, with the default thresholds). So serve imports
    with the GC off, then gc.freeze() moves them all out of every later collection's way
    (which also keeps each later full collection ~20 ms shorter) and turns the GC back on.
    The price: the little cyclic garbage the imports left (~2,000 objects, ~0.4 MB, mostly
    classes that attrs and dataclass(slots=True) replace) is never freed."""
    gc.freeze()
    gc.enable()


def _serve(args: argparse.Namespace) -> int:
    # serve's start-up import steps live in node.codecache, whose warm() replays them
    from shardfleet.node.codecache import CodeCache, no_pydantic_plugins

    no_pydantic_plugins()
    code_cache = CodeCache()
    code_cache.install()  # until the imports are done: see node.codecache
    try:
        return _serve_with(args, code_cache)
    finally:
        code_cache.close()


def _serve_with(args: argparse.Namespace, code_cache: CodeCache) -> int:
    from shardfleet.node.codecache import import_server_libraries

    import_server_libraries()
    from shardfleet.node.config import ConfigError, load
    from shardfleet.node.storage.format import FormatError

    try:
        overrides: dict[str, object] = {
            "address": args.address,
            "drives": _drive_paths(args),
            "ec": args.ec,
            "stripe_size": args.stripe_size,
            "write_quorum": args.write_quorum,
            "region": args.region,
            "log_level": args.log_level,
            "log_format": args.log_format,
            "node": args.node,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "body_stall_timeout": args.body_stall_timeout,
            "shutdown_grace": args.shutdown_grace,
        }
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"shardfleet: {exc}", file=sys.stderr)
        return 2
    if args.join:
        if config.cluster is None:
            print("shardfleet: --join needs a cluster configuration", file=sys.stderr)
            return 2
        config = config.model_copy(
            update={"cluster": config.cluster.model_copy(update={"seeds": args.join})}
        )
    from shardfleet.node.logs import setup

    setup(config.log_level, config.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    import asyncio

    import shardfleet.node.app  # noqa: F401 - the last big import, before the GC comes back on

    code_cache.save()
    code_cache.close()  # the imports are done: out of dataclasses' and typing's way
    _keep_imports_out_of_gc()
    from shardfleet.node.malloc import limit_arenas

    limit_arenas()  # before any thread of the node exists
    try:
        return asyncio.run(_run(config, lambda: load(args.config, overrides)))
    except FormatError as exc:
        print(f"shardfleet: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"shardfleet: cannot start: {exc}", file=sys.stderr)
        return 1


async def _run(config: NodeConfig, reread: Callable[[], NodeConfig] | None = None) -> int:
    import asyncio
    import logging
    import signal

    from shardfleet.node.app import Node, pid_banner

    node = Node(config)
    node.reread_config = reread  # SIGHUP: the users and their secrets, read again
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.reload)
    try:
        endpoint = await node.start()
        print(pid_banner(node.config, endpoint), flush=True)
        await stop.wait()
        logging.getLogger(__name__).info("stopping")
    finally:
        await node.stop()
    return 0


def certs(args: argparse.Namespace) -> int:
    from shardfleet.transport.tls import create_ca, issue_node_cert

    try:
        if args.certs_command == "init":
            files = create_ca(args.dir, args.name)
            print(f"cluster CA written: {files}")
        else:
            hosts = args.host or ["127.0.0.1"]
            files = issue_node_cert(args.dir, args.node, hosts, args.out or args.dir)
            print(f"certificate for {args.node}: {files.cert} (key {files.key})")
    except (OSError, ValueError) as exc:
        print(f"shardfleet certs: {exc}", file=sys.stderr)
        return 1
    return 0


def admin(args: argparse.Namespace) -> int:
    import json

    from shardfleet.node.admin import fetch_status, render_status
    from shardfleet.node.config import (
        DEV_ACCESS_KEY,
        DEV_SECRET_KEY,
        ENV_ACCESS_KEY,
        ENV_SECRET_KEY,
    )

    ak = os.environ.get(ENV_ACCESS_KEY, DEV_ACCESS_KEY)
    sk = os.environ.get(ENV_SECRET_KEY, DEV_SECRET_KEY)
    if args.admin_command == "top":
        from shardfleet.node.top import run

        try:
            return run(
                args.endpoint or ["http://127.0.0.1:9000"],
                ak,
                sk,
                interval=args.interval,
                count=args.count,
                ca_bundle=args.ca_bundle,
            )
        except KeyboardInterrupt:
            return 0
    if args.admin_command == "heal":
        import time

        from shardfleet.node.admin import fetch_heal, render_heal, start_heal

        if args.heal_command == "start":
            print(json.dumps(start_heal(args.endpoint, ak, sk, bucket=args.bucket, deep=args.deep,
                                        region=args.region, ca_bundle=args.ca_bundle)))  # fmt: skip
            return 0
        while True:
            st = fetch_heal(args.endpoint, ak, sk, args.region, ca_bundle=args.ca_bundle)
            text = json.dumps(st, indent=2) if args.json else render_heal(st)
            if not args.watch or st["done"]:
                print(text)
                return 0
            print("\x1b[2J\x1b[H" + text, flush=True)  # a live view: clear, then redraw
            time.sleep(1.0)
    if args.admin_command == "add-pool":
        import tomllib

        from shardfleet.node.admin import post_pool

        try:
            nodes = tomllib.loads(args.pool.read_text()).get("nodes", [])
        except (OSError, tomllib.TOMLDecodeError) as exc:
            print(f"shardfleet admin add-pool: {args.pool}: {exc}", file=sys.stderr)
            return 2
        result = post_pool(args.endpoint, ak, sk, nodes, ca_bundle=args.ca_bundle)
        print(json.dumps(result, indent=2))
        failed = [p for p, r in result["pushed"].items() if r != "ok"]
        if failed:
            print(
                f"not yet told (they will fetch it when they answer heartbeats): {', '.join(failed)}"
            )
        return 0
    status = fetch_status(args.endpoint, ak, sk, args.region, ca_bundle=args.ca_bundle)
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return 0


def dev_cluster(args: argparse.Namespace) -> int:
    from shardfleet.node.devcluster import DevClusterSpec, run

    spec = DevClusterSpec(
        nodes=args.nodes,
        drives_per_node=args.drives_per_node,
        ec=args.ec,
        data=args.data,
        base_port=args.base_port,
        heartbeat=args.heartbeat,
        tls=args.tls,
    )
    try:
        return run(spec)
    except (ValueError, RuntimeError, TimeoutError) as exc:
        print(f"shardfleet dev-cluster: {exc}", file=sys.stderr)
        return 1


def config_check(args: argparse.Namespace) -> int:
    import tomllib

    from shardfleet.node.config import ConfigError, load

    try:
        raw = tomllib.loads(args.file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    nodes = (
        [args.node]
        if args.node
        else [n.get("id") for n in raw.get("cluster", {}).get("nodes", [])] or [None]
    )
    failed = False
    for node in nodes:
        try:
            cfg = load(args.file, {"node": node})
        except ConfigError as exc:
            failed = True
            print(f"{args.file}{f' (node {node})' if node else ''}: {exc}", file=sys.stderr)
            continue
        where = f"node {node}: " if node else ""
        print(
            f"{args.file}: {where}ok ({cfg.ec} over {len(cfg.drives)} local drives, S3 on {cfg.address})"
        )
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shardfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_args(sub)
    _cluster_args(sub)
    args = parser.parse_args(argv)
    commands = {
        "serve": serve,
        "certs": certs,
        "admin": admin,
        "dev-cluster": dev_cluster,
        "config": config_check,
    }
    try:
        return commands[args.command](args)
    except RuntimeError as exc:
        # transport's aioquic fence: by class name, since the failed import left no module
        if type(exc).__name__ != "UnsupportedAioquic":
            raise
        print(f"shardfleet: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
