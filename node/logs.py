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


class BufferedHandler(logging.StreamHandler):
    """A StreamHandler that does not flush after every record: the access log writes one
    line per request, and a write(2) per line costs more than the request's bookkeeping.
    Lines are flushed when the buffer fills, at least every FLUSH_EVERY seconds by
    `flush_periodically`, for warnings and errors at once, and at shutdown."""

    FLUSH_EVERY = 0.2

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            self._pending += 1
            if record.levelno >= logging.WARNING or self._pending >= 256:
                self.flush()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self._pending = 0
        super().flush()


_handler: BufferedHandler | None = None


async def flush_periodically() -> None:
    """Runs for the life of the node; the last flush happens at exit (logging.shutdown)."""
    import asyncio

    while True:
        await asyncio.sleep(BufferedHandler.FLUSH_EVERY)
        if _handler is not None and _handler._pending:
            _handler.flush()


def setup(level: str, fmt: str = "text", stream: Any = None) -> None:
    global _handler
    handler = _handler = BufferedHandler(stream or sys.stderr)
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
    if _handler is not None and not isinstance(_handler.formatter, JsonFormatter):
        fields = None  # the text line carries everything; skip building the dict
    else:
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
