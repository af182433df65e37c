"""The HTTP Range header for GET, as S3 reads it (one range only).

>>> parse_range("bytes=0-9", 100)
(0, 10)
>>> parse_range("bytes=90-", 100)
(90, 100)
>>> parse_range("bytes=-5", 100)
(95, 100)
>>> parse_range("bytes=50-1000", 100)
(50, 100)
>>> parse_range("bytes=0-0,5-6", 100) is None   # several ranges: S3 sends the whole object
True
>>> parse_range("pages=1-2", 100) is None       # not a byte range: ignored, like S3
True
"""

from __future__ import annotations

import re

from shardfleet.node.s3.errors import InvalidRange

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) for a satisfiable range, None to send the whole object.

    Raises InvalidRange (416) when the range is well formed but not satisfiable."""
    match = _RANGE.match(header)
    if not match:
        return None
    first, last = match[1], match[2]
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise InvalidRange(ActualObjectSize=str(size), RangeRequested=header)
        return max(size - n, 0), size
    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        return None  # syntactically invalid (last < first): ignored per RFC 9110
    if start >= size:
        raise InvalidRange(ActualObjectSize=str(size), RangeRequested=header)
    return start, min(end, size)
