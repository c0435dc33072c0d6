# edge.mqtt.props: MQTT 5.0 property blocks on their own (decode_props /
# encode_props), checked against Table 2-4 (§2.2.2.2) as transcribed below.
# Plain assert functions (no pytest) so tests/mpy_runner.py runs them under
# MicroPython too. Byte vectors are put together by hand from the spec's
# layouts (§1.5 data types, §2.2.2), not produced by the encoder under test.
from edge.errors import LocalProtocolError, RemoteProtocolError
from edge.mqtt import props
from edge.mqtt.consts import (
    AUTH, CONNACK, CONNECT, DISCONNECT, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
    RC_MALFORMED, RC_PROTOCOL_ERROR, SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
)
from edge.mqtt.props import decode_props, encode_props
from tests.core._util import raises

WILL = 0  # the `where` of the will properties

# Table 2-4, from the spec: id -> (name, data type, packets it may appear in)
SPEC = {
    0x01: ("Payload Format Indicator", "byte", "PUBLISH WILL"),
    0x02: ("Message Expiry Interval", "u32", "PUBLISH WILL"),
    0x03: ("Content Type", "utf8", "PUBLISH WILL"),
    0x08: ("Response Topic", "utf8", "PUBLISH WILL"),
    0x09: ("Correlation Data", "binary", "PUBLISH WILL"),
    0x0B: ("Subscription Identifier", "varint", "PUBLISH SUBSCRIBE"),
    0x11: ("Session Expiry Interval", "u32", "CONNECT CONNACK DISCONNECT"),
    0x12: ("Assigned Client Identifier", "utf8", "CONNACK"),
    0x13: ("Server Keep Alive", "u16", "CONNACK"),
    0x15: ("Authentication Method", "utf8", "CONNECT CONNACK AUTH"),
    0x16: ("Authentication Data", "binary", "CONNECT CONNACK AUTH"),
    0x17: ("Request Problem Information", "byte", "CONNECT"),
    0x18: ("Will Delay Interval", "u32", "WILL"),
    0x19: ("Request Response Information", "byte", "CONNECT"),
    0x1A: ("Response Information", "utf8", "CONNACK"),
    0x1C: ("Server Reference", "utf8", "CONNACK DISCONNECT"),
    0x1F: ("Reason String", "utf8",
           "CONNACK PUBACK PUBREC PUBREL PUBCOMP SUBACK UNSUBACK DISCONNECT AUTH"),
    0x21: ("Receive Maximum", "u16", "CONNECT CONNACK"),
    0x22: ("Topic Alias Maximum", "u16", "CONNECT CONNACK"),
    0x23: ("Topic Alias", "u16", "PUBLISH"),
    0x24: ("Maximum QoS", "byte", "CONNACK"),
    0x25: ("Retain Available", "byte", "CONNACK"),
    0x26: ("User Property", "pair",
           "CONNECT CONNACK PUBLISH WILL PUBACK PUBREC PUBREL PUBCOMP SUBSCRIBE "
           "SUBACK UNSUBSCRIBE UNSUBACK DISCONNECT AUTH"),
    0x27: ("Maximum Packet Size", "u32", "CONNECT CONNACK"),
    0x28: ("Wildcard Subscription Available", "byte", "CONNACK"),
    0x29: ("Subscription Identifiers Available", "byte", "CONNACK"),
    0x2A: ("Shared Subscription Available", "byte", "CONNACK"),
}
KINDS = {
    "WILL": WILL, "CONNECT": CONNECT, "CONNACK": CONNACK, "PUBLISH": PUBLISH,
    "PUBACK": PUBACK, "PUBREC": PUBREC, "PUBREL": PUBREL, "PUBCOMP": PUBCOMP,
    "SUBSCRIBE": SUBSCRIBE, "SUBACK": SUBACK, "UNSUBSCRIBE": UNSUBSCRIBE,
    "UNSUBACK": UNSUBACK, "DISCONNECT": DISCONNECT, "AUTH": AUTH,
}
# One value of each data type and its bytes (§1.5.1-§1.5.7)
SAMPLE = {
    "byte": (1, b"\x01"),
    "u16": (0x1234, b"\x12\x34"),
    "u32": (0x12345678, b"\x12\x34\x56\x78"),
    "varint": (200, b"\xc8\x01"),
    "utf8": ("a\u00e9", b"\x00\x03a\xc3\xa9"),
    "binary": (b"\x00\xff", b"\x00\x02\x00\xff"),
    "pair": (("k", "v"), b"\x00\x01k\x00\x01v"),
}


def allowed(pid):
    return [KINDS[k] for k in SPEC[pid][2].split()]


def block(body):
    # Property Length (one-byte varint here) + properties
    assert len(body) < 128
    return bytes((len(body),)) + body


def dec(raw, where):
    # decode_props over raw with junk around it: offsets and the end bound
    buf = b"\xee" + raw + b"\xee\xee"
    got, i = decode_props(memoryview(buf), 1, 1 + len(raw), where)
    assert i == 1 + len(raw), (raw, i)
    return got


def bad(raw, where, reason):
    buf = b"\xee" + raw + b"\xee"
    e = raises(RemoteProtocolError, decode_props, memoryview(buf), 1, 1 + len(raw), where)
    assert e.reason == reason, (raw, where, hex(e.reason), e.msg)
    assert e.msg


def local(props_, where):
    raises(LocalProtocolError, encode_props, props_, where)


def expect(v, pid, where):
    # the decoded form: lists for what may repeat
    if pid == 0x26 or (pid == 0x0B and where == PUBLISH):
        return [v]
    return v


def test_table_matches_the_spec():
    for pid in range(0x80):
        want = SPEC.get(pid)
        got = props.row(pid)
        if want is None:
            assert got is None, (hex(pid), got)
            assert props.name(pid) == "0x%02x" % pid
            continue
        mask = 0
        for k in allowed(pid):
            mask |= 1 << k
        assert got == (want[0], want[1], mask), (hex(pid), got)
        assert props.name(pid) == want[0]


def test_every_property_in_every_packet():
    # decoded where Table 2-4 allows it, Malformed elsewhere (§2.2.2.2: "an
    # Identifier which is not valid for its packet type ... is a Malformed
    # Packet"); the same split on the encoding side
    for pid, (_, typ, _) in SPEC.items():
        v, raw = SAMPLE[typ]
        wire = block(bytes((pid,)) + raw)
        ok = allowed(pid)
        for where in range(16):
            if where in ok:
                want = {pid: expect(v, pid, where)}
                assert dec(wire, where) == want, (hex(pid), where)
                assert encode_props(want, where) == wire, (hex(pid), where)
            else:
                bad(wire, where, RC_MALFORMED)
                local({pid: expect(v, pid, where)}, where)


def test_unknown_identifiers():
    for pid in (0x00, 0x04, 0x05, 0x06, 0x07, 0x0A, 0x0C, 0x10, 0x14, 0x1B, 0x1D,
                0x1E, 0x20, 0x2B, 0x7F):
        for where in (WILL, CONNECT, PUBLISH, DISCONNECT):
            bad(block(bytes((pid,)) + b"\x00\x00\x00\x00"), where, RC_MALFORMED)
        local({pid: 0}, PUBLISH)
    # identifiers are varints (§2.2.2.2): 128 is unknown; 0x81 0x00 is 1
    # written in two bytes, against [MQTT-1.5.5-1]
    bad(block(b"\x80\x01\x00"), PUBLISH, RC_MALFORMED)
    bad(block(b"\x81\x00\x01"), PUBLISH, RC_MALFORMED)
    local({"0x01": 1}, PUBLISH)


def test_integer_boundaries():
    for pid, v, raw in (
        (0x01, 0, b"\x00"), (0x01, 1, b"\x01"),  # 0 or 1 (§3.3.2.3.2; 2-255: test_value_checks)
        (0x23, 0, b"\x00\x00"),  # Topic Alias 0: the broker's check
        (0x23, 65535, b"\xff\xff"),
        (0x02, 0, b"\x00\x00\x00\x00"), (0x02, 0xFFFFFFFF, b"\xff\xff\xff\xff"),
        (0x0B, [1], b"\x01"), (0x0B, [127], b"\x7f"), (0x0B, [128], b"\x80\x01"),
        (0x0B, [16383], b"\xff\x7f"), (0x0B, [16384], b"\x80\x80\x01"),
        (0x0B, [2097152], b"\x80\x80\x80\x01"), (0x0B, [268435455], b"\xff\xff\xff\x7f"),
    ):
        wire = block(bytes((pid,)) + raw)
        assert dec(wire, PUBLISH) == {pid: v}, (hex(pid), v)
        assert encode_props({pid: v}, PUBLISH) == wire
    for pid, v in ((0x01, 256), (0x01, -1), (0x23, 65536), (0x02, 1 << 32),
                   (0x0B, 268435456), (0x01, "1"), (0x02, b"\x00")):
        local({pid: v}, PUBLISH)


def test_strings_and_binary():
    for pid, v, raw in (
        (0x03, "", b"\x00\x00"),
        (0x03, "\U0001d11e\u20ac", b"\x00\x07\xf0\x9d\x84\x9e\xe2\x82\xac"),
        (0x09, b"", b"\x00\x00"),
        (0x09, b"\x00" * 100, b"\x00\x64" + b"\x00" * 100),  # binary may hold 0
        (0x26, [("", "")], b"\x00\x00\x00\x00"),
    ):
        wire = block(bytes((pid,)) + raw)
        assert dec(wire, PUBLISH) == {pid: v}, hex(pid)
        assert encode_props({pid: v}, PUBLISH) == wire
    local({0x03: b"text"}, PUBLISH)  # UTF-8 string property given bytes
    local({0x09: "text"}, PUBLISH)  # binary property given a str
    local({0x26: [("a", "b", "c")]}, PUBLISH)
    local({0x26: [("a", 1)]}, PUBLISH)
    local({0x03: "x" * 65536}, PUBLISH)


def test_user_properties_keep_order_and_repeat():
    # §3.3.2.3.7: the same name may appear more than once; order is kept
    pairs = [("b", "2"), ("a", "1"), ("b", "3")]
    raw = b"\x26\x00\x01b\x00\x012" b"\x26\x00\x01a\x00\x011" b"\x26\x00\x01b\x00\x013"
    for where in (WILL, CONNECT, PUBLISH, PUBACK, SUBSCRIBE, UNSUBACK, AUTH):
        assert dec(block(raw), where) == {0x26: pairs}
        assert encode_props({0x26: pairs}, where) == block(raw)
    # another property between them
    got = dec(block(b"\x26\x00\x01b\x00\x012\x01\x01\x26\x00\x01a\x00\x011"), PUBLISH)
    assert got == {0x26: [("b", "2"), ("a", "1")], 0x01: 1}


def test_subscription_identifiers():
    # may repeat in PUBLISH (one per matching subscription, §3.3.4), not in
    # SUBSCRIBE (§3.8.2.1.2)
    raw = b"\x0b\x01\x23\x00\x02\x0b\xc8\x01"
    assert dec(block(raw), PUBLISH) == {0x0B: [1, 200], 0x23: 2}
    assert encode_props({0x0B: [1, 200], 0x23: 2}, PUBLISH) == block(b"\x0b\x01\x0b\xc8\x01\x23\x00\x02")
    assert encode_props({0x0B: 7}, PUBLISH) == block(b"\x0b\x07")
    assert dec(block(b"\x0b\x80\x01"), SUBSCRIBE) == {0x0B: 128}
    bad(block(b"\x0b\x01\x0b\x02"), SUBSCRIBE, RC_PROTOCOL_ERROR)
    local({0x0B: [1, 2]}, SUBSCRIBE)
    # "It is a Protocol Error if the Subscription Identifier has a value of 0"
    bad(block(b"\x0b\x00"), SUBSCRIBE, RC_PROTOCOL_ERROR)
    bad(block(b"\x0b\x05\x0b\x00"), PUBLISH, RC_PROTOCOL_ERROR)
    local({0x0B: 0}, SUBSCRIBE)
    local({0x0B: [3, 0]}, PUBLISH)


def test_given_twice():
    # every property but User Property (and Subscription Identifier in
    # PUBLISH): "It is a Protocol Error to include ... more than once"
    for pid, (_, typ, _) in SPEC.items():
        if pid == 0x26:
            continue
        _, raw = SAMPLE[typ]
        one = bytes((pid,)) + raw
        for where in allowed(pid):
            if pid == 0x0B and where == PUBLISH:
                assert dec(block(one + one), where) == {pid: [200, 200]}
                continue
            bad(block(one + one), where, RC_PROTOCOL_ERROR)
            # not adjacent: a User Property between them
            bad(block(one + b"\x26\x00\x00\x00\x00" + one), where, RC_PROTOCOL_ERROR)


def test_value_checks():
    # Protocol Errors the spec attaches to single values
    for pid, where, raw in (
        (0x01, PUBLISH, b"\x02"),  # Payload Format Indicator: 0 or 1 §3.3.2.3.2
        (0x01, WILL, b"\xff"),
        (0x21, CONNECT, b"\x00\x00"),  # Receive Maximum 0 §3.1.2.11.3
        (0x21, CONNACK, b"\x00\x00"),  # §3.2.2.3.3
        (0x27, CONNECT, b"\x00\x00\x00\x00"),  # Maximum Packet Size 0 §3.1.2.11.4
        (0x27, CONNACK, b"\x00\x00\x00\x00"),  # §3.2.2.3.6
        (0x17, CONNECT, b"\x02"),  # Request Problem Information §3.1.2.11.7
        (0x19, CONNECT, b"\xff"),  # Request Response Information §3.1.2.11.6
        (0x24, CONNACK, b"\x02"),  # Maximum QoS §3.2.2.3.4
        (0x25, CONNACK, b"\x02"),  # Retain Available §3.2.2.3.5
        (0x28, CONNACK, b"\x02"),  # Wildcard Subscription Available §3.2.2.3.11
        (0x29, CONNACK, b"\x02"),  # Subscription Identifiers Available §3.2.2.3.12
        (0x2A, CONNACK, b"\x80"),  # Shared Subscription Available §3.2.2.3.13
    ):
        bad(block(bytes((pid,)) + raw), where, RC_PROTOCOL_ERROR)
        v = 0
        for b in raw:
            v = v << 8 | b
        local({pid: v}, where)
    # the allowed extremes
    assert dec(block(b"\x21\x00\x01\x24\x00\x25\x01"), CONNACK) == {0x21: 1, 0x24: 0, 0x25: 1}


def test_truncated_values():
    # a value running past the end of its block is Malformed, even when the
    # packet has bytes after the block
    for where, raw in (
        (PUBLISH, b"\x01"),  # byte with no value
        (PUBLISH, b"\x23\x00"),  # u16 one byte short
        (PUBLISH, b"\x02\x00\x00\x00"),  # u32 one byte short
        (PUBLISH, b"\x0b\x80"),  # varint cut after a continuation byte
        (PUBLISH, b"\x03\x00"),  # string length cut
        (PUBLISH, b"\x03\x00\x02a"),  # string data cut
        (PUBLISH, b"\x09\x00\x03\x00\x00"),  # binary data cut
        (PUBLISH, b"\x26\x00\x01k"),  # pair without value
        (PUBLISH, b"\x26\x00\x01k\x00\x02v"),  # pair value cut
        (CONNECT, b"\x11\x00\x00\x00"),
    ):
        wire = block(raw)
        bad(wire, where, RC_MALFORMED)
        # the packet's own bytes after the block must not be read as the rest
        buf = wire + b"\x00\x00\x00\x00\x00"
        e = raises(RemoteProtocolError, decode_props, memoryview(buf), 0, len(buf), where)
        assert e.reason == RC_MALFORMED, raw


def test_property_length():
    bad(b"\x05\x01\x01", PUBLISH, RC_MALFORMED)  # longer than the packet
    bad(b"", PUBLISH, RC_MALFORMED)  # missing
    bad(b"\x80", PUBLISH, RC_MALFORMED)  # cut inside the varint
    bad(b"\xff\xff\xff\xff\x01", PUBLISH, RC_MALFORMED)  # varint over 4 bytes
    assert dec(b"\x00", PUBLISH) == {}
    # two-byte Property Length: 64 user properties of 7 bytes = 448
    body = b"\x26\x00\x01k\x00\x01v" * 64
    assert dec(b"\xc0\x03" + body, PUBLISH) == {0x26: [("k", "v")] * 64}
    assert encode_props({0x26: [("k", "v")] * 64}, PUBLISH) == b"\xc0\x03" + body
    assert encode_props({}, PUBLISH) == encode_props(None, CONNECT) == b"\x00"


def test_varint_values():
    bad(block(b"\x0b\xff\xff\xff\xff\x01"), PUBLISH, RC_MALFORMED)  # over 4 bytes
    bad(block(b"\x0b\xff\xff\xff\x80"), PUBLISH, RC_MALFORMED)  # 4th byte continues
    bad(block(b"\x0b\x81\x00"), PUBLISH, RC_MALFORMED)  # not minimal [MQTT-1.5.5-1]
    bad(block(b"\x0b\x80\x80\x00"), SUBSCRIBE, RC_MALFORMED)


BAD_UTF8 = (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\xc3", b"\x00", b"a\x00")


def test_invalid_utf8():
    # [MQTT-1.5.4-1] (no surrogates), [MQTT-1.5.4-2] (no U+0000)
    for raw in BAD_UTF8:
        s = bytes((len(raw) >> 8, len(raw) & 255)) + raw
        bad(block(b"\x03" + s), PUBLISH, RC_MALFORMED)  # Content Type
        bad(block(b"\x1f" + s), DISCONNECT, RC_MALFORMED)  # Reason String
        bad(block(b"\x26" + s + b"\x00\x01v"), CONNECT, RC_MALFORMED)  # pair name
        bad(block(b"\x26\x00\x01k" + s), WILL, RC_MALFORMED)  # pair value
    # binary data is not judged
    assert dec(block(b"\x16\x00\x01\xff"), AUTH) == {0x16: b"\xff"}


def test_decoded_types():
    got = dec(block(b"\x08\x00\x01r\x09\x00\x01c\x26\x00\x01k\x00\x01v"), PUBLISH)
    assert type(got[0x08]) is str and type(got[0x09]) is bytes
    assert type(got[0x26]) is list and type(got[0x26][0]) is tuple
