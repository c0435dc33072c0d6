# Helpers for the MQTT 5.0 conformance tests (test_12, test_13): raw 5.0
# connections, property blocks built and read byte by byte, and waits with a
# deadline. Like mqttraw.py, independent of edge/: the code under test must
# not grade itself.
import struct
import time

from . import mqttraw as raw
from .clients import round_trip, unique_id


def u16(n):
    return struct.pack("!H", n)


def u32(n):
    return struct.pack("!I", n)


def block(*parts):
    """A property block: Property Length, then the properties."""
    body = b"".join(parts)
    return raw.varint(len(body)) + body


def user_prop(name, value):
    """User Property (0x26): a UTF-8 string pair (bytes pass untouched)."""
    return b"\x26" + raw.ustr(name) + raw.ustr(value)


def connect5(flags, payload, props=b"\x00", keepalive=60):
    """A 5.0 CONNECT with the Connect Flags byte and the payload exactly as given."""
    var = raw.ustr("MQTT") + bytes((5, flags)) + u16(keepalive) + props
    return raw.packet(0x10, var + payload)


def unsubscribe5(pid, filters, props=b"\x00"):
    body = u16(pid) + props
    for f in filters:
        body += raw.ustr(f)
    return raw.packet(0xA2, body)


def ack5(kind, pid, reason):
    """PUBACK/PUBREC/PUBREL/PUBCOMP with a reason code and no properties."""
    return raw.packet((kind << 4) | (2 if kind == raw.PUBREL else 0), u16(pid) + bytes((reason,)))


def still_serving(broker):
    broker.assert_alive()
    round_trip(broker.host, broker.port)
    broker.assert_alive()


def raw5(broker, client_id=None, props_block=b"\x00", **kw):
    """A raw 5.0 connection, CONNACK 0 read; returns (client, CONNACK body)."""
    c = raw.RawClient(broker.host, broker.port)
    c.send(raw.connect(client_id or unique_id("c12"), level=5, props=props_block, **kw))
    ack = c.expect(raw.CONNACK)
    assert ack.body[1] == 0, ack
    return c, ack.body


def refused(broker, data):
    """Send data (a CONNECT the broker must refuse): returns the CONNACK body,
    after checking that nothing follows it but the close."""
    with raw.RawClient(broker.host, broker.port) as c:
        c.send(data)
        ack = c.expect(raw.CONNACK)
        rest = c.wait_closed()
        assert rest == b"", "after CONNACK %r the broker sent %r" % (ack, rest)
    return ack.body


def disconnect_reason(c):
    """The reason code of the DISCONNECT the broker sends before closing;
    nothing may follow it [MQTT-3.14.4-1]."""
    while True:
        p = c.read_packet()
        if p.type == raw.DISCONNECT:
            rest = c.wait_closed()
            assert rest == b"", "after DISCONNECT %r the broker sent %r" % (p, rest)
            return p.body[0]


def read_varint(b, i):
    n = shift = 0
    while True:
        x = b[i]
        i += 1
        n |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return n, i


# Property identifiers by wire type (5.0 Table 2-4)
_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_U16 = {0x13, 0x21, 0x22, 0x23}
_U32 = {0x02, 0x11, 0x18, 0x27}
_STR = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BIN = {0x09, 0x16}


def parse_props(b):
    """[(id, value)] in wire order; strings stay bytes (byte-exact checks),
    a User Property is (name, value)."""
    out = []
    i = 0
    while i < len(b):
        pid, i = read_varint(b, i)
        if pid in _BYTE:
            v = b[i]
            i += 1
        elif pid in _U16:
            v = struct.unpack_from("!H", b, i)[0]
            i += 2
        elif pid in _U32:
            v = struct.unpack_from("!I", b, i)[0]
            i += 4
        elif pid == 0x0B:
            v, i = read_varint(b, i)
        elif pid in _STR or pid in _BIN:
            n = struct.unpack_from("!H", b, i)[0]
            v = bytes(b[i + 2:i + 2 + n])
            i += 2 + n
        elif pid == 0x26:
            n = struct.unpack_from("!H", b, i)[0]
            k = bytes(b[i + 2:i + 2 + n])
            i += 2 + n
            n = struct.unpack_from("!H", b, i)[0]
            v = (k, bytes(b[i + 2:i + 2 + n]))
            i += 2 + n
        else:
            raise AssertionError("unknown property 0x%02x in %r" % (pid, b))
        out.append((pid, v))
    return out


class Pub:
    """A 5.0 PUBLISH from the broker, decoded: topic (bytes), pid (None at
    QoS 0), props ([(id, value)]), payload, qos, retain, dup."""

    def __init__(self, p):
        assert p.type == raw.PUBLISH, p
        b = p.body
        self.qos = (p.flags >> 1) & 3
        self.retain = bool(p.flags & 1)
        self.dup = bool(p.flags & 8)
        n = struct.unpack_from("!H", b, 0)[0]
        self.topic = bytes(b[2:2 + n])
        i = 2 + n
        self.pid = None
        if self.qos:
            self.pid = struct.unpack_from("!H", b, i)[0]
            i += 2
        plen, i = read_varint(b, i)
        self.props = parse_props(b[i:i + plen])
        self.payload = bytes(b[i + plen:])
        self.packet = p

    def prop(self, pid):
        for k, v in self.props:
            if k == pid:
                return v
        return None

    def __repr__(self):
        return "Pub(%r, %r, qos=%d, retain=%d, dup=%d, pid=%r, props=%r)" % (
            self.topic, self.payload[:40], self.qos, self.retain, self.dup, self.pid, self.props)


def next_pub(c, timeout=5.0):
    """The next packet, which must be a PUBLISH."""
    return Pub(c.expect(raw.PUBLISH, timeout))


def subscriber(broker, topic, opts=1, client_id=None, props_block=b"\x00", **kw):
    """A raw 5.0 client subscribed to topic (SUBACK read). opts: the
    Subscription Options byte, the QoS in bits 0-1."""
    c, _ = raw5(broker, client_id, props_block, **kw)
    c.send(raw.subscribe(1, [(topic, opts)], props=b"\x00"))
    ack = c.expect(raw.SUBACK)
    assert ack.body[3:] == bytes((opts & 3,)), ack
    return c


def publisher(broker):
    """A raw 5.0 client to publish from (use publish_qos1 to know it was routed)."""
    c, _ = raw5(broker, unique_id("pub"))
    return c


def publish_qos1(c, topic, payload, pid=1, props=b"\x00", retain=False):
    """QoS 1 PUBLISH and its PUBACK: once it returns, the broker has routed
    the message. Returns the PUBACK's reason code."""
    c.send(raw.publish(topic, payload, 1, retain=retain, pid=pid, props=props))
    ack = c.expect(raw.PUBACK)
    assert ack.body[:2] == u16(pid), ack
    return ack.body[2] if len(ack.body) > 2 else 0


def wait_log(broker, text, timeout=10.0):
    """Wait until the broker's log holds text."""
    deadline = time.monotonic() + timeout
    while text not in broker.log_text():
        assert time.monotonic() < deadline, "the broker never logged %r" % text
        time.sleep(0.02)  # polling the log, not waiting blindly


def closed_by_broker(broker, client_id, timeout=10.0):
    """Wait until the broker has logged closing client_id's connection."""
    wait_log(broker, "client %s closed" % client_id, timeout)


def wait_until(t):
    """Let the clock pass monotonic time t: the event some tests wait for is
    an interval running out (Message Expiry, Session Expiry), nothing to poll."""
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)
