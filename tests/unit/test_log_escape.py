"""Log lines carry no raw control characters, whatever a record holds: the escaping
function, both formatters, the handler and the access log's direct path."""

from __future__ import annotations

import io
import json
import logging
import random
import re
import unicodedata

import pytest

from shardfleet.node import logs

# C0, DEL, C1, the line and paragraph separators, lone surrogates
UNSAFE = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, 0xD800, 0xDBFF, 0xDC00, 0xDFFF]
_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|[ntr\\])")


def unescape(text: str) -> str:
    """The reading side: what an operator's tool would do to get the original back."""

    def one(match: re.Match[str]) -> str:
        code = match[1]
        named = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
        return named[code] if code in named else chr(int(code[1:], 16))

    assert "\\" not in _ESCAPE.sub("", text), f"a stray backslash: {text!r}"
    return _ESCAPE.sub(one, text)


def raw_unsafe(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs")]


@pytest.mark.parametrize("code", UNSAFE)
def test_every_unsafe_character_is_escaped(code):
    text = f"a{chr(code)}b"
    out = logs.escape(text)
    assert raw_unsafe(out) == [] and out != text
    assert out.isascii() and out.isprintable()
    assert unescape(out) == text


@pytest.mark.parametrize(
    "text,expected",
    [
        ("GET /b/k%0A\n", "GET /b/k%0A\\n"),
        ("\r\n\t", "\\r\\n\\t"),
        ("\x00\x1b[31m\x7f", "\\x00\\x1b[31m\\x7f"),
        ("\x85\x9b", "\\x85\\x9b"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\ud800", "\\ud800"),
        ("C:\\temp\\n", "C:\\\\temp\\\\n"),  # a backslash and an n stay two characters
    ],
)
def test_escapes_read_as_expected(text, expected):
    assert logs.escape(text) == expected
    assert unescape(expected) == text


@pytest.mark.parametrize("text", ["", "plain ascii line", "é 日本語 ✓", "nbsp\xa0and\u200bzwsp"])
def test_text_with_nothing_to_escape_is_returned_as_is(text):
    assert logs.escape(text) is text


def test_escaping_is_unambiguous_on_random_text():
    rng = random.Random(1234)
    alphabet = [chr(c) for c in UNSAFE] + list("\\nxu0123abc é日") + ["\\x0a", "\\\\"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        out = logs.escape(text)
        assert raw_unsafe(out) == [], repr(out)
        assert unescape(out) == text, (text, out)


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("shardfleet.test", logging.ERROR, __file__, 1, msg, args, exc_info)


def _raised(message: str) -> BaseException:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


HOSTILE = "k\n2026-01-01 00:00:00,000 INFO shardfleet.access: FORGED\r\x00\x1b[2J\x7f\x85\u2028"


def test_text_formatter_makes_one_line_of_message_args_and_traceback():
    record = _record(
        "request %s failed: %s", "/b/" + HOSTILE, "why", exc=_raised("bad key " + HOSTILE)
    )
    record.stack_info = "Stack (most recent call last):\n  File x"
    line = logs.TextFormatter().format(record)
    assert "\n" not in line and raw_unsafe(line) == []
    assert "request /b/k\\n2026-01-01 00:00:00,000 INFO shardfleet.access: FORGED\\r" in line
    assert "\\nTraceback (most recent call last):\\n" in line
    assert "ValueError: bad key k\\n2026-01-01" in line
    assert "\\nStack (most recent call last):\\n  File x" in line
    one = _record("x %s", HOSTILE)  # one record for both: its timestamp is part of the line
    plain = logging.Formatter(logs.TEXT_FORMAT).format(one)
    assert unescape(logs.TextFormatter().format(one)) == plain


def test_json_formatter_keeps_values_and_leaves_nothing_raw():
    record = _record("request %s", HOSTILE + "\ud800", exc=_raised(HOSTILE))
    record.fields = {"resource": "/b/" + HOSTILE}
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line and raw_unsafe(line) == [] and line.isprintable()
    entry = json.loads(line)
    assert entry["msg"] == "request " + HOSTILE + "\ud800"  # the same values, read back
    assert entry["resource"] == "/b/" + HOSTILE
    assert entry["exc"].endswith("ValueError: " + HOSTILE)


@pytest.fixture
def root_logging():
    saved = logging.getLogger().handlers[:], logging.getLogger().level, logs._handler
    yield
    root = logging.getLogger()
    root.handlers[:], level, logs._handler = saved
    root.setLevel(level)


REQUEST = dict(
    request_id="req-1",
    access_key="AK\x1bID",
    op="GetObject",
    method="GET",
    resource="/b/" + HOSTILE,
    status=200,
    bytes_in=0,
    bytes_out=5,
    seconds=0.001,
    remote="127.0.0.1",
)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_line_through_the_node_handler_is_one_clean_line(root_logging, fmt):
    # a strict UTF-8 stream like the node's stderr: a raw lone surrogate would fail the write
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", errors="strict", write_through=True)
    logs.setup("info", fmt, stream)
    errors: list[logging.LogRecord] = []
    logs._handler.handleError = errors.append  # type: ignore[method-assign, union-attr]
    logging.getLogger("shardfleet.some.module").warning("key %r %s", HOSTILE, HOSTILE + "\udc80")
    logging.getLogger("aiohttp.server").error("boom", exc_info=_raised(HOSTILE))
    logs.log_request(**REQUEST)
    logs.log_request(**{**REQUEST, "request_id": "req-2", "resource": "/b/\ud83d"})
    logs._handler.flush()  # type: ignore[union-attr]
    assert errors == []
    lines = buffer.getvalue().decode("utf-8").split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    assert len(lines) == 4, lines
    for line in lines:
        assert raw_unsafe(line) == [], line
    if fmt == "json":
        entries = [json.loads(line) for line in lines]
        assert entries[0]["msg"] == f"key {HOSTILE!r} {HOSTILE}\udc80"
        assert entries[1]["exc"].endswith(HOSTILE)
        assert entries[2]["resource"] == REQUEST["resource"]
        assert entries[2]["access_key"] == "AK\x1bID"
        assert entries[3]["resource"] == "/b/\ud83d"
    else:
        assert [unescape(line.split(": ", 1)[1]) for line in (lines[0], lines[2])] == [
            f"key {HOSTILE!r} {HOSTILE}\udc80",
            f"req-1 GetObject GET /b/{HOSTILE} 200 in=0 out=5 1.0ms key=AK\x1bID",
        ]
        assert lines[1].endswith("ValueError: " + logs.escape(HOSTILE))
        assert "/b/\\ud83d " in lines[3]


def test_access_log_direct_path_matches_the_text_formatter(root_logging):
    """The direct path escapes exactly as the formatter does for the same record."""
    out = io.StringIO()
    logs.setup("info", "text", out)
    logs.log_request(**REQUEST)
    logs._handler.flush()  # type: ignore[union-attr]
    fast = out.getvalue()
    slow_out = io.StringIO()
    handler = logging.StreamHandler(slow_out)
    handler.setFormatter(logs.TextFormatter())
    saved, logs._handler = logs._handler, None
    logs.access.addHandler(handler)
    logs.access.propagate = False
    try:
        logs.log_request(**REQUEST)
    finally:
        logs.access.removeHandler(handler)
        logs.access.propagate = True
        logs._handler = saved
    assert fast[24:] == slow_out.getvalue()[24:]  # all but the timestamp
    assert fast.count("\n") == 1
