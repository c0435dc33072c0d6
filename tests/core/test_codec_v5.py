# edge.mqtt.codec with v5=True: every packet type that carries properties,
# as golden vectors both ways, every strict prefix, and property errors
# surfacing through decode() with their reason codes. Plain assert functions
# (tests/mpy_runner.py runs them under MicroPython). The bytes are put
# together by hand from the 5.0 layouts (§3.1-§3.15) and Table 2-4; the
# encoder writes properties in ascending id order, so the vectors do too.
from edge.errors import LocalProtocolError, RemoteProtocolError
from edge.mqtt.codec import decode, encode
from edge.mqtt.consts import RC_MALFORMED, RC_PROTOCOL_ERROR
from edge.mqtt.packets import (
    Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe,
    Suback, Unsubscribe, Unsuback, Disconnect, Auth,
)
from tests.core._util import raises
from tests.core.test_codec import same

# CONNECT §3.1: client "c1", clean start, keepalive 30, will "w"/b"bye" at
# QoS 1, user "u", password b"p". Flags 0xCE = user 80 | password 40 |
# will QoS 1 08 | will 04 | clean start 02.
# Properties (15): Session Expiry Interval 60, Receive Maximum 10, User
# Property a=b. Will properties (14): Payload Format Indicator 1, Will Delay
# Interval 5, User Property x=y.
# Remaining length: 10 + (1 + 15) + 4 + (1 + 14) + 3 + 5 + 3 + 3 = 59 = 0x3B
CONNECT = (
    b"\x10\x3b\x00\x04MQTT\x05\xce\x00\x1e"
    b"\x0f" b"\x11\x00\x00\x00\x3c" b"\x21\x00\x0a" b"\x26\x00\x01a\x00\x01b"
    b"\x00\x02c1"
    b"\x0e" b"\x01\x01" b"\x18\x00\x00\x00\x05" b"\x26\x00\x01x\x00\x01y"
    b"\x00\x01w" b"\x00\x03bye" b"\x00\x01u" b"\x00\x01p"
)
# CONNACK §3.2, session present, success; 38 bytes of properties: Assigned
# Client Identifier, Server Keep Alive, Reason String, Receive Maximum,
# Topic Alias Maximum, Maximum QoS, Retain Available, Maximum Packet Size,
# Wildcard / Subscription Identifiers / Shared Subscription Available
CONNACK = (
    b"\x20\x29\x01\x00\x26"
    b"\x12\x00\x06auto-1" b"\x13\x00\x78" b"\x1f\x00\x02ok" b"\x21\x00\x14"
    b"\x22\x00\x0a" b"\x24\x01" b"\x25\x00" b"\x27\x00\x01\x00\x00"
    b"\x28\x00" b"\x29\x01" b"\x2a\x00"
)
# CONNACK 0x9C Use another server, the other six CONNACK properties (46)
CONNACK_REDIRECT = (
    b"\x20\x31\x00\x9c\x2e"
    b"\x11\xff\xff\xff\xff" b"\x15\x00\x05SCRAM" b"\x16\x00\x02\x00\xff"
    b"\x1a\x00\x05resp/" b"\x1c\x00\x0aother:1883" b"\x26\x00\x01k\x00\x01v"
)
# PUBLISH §3.3, QoS 1, pid 7, topic "a/b", payload "hi", every PUBLISH
# property (55), two Subscription Identifiers, two User Properties named k.
# Remaining length: 5 + 2 + (1 + 55) + 2 = 65 = 0x41
PUBLISH = (
    b"\x32\x41\x00\x03a/b\x00\x07"
    b"\x37" b"\x01\x01" b"\x02\x00\x00\x00\x1e" b"\x03\x00\x0atext/plain"
    b"\x08\x00\x03r/1" b"\x09\x00\x02\x01\x02" b"\x0b\x01" b"\x0b\xc8\x01"
    b"\x23\x00\x05" b"\x26\x00\x01k\x00\x02v1" b"\x26\x00\x01k\x00\x02v2"
    b"hi"
)
PUBLISH_PROPS = {
    0x01: 1, 0x02: 30, 0x03: "text/plain", 0x08: "r/1", 0x09: b"\x01\x02",
    0x0B: [1, 200], 0x23: 5, 0x26: [("k", "v1"), ("k", "v2")],
}

VECTORS = [
    (Connect("c1", True, 30, "u", b"p", "w", b"bye", 1, False, 5, "MQTT",
             {0x01: 1, 0x18: 5, 0x26: [("x", "y")]},
             {0x11: 60, 0x21: 10, 0x26: [("a", "b")]}), CONNECT),
    (Connack(True, 0, {0x12: "auto-1", 0x13: 120, 0x1F: "ok", 0x21: 20, 0x22: 10,
                       0x24: 1, 0x25: 0, 0x27: 65536, 0x28: 0, 0x29: 1, 0x2A: 0}),
     CONNACK),
    (Connack(False, 0x9C, {0x11: 0xFFFFFFFF, 0x15: "SCRAM", 0x16: b"\x00\xff",
                           0x1A: "resp/", 0x1C: "other:1883", 0x26: [("k", "v")]}),
     CONNACK_REDIRECT),
    (Publish("a/b", b"hi", 1, False, False, 7, PUBLISH_PROPS), PUBLISH),
    # topic alias with an empty topic name (§3.3.2.3.4): 2 + 4 + 1
    (Publish("", b"x", props={0x23: 3}), b"\x30\x07\x00\x00\x03\x23\x00\x03x"),
    # acks §3.4-§3.7: pid, reason, properties
    (Puback(1, 0x10, {0x1F: "no subs"}), b"\x40\x0e\x00\x01\x10\x0a\x1f\x00\x07no subs"),
    (Pubrec(2, 0x80, {0x1F: "x", 0x26: [("a", "b")]}),
     b"\x50\x0f\x00\x02\x80\x0b\x1f\x00\x01x\x26\x00\x01a\x00\x01b"),
    (Pubrel(3, 0x92, {0x1F: "gone"}), b"\x62\x0b\x00\x03\x92\x07\x1f\x00\x04gone"),
    # reason 0 is written when properties follow (§3.7.2.1)
    (Pubcomp(4, 0, {0x26: [("t", "1")]}), b"\x70\x0b\x00\x04\x00\x07\x26\x00\x01t\x00\x011"),
    # SUBSCRIBE §3.8: Subscription Identifier 16384 (3-byte varint), a User
    # Property; options 0x2E = retain handling 2 | RAP | no local | QoS 2
    (Subscribe(10, [("a/+", 0x01), ("b/#", 0x2E)], {0x0B: 16384, 0x26: [("s", "1")]}),
     b"\x82\x1a\x00\x0a\x0b\x0b\x80\x80\x01\x26\x00\x01s\x00\x011"
     b"\x00\x03a/+\x01\x00\x03b/#\x2e"),
    (Suback(10, [0x01, 0x97, 0xA1], {0x1F: "quota"}),
     b"\x90\x0e\x00\x0a\x08\x1f\x00\x05quota\x01\x97\xa1"),
    (Unsubscribe(11, ["a/+"], {0x26: [("u", "2")]}),
     b"\xa2\x0f\x00\x0b\x07\x26\x00\x01u\x00\x012\x00\x03a/+"),
    (Unsuback(11, [0x00, 0x11], {0x1F: "r", 0x26: [("a", "b")]}),
     b"\xb0\x10\x00\x0b\x0b\x1f\x00\x01r\x26\x00\x01a\x00\x01b\x00\x11"),
    # DISCONNECT §3.14, 0x04 (with will message)
    (Disconnect(0x04, {0x11: 0, 0x1C: "b2", 0x1F: "bye"}),
     b"\xe0\x12\x04\x10\x11\x00\x00\x00\x00\x1c\x00\x02b2\x1f\x00\x03bye"),
    # AUTH §3.15, 0x18 (continue authentication)
    (Auth(0x18, {0x15: "SCRAM-SHA-1", 0x16: b"\x01\x02\x03"}),
     b"\xf0\x16\x18\x14\x15\x00\x0bSCRAM-SHA-1\x16\x00\x03\x01\x02\x03"),
]


def test_encode_golden():
    for pkt, wire in VECTORS:
        got = encode(pkt, True)
        assert got == wire, (type(pkt).__name__, got, wire)


def test_decode_golden():
    for pkt, wire in VECTORS:
        got, used = decode(wire, 0, len(wire), True)
        assert used == len(wire), (type(pkt).__name__, used)
        same(got, pkt)
        # at an offset in a bigger buffer, through a memoryview
        buf = memoryview(b"\xaa\xbb" + wire + b"\xc0")
        got, used = decode(buf, 2, len(buf), True)
        assert used == len(wire)
        same(got, pkt)


def test_every_strict_prefix_needs_more():
    for pkt, wire in VECTORS:
        for n in range(len(wire)):
            assert decode(wire, 0, n, True) == (None, 0), (type(pkt).__name__, n)


def test_property_order_is_free():
    # §2.2.2.2: "no significance in the order of Properties with different
    # Identifiers"; repeated ones keep theirs
    wire = (b"\x32\x41\x00\x03a/b\x00\x07"
            b"\x37" b"\x26\x00\x01k\x00\x02v1" b"\x0b\x01" b"\x23\x00\x05"
            b"\x09\x00\x02\x01\x02" b"\x08\x00\x03r/1" b"\x03\x00\x0atext/plain"
            b"\x02\x00\x00\x00\x1e" b"\x0b\xc8\x01" b"\x01\x01"
            b"\x26\x00\x01k\x00\x02v2" b"hi")
    got, used = decode(wire, 0, len(wire), True)
    assert used == len(wire) and got.props == PUBLISH_PROPS and got.payload == b"hi"


def bad(wire, reason):
    e = raises(RemoteProtocolError, decode, wire, 0, len(wire), True)
    assert e.reason == reason, (wire, hex(e.reason), e.msg)


def _frame(b0, body):
    assert len(body) < 128
    return bytes((b0, len(body))) + body


def test_property_errors_through_decode():
    con = b"\x00\x04MQTT\x05\x06\x00\x00"  # clean start + will
    # will properties are their own table column (§3.1.3.2)
    bad(_frame(0x10, con + b"\x05\x18\x00\x00\x00\x05\x00\x00\x00\x00\x01w\x00\x00"), RC_MALFORMED)
    bad(_frame(0x10, con + b"\x00\x00\x00\x05\x11\x00\x00\x00\x05\x00\x01w\x00\x00"), RC_MALFORMED)
    # Receive Maximum 0 (§3.1.2.11.3), given twice
    bad(_frame(0x10, con + b"\x03\x21\x00\x00\x00\x00\x00\x00\x01w\x00\x00"), RC_PROTOCOL_ERROR)
    bad(_frame(0x10, con + b"\x06\x21\x00\x01\x21\x00\x01\x00\x00\x00\x00\x01w\x00\x00"),
        RC_PROTOCOL_ERROR)
    # Reason String in PUBLISH; Topic Alias in PUBACK
    bad(_frame(0x30, b"\x00\x01t\x04\x1f\x00\x01r"), RC_MALFORMED)
    bad(_frame(0x40, b"\x00\x01\x00\x03\x23\x00\x01"), RC_MALFORMED)
    # Subscription Identifier 0 and twice in SUBSCRIBE (§3.8.2.1.2)
    bad(_frame(0x82, b"\x00\x01\x02\x0b\x00\x00\x01a\x00"), RC_PROTOCOL_ERROR)
    bad(_frame(0x82, b"\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00"), RC_PROTOCOL_ERROR)
    # a property block longer than what is left of the packet
    bad(_frame(0xA2, b"\x00\x01\x09\x00\x01a"), RC_MALFORMED)
    # a block that ends inside a value, the packet going on after it
    bad(_frame(0xE0, b"\x00\x02\x11\x00\x00\x00\x00"), RC_MALFORMED)
    # invalid UTF-8 in a Reason String (§1.5.4)
    bad(_frame(0xF0, b"\x18\x04\x1f\x00\x01\xff"), RC_MALFORMED)
    # unknown property in AUTH
    bad(_frame(0xF0, b"\x18\x02\x7f\x00"), RC_MALFORMED)
    # PUBLISH Topic Alias 0 parses: the broker answers it with 0x94
    p, _ = decode(b"\x30\x07\x00\x01t\x03\x23\x00\x00", 0, 9, True)
    assert p.props == {0x23: 0}


def test_encode_errors():
    for pkt in (
        Publish("t", props={0x1F: "not in PUBLISH"}),
        Puback(1, 0, {0x23: 1}),
        Connect("c", level=5, props={0x18: 5}),  # will-only property
        Connect("c", level=5, will_topic="w", will_props={0x11: 5}),
        Connack(False, 0, {0x21: 0}),
        Subscribe(1, [("a", 0)], {0x0B: [1, 2]}),
        Disconnect(0, {0x99: 1}),
    ):
        raises(LocalProtocolError, encode, pkt, True)


def test_311_never_writes_properties():
    # a 3.1.1 encode ignores props (the layouts have no block)
    assert encode(Publish("a", b"", props={0x23: 1})) == b"\x30\x03\x00\x01a"
    assert encode(Puback(5, 0x10, {0x1F: "r"})) == b"\x40\x02\x00\x05"
