"""RPC over real aioquic on 127.0.0.1: bodies, concurrency, errors, deadlines, cancellation,
reconnects and backpressure. Server and client are two RpcEndpoints in this process."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import time

import pytest

from shardfleet.transport import (
    AuthFailed,
    BodyTooLarge,
    ConnectFailed,
    Peer,
    RemoteError,
    Response,
    RpcEndpoint,
    RpcFault,
    RpcTimeout,
    TransportConfig,
    create_ca,
    issue_node_cert,
)

pytestmark = pytest.mark.timeout(30)

MIB = 1 << 20
CONFIG = TransportConfig(
    auth_timeout=1.0,
    connect_timeout=5.0,
    idle_timeout=6.0,
    stall_timeout=5.0,
    reconnect_backoff_base=0.05,
    reconnect_backoff_max=0.2,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca", "it")
    create_ca(root / "other-ca", "elsewhere")
    files = {
        name: issue_node_cert(root / "ca", name, ["127.0.0.1"], root / name)
        for name in ("server-node", "client-node", "third-node")
    }
    files["impostor"] = issue_node_cert(
        root / "other-ca", "server-node", ["127.0.0.1"], root / "imp"
    )
    return files


class App:
    """The server's handlers, recording what they saw."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.max_buffered = 0
        self.peers: list[str] = []

    def register(self, ep: RpcEndpoint) -> None:
        for name in ("echo", "echo_stream", "fault", "boom", "slow", "slow_body", "count",
                     "read_forever", "source", "limited", "batched"):  # fmt: skip
            ep.register(name, getattr(self, name))

    async def echo(self, req):
        self.peers.append(req.peer_id)
        body = await req.read(64 * MIB)
        return Response({"n": len(body), "peer": req.peer_id, "h": req.header}, body)

    async def echo_stream(self, req):
        body = bytearray()
        async for chunk in req.body:
            body += chunk

        async def pieces():
            view = memoryview(bytes(body))
            for i in range(0, len(view), 300_001):  # odd sizes: boundaries must not matter
                yield view[i : i + 300_001]

        return Response({"sha": hashlib.sha256(body).hexdigest()}, pieces())

    async def batched(self, req):
        sizes = []
        most = req.header.get("max", MIB)
        async for chunks in req.batches(max_bytes=most, min_bytes=req.header.get("min", 0)):
            assert sum(map(len, chunks)) <= most
            sizes.append(sum(map(len, chunks)))
            if req.header.get("slow", True):
                await asyncio.sleep(0.01)  # a thread hop to write them, say
        return Response({"batches": len(sizes), "n": sum(sizes), "sizes": sizes})

    async def limited(self, req):
        return Response({"n": len(await req.read(MIB))})

    async def fault(self, req):
        raise RpcFault("DriveFull", "no space left on drive d1")

    async def boom(self, req):
        raise ValueError("secret detail at /var/lib/shardfleet")

    async def slow(self, req):
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return Response({})

    async def read_forever(self, req):
        self.started.set()
        try:
            async for _ in req.body:
                pass
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return Response({})

    async def slow_body(self, req):
        n = 0
        async for chunk in req.body:
            self.max_buffered = max(self.max_buffered, req.buffered + len(chunk))
            n += len(chunk)
            await asyncio.sleep(0.004)
        return Response({"n": n})

    async def count(self, req):
        self.calls += 1
        return Response({"count": self.calls})

    async def source(self, req):
        size = req.header["n"]

        async def gen():
            for i in range(0, size, 1 << 16):
                yield bytes([i % 251]) * min(1 << 16, size - i)

        return Response({}, gen())


@pytest.fixture
async def endpoints(pki):
    made: list[RpcEndpoint] = []

    async def make(name: str, *, files=None, config=CONFIG, port=0, app=None) -> RpcEndpoint:
        ep = RpcEndpoint(node_id=name, tls=files or pki[name], host="127.0.0.1", port=port,
                         config=config)  # fmt: skip
        if app is not None:
            app.register(ep)
        await ep.start()
        made.append(ep)
        return ep

    yield make
    for ep in made:
        await ep.close()


@pytest.fixture
def app():
    return App()


@pytest.fixture
async def server(endpoints, app):
    return await endpoints("server-node", app=app)


@pytest.fixture
async def client(endpoints):
    return await endpoints("client-node")


@pytest.fixture
def peer(server):
    return Peer("server-node", "127.0.0.1", server.port)


async def test_unary_echo_small(client, peer, app):
    reply = await client.call(peer, "echo", {"k": [1, b"x"]}, b"hello", timeout=5)
    assert reply.header == {"n": 5, "peer": "client-node", "h": {"k": [1, b"x"]}}
    assert await reply.read(100) == b"hello"
    reply = await client.call(peer, "echo", {}, timeout=5)
    assert reply.header["n"] == 0 and await reply.read(10) == b""


async def test_bodies_around_the_one_write_limit(client, peer):
    """Up to SMALL_BODY a message goes out in one write; one byte more takes the chunked path."""
    from shardfleet.transport.streams import SMALL_BODY

    for size in (1, SMALL_BODY - 1, SMALL_BODY, SMALL_BODY + 1):
        data = os.urandom(size)
        reply = await client.call(peer, "echo", {}, memoryview(data), timeout=5)
        assert reply.header["n"] == size
        assert await reply.read(2 * SMALL_BODY) == data
    words = memoryview(bytearray(os.urandom(SMALL_BODY))).cast("I")  # 4-byte items
    reply = await client.call(peer, "echo", {}, words, timeout=5)
    assert reply.header["n"] == SMALL_BODY and await reply.read(2 * SMALL_BODY) == words.tobytes()


async def test_unary_echo_10_mib_each_way(client, peer):
    data = os.urandom(10 * MIB)
    reply = await client.call(peer, "echo", {}, data, timeout=20)
    assert reply.header["n"] == len(data)
    assert await reply.read(11 * MIB) == data


async def test_streamed_echo_10_mib_each_way(client, peer):
    data = os.urandom(10 * MIB)
    call = await client.open_stream(peer, "echo_stream", {}, timeout=20)
    view = memoryview(data)
    for i in range(0, len(view), 512 * 1024):
        await call.send(view[i : i + 512 * 1024])
    reply = await call.finish()
    assert reply.header["sha"] == hashlib.sha256(data).hexdigest()
    got = bytearray()
    async for chunk in reply:
        got += chunk
    assert bytes(got) == data


async def test_request_body_in_batches(client, peer):
    data = os.urandom(8 * MIB)
    reply = await client.call(peer, "batched", {}, data, timeout=20)
    assert reply.header["n"] == len(data)
    assert reply.header["batches"] < 64  # far fewer than the ~130 datagram-sized pieces


async def test_request_body_batches_of_at_least_min_bytes(client, peer):
    # a fast reader still gets big batches: it waits for min_bytes (or the end) each time
    data = os.urandom(8 * MIB + 12345)
    header = {"min": MIB, "max": 4 * MIB, "slow": False}
    reply = await client.call(peer, "batched", header, data, timeout=20)
    sizes = reply.header["sizes"]
    assert reply.header["n"] == len(data)
    assert all(MIB <= n <= 4 * MIB for n in sizes[:-1]) and 0 < sizes[-1] <= 4 * MIB
    assert len(sizes) <= 9


async def test_reply_read_limit(client, peer):
    reply = await client.call(peer, "source", {"n": 4 * MIB}, timeout=5)
    with pytest.raises(BodyTooLarge):
        await reply.read(MIB)
    # the connection is still fine for the next call
    assert (await client.call(peer, "count", {}, timeout=5)).header["count"] == 1


async def test_abandoned_reply_and_stream_call_are_reset(client, peer, app):
    """Dropping an unread Reply or an unfinished StreamCall resets its stream: nothing stays
    pinned on either side (the server's handler is cancelled)."""
    reply = await client.call(peer, "source", {"n": 16 * MIB}, timeout=5)
    assert not reply.complete
    del reply
    call = await client.open_stream(peer, "read_forever", {}, timeout=5)
    await call.send(b"x" * 1000)
    await asyncio.wait_for(app.started.wait(), 5)
    del call
    gc.collect()
    await asyncio.wait_for(app.cancelled.wait(), 2)
    conn = next(iter(client._outbound.values()))
    for _ in range(100):
        if not conn.streams:
            break
        await asyncio.sleep(0.02)
    assert not conn.streams


async def test_fifty_concurrent_calls_share_one_connection(client, server, peer):
    bodies = [os.urandom(1000 + i * 997) for i in range(50)]

    async def one(i):
        reply = await client.call(peer, "echo", {"i": i}, bodies[i], timeout=10)
        return reply.header["h"]["i"], await reply.read(MIB)

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == [(i, bodies[i]) for i in range(50)]
    assert len(client._outbound) == 1 and len(server._inbound) == 1


async def test_rpc_fault_becomes_remote_error(client, peer):
    with pytest.raises(RemoteError) as info:
        await client.call(peer, "fault", {}, timeout=5)
    assert (info.value.kind, info.value.message) == ("DriveFull", "no space left on drive d1")


async def test_handler_crash_is_internal_without_details(client, peer):
    with pytest.raises(RemoteError) as info:
        await client.call(peer, "boom", {}, timeout=5)
    assert info.value.kind == "internal"
    assert "secret" not in info.value.message and "Traceback" not in info.value.message


async def test_unknown_method(client, peer):
    with pytest.raises(RemoteError) as info:
        await client.call(peer, "no.such.thing", {}, b"body", timeout=5)
    assert info.value.kind == "no-such-method"


async def test_unknown_method_with_a_large_body(client, peer):
    """The server answers before reading the body; the caller gets the answer, not PeerGone."""
    with pytest.raises(RemoteError) as info:
        await client.call(peer, "no.such.thing", {}, os.urandom(24 * MIB), timeout=10)
    assert info.value.kind == "no-such-method"


async def test_request_body_over_the_handler_limit(client, peer):
    with pytest.raises(RemoteError) as info:
        await client.call(peer, "limited", {}, os.urandom(3 * MIB), timeout=10)
    assert info.value.kind == "body-too-large"
    assert (await client.call(peer, "limited", {}, b"ok", timeout=5)).header["n"] == 2


async def test_early_error_answer_stops_a_streamed_send(client, peer):
    call = await client.open_stream(peer, "fault", {}, timeout=5)
    with pytest.raises(RemoteError, match="DriveFull"):
        for _ in range(64):
            await call.send(b"x" * (256 * 1024))
        await call.finish()


async def test_call_timeout_cancels_the_handler(client, peer, app):
    started = time.monotonic()
    with pytest.raises(RpcTimeout):
        await client.call(peer, "slow", {}, timeout=0.3)
    assert time.monotonic() - started < 2.0
    await asyncio.wait_for(app.cancelled.wait(), 2)
    assert (await client.call(peer, "count", {}, timeout=5)).header["count"] == 1


async def test_cancelling_a_call_resets_the_stream(client, peer, app):
    task = asyncio.create_task(client.call(peer, "slow", {}, timeout=10))
    await asyncio.wait_for(app.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(app.cancelled.wait(), 2)


async def test_cancelling_a_streamed_call_cancels_the_handler(client, peer, app):
    call = await client.open_stream(peer, "read_forever", {}, timeout=10)
    await call.send(b"x" * 100_000)
    await asyncio.wait_for(app.started.wait(), 5)
    await call.cancel()
    await asyncio.wait_for(app.cancelled.wait(), 2)


async def test_peer_down_fails_fast_then_backs_off(client, pki):
    dead = Peer("server-node", "127.0.0.1", 9)  # nothing listens on the discard port
    started = time.monotonic()
    with pytest.raises(ConnectFailed):
        await client.call(dead, "count", {}, timeout=5)
    with pytest.raises(ConnectFailed, match="next attempt"):
        await client.call(dead, "count", {}, timeout=5)
    assert time.monotonic() - started < 2.0  # ICMP port unreachable, not the 5 s timeout
    state = client.peer_state(dead)
    assert not state.connected and state.failures == 1


async def test_peer_restart_next_call_reconnects(endpoints, client, server, peer, app):
    assert (await client.call(peer, "count", {}, timeout=5)).header["count"] == 1
    await server.close()
    restarted_app = App()
    await endpoints("server-node", port=peer.port, app=restarted_app)
    for _ in range(50):  # the old connection is closed; the first calls may hit the backoff
        try:
            reply = await client.call(peer, "count", {}, timeout=2)
            break
        except ConnectFailed:
            await asyncio.sleep(0.05)
    assert reply.header["count"] == 1 and restarted_app.calls == 1
    assert client.peer_state(peer).connected


async def test_crashed_peer_restart_reconnects_after_one_timeout(endpoints, client, server, peer):
    """A crash sends no CONNECTION_CLOSE and the new process ignores the old connection:
    the first call times out, drops the silent connection, and the next one reconnects."""
    await client.call(peer, "count", {}, timeout=5)
    server._server_transport.close()  # the process "dies": no goodbye
    await asyncio.sleep(0.05)
    restarted_app = App()
    await endpoints("server-node", port=peer.port, app=restarted_app)
    with pytest.raises(RpcTimeout):
        await client.call(peer, "count", {}, timeout=1.0)
    reply = await client.call(peer, "count", {}, timeout=5)
    assert reply.header["count"] == 1


async def test_restarted_peer_that_calls_us_gets_fresh_connections(endpoints, app):
    """A crashed peer, started again, connects to us (its heartbeat, say) with a new boot
    id: our connections to its previous process are closed at once and `on_peer_up` runs,
    so our next call reconnects instead of timing out on the dead connection first."""
    us = await endpoints("client-node", app=App())
    server = await endpoints("server-node", app=app)
    peer = Peer("server-node", "127.0.0.1", server.port)
    await us.call(peer, "count", {}, timeout=5)
    await us.call(peer, "count", {}, timeout=5, background=True)  # both lanes connected
    server._server_transport.close()  # the process "dies": no goodbye
    await asyncio.sleep(0.05)
    restarted = await endpoints("server-node", port=peer.port, app=App())
    ups: list[str] = []
    us.on_peer_up.append(ups.append)
    await restarted.call(Peer("client-node", "127.0.0.1", us.port), "count", {}, timeout=5)
    assert ups == ["server-node"]
    started = time.monotonic()
    assert (await us.call(peer, "count", {}, timeout=1.0)).header["count"] == 1
    assert (await us.call(peer, "count", {}, timeout=1.0, background=True)).header["count"] == 2
    assert time.monotonic() - started < 0.5
    # the same process connecting again is no restart
    await restarted.call(Peer("client-node", "127.0.0.1", us.port), "count", {}, timeout=5)
    assert ups == ["server-node"]


async def test_peer_that_connects_to_us_ends_our_backoff(endpoints, pki):
    """While we back off from a peer that was down, its own connection to us proves it up:
    the backoff ends and the next call connects at once."""
    import socket

    slow_retry = TransportConfig(
        auth_timeout=1.0, reconnect_backoff_base=30.0, reconnect_backoff_max=30.0
    )
    us = await endpoints("client-node", config=slow_retry, app=App())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    peer = Peer("server-node", "127.0.0.1", port)
    with pytest.raises(ConnectFailed):
        await us.call(peer, "count", {}, timeout=5)
    with pytest.raises(ConnectFailed, match="next attempt"):
        await us.call(peer, "count", {}, timeout=5)
    ups: list[str] = []
    us.on_peer_up.append(ups.append)
    server = await endpoints("server-node", port=port, app=App())
    await server.call(Peer("client-node", "127.0.0.1", us.port), "count", {}, timeout=5)
    assert ups == ["server-node"]
    assert (await us.call(peer, "count", {}, timeout=2)).header["count"] == 1


async def test_slow_reader_bounds_the_sender(endpoints, pki):
    """A handler that reads slowly: the client's unacknowledged bytes and the server's
    queued bytes stay within their windows, and the transfer still completes."""
    small = TransportConfig(
        max_stream_data=256 * 1024,
        max_data=1 * MIB,
        send_window=256 * 1024,
        chunk_size=64 * 1024,
        stall_timeout=5.0,
    )
    app = App()
    server = await endpoints("server-node", config=small, app=app)
    client = await endpoints("client-node", config=small)
    peer = Peer("server-node", "127.0.0.1", server.port)
    total = 8 * MIB
    call = await client.open_stream(peer, "slow_body", {}, timeout=30)
    started = time.monotonic()
    block = os.urandom(64 * 1024)
    for _ in range(total // len(block)):
        await call.send(block)
    reply = await call.finish()
    elapsed = time.monotonic() - started
    assert reply.header["n"] == total
    assert call.send_window_peak <= small.send_window + small.chunk_size
    assert 0 < app.max_buffered <= small.max_stream_data
    assert elapsed > 0.3  # the sender really waited for the slow reader


async def test_server_with_a_foreign_ca_certificate_is_rejected(endpoints, client, pki):
    impostor = await endpoints("server-node", files=pki["impostor"], app=App())
    with pytest.raises(AuthFailed):
        await client.call(Peer("server-node", "127.0.0.1", impostor.port), "count", {}, timeout=5)


async def test_server_with_another_nodes_certificate_is_rejected(endpoints, client):
    other = await endpoints("third-node", app=App())
    with pytest.raises(AuthFailed):
        await client.call(Peer("server-node", "127.0.0.1", other.port), "count", {}, timeout=5)


async def test_endpoint_refuses_a_certificate_for_another_node(pki):
    with pytest.raises(ValueError, match="issued to"):
        RpcEndpoint(node_id="server-node", tls=pki["client-node"], host="127.0.0.1", port=0)


async def test_peer_state_reports_rtt_and_last_seen(client, peer):
    await client.call(peer, "count", {}, timeout=5)
    state = client.peer_state(peer)
    assert state.connected and state.last_seen is not None and state.rtt is not None


# -- background calls: their own connection, paced bodies ------------------------------------
PACED = TransportConfig(
    stall_timeout=5.0, background_rate=8 * MIB, background_burst=MIB, reconnect_backoff_base=0.05
)


async def test_background_calls_use_their_own_connection(client, server, peer):
    await client.call(peer, "echo", {}, b"client", timeout=5)
    reply = await client.call(peer, "echo", {}, b"heal", timeout=5, background=True)
    assert await reply.read(MIB) == b"heal"
    assert len(client._outbound) == 2 and len(server._inbound) == 2
    assert {bg for _, bg in client._outbound} == {False, True}
    assert client.peer_state(peer).connected


async def test_background_bodies_are_paced_both_ways(endpoints, app):
    """At 8 MiB/s with a 1 MiB burst, 5 MiB sent by a background caller (request body) or
    by the server answering a background call (reply body) take at least 0.5 s; the same
    calls as client calls are not paced at all."""
    server = await endpoints("server-node", config=PACED, app=app)
    client = await endpoints("client-node", config=PACED)
    peer = Peer("server-node", "127.0.0.1", server.port)
    body = os.urandom(5 * MIB)

    async def upload(background: bool) -> float:
        t0 = time.monotonic()
        call = await client.open_stream(peer, "echo_stream", {}, timeout=10, background=background)
        for i in range(0, len(body), MIB):
            await call.send(body[i : i + MIB])
        reply = await call.finish()
        assert hashlib.sha256(await reply.read(8 * MIB)).digest() == hashlib.sha256(body).digest()
        return time.monotonic() - t0

    async def download(background: bool) -> float:
        t0 = time.monotonic()
        reply = await client.call(peer, "source", {"n": 5 * MIB}, timeout=10, background=background)
        assert len(await reply.read(8 * MIB)) == 5 * MIB
        return time.monotonic() - t0

    await client.call(peer, "echo", {}, b"warm", timeout=5)
    await client.call(peer, "echo", {}, b"warm", timeout=5, background=True)
    await asyncio.sleep(0.2)  # both pacers idle long enough to refill their burst
    sent_before = client.background_pacer.sent
    assert await upload(True) >= 0.45  # (5 - 1) MiB over the burst at 8 MiB/s
    assert client.background_pacer.sent - sent_before == 5 * MIB
    await asyncio.sleep(0.2)
    assert await download(True) >= 0.45  # paced by the server's pacer
    assert server.background_pacer.sent >= 5 * MIB
    client_paced = client.background_pacer.sent
    await upload(False)
    await download(False)
    assert client.background_pacer.sent == client_paced  # client calls never touch it


async def test_background_rate_zero_paces_nothing(endpoints, app):
    config = TransportConfig(stall_timeout=5.0, background_rate=0)
    server = await endpoints("server-node", config=config, app=app)
    client = await endpoints("client-node", config=config)
    peer = Peer("server-node", "127.0.0.1", server.port)
    reply = await client.call(peer, "source", {"n": 2 * MIB}, timeout=10, background=True)
    assert len(await reply.read(4 * MIB)) == 2 * MIB
    assert not client.background_pacer.enabled and client.background_pacer.waited == 0
