"""Logging set-up and the per-request access log.

One line per S3 request with request id, access key, operation, target, status, bytes and
latency, as text or JSON. Secrets never reach it: neither headers nor query strings are
logged, only the fields below.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

access = logging.getLogger("shardfleet.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup(level: str, fmt: str = "text", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_request(
    *,
    request_id: str,
    access_key: str,
    op: str,
    method: str,
    resource: str,
    status: int,
    bytes_in: int,
    bytes_out: int,
    seconds: float,
    remote: str | None,
) -> None:
    if not access.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": request_id,
        "access_key": access_key,
        "op": op,
        "method": method,
        "resource": resource,
        "status": status,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "ms": round(seconds * 1000, 2),
        "remote": remote,
    }
    access.info(
        "%s %s %s %s %d in=%d out=%d %.1fms key=%s",
        request_id,
        op,
        method,
        resource,
        status,
        bytes_in,
        bytes_out,
        seconds * 1000,
        access_key or "-",
        extra={"fields": fields},
    )
