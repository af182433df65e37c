"""Logging set-up and the per-request access log.

One line per S3 request with request id, access key, operation, target, status, bytes and
latency, as text or JSON. Secrets never reach it: neither headers nor query strings are
logged, only the fields below.

Every record is one physical line, whatever it carries: a request path with %0A in it, an
exception message quoting client input, a traceback. The text format escapes control
characters (`escape`), the JSON format leaves them to json's escapes plus `_json_safe`;
both happen in the formatters below and on the access log's direct path, so nothing a
client sends can forge a line or reach a terminal raw.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

access = logging.getLogger("shardfleet.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What never reaches a log line raw: C0 controls (NUL, TAB, LF, CR, ESC...), DEL, C1 controls
# (NEL and CSI among them), U+2028/U+2029 (line breaks to str.splitlines, JavaScript and some
# log viewers), lone surrogates (they would make the write itself fail), and the backslash,
# which starts every escape and so is escaped too: the escaped text reads back unambiguously.
# (Patterns as strings, compiled by re on first use: most processes never need them.)
_UNSAFE = r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029\ud800-\udfff]"
# json.dumps escapes C0, the quote and the backslash itself; these pass through it raw.
_JSON_UNSAFE = r"[\x7f-\x9f\u2028\u2029\ud800-\udfff]"
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape(text: str) -> str:
    """Text made safe for one log line: \\n, \\r, \\t and \\\\ for those four, \\xNN for the
    other C0 and C1 controls and DEL, \\uNNNN for U+2028, U+2029 and lone surrogates.
    Everything else, non-ASCII text included, is kept.

    Every unsafe character is non-printable to str.isprintable but the backslash, so a
    line with nothing to escape (almost all) costs two scans in C, no regular expression."""
    if text.isprintable() and "\\" not in text:
        return text
    return re.sub(_UNSAFE, _escaped, text)


def _json_safe(line: str) -> str:
    """A json.dumps(..., ensure_ascii=False) line with the characters json leaves raw
    written as \\uNNNN escapes: the same JSON value, no raw control character."""
    if line.isprintable():
        return line
    return re.sub(_JSON_UNSAFE, _json_escaped, line)


class TextFormatter(logging.Formatter):
    """The text log: the record as logging formats it (message with its arguments, then
    exception and stack text), escaped into a single line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return escape(super().format(record))


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
        return _json_safe(json.dumps(entry, ensure_ascii=False))


class BufferedHandler(logging.StreamHandler):
    """A StreamHandler that collects lines and writes them with one write(2) per flush.

    The access log writes one line per request, and a write per line costs more than the
    request's bookkeeping (the node's stderr is often unbuffered: PYTHONUNBUFFERED, or a
    pipe). Lines are flushed when 256 are pending, at least every FLUSH_EVERY seconds by
    `flush_periodically`, for warnings and errors at once, and at shutdown."""

    FLUSH_EVERY = 0.2
    BATCH = 256

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    @property
    def pending(self) -> int:
        return len(self._lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.add(self.format(record) + self.terminator, record.levelno >= logging.WARNING)
        except Exception:
            self.handleError(record)

    def add(self, line: str, urgent: bool = False) -> None:
        """Queue one finished line (the access log's path, which skips LogRecord)."""
        with self.lock:  # type: ignore[union-attr]  # worker threads log too
            self._lines.append(line)
            if urgent or len(self._lines) >= self.BATCH:
                self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines = self._lines, []
            if lines:
                self.stream.write("".join(lines))
            super().flush()


_handler: BufferedHandler | None = None


async def flush_periodically() -> None:
    """Runs for the life of the node; the last flush happens at exit (logging.shutdown)."""
    import asyncio

    while True:
        await asyncio.sleep(BufferedHandler.FLUSH_EVERY)
        if _handler is not None and _handler.pending:
            _handler.flush()


def setup(level: str, fmt: str = "text", stream: Any = None) -> None:
    global _handler
    handler = _handler = BufferedHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _Clock:
    """Timestamps as logging's formatters print them, with the strftime done once a second
    (it is most of a log line's formatting cost)."""

    def __init__(self) -> None:
        self._second = -1
        self._text = self._iso = ""

    def _at(self, second: int) -> None:
        self._second = second
        now = time.localtime(second)
        self._text = time.strftime("%Y-%m-%d %H:%M:%S", now)
        self._iso = time.strftime("%Y-%m-%dT%H:%M:%S", now)

    def text(self, now: float) -> str:
        """logging.Formatter's default asctime: ``2026-11-24 04:00:10,892``."""
        second = int(now)
        if second != self._second:
            self._at(second)
        return f"{self._text},{int((now - second) * 1000):03d}"

    def iso(self, now: float) -> str:
        """JsonFormatter's time: ``2026-11-24T04:00:10``."""
        second = int(now)
        if second != self._second:
            self._at(second)
        return self._iso


_clock = _Clock()


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
    """One access-log line. With the node's own handler in place (`setup`) the line is
    formatted here and queued on it directly: the same text or JSON the formatters would
    give, escaped the same way, without a LogRecord (~30 us a line through logging, ~5 us
    here). The resource and access key come from the client: they may hold anything."""
    if not access.isEnabledFor(logging.INFO):
        return
    message = (
        f"{request_id} {op} {method} {resource} {status} in={bytes_in} out={bytes_out} "
        f"{seconds * 1000:.1f}ms key={access_key or '-'}"
    )
    handler = _handler
    json_lines = handler is not None and isinstance(handler.formatter, JsonFormatter)
    fields = None
    if handler is None or json_lines:
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
    if handler is None or not access.propagate or access.handlers:
        access.info("%s", message, extra={"fields": fields})  # someone else's logging set-up
        return
    now = time.time()
    if fields is not None:
        entry: dict[str, Any] = {
            "time": _clock.iso(now),
            "level": "info",
            "logger": access.name,
            "msg": message,
        }
        entry.update(fields)
        handler.add(_json_safe(json.dumps(entry, ensure_ascii=False)) + handler.terminator)
    else:
        line = f"{_clock.text(now)} INFO {access.name}: {escape(message)}{handler.terminator}"
        handler.add(line)
