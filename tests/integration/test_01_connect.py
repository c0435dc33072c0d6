# 01: CONNECT / CONNACK, keepalive, PINGREQ, client-id takeover (MQTT 3.1.1 §3.1-3.2).
import time

import pytest

from . import mqttraw as raw
from .conftest import KEEPALIVE_1S_LATEST
from .clients import round_trip, unique_id

pytestmark = pytest.mark.timeout(60)


def test_connect_accepted_exact_bytes(shared_broker):
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.send(raw.connect(unique_id("c"), clean=True, keepalive=60))
        ack = c.read_packet()
        # [MQTT-3.2.2-1] clean session -> session present 0; return code 0
        assert (ack.first_byte, ack.body) == (0x20, b"\x00\x00")
        c.send(raw.DISCONNECT_BYTES)
        assert c.wait_closed() == b""


def test_paho_connect_clean_session(shared_broker, mqtt_client):
    c = mqtt_client(shared_broker, connect=False)
    assert c.connect() == 0
    c.disconnect()
    assert c.disconnects[-1] == 0


def test_pingreq_gets_pingresp(shared_broker):
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.connect(unique_id("ping"))
        for _ in range(3):
            c.send(raw.PINGREQ_BYTES)
            p = c.read_packet()
            assert (p.first_byte, p.body) == (0xD0, b"")


def test_empty_client_id_with_clean_session_is_accepted(shared_broker):
    # [MQTT-3.1.3-6] zero-length ClientId + CleanSession=1: server assigns an id
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        ack = c.connect("", clean=True)
        assert ack.session_present == 0
        c.send(raw.PINGREQ_BYTES)
        assert c.expect(raw.PINGRESP).body == b""


def test_empty_client_id_without_clean_session_is_rejected(shared_broker):
    # [MQTT-3.1.3-8] CONNACK 0x02 (identifier rejected), then close
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.send(raw.connect("", clean=False))
        ack = c.expect(raw.CONNACK)
        assert ack.body == b"\x00\x02"
        assert c.wait_closed() == b""
    round_trip(shared_broker.host, shared_broker.port)


def test_keepalive_expiry_closes_connection(shared_broker):
    # [MQTT-3.1.2-24] no packet within 1.5 x keepalive -> server disconnects
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.connect(unique_id("ka"), keepalive=1)
        t0 = time.monotonic()
        assert c.wait_closed(timeout=10) == b""
        elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed <= KEEPALIVE_1S_LATEST, "closed after %.2fs, expected ~1.5s" % elapsed


def test_pingreq_keeps_connection_alive(shared_broker):
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.connect(unique_id("ka-ping"), keepalive=1)
        end = time.monotonic() + 3.5       # well past 1.5 x keepalive
        while time.monotonic() < end:
            c.send(raw.PINGREQ_BYTES)
            assert c.expect(raw.PINGRESP).body == b""
            time.sleep(0.5)                # pacing the client's own keepalive
        c.send(raw.PINGREQ_BYTES)
        assert c.expect(raw.PINGRESP).body == b""


def test_takeover_disconnects_first_client(shared_broker):
    # [MQTT-3.1.4-2] a second CONNECT with the same ClientId disconnects the first
    cid = unique_id("take")
    first = raw.RawClient(shared_broker.host, shared_broker.port)
    second = raw.RawClient(shared_broker.host, shared_broker.port)
    try:
        first.connect(cid)
        second.connect(cid)
        assert first.wait_closed() == b""
        second.send(raw.PINGREQ_BYTES)
        assert second.expect(raw.PINGRESP).body == b""
    finally:
        first.close()
        second.close()


def test_many_sequential_connections(shared_broker):
    # sockets and per-connection state are released: 50 connect/disconnect cycles
    for i in range(50):
        with raw.RawClient(shared_broker.host, shared_broker.port) as c:
            c.connect(unique_id("seq"))
            c.send(raw.DISCONNECT_BYTES)
            c.wait_closed()
    round_trip(shared_broker.host, shared_broker.port)
