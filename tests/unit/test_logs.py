"""The access log's direct path prints what logging's formatters would, in order."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from shardfleet.node import logs

REQUEST = dict(
    request_id="req-1",
    access_key="AKID",
    op="PutObject",
    method="PUT",
    resource="/b/k",
    status=200,
    bytes_in=5,
    bytes_out=0,
    seconds=0.01234,
    remote="127.0.0.1",
)


@pytest.fixture
def stream():
    saved = logging.getLogger().handlers[:], logging.getLogger().level, logs._handler
    out = io.StringIO()
    yield out
    root = logging.getLogger()
    root.handlers[:], level, logs._handler = saved
    root.setLevel(level)


def _through_logging(fmt: str) -> str:
    """The line the formatter makes of the same request (the slow path's record)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        logs.JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    saved = logs._handler
    logs._handler = None
    logs.access.addHandler(handler)
    logs.access.propagate = False
    try:
        logs.log_request(**REQUEST)
    finally:
        logs.access.removeHandler(handler)
        logs.access.propagate = True
        logs._handler = saved
    return out.getvalue()


def test_text_line_matches_the_formatter(stream):
    logs.setup("info", "text", stream)
    logs.log_request(**REQUEST)
    logs._handler.flush()
    fast, slow = stream.getvalue(), _through_logging("text")
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    assert re.match(stamp, fast) and re.match(stamp, slow)
    assert fast[24:] == slow[24:]  # everything after the timestamp
    assert fast.endswith("PutObject PUT /b/k 200 in=5 out=0 12.3ms key=AKID\n")


def test_json_line_matches_the_formatter(stream):
    logs.setup("info", "json", stream)
    logs.log_request(**REQUEST)
    logs._handler.flush()
    fast = json.loads(stream.getvalue())
    slow = json.loads(_through_logging("json"))
    assert fast.keys() == slow.keys()
    assert {k: v for k, v in fast.items() if k != "time"} == {
        k: v for k, v in slow.items() if k != "time"
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", fast["time"])
    assert fast["remote"] == "127.0.0.1" and fast["ms"] == 12.34


def test_lines_batch_and_keep_their_order(stream):
    logs.setup("info", "text", stream)
    logs.log_request(**REQUEST)
    logging.getLogger("shardfleet.other").info("between")
    logs.log_request(**{**REQUEST, "request_id": "req-2"})
    assert stream.getvalue() == ""  # nothing written yet: one write per batch
    logging.getLogger("shardfleet.other").warning("urgent")  # a warning flushes at once
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1].split()[0] for line in lines] == [
        "req-1",
        "between",
        "req-2",
        "urgent",
    ]
    for _ in range(logs.BufferedHandler.BATCH):
        logs.log_request(**REQUEST)
    assert len(stream.getvalue().splitlines()) == 4 + logs.BufferedHandler.BATCH


def test_warning_level_logs_no_requests(stream):
    logs.setup("warning", "text", stream)
    logs.log_request(**REQUEST)
    logs._handler.flush()
    assert stream.getvalue() == ""
