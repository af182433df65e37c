"""Real node processes for tests: start on a free port, wait until ready, always clean up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import boto3
from botocore.config import Config

from shardfleet.node.config import DEV_ACCESS_KEY, DEV_SECRET_KEY
from shardfleet.node.devcluster import serve_command

_ENDPOINT = re.compile(r"endpoint:\s+(https?://\S+)")


class NodeProcess:
    def __init__(
        self,
        data: Path,
        *,
        drives: int = 4,
        ec: str = "2+2",
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data = data
        self.drives = drives
        self.ec = ec
        self.args = list(args)
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.output: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def drive_path(self, i: int) -> Path:
        """Drive i, counting from 1 as on the command line."""
        return self.data / f"drive{i}"

    def start(self, timeout: float = 20.0) -> NodeProcess:
        cmd = serve_command(self.data, self.drives, self.ec, *self.args)
        env = dict(os.environ)
        env.pop("SHARDFLEET_ACCESS_KEY", None)
        env.pop("SHARDFLEET_SECRET_KEY", None)
        env.update(self.env or {})
        self.output = []
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        found = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                match = _ENDPOINT.search(line)
                if match:
                    self.endpoint = match[1]
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("node did not start:\n" + "".join(self.output))
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> NodeProcess:
        self.stop()
        return self.start()

    def client(self, *, verify: str | bool | None = None, **config: object):
        """A boto3 client; `verify`: the CA bundle for an https endpoint (botocore's verify)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            verify=verify,
            aws_access_key_id=DEV_ACCESS_KEY,
            aws_secret_access_key=DEV_SECRET_KEY,
            region_name="us-east-1",
            config=Config(**config) if config else None,
        )
