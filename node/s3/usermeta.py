"""User metadata (x-amz-meta-*): what a PUT stores and how a GET returns it.

HTTP header values are ASCII in practice: boto3 refuses to send anything else, so its users
encode non-ASCII text themselves (RFC 2047 `=?UTF-8?B?...?=` or percent-encoding), and such a
value is stored and returned byte for byte. A raw client may still send UTF-8 bytes; AWS
stores them and returns the value RFC 2047 encoded (`=?UTF-8?B?<base64>?=`), which is what
`encode_value` does, so the header stays ASCII and decodes to exactly what was sent.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from shardfleet.node.s3.errors import InvalidArgument, MetadataTooLarge

PREFIX = "x-amz-meta-"
MAX_USER_META = 2048  # bytes of names and values, as AWS counts them


def parse(headers: Mapping[str, str]) -> dict[str, str]:
    """x-amz-meta-* request headers -> {lower-case name: value}; MetadataTooLarge past 2 KB,
    InvalidArgument for bytes that are not UTF-8 (they could not be returned as sent)."""
    user: dict[str, str] = {}
    size = 0
    for name, value in headers.items():
        lname = name.lower()
        if not lname.startswith(PREFIX):
            continue
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:  # aiohttp keeps undecodable bytes as surrogates
            raise InvalidArgument(
                f"The value of {name} is not valid UTF-8.", ArgumentName=name
            ) from None
        key = lname[len(PREFIX) :]
        if key in user:  # a repeated header: S3 joins the values with commas
            user[key] += "," + value
        else:
            user[key] = value
        size += len(key) + len(raw)
    if size > MAX_USER_META:
        raise MetadataTooLarge(f"User metadata is limited to {MAX_USER_META} bytes.")
    return user


def encode_value(value: str) -> str:
    """The header form of a stored value: unchanged when ASCII, else RFC 2047 as AWS."""
    if value.isascii():
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode() + "?="
