"""The conditional headers of GET and HEAD, decided as RFC 9110 section 13.2.2 and AWS do:
If-Match before If-Unmodified-Since (a true If-Match makes the date irrelevant), both
before If-None-Match, which makes If-Modified-Since irrelevant; 412 wins over 304;
unparsable dates are ignored; If-None-Match compares weakly, If-Match strongly."""

from __future__ import annotations

import pytest

from shardfleet.cluster.meta import ObjectMeta
from shardfleet.node.s3.objects import read_condition

ETAG = "0123456789abcdef0123456789abcdef"
MTIME = 1_700_000_000 * 10**9  # Tue, 14 Nov 2023 22:13:20 GMT
BEFORE = "Mon, 13 Nov 2023 00:00:00 GMT"
AFTER = "Wed, 15 Nov 2023 00:00:00 GMT"
SAME = "Tue, 14 Nov 2023 22:13:20 GMT"

META = ObjectMeta(ETAG, MTIME, 1, ETAG, 1, 0, 1 << 20, [0])
YES, NO = f'"{ETAG}"', '"ffffffffffffffffffffffffffffffff"'

CASES = [
    # (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since) -> status
    ((None, None, None, None), None),
    ((YES, None, None, None), None),
    (("*", None, None, None), None),
    ((NO, None, None, None), 412),
    ((f"{NO}, {YES}", None, None, None), None),
    ((f"W/{YES}", None, None, None), 412),  # If-Match compares strongly
    ((None, YES, None, None), 304),
    ((None, f"W/{YES}", None, None), 304),  # If-None-Match compares weakly
    ((None, "*", None, None), 304),
    ((None, NO, None, None), None),
    ((None, None, BEFORE, None), None),
    ((None, None, AFTER, None), 304),
    ((None, None, SAME, None), 304),
    ((None, None, None, BEFORE), 412),
    ((None, None, None, AFTER), None),
    ((None, None, None, SAME), None),
    ((None, None, "not a date", None), None),  # ignored, as RFC 9110 says
    ((None, None, None, "yesterday"), None),
    # AWS: If-Match true and If-Unmodified-Since false -> 200
    ((YES, None, None, BEFORE), None),
    # AWS: If-None-Match false (it matches) and If-Modified-Since true -> 304
    ((None, YES, BEFORE, None), 304),
    # If-None-Match present and not matching: If-Modified-Since is not looked at
    ((None, NO, AFTER, None), None),
    # 412 before 304
    ((NO, YES, None, None), 412),
    ((None, YES, None, BEFORE), 412),
    ((YES, YES, None, None), 304),
]


@pytest.mark.parametrize(("headers", "status"), CASES)
def test_read_conditions(headers, status):
    assert read_condition(META, *headers) == status
