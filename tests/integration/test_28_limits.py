# 28: limits that hold under attack (docs/security.md "Limits"), with real
# clients on both runtimes: each refuses with its reason, is counted in
# $SYS/broker/limits/<key>, and is logged once an interval, not per refusal.
import socket
import time

import pytest

from . import mqttraw as raw
from ._limits import raw_from, refused_at_accept, round_trip_qos1, sys_watcher, wait_sys
from .clients import unique_id

pytestmark = [pytest.mark.timeout(90), pytest.mark.edge_only("edgebroker's own limits and $SYS")]


def _limit_lines(broker):
    return [ln for ln in broker.log_text().splitlines() if "limits refused" in ln]


@pytest.mark.broker_config(max_connections_per_address=2)
def test_connections_per_address(broker):
    w = sys_watcher(broker, unique_id("w"))  # from 127.0.0.2: not this quota's
    kept = [raw_from(broker) for _ in range(2)]
    for c in kept:
        c.connect(unique_id("a"))
    t0 = time.monotonic()
    for _ in range(20):  # the flood from 127.0.0.1: closed at accept, no CONNACK
        assert refused_at_accept(raw_from(broker))
    # another address is served meanwhile
    assert round_trip_qos1(broker, unique_id("other")) < 5
    assert wait_sys(w, "max_connections_per_address", 20) >= 20
    # a closed connection gives its address its slot back
    kept.pop().close()
    deadline = time.monotonic() + 5
    while True:
        c = raw_from(broker)
        try:
            c.connect(unique_id("again"), timeout=2)
            break
        except (raw.Closed, AssertionError, socket.timeout, OSError):
            c.close()
            assert time.monotonic() < deadline, "the freed slot was not given back"
    # 20 refusals, logged as counts at most once a second (sys_interval 1)
    lines = _limit_lines(broker)
    assert 1 <= len(lines) <= time.monotonic() - t0 + 2, lines
    assert "max_connections_per_address " in lines[0]
    broker.assert_alive()


@pytest.mark.broker_config(max_packet_rate=100)
def test_packet_rate_holds_a_flooding_client_back(broker):
    w = sys_watcher(broker, unique_id("w"))
    c = raw_from(broker)
    c.connect(unique_id("fast"))
    # 300 packets in one go: what the broker read is handled (300
    # PINGRESPs), then it does not read this client until the rate made
    # up for them: a bucket of 100, 100 a second, about 2 s
    c.send(raw.PINGREQ_BYTES * 300)
    for _ in range(300):
        assert c.read_packet(10).type == raw.PINGRESP
    t0 = time.monotonic()
    c.send(raw.PINGREQ_BYTES)
    assert c.read_packet(10).type == raw.PINGRESP
    took = time.monotonic() - t0
    # held back (not disconnected), at the rate
    assert 1.0 <= took <= 6, took
    assert wait_sys(w, "max_packet_rate") >= 1
    assert round_trip_qos1(broker, unique_id("other")) < 5
    c.send(raw.PINGREQ_BYTES)
    assert c.expect(raw.PINGRESP).type == raw.PINGRESP  # still connected


@pytest.mark.broker_config(max_topic_length=20, max_topic_levels=4)  # $SYS/broker/limits/# fits
def test_topic_length_and_levels(broker):
    w = sys_watcher(broker, unique_id("w"))
    c = raw_from(broker)
    c.connect(unique_id("s"))
    # filters over our bounds: SUBACK 0x80, the connection stays
    c.send(raw.subscribe(1, [("a/" + "x" * 18, 0), ("a/" + "x" * 19, 0), ("a/b/c/d/e", 0)]))
    assert c.expect(raw.SUBACK).body[2:] == b"\x00\x80\x80"
    # a topic name over them: 3.1.1 has no refusing ack, closed
    c.send(raw.publish("a/" + "x" * 19, b"no"))
    assert c.wait_closed() == b""
    d = raw_from(broker)
    d.connect(unique_id("d"))
    d.send(raw.publish("a/b/c/d/e", b"no"))
    assert d.wait_closed() == b""
    assert wait_sys(w, "max_topic_length", 2) == 2
    assert wait_sys(w, "max_topic_levels", 2) == 2
    assert round_trip_qos1(broker, unique_id("ok")) < 5


@pytest.mark.broker_config(max_will_bytes=32)
def test_will_size_v311(broker):
    w = sys_watcher(broker, unique_id("w"))
    c = raw_from(broker)
    c.send(raw.connect(unique_id("will"), will=("will/t", b"x" * 27, 0, False)))  # 6 + 27
    assert c.wait_closed() == b""  # no CONNACK code says it in 3.1.1
    ok = raw_from(broker)
    ok.connect(unique_id("will"), will=("will/t", b"x" * 26, 0, False))
    assert wait_sys(w, "max_will_bytes") == 1


@pytest.mark.broker_config(max_will_bytes=32, max_topic_length=16, board_heap="96k")
def test_will_size_and_topic_length_v5(broker):
    # (MQTT 5.0's code needs the board's 96 KiB: docs/security.md "On a board")
    c = raw_from(broker)
    c.send(raw.connect(unique_id("will5"), level=5, will=("will/t", b"x" * 27, 0, False)))
    ack = c.expect(raw.CONNACK)
    assert ack.body[1] == 0x95  # Packet too large
    assert c.wait_closed() == b""
    p = raw_from(broker)
    p.send(raw.connect(unique_id("p5"), level=5))
    assert p.expect(raw.CONNACK).body[1] == 0
    p.send(raw.publish("a/" + "x" * 15, b"no", props=b"\x00"))
    d = p.expect(raw.DISCONNECT)
    assert d.body[0] == 0x90  # Topic Name invalid


def test_websocket_peer_with_big_messages_and_a_packet_rate(tmp_path, runtime):
    # The gateway's WebSocket peers go through the same TCP shell: a message
    # of 64 KiB or more pauses the peer until the next loop pass, and
    # max_packet_rate holds it back, as for a TCP peer (gateway/web.py's
    # Peer has no `hold` until one is set)
    if runtime != "cpython":
        pytest.skip("the gateway's WebSocket listener")
    from .clients import Client
    from .web import web_broker

    b = web_broker(tmp_path, max_packet_rate=20)
    try:
        c = Client(b.host, b.web_port, ws_path="/mqtt")
        c.connect()
        topic = "big/" + unique_id()
        assert c.subscribe(topic, 1) == [1]
        for i in range(3):
            c.publish(topic, bytes([65 + i]) * 100000, qos=1)
        got = c.wait_messages(3, timeout=20)
        assert sorted(m.payload[:1] for m in got) == [b"A", b"B", b"C"]
        for i in range(40):  # twice the bucket: held back, then served
            c.publish(topic, b"s%d" % i, qos=1, wait=False)
        got = c.wait_messages(43, timeout=20)
        assert {m.payload for m in got[3:]} == {b"s%d" % i for i in range(40)}
        c.disconnect()
        assert "Traceback" not in b.log_text() and "AttributeError" not in b.log_text()
        b.assert_alive()
    finally:
        b.stop()
