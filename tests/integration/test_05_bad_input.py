# 05: bad input on a live broker. Each case sends crafted bytes on a raw socket; the
# broker must close THAT connection as the spec says (sending nothing first unless
# the spec asks for a CONNACK), and keep serving others: every test ends with a paho
# publish/subscribe round trip on a fresh connection.
#
# One broker per module and runtime (restarted if a case killed it: that case has
# already failed on its own liveness check).
import time

import pytest

from . import mqttraw as raw
from .clients import round_trip, unique_id

pytestmark = pytest.mark.timeout(60)

MAX_PACKET = 1024
CONNECT_TIMEOUT = 1
BROKER_CONFIG = {"max_packet_size": MAX_PACKET, "connect_timeout": CONNECT_TIMEOUT}


def still_serving(broker):
    broker.assert_alive()
    round_trip(broker.host, broker.port)
    broker.assert_alive()


def closed_silently(broker, payload, connect_first=True, allowed=(b"",)):
    """Send payload (after a valid CONNECT if connect_first); the broker must close
    the connection, sending one of `allowed` before it does."""
    with raw.RawClient(broker.host, broker.port) as c:
        if connect_first:
            c.connect(unique_id("bad"))
        c.send(payload)
        got = c.wait_closed(timeout=5)
    assert got in allowed, "broker sent %r before closing, expected one of %r" % (got, allowed)
    still_serving(broker)


# -- CONNECT ----------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    pytest.param(raw.PINGREQ_BYTES, id="pingreq"),
    pytest.param(raw.subscribe(1, [("a", 0)]), id="subscribe"),
    pytest.param(raw.publish("a", b"x"), id="publish"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
])
def test_first_packet_not_connect(shared_broker, payload):
    # [MQTT-3.1.0-1]
    closed_silently(shared_broker, payload, connect_first=False)


def test_bad_protocol_name(shared_broker):
    # [MQTT-3.1.2-1] protocol name not "MQTT": the server MAY disconnect, or process
    # the CONNECT under some other specification, but never accept it as 3.1.1.
    # mosquitto closes silently; a CONNACK 0x01 (unacceptable protocol) then close is
    # also fine.
    closed_silently(shared_broker, raw.connect(unique_id("pn"), proto_name=b"MQTX"),
                    connect_first=False, allowed=(b"", b"\x20\x02\x00\x01"))


def test_bad_protocol_level(shared_broker):
    # [MQTT-3.1.2-2] unsupported level: CONNACK 0x01 then close
    closed_silently(shared_broker, raw.connect(unique_id("pl"), level=6),
                    connect_first=False, allowed=(b"\x20\x02\x00\x01",))


def test_second_connect(shared_broker):
    # [MQTT-3.1.0-2] a second CONNECT is a protocol violation
    closed_silently(shared_broker, raw.connect(unique_id("again")))


def test_invalid_utf8_client_id(shared_broker):
    # [MQTT-1.5.3-1] ill-formed UTF-8 -> close. mosquitto replies CONNACK 0x02
    # (identifier rejected) first, which 3.1.1 §3.1.3.1 also allows for a client id
    # the server won't accept: either way it must not be accepted.
    closed_silently(shared_broker, raw.connect(b"id\xc3\x28"), connect_first=False,
                    allowed=(b"", b"\x20\x02\x00\x02"))


# -- reserved bits and flags ----------------------------------------------------------

@pytest.mark.parametrize("payload,connect_first", [
    # [MQTT-3.1.2-3] CONNECT reserved flag must be 0
    pytest.param(raw.connect("rsv", reserved_flag=True), False, id="connect-flag-bit0"),
    # [MQTT-2.2.2-2] fixed header flags of CONNECT must be 0000
    pytest.param(b"\x11" + raw.connect("rsv")[1:], False, id="connect-header-0x11"),
    # [MQTT-3.8.1-1] SUBSCRIBE fixed header flags must be 0010
    pytest.param(raw.subscribe(1, [("a", 0)], first_byte=0x80), True, id="subscribe-0x80"),
    # [MQTT-3.10.1-1] UNSUBSCRIBE flags 0010
    pytest.param(raw.unsubscribe(1, ["a"], first_byte=0xA0), True, id="unsubscribe-0xa0"),
    # [MQTT-3.6.1-1] PUBREL flags 0010
    pytest.param(raw.pubrel(1, first_byte=0x60), True, id="pubrel-0x60"),
    # [MQTT-2.2.2-2] PINGREQ / DISCONNECT flags 0000
    pytest.param(b"\xc1\x00", True, id="pingreq-0xc1", marks=pytest.mark.edge_only(
        "mosquitto 2.0.11 answers a PINGREQ with flags 0001 with PINGRESP")),
    pytest.param(b"\xe2\x00", True, id="disconnect-0xe2"),
    # [MQTT-2.2.1] packet types 0 and 15 are reserved in 3.1.1
    pytest.param(b"\x00\x00", True, id="type-0"),
    pytest.param(b"\xf0\x00", True, id="type-15"),
])
def test_reserved_flag_bits(shared_broker, payload, connect_first):
    closed_silently(shared_broker, payload, connect_first=connect_first)


@pytest.mark.parametrize("flags_fixup", [
    pytest.param("will-qos-without-will", id="will-qos-without-will"),   # [MQTT-3.1.2-13]
    pytest.param("will-qos-3", id="will-qos-3"),                         # [MQTT-3.1.2-14]
    pytest.param("password-without-username", id="password-without-username"),  # [MQTT-3.1.2-22]
])
def test_inconsistent_connect_flags(shared_broker, flags_fixup):
    if flags_fixup == "will-qos-without-will":
        pkt = bytearray(raw.connect("f1"))
        pkt[9] |= 0x08                  # will QoS 1, will flag 0
    elif flags_fixup == "will-qos-3":
        pkt = bytearray(raw.connect("f2", will=("w", b"x", 0, False)))
        pkt[9] |= 0x18
    else:
        pkt = bytearray(raw.connect("f3", password="secret"))
    assert pkt[2:8] == b"\x00\x04MQTT"
    closed_silently(shared_broker, bytes(pkt), connect_first=False)


# -- framing ----------------------------------------------------------------------

def test_malformed_remaining_length(shared_broker):
    # [MQTT-2.2.3] at most 4 bytes of Remaining Length: a 5th continuation byte is malformed
    closed_silently(shared_broker, b"\x30\xff\xff\xff\xff\x7f")


def test_truncated_packet_then_close(shared_broker, mqtt_client):
    # A PUBLISH cut short, then the socket closes: the fragment is never delivered,
    # the will is (the connection ended without DISCONNECT).
    b = shared_broker
    t = "t05/trunc/" + unique_id("t")
    w = mqtt_client(b)
    w.subscribe([(t, 1), (t + "/will", 1)])
    with raw.RawClient(b.host, b.port) as c:
        c.connect(unique_id("trunc"), will=(t + "/will", b"cut", 1, False))
        full = raw.publish(t, b"x" * 100, qos=1, pid=3)
        c.send(full[:20])
    w.wait_messages(1, timeout=5, topic=t + "/will")
    still_serving(b)
    mqtt_client(b).publish(t, b"marker", qos=1)
    w.wait_message(lambda m: m.payload == b"marker")
    assert [m.payload for m in w.messages if m.topic == t] == [b"marker"]


def test_packet_over_max_packet_size(shared_broker, mqtt_client):
    b = shared_broker
    t = "t05/size/" + unique_id("s")
    w = mqtt_client(b)
    w.subscribe(t, 0)
    # just under the limit is fine ...
    ok = raw.publish(t, b"o" * (MAX_PACKET - 100))
    assert len(ok) < MAX_PACKET
    with raw.RawClient(b.host, b.port) as c:
        c.connect(unique_id("size"))
        c.send(ok)
        c.send(raw.PINGREQ_BYTES)
        assert c.expect(raw.PINGRESP).body == b""
    (m,) = w.wait_messages(1, topic=t)
    assert len(m.payload) == MAX_PACKET - 100
    # ... over it closes the connection
    closed_silently(b, raw.publish(t, b"x" * (2 * MAX_PACKET)))
    mqtt_client(b).publish(t, b"marker", qos=1)
    w.wait_message(lambda m: m.payload == b"marker")
    assert [len(m.payload) for m in w.messages] == [MAX_PACKET - 100, 6]


def test_oversize_declared_length_closes_before_body(shared_broker):
    # The Remaining Length alone says 10 MB: close without waiting for (or buffering)
    # the body. Only the header and 10 bytes are ever sent.
    b = shared_broker
    with raw.RawClient(b.host, b.port) as c:
        c.connect(unique_id("huge"))
        c.send(b"\x30" + raw.varint(10 * 1024 * 1024) + b"\x00\x01a" + b"x" * 7)
        t0 = time.monotonic()
        assert c.wait_closed(timeout=5) == b""
        assert time.monotonic() - t0 < 3.0
    still_serving(b)


# -- PUBLISH ---------------------------------------------------------------------

def test_qos3_publish(shared_broker):
    # [MQTT-3.3.1-4] QoS bits 11 are malformed
    closed_silently(shared_broker, raw.publish("t05/q3", b"x", first_byte=0x36, pid=1))


@pytest.mark.parametrize("topic", ["t05/+", "t05/#", "#", "+"])
def test_wildcard_in_publish_topic(shared_broker, topic):
    # [MQTT-3.3.2-2]
    closed_silently(shared_broker, raw.publish(topic, b"x"))


def test_empty_publish_topic(shared_broker):
    # [MQTT-4.7.3-1] topic names are at least one character
    closed_silently(shared_broker, raw.publish("", b"x"))


def test_publish_qos1_packet_id_zero(shared_broker):
    # [MQTT-2.3.1-1] non-zero packet identifier
    closed_silently(shared_broker, raw.publish("t05/pid0", b"x", qos=1, pid=0))


@pytest.mark.parametrize("topic", [
    pytest.param(b"t05/\xff", id="byte-ff"),
    pytest.param(b"t05/\xc0\xaf", id="overlong"),
    pytest.param(b"t05/\xed\xa0\x80", id="surrogate"),
    pytest.param(b"t05/\x00x", id="nul"),               # [MQTT-1.5.3-2]
])
def test_invalid_utf8_in_publish_topic(shared_broker, topic):
    # [MQTT-1.5.3-1]
    closed_silently(shared_broker, raw.publish(topic, b"x"))


# -- SUBSCRIBE / UNSUBSCRIBE --------------------------------------------------------------

def test_empty_topic_filter_in_subscribe(shared_broker):
    # [MQTT-4.7.3-1] topic filters are at least one character
    closed_silently(shared_broker, raw.subscribe(1, [("", 0)]))


def test_subscribe_without_filters(shared_broker):
    # [MQTT-3.8.3-3] at least one topic filter
    closed_silently(shared_broker, raw.packet(0x82, b"\x00\x01"))


def test_subscribe_requested_qos_3(shared_broker):
    # [MQTT-3-8.3-4] reserved bits / QoS 3 in the requested QoS byte
    closed_silently(shared_broker, raw.subscribe(1, [("t05/a", 3)]))


def test_invalid_utf8_in_subscribe_filter(shared_broker):
    closed_silently(shared_broker, raw.subscribe(1, [(b"t05/\xff", 0)]))


def test_unsubscribe_without_filters(shared_broker):
    # [MQTT-3.10.3-2]
    closed_silently(shared_broker, raw.packet(0xA2, b"\x00\x01"))


@pytest.mark.parametrize("flt", ["t05/#/x", "t05/a+", "t05/#a"])
def test_invalid_topic_filter(shared_broker, flt):
    # [MQTT-4.7.1-2/3] misplaced wildcards: SUBACK 0x80 or close are both allowed
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.connect(unique_id("flt"))
        c.send(raw.subscribe(4, [(flt, 1)]))
        try:
            p = c.read_packet()
        except raw.Closed:
            p = None
        if p is not None:
            assert (p.first_byte, p.body) == (0x90, b"\x00\x04\x80")
    still_serving(shared_broker)


# -- timing --------------------------------------------------------------------------

@pytest.mark.edge_only("connect_timeout is an edgebroker setting")
@pytest.mark.parametrize("sent", [
    pytest.param(b"", id="nothing"),
    pytest.param(raw.connect("slow")[:7], id="half-connect"),
])
def test_silent_client_closed_after_connect_timeout(shared_broker, sent):
    b = shared_broker
    with raw.RawClient(b.host, b.port) as c:
        t0 = time.monotonic()
        if sent:
            c.send(sent)
        assert c.wait_closed(timeout=CONNECT_TIMEOUT + 5) == b""
        elapsed = time.monotonic() - t0
    assert CONNECT_TIMEOUT * 0.8 <= elapsed <= CONNECT_TIMEOUT + 3, \
        "closed after %.2fs with connect_timeout=%ss" % (elapsed, CONNECT_TIMEOUT)
    still_serving(b)


def test_many_bad_connections_in_a_row(shared_broker):
    # a storm of garbage does not wear the broker down (no leaked sockets or tasks)
    b = shared_broker
    for i in range(40):
        with raw.RawClient(b.host, b.port) as c:
            c.send(b"\x10\xff\xff\xff\xff\x7f" if i % 2 else b"\x36\x00")
            c.wait_closed(timeout=5)
    still_serving(b)
