"""S3 XML bodies: rendering the responses, parsing the few request bodies S3 takes.

Rendering builds strings directly (escaped) rather than element trees: listings of 1,000
keys are on a hot path. Parsing uses ElementTree on bodies capped in size by the caller,
and rejects DTDs so no entity expansion can happen.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from shardfleet.node.s3.errors import MalformedXML

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


_SPECIAL = re.compile(r"[&<>\x00-\x1f\x7f-\x9f]")


def iso8601(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def http_date(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f]")


def text(value: str) -> str:
    """Character data as AWS writes it: &, < and > escaped, and the C0 controls XML 1.0
    cannot carry literally (all but tab and newline; a literal CR would be read back as a
    newline) as numeric references, e.g. &#x1;. Clients that must read such keys ask for
    encoding-type=url, where a listing offers it."""
    out = escape(value)
    if _CONTROL.search(out):
        out = _CONTROL.sub(lambda m: f"&#x{ord(m[0]):x};", out)
    return out


def el(name: str, value: object) -> str:
    return f"<{name}>{text(str(value))}</{name}>"


def document(root: str, parts: Iterable[str]) -> bytes:
    return (HEAD + f'<{root} xmlns="{NS}">' + "".join(parts) + f"</{root}>").encode()


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """Characters XML 1.0 cannot carry at all (NUL, most C0 controls, lone surrogates) as
    percent escapes, so an error naming a key with them stays a parseable document."""
    if not _XML_ILLEGAL.search(text):
        return text
    return _XML_ILLEGAL.sub(
        lambda m: "".join(f"%{b:02X}" for b in m[0].encode("utf-8", "surrogatepass")), text
    )


def error(code: str, message: str, resource: str, request_id: str, extra: dict[str, str]) -> bytes:
    body = [el("Code", code), el("Message", xml_safe(message))]
    body += [el(k, xml_safe(v)) for k, v in extra.items()]
    body += [el("Resource", xml_safe(resource)), el("RequestId", request_id)]
    return (HEAD + "<Error>" + "".join(body) + "</Error>").encode()


def owner(who: object) -> str:
    """<Owner> of an id (shown as its own display name) or of an identity (node/s3/identity:
    canonical id and display name)."""
    ident, name = (who, who) if isinstance(who, str) else (who.canonical_id, who.display_name)  # type: ignore[attr-defined]
    return f"<Owner>{el('ID', ident)}{el('DisplayName', name)}</Owner>"


def list_buckets(
    buckets: dict[str, int],
    owner_id: str,
    *,
    token: str | None = None,
    prefix: str | None = None,
    region: str = "",
) -> bytes:
    """ListAllMyBucketsResult; ContinuationToken only when more buckets follow, Prefix
    only when the request had one, as AWS."""
    where = el("BucketRegion", region) if region else ""
    items = "".join(
        f"<Bucket>{el('Name', name)}{el('CreationDate', iso8601(created))}{where}</Bucket>"
        for name, created in buckets.items()
    )
    parts = [owner(owner_id), f"<Buckets>{items}</Buckets>"]
    if token is not None:
        parts.append(el("ContinuationToken", token))
    if prefix is not None:
        parts.append(el("Prefix", prefix))
    return document("ListAllMyBucketsResult", parts)


def parse(body: bytes, root: str) -> ET.Element:
    import xml.etree.ElementTree as ET  # only a few requests have XML bodies (~3 ms of start-up)

    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise MalformedXML("DTDs are not allowed.")
    try:
        element = ET.fromstring(body)
    except ET.ParseError as exc:
        raise MalformedXML() from exc
    if local_name(element.tag) != root:
        raise MalformedXML(f"Expected a {root} document.")
    return element


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if local_name(c.tag) == name]


def child_text(element: ET.Element, name: str) -> str | None:
    found = children(element, name)
    return (found[0].text or "") if found else None


DELETE_ENTRY_FIELDS = ("Key", "VersionId", "ETag", "LastModifiedTime", "Size")


def parse_delete(body: bytes) -> tuple[list[dict[str, str]], bool]:
    """<Delete> -> ([{Key, and VersionId / ETag / LastModifiedTime / Size when given}], quiet).
    An element we do not know is refused: it might be a condition we would ignore."""
    root = parse(body, "Delete")
    entries = []
    for child in root:
        if local_name(child.tag) not in ("Object", "Quiet"):
            raise MalformedXML(f"Unknown element {local_name(child.tag)!r} in Delete.")
    for obj in children(root, "Object"):
        entry = {}
        for field in obj:
            name = local_name(field.tag)
            if name not in DELETE_ENTRY_FIELDS or name in entry:
                raise MalformedXML(f"Unexpected element {name!r} in a Delete Object.")
            entry[name] = field.text or ""
        if "Key" not in entry:
            raise MalformedXML("Every Object needs a Key.")
        entries.append(entry)
    if not entries or len(entries) > 1000:
        raise MalformedXML("A Delete request lists between 1 and 1000 objects.")
    quiet = (child_text(root, "Quiet") or "").strip().lower() == "true"
    return entries, quiet


def delete_result(deleted: list[str], failed: list[tuple[str, str, str]]) -> bytes:
    parts = [f"<Deleted>{el('Key', k)}</Deleted>" for k in deleted]
    parts += [
        f"<Error>{el('Key', k)}{el('Code', code)}{el('Message', msg)}</Error>"
        for k, code, msg in failed
    ]
    return document("DeleteResult", parts)


def location(region: str) -> bytes:
    value = "" if region == "us-east-1" else escape(region)
    return (HEAD + f'<LocationConstraint xmlns="{NS}">{value}</LocationConstraint>').encode()


def _listing_dates() -> Callable[[int], str]:
    """LastModified of a listing's rows from mtime ns; a page's objects mostly share their
    second, so each second is formatted once."""
    dates: dict[int, str] = {}

    def stamp(mtime: int) -> str:
        second, ms = divmod(mtime // 1_000_000, 1000)
        date = dates.get(second)
        if date is None:
            date = dates[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{date}.{ms:03d}Z"

    return stamp


_ENCODED_FIELDS = frozenset({"Marker", "NextMarker", "StartAfter"})


def list_objects(
    *,
    bucket: str,
    prefix: str,
    delimiter: str,
    max_keys: int,
    objects: list[tuple[str, int, str, int]],  # key, mtime ns, etag, size
    prefixes: list[str],
    truncated: bool,
    encode: bool,
    owner_id: str | None,
    fields: dict[str, str],
    key_count: bool,
) -> bytes:
    """ListBucketResult: `fields` are the version's own (ContinuationToken... for V2,
    Marker... for V1); V2 also reports KeyCount."""
    from urllib.parse import quote

    def name(value: str) -> str:
        return quote(value, safe="/") if encode else value

    parts = [el("Name", bucket), el("Prefix", name(prefix))]
    # with encoding-type=url AWS encodes the markers too (V1's Marker and NextMarker, V2's
    # StartAfter), not the continuation tokens (already URL-safe)
    parts += [el(k, name(v) if k in _ENCODED_FIELDS else v) for k, v in fields.items()]
    if key_count:
        parts.append(el("KeyCount", len(objects) + len(prefixes)))
    parts.append(el("MaxKeys", max_keys))
    if delimiter:
        parts.append(el("Delimiter", name(delimiter)))
    if encode:
        parts.append(el("EncodingType", "url"))
    parts.append(el("IsTruncated", "true" if truncated else "false"))
    who = owner(owner_id) if owner_id else ""
    stamp = _listing_dates()
    for key, mtime, etag, size in objects:
        parts.append(
            f"<Contents><Key>{text(name(key)) if _SPECIAL.search(key) or encode else key}</Key><LastModified>{stamp(mtime)}</LastModified>"
            f"<ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size>{who}"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    parts += [f"<CommonPrefixes>{el('Prefix', name(p))}</CommonPrefixes>" for p in prefixes]
    return document("ListBucketResult", parts)


def list_versions(
    *,
    bucket: str,
    prefix: str,
    delimiter: str,
    max_keys: int,
    objects: list[tuple[str, int, str, int]],  # key, mtime ns, etag, size
    prefixes: list[str],
    next_key_marker: str | None,
    encode: bool,
    owner_id: str,
    fields: dict[str, str],
) -> bytes:
    """ListVersionsResult of an unversioned bucket: each object as its one version, `null`,
    the latest. With encoding-type=url, AWS encodes Key, Prefix, Delimiter, KeyMarker and
    NextKeyMarker."""
    from urllib.parse import quote

    def name(value: str) -> str:
        return quote(value, safe="/") if encode else value

    parts = [el("Name", bucket), el("Prefix", name(prefix))]
    parts.append(el("KeyMarker", name(fields["KeyMarker"])))
    parts.append(el("VersionIdMarker", fields["VersionIdMarker"]))
    if next_key_marker is not None:
        parts += [el("NextKeyMarker", name(next_key_marker)), el("NextVersionIdMarker", "null")]
    parts.append(el("MaxKeys", max_keys))
    if delimiter:
        parts.append(el("Delimiter", name(delimiter)))
    if encode:
        parts.append(el("EncodingType", "url"))
    parts.append(el("IsTruncated", "true" if next_key_marker is not None else "false"))
    who = owner(owner_id)
    stamp = _listing_dates()
    for key, mtime, etag, size in objects:
        parts.append(
            f"<Version>{el('Key', name(key))}<VersionId>null</VersionId>"
            f"<IsLatest>true</IsLatest><LastModified>{stamp(mtime)}</LastModified>"
            f"<ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size>{who}"
            "<StorageClass>STANDARD</StorageClass></Version>"
        )
    parts += [f"<CommonPrefixes>{el('Prefix', name(p))}</CommonPrefixes>" for p in prefixes]
    return document("ListVersionsResult", parts)
