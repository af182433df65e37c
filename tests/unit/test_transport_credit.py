"""Credit windows, backoff and the aioquic seam, sans-IO with a fake clock.

The flow-control tests drive two aioquic connections by hand, aioquic's own way: no
sockets, datagrams moved between the objects, `now` advanced by the test.
"""

from __future__ import annotations

import doctest

import pytest
from aioquic import tls
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from hypothesis import given, settings
from hypothesis import strategies as st

import shardfleet.transport.config
import shardfleet.transport.framing
import shardfleet.transport.quic
import shardfleet.transport.rpc_state
from shardfleet.transport.config import TransportConfig
from shardfleet.transport.quic import (
    ChunkBuffer,
    FlowControlledConnection,
    client_configuration,
    server_configuration,
)
from shardfleet.transport.rpc_state import Backoff, ReceiveWindow, SendCredit
from shardfleet.transport.tls import create_ca, issue_node_cert, load_identity

pytestmark = pytest.mark.timeout(60)

KIB = 1024
CLIENT_ADDR = ("127.0.0.1", 1234)
SERVER_ADDR = ("127.0.0.1", 4433)


@pytest.mark.parametrize(
    "module",
    [
        shardfleet.transport.rpc_state,
        shardfleet.transport.framing,
        shardfleet.transport.config,
        shardfleet.transport.quic,
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


def test_receive_window_moves_with_consumption_only():
    w = ReceiveWindow(1000)
    assert w.limit(1000) == 1000
    w.consume(249)
    assert w.limit(1000) == 1000  # under a quarter window: batched
    w.consume(1)
    assert w.limit(1000) == 1250
    assert w.limit(1250) == 1250
    with pytest.raises(ValueError):
        ReceiveWindow(0)


def test_send_credit():
    c = SendCredit(100)
    assert c.may_send(unacked=0, size=1000)  # an oversize chunk goes alone
    assert c.may_send(unacked=50, size=50)
    assert not c.may_send(unacked=51, size=50)
    c.wrote(80)
    c.wrote(30)
    assert c.peak == 80


def test_backoff_with_a_fake_clock():
    b = Backoff(base=0.5, cap=4.0, jitter=lambda: 1.0)
    assert b.wait_left(now=100.0) == 0.0
    delays = [b.failed(now=100.0, error="refused") for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.wait_left(now=101.0) == 3.0 and b.last_error == "refused"
    assert b.wait_left(now=104.5) == 0.0
    b.succeeded()
    assert (b.failures, b.wait_left(now=100.0)) == (0, 0.0)
    jittered = Backoff(base=1.0, cap=10.0)
    assert 0.5 <= jittered.failed(now=0.0, error="x") <= 1.0


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.binary(max_size=300),
            st.sampled_from(["bytes", "view", "bytearray", "rw-view", "ro-view"]),
        ),
        st.tuples(st.just("del"), st.integers(0, 400)),
        st.tuples(st.just("get"), st.integers(-50, 500), st.integers(-50, 500)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_chunk_buffer_behaves_like_aioquics_bytearray(ops):
    """The sender buffer swap must be invisible to aioquic: same bytes for every operation."""
    ref, buf = bytearray(), ChunkBuffer()
    for op in ops:
        if op[0] == "add":
            owned = bytearray(op[1])
            data = {
                "bytes": op[1],
                "view": memoryview(op[1]),
                "bytearray": owned,
                "rw-view": memoryview(owned),
                "ro-view": memoryview(owned).toreadonly(),  # kept by reference, left alone
            }[op[2]]
            ref += data
            buf += data
            if op[2] in ("bytearray", "rw-view"):
                owned[:] = b"\0" * len(owned)  # the caller reuses its buffer: we must have copied
        elif op[0] == "del":
            del ref[: op[1]]
            del buf[: op[1]]
        else:
            assert bytes(buf[op[1] : op[2]]) == bytes(ref[op[1] : op[2]])
        assert len(buf) == len(ref)
    assert bytes(buf[0 : len(ref)]) == bytes(ref)


def test_config_validation():
    assert TransportConfig.for_mtu(9000).max_datagram_size == 8952
    with pytest.raises(ValueError):
        TransportConfig(max_datagram_size=70000)
    with pytest.raises(ValueError):
        TransportConfig(congestion_control="bbr")
    with pytest.raises(ValueError):
        TransportConfig(max_stream_data=128 * KIB, max_data=64 * KIB)


# -- two aioquic connections, moved by hand -------------------------------------------------
@pytest.fixture(scope="module")
def identities(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca", "unit")
    server = load_identity(issue_node_cert(root / "ca", "node-a", [], root / "a"))
    client = load_identity(issue_node_cert(root / "ca", "node-b", [], root / "b"))
    return server, client


class Pair:
    def __init__(
        self,
        identities,
        config: TransportConfig,
        *,
        flow_controlled: bool = True,
        acks: bool = False,  # the config's ACK delay and ack_every (else aioquic's 1 ms)
    ):
        server_id, client_id = identities
        cls = FlowControlledConnection if flow_controlled else QuicConnection
        self.now = 1.0
        self.client = cls(configuration=client_configuration(client_id, config, "node-a"))
        self.server = cls(
            configuration=server_configuration(server_id, config),
            original_destination_connection_id=self.client.original_destination_connection_id,
        )
        if flow_controlled:
            for conn in (self.client, self.server):
                conn.init_flow_control(
                    stream_window=config.max_stream_data,
                    connection_window=config.max_data,
                    **(
                        {"ack_delay": config.ack_delay, "ack_every": config.ack_every}
                        if acks
                        else {}
                    ),
                )
        self.received: dict[int, int] = {}
        self.sizes: list[int] = []
        self.client.connect(SERVER_ADDR, now=self.now)
        self.pump()

    def _move(self, sender, receiver, addr) -> int:
        count = 0
        for data, _ in sender.datagrams_to_send(now=self.now):
            self.sizes.append(len(data))
            # UDP delivers bytes (the sender may hand the socket a bytearray it sealed)
            receiver.receive_datagram(bytes(data), addr, now=self.now)
            count += 1
        return count

    def pump(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            self.now += 0.002
            for conn in (self.client, self.server):
                timer = conn.get_timer()
                if timer is not None and timer <= self.now:
                    conn.handle_timer(now=self.now)
            moved = self._move(self.client, self.server, CLIENT_ADDR)
            moved += self._move(self.server, self.client, SERVER_ADDR)
            while (event := self.server.next_event()) is not None:
                if isinstance(event, events.StreamDataReceived):
                    self.received[event.stream_id] = self.received.get(event.stream_id, 0) + len(
                        event.data
                    )
            while self.client.next_event() is not None:
                pass
            if not moved:
                return


SMALL = TransportConfig(
    max_datagram_size=1452,  # plain aioquic cannot send STREAM frames over 16 KiB, see below
    max_stream_data=256 * KIB,
    max_data=384 * KIB,
    send_window=256 * KIB,
)


def test_a_reader_that_does_not_consume_stops_the_sender(identities):
    pair = Pair(identities, SMALL)
    pair.client.send_stream_data(0, b"x" * (4 << 20))
    pair.pump()
    assert pair.received[0] == 256 * KIB  # exactly one window, no doubling
    assert pair.client.unacked_bytes(0) == (4 << 20) - 256 * KIB

    pair.server.consume(0, 100 * KIB)
    pair.pump()
    assert pair.received[0] == 356 * KIB  # the window moved by what was consumed

    pair.server.release(0)
    pair.pump(2000)
    assert pair.received[0] == 4 << 20  # released: the peer may drain freely


def test_vanilla_aioquic_keeps_opening_its_windows(identities):
    """Why the override exists: plain aioquic lets a non-reading peer receive everything."""
    pair = Pair(identities, SMALL, flow_controlled=False)
    pair.client.send_stream_data(0, b"x" * (4 << 20))
    pair.pump(2000)
    assert pair.received[0] == 4 << 20


def test_connection_window_bounds_all_streams_together(identities):
    pair = Pair(identities, SMALL)
    for sid in (0, 4, 8):
        pair.client.send_stream_data(sid, b"y" * (1 << 20))
    pair.pump()
    assert sum(pair.received.values()) == 384 * KIB
    assert all(n <= 256 * KIB for n in pair.received.values())


def test_stream_frames_above_16_kib_are_encoded_correctly(identities):
    """aioquic writes STREAM lengths as 2-byte varints; our writer handles 64 KB frames."""
    config = TransportConfig(max_datagram_size=65000)
    pair = Pair(identities, config)
    pair.client.send_stream_data(0, bytes(range(256)) * 4096, end_stream=True)  # 1 MiB
    pair.pump()
    assert pair.received[0] == 1 << 20
    assert max(pair.sizes) > 60000


def test_vanilla_aioquic_breaks_on_large_stream_frames(identities):
    pair = Pair(identities, TransportConfig(max_datagram_size=65000), flow_controlled=False)
    pair.client.send_stream_data(0, b"z" * (1 << 20))
    pair.pump()
    assert pair.server._close_event.error_code == 0x7  # FRAME_ENCODING_ERROR


def test_unacked_bytes_fall_as_acks_arrive(identities):
    pair = Pair(identities, TransportConfig())
    pair.client.send_stream_data(0, b"a" * 300_000)
    assert pair.client.unacked_bytes(0) == 300_000
    pair.pump()
    pair.server.consume(0, 300_000)
    pair.pump()
    assert pair.client.unacked_bytes(0) == 0
    assert pair.client.send_possible(0)
    assert pair.client.binding == pair.server.binding and len(pair.client.binding) == 32


def test_acks_wait_the_delay_until_ack_every_bytes_arrived(identities):
    config = TransportConfig(max_datagram_size=65000, ack_delay=0.02, ack_every=4)
    pair = Pair(identities, config, acks=True)
    for _ in range(20):  # let the handshake's ACKs go out
        pair.now += 0.01
        for conn in (pair.client, pair.server):
            if (timer := conn.get_timer()) is not None and timer <= pair.now:
                conn.handle_timer(now=pair.now)
        pair._move(pair.client, pair.server, CLIENT_ADDR)
        pair._move(pair.server, pair.client, SERVER_ADDR)
    space = pair.server._spaces[tls.Epoch.ONE_RTT]
    assert space.ack_at is None

    pair.client.send_stream_data(0, b"a" * 100_000)  # 2 datagrams
    pair._move(pair.client, pair.server, CLIENT_ADDR)
    assert space.ack_at == pytest.approx(pair.now + 0.02)  # held back for the delay
    assert pair.server.datagrams_to_send(now=pair.now) == []

    pair.client.send_stream_data(0, b"b" * 200_000)  # 4 more: past 4 since the last ACK
    for _ in range(10):  # aioquic paces its packets: let the clock move a little
        pair.now += 0.0005
        pair._move(pair.client, pair.server, CLIENT_ADDR)
    assert pair.client.unacked_bytes(0) == 300_000  # all sent, none acknowledged yet
    assert space.ack_at < pair.now  # due at once, not 20 ms after the first packet
    assert len(pair.server.datagrams_to_send(now=pair.now)) == 1  # the ACK
    assert space.ack_at is None and pair.server._fc_unacked == 0

    pair.client.send_stream_data(0, b"c" * 60_000)  # 1 datagram: the count starts again
    pair._move(pair.client, pair.server, CLIENT_ADDR)
    assert space.ack_at == pytest.approx(pair.now + 0.02)
