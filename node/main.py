"""The `shardfleet` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from node.config import ConfigError, NodeConfig, load
from node.storage.format import FormatError


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


def _drive_paths(args: argparse.Namespace) -> list[Path] | None:
    paths = list(args.drive or [])
    if args.data is not None or args.drives is not None:
        if args.data is None or args.drives is None:
            raise ConfigError("--data and --drives go together")
        if args.drives < 1:
            raise ConfigError("--drives: must be at least 1")
        paths += [args.data / f"drive{i}" for i in range(1, args.drives + 1)]
    return paths or None


def serve(args: argparse.Namespace) -> int:
    try:
        config = load(
            args.config,
            {
                "address": args.address,
                "drives": _drive_paths(args),
                "ec": args.ec,
                "stripe_size": args.stripe_size,
                "write_quorum": args.write_quorum,
                "region": args.region,
                "log_level": args.log_level,
            },
        )
    except ConfigError as exc:
        print(f"shardfleet: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    try:
        return asyncio.run(_run(config))
    except FormatError as exc:
        print(f"shardfleet: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"shardfleet: cannot start: {exc}", file=sys.stderr)
        return 1


async def _run(config: NodeConfig) -> int:
    from node.app import Node, pid_banner

    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        endpoint = await node.start()
        print(pid_banner(config, endpoint), flush=True)
        await stop.wait()
        logging.getLogger(__name__).info("stopping")
    finally:
        await node.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shardfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_args(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
