"""Bucket and key naming rules (the S3 general-purpose bucket rules)."""

from __future__ import annotations

import re

from shardfleet.node.s3.errors import InvalidArgument, InvalidBucketName, KeyTooLongError

MAX_KEY_BYTES = 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def check_bucket_name(name: str) -> str:
    """Returns the name, or raises InvalidBucketName saying which rule it breaks."""
    why = None
    if not 3 <= len(name) <= 63:
        why = "must be between 3 and 63 characters long"
    elif not _BUCKET.match(name):
        why = "may hold only lowercase letters, digits, dots and hyphens, and must begin and end with a letter or digit"
    elif ".." in name or ".-" in name or "-." in name:
        why = "must not contain two adjacent periods or a period next to a hyphen"
    elif _IPV4.match(name):
        why = "must not be formatted as an IP address"
    elif name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        why = "uses a reserved prefix or suffix"
    if why:
        raise InvalidBucketName(f"The specified bucket is not valid: {why}.", BucketName=name)
    return name


def check_key(key: str) -> str:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise KeyTooLongError(f"Your key is too long: at most {MAX_KEY_BYTES} bytes of UTF-8.")
    if not key:
        raise InvalidArgument("The object key must not be empty.")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument("The object key is not valid UTF-8.") from exc
    return key
