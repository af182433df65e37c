"""Hostile drive RPC messages, both directions, over real QUIC on 127.0.0.1.

Server side: a real RpcEndpoint serving drive_handlers over a real LocalDrive in a temp
dir. For every method drive_handlers registers, a generated table of bad request headers
(each field removed, given each wrong type, oversized, negative, out of range, a path
instead of a name, packed metadata that is not an ObjectMeta, nested garbage) goes out
through the raw transport client; each must come back as RemoteError("bad-request") naming
the field, be logged once, and leave the drive serving normal calls with its data as it was.

Client side: a peer whose handlers answer garbage makes RemoteDrive raise DriveIOError.

The field kinds below are written out here, apart from cluster/drive_rpc.py's schemas, so
the table does not ask the code under test which values it considers bad.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import timeit
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import msgpack
import pytest

from shardfleet.cluster import drive_rpc
from shardfleet.cluster.drive import DriveIOError, DriveOffline
from shardfleet.cluster.drive_rpc import RPCS, RemoteDrive, drive_handlers, unpack_meta
from shardfleet.cluster.meta import ObjectMeta
from shardfleet.erasure import ErasureParams
from shardfleet.node.storage.format import open_drives
from shardfleet.transport import (
    Peer,
    RemoteError,
    Response,
    RpcEndpoint,
    TransportConfig,
    create_ca,
    issue_node_cert,
)

pytestmark = pytest.mark.timeout(60)

CONFIG = TransportConfig(auth_timeout=1.0, connect_timeout=5.0, idle_timeout=10.0)
BUCKET = "bkt"
INLINE_KEY = "small/é-key"
SHARD_KEY = "big"
VID_INLINE = "1" * 32
VID_SHARD = "2" * 32
SHARD = os.urandom(200_000)


def make_meta(vid: str, *, inline: bool, size: int = 6, **changes: Any) -> ObjectMeta:
    meta = ObjectMeta(
        vid=vid,
        mtime=1_700_000_000_000_000_000,
        size=size,
        etag="9" * 32,
        k=1,
        m=0,
        stripe=1 << 20,
        dist=[0],
        inline=inline,
        content_type="text/plain; charset=utf-8",
        user={"colour": "blue", "note": "é"},
        headers={"Cache-Control": "no-cache"},
    )
    for name, value in changes.items():
        setattr(meta, name, value)
    return meta


def packed_fields(**changes: Any) -> bytes:
    """A packed record of ObjectMeta's layout with some positions replaced, packed raw."""
    fields = msgpack.unpackb(make_meta(VID_INLINE, inline=True).pack())
    names = ["version"] + [f.name for f in dataclass_fields(ObjectMeta)]
    for name, value in changes.items():
        fields[names.index(name)] = value
    return msgpack.packb(fields, use_bin_type=True)


# -- the field kinds, and what is wrong for each ----------------------------------------------
WRONG_TYPES: list[Any] = [
    None,
    True,
    False,
    7,
    -3,
    2**64 - 1,
    2.5,
    math.nan,
    "text",
    b"bytes",
    [1, 2],
    [[["deep"]]],
    {"a": "b"},
    {"nested": {"x": [1, {"y": b"z"}]}},
    msgpack.ExtType(5, b"x"),
    msgpack.Timestamp(1, 0),
]


def _deep(levels: int) -> bytes:
    return b"\x91" * levels + b"\x01"  # [[[...[1]...]]]


BAD_META = [
    b"",
    b"\xc1",  # never used in msgpack
    b"not msgpack at all",
    b"\x9d\x01",  # the right start, then nothing
    msgpack.packb([1]),
    msgpack.packb({"vid": VID_INLINE}),
    msgpack.packb(list(range(13))),
    _deep(5000),
    make_meta(VID_INLINE, inline=True).pack() + b"\x00",  # trailing bytes
    packed_fields(version=2),
    packed_fields(vid="../../../etc"),
    packed_fields(vid="A" * 32),
    packed_fields(mtime="100"),
    packed_fields(mtime=-1),
    packed_fields(size=None),
    packed_fields(etag=5),
    packed_fields(k=0),
    packed_fields(m=True),
    packed_fields(stripe=0),
    packed_fields(dist="0"),
    packed_fields(dist=[0, "1"]),
    packed_fields(dist=[-1]),
    packed_fields(inline=1),
    packed_fields(content_type=b"text/plain"),
    packed_fields(user={"a": 1}),
    packed_fields(user=[["a", "b"]]),
    packed_fields(headers={"Cache-Control": {"x": "y"}}),
    packed_fields(headers={b"k": "v"}),
    msgpack.packb([3]),  # a tombstone's format, then too few fields
    msgpack.packb([3, VID_INLINE]),
    msgpack.packb([3, "../" + "a" * 29, 5]),
    msgpack.packb([3, VID_INLINE, -1]),
    msgpack.packb([3, VID_INLINE, 5, 6]),
]

VID_BAD = ["", "a" * 31, "a" * 33, "g" * 32, "A" * 32, "../" + "a" * 29, "0x" + "a" * 30,
           " " + "a" * 31, "a" * 31 + "\n", "ａ" * 32]  # fmt: skip

# kind -> (python types a value of the kind has, bad values of those types)
KINDS: dict[str, tuple[tuple[type, ...], list[Any]]] = {
    "bucket": (
        (str,),
        [
            "",
            "x" * 64,
            "..",
            ".",
            "../etc",
            "a/b",
            "/abs",
            "bkt\x00",
            "bkt\n",
            "-bkt",
            "é-bkt",
            "bkt ",
            "b\x1b[31mred",
        ],
    ),  # fmt: skip
    # a drive key is an S3 key (1024 bytes) or an upload record's (the key, NUL and a uid)
    "key": ((str,), ["", "k" * 1089, "é" * 545, "k" * 4000]),
    "vid": ((str,), VID_BAD),
    "vid?": ((str, type(None)), VID_BAD),
    # a DELETE's tombstone: a record that is not one is refused too
    "meta?": ((bytes, type(None)), [*BAD_META, make_meta(VID_INLINE, inline=True).pack()]),
    "part": ((int,), [-1, 10_001, 2**63, 2**64 - 1]),
    "offset": ((int,), [-1, -(2**63), 2**63]),
    "length": ((int,), [-1, (64 << 20) + 1, 2**63]),
    "stamp": ((int,), [-1, 2**63, 2**64 - 1]),
    "bool": ((bool,), []),
    "meta": ((bytes,), BAD_META),
    "inline": ((bytes, type(None)), []),
    "listing": ((str,), ["p" * ((16 << 10) + 1), "é" * 8193]),
    "limit": ((int,), [-1, (1 << 20) + 1, 2**64 - 1]),
    "ttl": ((int, float), [0, 0.0, -1, -0.5, 300.001, 301, 10**9, math.nan, math.inf, -math.inf]),
    "resource": ((str,), ["", "x" * 2049, "é" * 1025]),
    "owner": ((str,), ["", "o" * 129, "€" * 43]),
}

# every method drive_handlers serves: its good request (naming the seeded data, so a bad
# header that got through would act on it) and the kind of each field
METHODS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "drive.info": ({}, {}),
    "drive.make_bucket": ({"b": BUCKET, "c": 5}, {"b": "bucket", "c": "stamp"}),
    "drive.delete_bucket": ({"b": BUCKET, "f": True}, {"b": "bucket", "f": "bool"}),
    "drive.list_buckets": ({}, {}),
    "drive.bucket_exists": ({"b": BUCKET}, {"b": "bucket"}),
    "drive.write_shard": (
        {"b": BUCKET, "v": VID_SHARD, "p": 1},
        {"b": "bucket", "v": "vid", "p": "part"},
    ),
    "drive.commit": (
        {
            "b": BUCKET,
            "k": INLINE_KEY,
            "m": make_meta(VID_INLINE, inline=True).pack(),
            "i": b"inline",
        },
        {"b": "bucket", "k": "key", "m": "meta", "i": "inline"},
    ),  # fmt: skip
    "drive.abort": ({"b": BUCKET, "v": VID_SHARD}, {"b": "bucket", "v": "vid"}),
    "drive.install": ({"b": BUCKET, "v": VID_SHARD}, {"b": "bucket", "v": "vid"}),
    "drive.read_meta": ({"b": BUCKET, "k": INLINE_KEY}, {"b": "bucket", "k": "key"}),
    "drive.read_shard": (
        {"b": BUCKET, "v": VID_SHARD, "p": 1, "o": 0, "n": 1000},
        {"b": "bucket", "v": "vid", "p": "part", "o": "offset", "n": "length"},
    ),
    "drive.delete": (
        {"b": BUCKET, "k": INLINE_KEY, "v": VID_INLINE, "t": None},
        {"b": "bucket", "k": "key", "v": "vid?", "t": "meta?"},
    ),
    "drive.scan": (
        {"b": BUCKET, "p": "", "s": "", "l": 10, "e": False},
        {"b": "bucket", "p": "listing", "s": "listing", "l": "limit", "e": "bool"},
    ),
    "drive.scan_digest": (
        {"b": BUCKET, "p": "", "s": "", "l": 10, "e": False},
        {"b": "bucket", "p": "listing", "s": "listing", "l": "limit", "e": "bool"},
    ),
    "drive.lock": (
        {"r": f"{BUCKET}/{INLINE_KEY}", "o": "owner-1", "t": 5},
        {"r": "resource", "o": "owner", "t": "ttl"},
    ),
    "drive.unlock": (
        {"r": f"{BUCKET}/{INLINE_KEY}", "o": "owner-1"},
        {"r": "resource", "o": "owner"},
    ),
    "drive.complete_upload": (
        {
            "b": BUCKET,
            "k": INLINE_KEY,
            "u": VID_SHARD,
            "m": make_meta(VID_INLINE, inline=False, parts=1, parts_digest=b"d" * 16).pack(),
            "t": make_meta(VID_INLINE, inline=True, etag="completed").pack(),
        },
        {"b": "bucket", "k": "key", "u": "vid", "m": "meta", "t": "meta"},
    ),  # fmt: skip
}


def hostile_headers(method: str, drive_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(field, header) for every bad variant of the method's good header."""
    good, kinds = METHODS[method]
    good = {"d": drive_id} | good
    out = []
    for name, kind in kinds.items():
        types, bad = KINDS[kind]
        out.append((name, {k: v for k, v in good.items() if k != name}))
        values = [v for v in WRONG_TYPES if type(v) not in types] + bad
        out += [(name, good | {name: v}) for v in values]
    return out


def test_the_table_covers_every_method_and_field():
    registered = drive_handlers({})
    assert set(METHODS) == set(registered) == {rpc.method for rpc in RPCS}
    for rpc in RPCS:
        assert set(METHODS[rpc.method][1]) == set(rpc.request_fields), rpc.method


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca", "it")
    return {
        name: issue_node_cert(root / "ca", name, ["127.0.0.1"], root / name)
        for name in ("drive-node", "client-node", "liar-node")
    }


@pytest.fixture
async def drive(tmp_path):
    pool = ThreadPoolExecutor(2)
    (opened,) = open_drives([tmp_path / "d0"], ErasureParams(1, 0), pool)
    (d,) = opened.drives
    await d.make_bucket(BUCKET, 11)
    await d.commit(BUCKET, INLINE_KEY, make_meta(VID_INLINE, inline=True), b"inline")
    writer = await d.open_shard(BUCKET, VID_SHARD, 1)
    await writer.write([SHARD])
    await writer.finish()
    await d.commit(BUCKET, SHARD_KEY, make_meta(VID_SHARD, inline=False, size=len(SHARD)), None)
    yield d
    d.close()
    pool.shutdown()


@pytest.fixture
async def endpoints(pki):
    made: list[RpcEndpoint] = []

    async def make(name: str) -> RpcEndpoint:
        ep = RpcEndpoint(node_id=name, tls=pki[name], host="127.0.0.1", port=0, config=CONFIG)
        made.append(ep)
        await ep.start()
        return ep

    yield make
    for ep in made:
        await ep.close()


@pytest.fixture
async def served(endpoints, drive):
    """(client endpoint, server peer, RemoteDrive) for the drive served over QUIC."""
    server = await endpoints("drive-node")
    for method, handler in drive_handlers({drive.drive_id: drive}).items():
        server.register(method, handler)
    client = await endpoints("client-node")
    peer = Peer("drive-node", "127.0.0.1", server.port)
    remote = RemoteDrive(client, peer, drive.drive_id, "d0", is_alive=lambda _: True, timeout=5)
    return client, peer, remote


def tree(root: Path) -> list[tuple[str, int]]:
    """Every file under the drive's data and tmp dirs, with its size."""
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size)
        for top in ("data", "tmp")
        for p in (root / top).rglob("*")
        if p.is_file()
    )


async def snapshot(d) -> tuple:
    return (
        await d.list_buckets(),
        await d.scan(BUCKET, "", "", 100),
        await d.read_meta(BUCKET, INLINE_KEY),
        bytes(await d.read_shard(BUCKET, VID_SHARD, 1, 0, 1 << 20)),
        tree(d.root),
        len(d.leases),
    )


async def send(client, peer, method: str, header: dict[str, Any]) -> None:
    if method == "drive.write_shard":  # a body, as the real client streams one
        await client.call(peer, method, header, b"shard bytes", timeout=5)
    else:
        await client.call(peer, method, header, timeout=5)


# -- server side --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
async def test_hostile_requests_get_bad_request_and_change_nothing(method, served, drive, caplog):
    client, peer, remote = served
    before = await snapshot(drive)
    cases = hostile_headers(method, drive.drive_id)
    assert len(cases) >= 5 * len(METHODS[method][1])
    caplog.set_level(logging.WARNING, logger="shardfleet.cluster.drive_rpc")

    async def one(name: str, header: dict[str, Any]) -> None:
        with pytest.raises(RemoteError) as info:
            await send(client, peer, method, header)
        assert info.value.kind == "bad-request", (name, header, info.value)
        assert f"{method} request: field {name!r}" in info.value.message, info.value.message
        assert len(info.value.message) < 600  # no echo of a megabyte string

    for i in range(0, len(cases), 16):  # a few in flight at once, as peers send them
        await asyncio.wait_for(asyncio.gather(*(one(*c) for c in cases[i : i + 16])), 20)

    # one WARNING per bad message, naming the peer and the method, on one escaped line
    lines = [r for r in caplog.records if r.name == "shardfleet.cluster.drive_rpc"]
    assert len(lines) == len(cases)
    for record in lines:
        text = record.getMessage()
        assert record.levelno == logging.WARNING
        assert "client-node" in text and method in text
        assert text.isprintable(), text  # control characters arrive escaped by repr

    # the drive still works, and nothing of it changed
    assert await snapshot(drive) == before
    assert (await remote.read_meta(BUCKET, INLINE_KEY)).inline == b"inline"
    assert await remote.read_shard(BUCKET, VID_SHARD, 1, 100, 1000) == SHARD[100:1100]
    good, _ = METHODS[method]
    if method not in (
        "drive.make_bucket",
        "drive.delete_bucket",
        "drive.delete",
        "drive.complete_upload",
    ):
        await send(client, peer, method, {"d": drive.drive_id} | good)  # the good one passes


async def test_the_limits_themselves_pass(served, drive):
    client, peer, remote = served
    d = {"d": drive.drive_id}
    for name in ("a", "b" * 63, "0.bucket_name-1", "Legacy_Bucket"):
        await client.call(peer, "drive.make_bucket", d | {"b": name, "c": 0}, timeout=5)
    long_key = "é" * 512  # 1024 bytes
    meta = make_meta(VID_INLINE, inline=True)
    await remote.commit(BUCKET, long_key, meta, b"x")
    assert (await remote.read_meta(BUCKET, long_key)).meta == meta
    assert await remote.read_shard(BUCKET, VID_SHARD, 1, 0, 64 << 20) == SHARD
    assert await remote.read_shard(BUCKET, VID_SHARD, 1, 0, 1 << 40) == SHARD  # clamped
    assert await remote.scan(BUCKET, "p" * (16 << 10), "s" * (16 << 10), 1 << 20) == []
    rows = await remote.scan(BUCKET, "", "", 1 << 20)  # asks too many: gets MAX_SCAN at most
    assert [k for k, _ in rows] == sorted([SHARD_KEY, INLINE_KEY, long_key])
    assert await remote.lock("r" * 2048, "o" * 128, 300)
    assert await remote.lock("r2", "o", 1e-6)
    await remote.delete(BUCKET, long_key, vid=None)


async def test_unknown_fields_are_ignored(served, drive):
    client, peer, _ = served
    header = {"d": drive.drive_id, "b": BUCKET, "k": INLINE_KEY, "x": {"junk": [1, 2]}}
    reply = await client.call(peer, "drive.read_meta", header, timeout=5)
    assert unpack_meta(reply.header["m"]).vid == VID_INLINE


async def test_a_drive_id_that_names_no_drive_is_drive_offline(served, drive):
    client, peer, _ = served
    good = {"b": BUCKET, "k": INLINE_KEY}
    for header in (good, good | {"d": 1}, good | {"d": ["x"]}, good | {"d": "x" * 5000}):
        with pytest.raises(RemoteError) as info:
            await client.call(peer, "drive.read_meta", header, timeout=5)
        assert info.value.kind == "DriveOffline" and len(info.value.message) < 200


async def test_through_remote_drive_bad_input_is_drive_io_error(served):
    _, _, remote = served
    for call in (
        remote.make_bucket("../escape", 1),
        remote.read_meta(BUCKET, "k" * 1089),
        remote.read_shard(BUCKET, "not-a-vid", 1, 0, 10),
        remote.read_shard(BUCKET, VID_SHARD, 1, -1, 10),
        remote.commit(BUCKET, "k", make_meta("../../x" + "a" * 25, inline=True), b"x"),
    ):
        with pytest.raises(DriveIOError, match="bad-request"):
            await call


def test_packed_meta_round_trips_and_garbage_is_refused():
    for meta in (
        make_meta(VID_INLINE, inline=True),
        make_meta(VID_SHARD, inline=False, size=0, user={}, headers={}, etag=""),
        make_meta(VID_SHARD, inline=False, k=16, m=4, dist=list(range(20)), mtime=2**63 - 1),
    ):
        assert unpack_meta(meta.pack()) == meta
    for bad in BAD_META:
        with pytest.raises(ValueError):
            unpack_meta(bad)


def test_checks_cost_microseconds(capsys):
    """The request check every shard RPC pays, timed (best of 5 runs of 5,000 calls)."""
    vid = "a" * 32
    wire = {
        "drive.read_shard": {"d": vid, "b": "my-bucket", "v": vid, "p": 1, "o": 1 << 20,
                             "n": 2 << 20},
        "drive.write_shard": {"d": vid, "b": "my-bucket", "v": vid, "p": 1},
        "drive.read_meta": {"d": vid, "b": "my-bucket", "k": "photos/2024/img_0001.jpg"},
        "drive.lock": {"d": vid, "r": "my-bucket/photos/img_0001.jpg", "o": vid, "t": 5.0},
        "drive.scan": {"d": vid, "b": "my-bucket", "p": "photos/", "s": "photos/a", "l": 1001, "e": False},
        "drive.commit": {"d": vid, "b": "my-bucket", "k": "photos/2024/img_0001.jpg",
                         "m": make_meta(vid, inline=False).pack(), "i": None},
    }  # fmt: skip
    by_name = {rpc.method: rpc for rpc in RPCS}

    def per_call(check, header) -> float:
        check(header)
        return min(timeit.repeat(lambda: check(header), number=5000, repeat=5)) / 5000

    costs = {
        method: per_call(by_name[method].request.check, msgpack.unpackb(msgpack.packb(h)))
        for method, h in wire.items()  # through msgpack: as the header arrives
    }
    reply = msgpack.unpackb(msgpack.packb({"m": make_meta(vid, inline=False).pack(), "i": None}))
    costs["read_meta reply"] = per_call(drive_rpc.READ_META.reply.check, reply)
    with capsys.disabled():
        print(
            "\nschema check per call: "
            + ", ".join(f"{m} {t * 1e6:.2f} us" for m, t in costs.items())
        )
    # microseconds, not tens: the flat headers in ~1 us, the ones carrying an ObjectMeta
    # (decoded and checked field by field) in a few; generous bounds for a loaded machine
    for method, t in costs.items():
        bound = 40e-6 if "commit" in method or "reply" in method else 10e-6
        assert t < bound, (method, t)


# -- client side --------------------------------------------------------------------------------
class Liar:
    """A peer whose drive handlers answer whatever the test sets: (header, body)."""

    def __init__(self) -> None:
        self.answer: tuple[dict[str, Any], bytes | None] = ({}, None)

    async def handle(self, req) -> Response:
        header, body = self.answer
        return Response(header, body)


@pytest.fixture
async def liar(endpoints):
    server = await endpoints("liar-node")
    lie = Liar()
    for rpc in RPCS:
        server.register(rpc.method, lie.handle)
    client = await endpoints("client-node")
    peer = Peer("liar-node", "127.0.0.1", server.port)
    return lie, RemoteDrive(client, peer, "d" * 32, "d0", is_alive=lambda _: True, timeout=5)


GOOD_META = make_meta(VID_INLINE, inline=True).pack()
LIES = [
    ("read_meta", (BUCKET, "k"), {"m": b"garbage", "i": None}, None),
    ("read_meta", (BUCKET, "k"), {"m": packed_fields(vid="../../x"), "i": None}, None),
    ("read_meta", (BUCKET, "k"), {"m": packed_fields(dist=[0, "x"]), "i": None}, None),
    ("read_meta", (BUCKET, "k"), {"m": GOOD_META, "i": 5}, None),
    ("read_meta", (BUCKET, "k"), {"m": GOOD_META}, None),
    ("read_meta", (BUCKET, "k"), {}, None),
    ("read_meta", (BUCKET, "k"), {"m": [GOOD_META], "i": None}, None),
    ("list_buckets", (), {"buckets": {"../x": 1}}, None),
    ("list_buckets", (), {"buckets": {BUCKET: "yesterday"}}, None),
    ("list_buckets", (), {"buckets": [BUCKET]}, None),
    ("bucket_exists", (BUCKET,), {"exists": 1}, None),
    ("bucket_exists", (BUCKET,), {}, None),
    ("scan_digest", (BUCKET, "", "", 10), {"n": -1, "last": "", "h": b"x" * 16}, None),
    ("scan_digest", (BUCKET, "", "", 10), {"n": 1, "last": "k", "h": b"short"}, None),
    ("scan_digest", (BUCKET, "", "", 10), {"n": 1, "last": None, "h": b"x" * 16}, None),
    ("lock", ("r", "o", 5), {"g": "yes"}, None),
    ("lock", ("r", "o", 5), {}, None),
    ("read_shard", (BUCKET, VID_SHARD, 1, 0, 10), {}, b"more than ten bytes"),
    ("scan", (BUCKET, "", "", 10), {}, b"\xc1"),
    ("scan", (BUCKET, "", "", 10), {}, msgpack.packb({"rows": []})),
    ("scan", (BUCKET, "", "", 10), {}, msgpack.packb([["k", GOOD_META, "extra"]])),
    ("scan", (BUCKET, "", "", 10), {}, msgpack.packb([[1, GOOD_META]])),
    ("scan", (BUCKET, "", "", 10), {}, msgpack.packb([["k", b"not a record"]])),
    ("scan", (BUCKET, "", "", 2), {}, msgpack.packb([[f"k{i}", GOOD_META] for i in range(3)])),
    ("scan", (BUCKET, "", "", 10), {}, _deep(5000)),
]


@pytest.mark.parametrize(
    "method,args,header,body", LIES, ids=[f"{m}-{i}" for i, (m, *_) in enumerate(LIES)]
)
async def test_a_malformed_reply_is_drive_io_error(liar, method, args, header, body):
    lie, remote = liar
    lie.answer = (header, body)
    with pytest.raises(DriveIOError, match="malformed reply") as info:
        await asyncio.wait_for(getattr(remote, method)(*args), 10)
    assert "liar-node" in str(info.value) and len(str(info.value)) < 600


async def test_a_well_formed_lie_still_passes(liar):
    """The check is of types, not of truth: the same peer answering well is believed."""
    lie, remote = liar
    lie.answer = ({"m": GOOD_META, "i": b"inline"}, None)
    rec = await remote.read_meta(BUCKET, "k")
    assert rec.meta == make_meta(VID_INLINE, inline=True) and rec.inline == b"inline"
    lie.answer = ({}, msgpack.packb([["a", GOOD_META], ["b", GOOD_META]]))
    assert await remote.scan(BUCKET, "", "", 2) == [("a", GOOD_META), ("b", GOOD_META)]


async def test_a_malformed_info_reply_reads_as_offline(liar):
    lie, remote = liar
    lie.answer = ({"online": "yes", "total": -1, "free": 0, "errors": 0}, None)
    info = await remote.info()
    assert not info.online and info.total == 0


async def test_offline_peer_is_still_drive_offline(endpoints):
    client = await endpoints("client-node")
    dead = Peer("liar-node", "127.0.0.1", 9)
    remote = RemoteDrive(client, dead, "d" * 32, "d0", is_alive=lambda _: True, timeout=2)
    with pytest.raises(DriveOffline):
        await remote.read_meta(BUCKET, "k")
