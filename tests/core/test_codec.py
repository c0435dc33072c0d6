# edge.mqtt.codec: golden vectors both ways, prefixes, offsets, errors.
# Plain assert functions (no pytest) so tests/mpy_runner.py runs them under
# MicroPython too. The vectors are worked out by hand from the MQTT 3.1.1
# byte layouts (§3.1-§3.14), not produced by the encoder under test.
from edge.errors import LocalProtocolError, RemoteProtocolError
from edge.mqtt import codec
from edge.mqtt.codec import decode, encode, encode_varint, packet_length, read_varint
from edge.mqtt.consts import RC_MALFORMED, RC_PROTOCOL_ERROR
from edge.mqtt.packets import (
    Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe,
    Suback, Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth,
)
from tests.core._util import raises

_FIELDS = (
    "proto", "level", "client_id", "clean", "keepalive", "username", "password",
    "will_topic", "will_payload", "will_qos", "will_retain", "will_props",
    "session_present", "reason", "topic", "payload", "qos", "retain", "dup",
    "pid", "topics", "codes", "props",
)
_MISSING = object()


def same(a, b):
    assert type(a) is type(b), (a, b)
    for n in _FIELDS:
        x = getattr(a, n, _MISSING)
        y = getattr(b, n, _MISSING)
        assert x == y, (type(a).__name__, n, x, y)


# Connect("cid", will w/t "bye" QoS 1 retained, user "user", password b"pw")
# flags 0xEE = user 80 | pass 40 | will retain 20 | will QoS 1 08 | will 04 | clean 02
# remaining length 10 (variable header) + 5 + 5 + 5 + 6 + 4 = 35 = 0x23
CONNECT_FULL = (b"\x10\x23\x00\x04MQTT\x04\xee\x00\x3c" b"\x00\x03cid"
                b"\x00\x03w/t\x00\x03bye\x00\x04user\x00\x02pw")
LONG = b"x" * 200  # remaining length 3 + 2 + 200 = 205 = varint CD 01

VECTORS = [
    (Connect("cid", True, 60, "user", b"pw", "w/t", b"bye", 1, True), CONNECT_FULL),
    (Connect("", True, 0), b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x00"),
    (Connect("c", False, 300, "u"), b"\x10\x10\x00\x04MQTT\x04\x80\x01\x2c\x00\x01c\x00\x01u"),
    (Connect("c", True, 60, level=3, proto="MQIsdp"),
     b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c"),
    (Connack(True, 0), b"\x20\x02\x01\x00"),
    (Connack(False, 5), b"\x20\x02\x00\x05"),
    (Publish("a/b", b"hi"), b"\x30\x07\x00\x03a/bhi"),
    (Publish("a/b", b"hi", 1, True, False, 10), b"\x33\x09\x00\x03a/b\x00\x0ahi"),
    (Publish("t", b"", 2, False, True, 0x1234), b"\x3c\x05\x00\x01t\x12\x34"),
    (Publish("t", LONG, 1, True, True, 1), b"\x3b\xcd\x01\x00\x01t\x00\x01" + LONG),
    (Publish("\u00e9\u20ac", b"\x00\xff"), b"\x30\x09\x00\x05\xc3\xa9\xe2\x82\xac\x00\xff"),
    (Puback(10), b"\x40\x02\x00\x0a"),
    (Pubrec(0x1234), b"\x50\x02\x12\x34"),
    (Pubrel(1), b"\x62\x02\x00\x01"),
    (Pubcomp(0xFFFF), b"\x70\x02\xff\xff"),
    (Subscribe(1, [("a/b", 0), ("c/#", 1), ("+/d", 2)]),
     b"\x82\x14\x00\x01\x00\x03a/b\x00\x00\x03c/#\x01\x00\x03+/d\x02"),
    (Suback(1, [0, 1, 2, 0x80]), b"\x90\x06\x00\x01\x00\x01\x02\x80"),
    (Unsubscribe(2, ["a/b", "c/#"]), b"\xa2\x0c\x00\x02\x00\x03a/b\x00\x03c/#"),
    (Unsuback(2), b"\xb0\x02\x00\x02"),
    (Pingreq(), b"\xc0\x00"),
    (Pingresp(), b"\xd0\x00"),
    (Disconnect(), b"\xe0\x00"),
]


def test_encode_golden():
    for pkt, wire in VECTORS:
        got = encode(pkt)
        assert type(got) is bytes, type(got)
        assert got == wire, (type(pkt).__name__, got, wire)


def test_decode_golden():
    for pkt, wire in VECTORS:
        got, used = decode(wire, 0, len(wire))
        assert used == len(wire), (type(pkt).__name__, used)
        same(got, pkt)
        assert packet_length(wire, 0, len(wire)) == len(wire)


def test_decoded_types():
    p, _ = decode(VECTORS[0][1], 0, len(CONNECT_FULL))
    assert type(p.client_id) is str and type(p.username) is str
    assert type(p.password) is bytes and type(p.will_payload) is bytes
    p, _ = decode(b"\x30\x07\x00\x03a/bhi", 0, 9)
    assert type(p.topic) is str and type(p.payload) is bytes


def test_every_strict_prefix_needs_more():
    for pkt, wire in VECTORS:
        for n in range(len(wire)):
            assert decode(wire, 0, n) == (None, 0), (type(pkt).__name__, n)
            # the end bound counts, not the buffer length
            assert decode(b"\xaa" + wire + b"\x00\x00", 1, n + 1) == (None, 0)
        assert packet_length(wire, 0, 1) == -1


def test_back_to_back_and_offsets():
    a = b"\x40\x02\x00\x0a"
    b = b"\x33\x09\x00\x03a/b\x00\x0ahi"
    buf = b"junk" + a + b + b"\xc0"  # a trailing partial PINGREQ
    end = len(buf)
    p, used = decode(buf, 4, end)
    same(p, Puback(10))
    assert used == 4
    p, used = decode(buf, 8, end)
    same(p, Publish("a/b", b"hi", 1, True, False, 10))
    assert used == len(b)
    assert decode(buf, 8 + len(b), end) == (None, 0)
    assert decode(buf, 8, end - 2) == (None, 0)  # end cuts the PUBLISH
    for wrap in (bytearray, memoryview):
        w = wrap(buf)
        p, used = decode(w, 8, end)
        assert used == len(b) and type(p.payload) is bytes and p.payload == b"hi"
        assert p.topic == "a/b"
        assert packet_length(w, 8, end) == len(b)
    mv = memoryview(bytearray(CONNECT_FULL))
    p, used = decode(mv, 0, len(mv))
    assert used == len(CONNECT_FULL) and p.password == b"pw" and p.username == "user"


def test_varint_boundaries():
    cases = [
        (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f"),
    ]
    for n, wire in cases:
        assert encode_varint(n) == wire, (n, encode_varint(n))
        assert read_varint(wire, 0, len(wire)) == (n, len(wire))
        buf = b"\x30" + wire
        assert packet_length(buf, 0, len(buf)) == 1 + len(wire) + n
        assert read_varint(b"\x00" + wire, 1, len(wire))[0] == -1  # one byte short
    assert read_varint(b"\x80\x80", 0, 2)[0] == -1
    assert read_varint(b"", 0, 0)[0] == -1
    raises(LocalProtocolError, encode_varint, 268435456)
    raises(LocalProtocolError, encode_varint, -1)


def test_varint_too_long():
    for fn, args in (
        (read_varint, (b"\xff\xff\xff\xff\x01", 0, 5)),
        (read_varint, (b"\xff\xff\xff\xff", 0, 4)),
        (packet_length, (b"\x30\xff\xff\xff\xff\x01", 0, 6)),
        (decode, (b"\x30\xff\xff\xff\xff\x01", 0, 6)),
    ):
        e = raises(RemoteProtocolError, fn, *args)
        assert e.reason == RC_MALFORMED


def bad(wire, reason, v5=False):
    e = raises(RemoteProtocolError, decode, wire, 0, len(wire), v5)
    assert e.reason == reason, (wire, e.reason, e.msg)
    assert e.msg  # a human message for the log


def test_reserved_flag_bits():
    # [MQTT-2.2.2-1/2]
    for wire in (b"\x11\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x00",
                 b"\x28\x02\x00\x00", b"\x41\x02\x00\x01", b"\x52\x02\x00\x01",
                 b"\x60\x02\x00\x01", b"\x64\x02\x00\x01", b"\x7f\x02\x00\x01",
                 b"\x80\x06\x00\x01\x00\x01a\x00", b"\x92\x03\x00\x01\x00",
                 b"\xa0\x05\x00\x01\x00\x01a", b"\xb2\x02\x00\x01",
                 b"\xc1\x00", b"\xd8\x00", b"\xe2\x00"):
        bad(wire, RC_MALFORMED)
    bad(b"\xc1", RC_MALFORMED)  # judged from the first byte alone


def test_reserved_packet_types():
    bad(b"\x00\x00", RC_PROTOCOL_ERROR)
    bad(b"\xf0\x00", RC_PROTOCOL_ERROR)  # AUTH is 5.0 only
    p, used = decode(b"\xf0\x00", 0, 2, True)
    same(p, Auth(0, {}))
    assert used == 2


def test_publish_flags():
    bad(b"\x36\x05\x00\x01t\x00\x01", RC_MALFORMED)  # [MQTT-3.3.1-4] QoS 3
    bad(b"\x37\x05\x00\x01t\x00\x01", RC_MALFORMED)
    bad(b"\x38\x03\x00\x01t", RC_MALFORMED)  # [MQTT-3.3.1-2] DUP on QoS 0
    bad(b"\x39\x03\x00\x01t", RC_MALFORMED)


def test_remaining_length_too_short():
    for wire in (
        b"\x40\x01\x00", b"\x40\x00", b"\x20\x01\x00", b"\x30\x00",
        b"\x30\x01\x00", b"\x30\x03\x00\x05t", b"\x32\x03\x00\x01t",
        b"\x32\x04\x00\x01t\x00", b"\x82\x05\x00\x01\x00\x01a",
        b"\x82\x05\x00\x01\x00\x02a", b"\xa2\x05\x00\x01\x00\x02a",
        b"\x10\x05\x00\x04MQT", b"\x10\x06\x00\x04MQTT",
        b"\x10\x08\x00\x04MQTT\x04\x02", b"\x10\x0b\x00\x04MQTT\x04\x02\x00\x00\x00",
        # will flag set but no will payload
        b"\x10\x11\x00\x04MQTT\x04\x06\x00\x00\x00\x00\x00\x01w\x00\x01",
        # password flag set but no password
        b"\x10\x0f\x00\x04MQTT\x04\xc2\x00\x00\x00\x00\x00\x01u",
        b"\x90\x01\x00", b"\xb0\x01\x00",
    ):
        bad(wire, RC_MALFORMED)


def test_remaining_length_too_long():
    for wire in (
        b"\x40\x03\x00\x01\x00", b"\x62\x03\x00\x01\x00", b"\x20\x03\x00\x00\x00",
        b"\xb0\x03\x00\x01\x00", b"\xc0\x01\x00", b"\xd0\x01\x00", b"\xe0\x01\x00",
        b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x00\x00",
    ):
        bad(wire, RC_MALFORMED)


BAD_UTF8 = (
    b"\xff", b"\x80", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80",
    b"\xed\xbf\xbf", b"\xf0\x80\x80\x80", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\xe2\x82", b"a\xc3", b"\xc3a", b"\xe2\x28\xa1", b"\xf0\x9d\x84",
)


def _lp(raw):
    return bytes((len(raw) >> 8, len(raw) & 255)) + raw


def test_invalid_utf8_everywhere():
    for raw in BAD_UTF8 + (b"\x00", b"a\x00b", b"\xc3\xa9\x00"):
        s = _lp(raw)
        pub = b"\x30" + bytes((len(s),)) + s
        bad(pub, RC_MALFORMED)
        sub = b"\x00\x01" + s + b"\x00"
        bad(b"\x82" + bytes((len(sub),)) + sub, RC_MALFORMED)
        uns = b"\x00\x01" + s
        bad(b"\xa2" + bytes((len(uns),)) + uns, RC_MALFORMED)
        con = b"\x00\x04MQTT\x04\x02\x00\x00" + s
        bad(b"\x10" + bytes((len(con),)) + con, RC_MALFORMED)
        con = b"\x00\x04MQTT\x04\x82\x00\x00\x00\x00" + s  # username
        bad(b"\x10" + bytes((len(con),)) + con, RC_MALFORMED)
        con = _lp(raw) + b"\x04\x02\x00\x00\x00\x00"  # protocol name
        bad(b"\x10" + bytes((len(con),)) + con, RC_MALFORMED)


def test_valid_utf8_boundaries():
    # last/first code points of each length class, and around the surrogates
    for text, raw in (
        ("\x7f", b"\x7f"), ("\x80", b"\xc2\x80"), ("\u07ff", b"\xdf\xbf"),
        ("\u0800", b"\xe0\xa0\x80"), ("\ud7ff", b"\xed\x9f\xbf"),
        ("\ue000", b"\xee\x80\x80"), ("\uffff", b"\xef\xbf\xbf"),
        ("\U00010000", b"\xf0\x90\x80\x80"), ("\U0001d11e", b"\xf0\x9d\x84\x9e"),
        ("\U0010ffff", b"\xf4\x8f\xbf\xbf"), ("a\u00e9b", b"a\xc3\xa9b"),
    ):
        s = _lp(raw)
        pub = b"\x30" + bytes((len(s),)) + s
        p, used = decode(pub, 0, len(pub))
        assert p.topic == text and used == len(pub), (raw, p.topic)
        assert encode(Publish(text)) == pub


def test_packet_id_zero():
    # [MQTT-2.3.1-1]
    for wire in (
        b"\x32\x05\x00\x01t\x00\x00", b"\x34\x05\x00\x01t\x00\x00",
        b"\x82\x06\x00\x00\x00\x01a\x00", b"\xa2\x05\x00\x00\x00\x01a",
        b"\x40\x02\x00\x00", b"\x50\x02\x00\x00", b"\x62\x02\x00\x00",
        b"\x70\x02\x00\x00", b"\x90\x03\x00\x00\x00", b"\xb0\x02\x00\x00",
    ):
        bad(wire, RC_PROTOCOL_ERROR)


def test_subscribe_payload():
    bad(b"\x82\x02\x00\x01", RC_PROTOCOL_ERROR)  # [MQTT-3.8.3-3]
    bad(b"\xa2\x02\x00\x01", RC_PROTOCOL_ERROR)  # [MQTT-3.10.3-2]
    # [MQTT-3-8.3-4] requested QoS 3, reserved option bits in 3.1.1
    for o in (3, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x81):
        bad(b"\x82\x06\x00\x01\x00\x01a" + bytes((o,)), RC_MALFORMED)
    # the bad option on a later filter is found too
    bad(b"\x82\x0a\x00\x01\x00\x01a\x01\x00\x01b\x03", RC_MALFORMED)


def _connect(flags, payload):
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + b"\x00\x3c" + payload
    return b"\x10" + bytes((len(body),)) + body


def test_connect_flags():
    c = b"\x00\x01c"
    bad(_connect(0x03, c), RC_MALFORMED)  # [MQTT-3.1.2-3] reserved bit
    bad(_connect(0x0A, c), RC_MALFORMED)  # [MQTT-3.1.2-13] will QoS, no will
    bad(_connect(0x12, c), RC_MALFORMED)
    bad(_connect(0x22, c), RC_MALFORMED)  # [MQTT-3.1.2-15] will retain, no will
    bad(_connect(0x1E, c + b"\x00\x01w\x00\x00"), RC_MALFORMED)  # [MQTT-3.1.2-14] QoS 3
    bad(_connect(0x42, c + b"\x00\x02pw"), RC_MALFORMED)  # [MQTT-3.1.2-22]
    # will QoS 2 without retain is fine
    w = _connect(0x16, c + b"\x00\x01w\x00\x00")
    p, used = decode(w, 0, len(w))
    assert used == len(w) == 20
    assert p.will_qos == 2 and p.will_topic == "w" and p.will_payload == b""
    assert not p.will_retain and p.clean and p.keepalive == 60


def test_connect_level_and_name_not_judged():
    # unknown level: returned for the broker's CONNACK 0x01 [MQTT-3.1.2-2],
    # whatever follows it
    for wire in (b"\x10\x07\x00\x04MQTT\x06", b"\x10\x09\x00\x04MQTT\x02\xff\xff"):
        p, used = decode(wire, 0, len(wire))
        assert p.level == wire[8] and p.proto == "MQTT" and used == len(wire)
    wire = b"\x10\x0e\x00\x05HELLO\x04\x02\x00\x3c\x00\x01c"
    p, _ = decode(wire, 0, len(wire))
    assert p.proto == "HELLO" and p.level == 4 and p.client_id == "c"


def test_connect_v5_blocks():
    # level 5: props (len 5: session expiry 10), will props (empty), will
    # "w"/b"", password without username (allowed in 5.0)
    body = (b"\x00\x04MQTT\x05\x46\x00\x3c" b"\x05\x11\x00\x00\x00\x0a"
            b"\x00\x01c" b"\x00" b"\x00\x01w\x00\x00" b"\x00\x02pw")
    wire = b"\x10" + bytes((len(body),)) + body
    assert len(body) == 29
    for v5 in (False, True):  # the layout follows the CONNECT's own level
        p, used = decode(wire, 0, len(wire), v5)
        assert used == len(wire) and p.level == 5 and p.client_id == "c"
        assert p.props == {0x11: 10} and p.will_props == {} and p.will_topic == "w"
        assert p.password == b"pw" and p.username is None
    bad(b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x09\x00\x01c", RC_MALFORMED)
    p = Connect("c", True, 60, level=5, props={}, will_topic="w", will_props={})
    assert encode(p) == b"\x10\x14\x00\x04MQTT\x05\x06\x00\x3c\x00\x00\x01c\x00\x00\x01w\x00\x00"


def test_encode_311_mappings():
    # 3.1.1 SUBACK knows 0, 1, 2, 0x80 only
    assert encode(Suback(3, [0x87, 1])) == b"\x90\x04\x00\x03\x80\x01"
    # [MQTT-3.2.2-4] no session present with a non-zero return code
    assert encode(Connack(True, 5)) == b"\x20\x02\x00\x05"
    # 3.1.1 UNSUBACK carries only the pid
    assert encode(Unsuback(7, [0])) == b"\xb0\x02\x00\x07"
    assert encode(Disconnect(0x8E)) == b"\xe0\x00"


def test_encode_publish_payload_types():
    for pl in (b"hi", bytearray(b"hi"), memoryview(b"xhi")[1:]):
        got = encode(Publish("a/b", pl))
        assert type(got) is bytes and got == b"\x30\x07\x00\x03a/bhi", got
    assert encode(Publish(b"a/b", b"hi")) == b"\x30\x07\x00\x03a/bhi"


def test_encode_local_errors():
    for pkt in (Publish("t", b"", 1), Publish("t", b"", 3, pid=1), Puback(0),
                Puback(65536), Subscribe(0, [("a", 0)]), Publish("t" * 65536),
                Auth()):
        raises(LocalProtocolError, encode, pkt)


def test_v5_layouts():
    # Empty property blocks (edge/mqtt/props.py is not needed for these);
    # blocks with properties: test_codec_v5.py
    for pkt, wire in (
        (Puback(1, 0, {}), b"\x40\x02\x00\x01"),  # 5.0 §3.4.2.1 short form
        (Puback(1, 0x10, {}), b"\x40\x03\x00\x01\x10"),
        (Pubrel(2, 0x92, {}), b"\x62\x03\x00\x02\x92"),
        (Publish("t", b"x", 1, pid=5, props={}), b"\x32\x07\x00\x01t\x00\x05\x00x"),
        (Connack(True, 0, {}), b"\x20\x03\x01\x00\x00"),
        (Subscribe(3, [("a", 0x2D)], {}), b"\x82\x07\x00\x03\x00\x00\x01a\x2d"),
        (Suback(3, [0x00, 0x97], {}), b"\x90\x05\x00\x03\x00\x00\x97"),
        (Unsubscribe(4, ["a"], {}), b"\xa2\x06\x00\x04\x00\x00\x01a"),
        (Unsuback(4, [0x11], {}), b"\xb0\x04\x00\x04\x00\x11"),
        (Disconnect(0, {}), b"\xe0\x00"),
        (Disconnect(0x8E, {}), b"\xe0\x01\x8e"),
        (Auth(0x18, {}), b"\xf0\x01\x18"),
    ):
        assert encode(pkt, True) == wire, (type(pkt).__name__, encode(pkt, True))
        got, used = decode(wire, 0, len(wire), True)
        same(got, pkt)
        assert used == len(wire)
    # reason + property block on an ack
    p, used = decode(b"\x40\x08\x00\x01\x10\x04\x1f\x00\x01r", 0, 10, True)
    assert p.reason == 0x10 and p.props == {0x1F: "r"} and used == 10
    bad(b"\x40\x05\x00\x01\x10\x05\x1f", RC_MALFORMED, True)  # block overruns
    bad(b"\x82\x07\x00\x03\x00\x00\x01a\x40", RC_MALFORMED, True)  # [MQTT-3.8.3-5]
    bad(b"\x82\x07\x00\x03\x00\x00\x01a\x03", RC_PROTOCOL_ERROR, True)
    bad(b"\x82\x07\x00\x03\x00\x00\x01a\x30", RC_PROTOCOL_ERROR, True)
    raises(LocalProtocolError, encode, Puback(1, 0, {1: 2}), True)


def test_module_surface():
    for name in ("decode", "encode", "encode_varint", "read_varint", "packet_length"):
        assert callable(getattr(codec, name))


def test_encode_ack_and_encode_publish_match_the_packet_encoders():
    # The broker's hot path encodes these from fields; same bytes as encode()
    from edge.mqtt.packets import Puback, Pubrec, Pubrel, Pubcomp

    for cls in (Puback, Pubrec, Pubrel, Pubcomp):
        for pid in (1, 255, 256, 65535):
            for v5 in (False, True):
                assert codec.encode_ack(cls(pid).kind, pid) == encode(cls(pid), v5), (cls.__name__, pid, v5)
    # PUBLISH across the one/two/three-byte remaining-length boundaries,
    # against bytes put together by hand here
    for pl in (b"", b"x" * 120, b"y" * 200, b"z" * 20000):
        for qos, pid in ((0, 0), (1, 7), (2, 65535)):
            for retain, dup in ((False, False), (True, False), (False, True)):
                if dup and not qos:
                    continue
                body = b"\x00\x03a/b" + (bytes((pid >> 8, pid & 255)) if qos else b"") + pl
                want = bytes((0x30 | qos << 1 | dup << 3 | retain,)) + encode_varint(len(body)) + body
                got = codec.encode_publish("a/b", pl, qos, retain, dup, pid)
                assert type(got) is bytes and got == want, (len(pl), qos, retain, dup)
                assert decode(got, 0, len(got))[1] == len(got)
    raises(LocalProtocolError, codec.encode_ack, 4, 0)
