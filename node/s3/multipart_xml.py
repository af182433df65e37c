"""The XML of multipart uploads: the CompleteMultipartUpload request, and the responses."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from shardfleet.node.s3 import checksums
from shardfleet.node.s3.errors import InvalidArgument, MalformedXML
from shardfleet.node.s3.xml import children, document, el, iso8601, owner, parse

MAX_PARTS = 10_000


@dataclass(slots=True)
class ListedPart:
    number: int
    etag: str  # without quotes
    checksums: dict[str, str] = field(default_factory=dict)  # ALGORITHM -> base64


_PART_FIELDS = {"PartNumber", "ETag"} | {f"Checksum{a}" for a in checksums.ALGORITHMS}


def parse_complete(body: bytes) -> list[ListedPart]:
    """<CompleteMultipartUpload><Part><PartNumber/><ETag/>[<ChecksumCRC32/>...]</Part>...
    An element we do not know is refused (it might ask for something we would ignore)."""
    if not body.strip():
        raise MalformedXML("The CompleteMultipartUpload body is empty.")
    root = parse(body, "CompleteMultipartUpload")
    parts: list[ListedPart] = []
    for child in root:
        if child.tag.rsplit("}", 1)[-1] != "Part":
            raise MalformedXML("CompleteMultipartUpload holds only Part elements.")
    for part in children(root, "Part"):
        seen: dict[str, str] = {}
        for item in part:
            name = item.tag.rsplit("}", 1)[-1]
            if name not in _PART_FIELDS or name in seen:
                raise MalformedXML(f"Unexpected element {name!r} in a Part.")
            seen[name] = (item.text or "").strip()
        number = seen.get("PartNumber", "")
        if not number.isdigit() or not number.isascii() or "ETag" not in seen:
            raise MalformedXML("Every Part needs a PartNumber and an ETag.")
        if not 1 <= int(number) <= MAX_PARTS:
            raise InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive",
                ArgumentName="partNumber",
            )
        sums = {n.removeprefix("Checksum"): v for n, v in seen.items() if n.startswith("Checksum")}
        etag = seen["ETag"].removeprefix("W/").strip().strip('"')
        parts.append(ListedPart(int(number), etag, sums))
    if not parts:
        raise MalformedXML("The CompleteMultipartUpload lists no parts.")
    return parts


def _checksum_fields(found: dict[str, str], kind: str = "") -> list[str]:
    out = [el(f"Checksum{alg}", value) for alg, value in found.items()]
    if kind:
        out.append(el("ChecksumType", kind))
    return out


def initiate_result(bucket: str, key: str, uid: str) -> bytes:
    parts = [el("Bucket", bucket), el("Key", key), el("UploadId", uid)]
    return document("InitiateMultipartUploadResult", parts)


def complete_result(
    location: str, bucket: str, key: str, etag: str, found: dict[str, str], kind: str
) -> bytes:
    parts = [el("Location", location), el("Bucket", bucket), el("Key", key)]
    parts.append(f"<ETag>&quot;{etag}&quot;</ETag>")
    parts += _checksum_fields(found, kind)
    return document("CompleteMultipartUploadResult", parts)


def copy_part_result(mtime: int, etag: str, found: dict[str, str]) -> bytes:
    parts = [el("LastModified", iso8601(mtime)), f"<ETag>&quot;{etag}&quot;</ETag>"]
    parts += _checksum_fields(found)
    return document("CopyPartResult", parts)


@dataclass(slots=True)
class PartRow:
    number: int
    mtime: int
    etag: str
    size: int
    checksums: dict[str, str] = field(default_factory=dict)


def list_parts(
    *,
    bucket: str,
    key: str,
    uid: str,
    owner_id: str,
    marker: int,
    max_parts: int,
    rows: list[PartRow],
    truncated: bool,
    algorithm: str,
    kind: str,
) -> bytes:
    who = owner(owner_id)
    parts = [el("Bucket", bucket), el("Key", key), el("UploadId", uid)]
    parts.append(who.replace("<Owner>", "<Initiator>").replace("</Owner>", "</Initiator>"))
    parts += [who, el("StorageClass", "STANDARD"), el("PartNumberMarker", marker)]
    if rows:
        parts.append(el("NextPartNumberMarker", rows[-1].number))
    parts += [el("MaxParts", max_parts), el("IsTruncated", "true" if truncated else "false")]
    if algorithm:
        parts += [el("ChecksumAlgorithm", algorithm), el("ChecksumType", kind)]
    for r in rows:
        parts.append(
            "<Part>"
            + el("PartNumber", r.number)
            + el("LastModified", iso8601(r.mtime))
            + f"<ETag>&quot;{r.etag}&quot;</ETag>"
            + el("Size", r.size)
            + "".join(_checksum_fields(r.checksums))
            + "</Part>"
        )
    return document("ListPartsResult", parts)


@dataclass(slots=True)
class UploadRow:
    key: str
    uid: str
    initiated: int
    algorithm: str = ""
    kind: str = ""


def list_uploads(
    *,
    bucket: str,
    prefix: str,
    delimiter: str,
    key_marker: str,
    uid_marker: str,
    next_key: str,
    next_uid: str,
    max_uploads: int,
    truncated: bool,
    rows: list[UploadRow],
    prefixes: list[str],
    encode: bool,
    owner_id: str,
) -> bytes:
    """ListMultipartUploadsResult. With encoding-type=url AWS encodes Key, Prefix,
    Delimiter, KeyMarker and NextKeyMarker (upload ids are plain hex)."""

    def name(value: str) -> str:
        return quote(value, safe="/") if encode else value

    who = owner(owner_id)
    initiator = who.replace("<Owner>", "<Initiator>").replace("</Owner>", "</Initiator>")
    parts = [el("Bucket", bucket), el("KeyMarker", name(key_marker))]
    parts.append(el("UploadIdMarker", uid_marker))
    parts += [el("NextKeyMarker", name(next_key)), el("NextUploadIdMarker", next_uid)]
    if delimiter:
        parts.append(el("Delimiter", name(delimiter)))
    parts.append(el("Prefix", name(prefix)))
    parts.append(el("MaxUploads", max_uploads))
    if encode:
        parts.append(el("EncodingType", "url"))
    parts.append(el("IsTruncated", "true" if truncated else "false"))
    for r in rows:
        extra = ""
        if r.algorithm:
            extra = el("ChecksumAlgorithm", r.algorithm) + el("ChecksumType", r.kind)
        parts.append(
            "<Upload>"
            + el("Key", name(r.key))
            + el("UploadId", r.uid)
            + initiator
            + who
            + el("StorageClass", "STANDARD")
            + el("Initiated", iso8601(r.initiated))
            + extra
            + "</Upload>"
        )
    parts += [f"<CommonPrefixes>{el('Prefix', name(p))}</CommonPrefixes>" for p in prefixes]
    return document("ListMultipartUploadsResult", parts)
