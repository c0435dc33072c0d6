# MQTT 3.1.1 bytes for the load generator: encoders, a generic incremental
# parser for the few control packets (CONNACK, SUBACK, ...), and the payload
# layout that carries publisher index, sequence number and send time.
# Deliberately independent of edge/: the broker under test must not grade
# itself, and the generator must talk to mosquitto and amqtt just the same.
import struct

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

DISCONNECT_BYTES = b"\xe0\x00"
PINGREQ_BYTES = b"\xc0\x00"

# Payload: magic "EB" (0x4542), publisher index, sequence number, send time
# (time.monotonic_ns(), 0 when not measured), then filler up to the size.
PAYLOAD = struct.Struct(">HHIQ")
MAGIC = 0x4542
PAYLOAD_MIN = PAYLOAD.size  # 16


def varint(n):
    """Remaining Length (3.1.1 §2.2.3)."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ustr(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack(">H", len(s)) + s


def packet(first_byte, body):
    return bytes([first_byte]) + varint(len(body)) + body


def connect(client_id, keepalive=300, clean=True):
    var = ustr("MQTT") + bytes([4, 0x02 if clean else 0]) + struct.pack(">H", keepalive)
    return packet(0x10, var + ustr(client_id))


def subscribe(pid, filters):
    """filters: [(filter, qos)]."""
    body = struct.pack(">H", pid)
    for f, q in filters:
        body += ustr(f) + bytes([q])
    return packet(0x82, body)


def ack(kind, pid):
    """PUBACK/PUBREC/PUBCOMP (flags 0) or PUBREL (flags 2) [MQTT-3.6.1-1]."""
    return bytes([(kind << 4) | (2 if kind == PUBREL else 0), 2, pid >> 8, pid & 0xFF])


def publish_template(topic, qos, payload_size, pub_index):
    """(template bytes, offset of the packet id or -1, offset of the payload).

    Every message of one publisher has the same length, so a batch is the
    template repeated, with sequence number and packet id patched in place.
    """
    if payload_size < PAYLOAD_MIN:
        raise ValueError("payload must be at least %d bytes" % PAYLOAD_MIN)
    t = ustr(topic)
    rl = len(t) + (2 if qos else 0) + payload_size
    head = bytes([0x30 | (qos << 1)]) + varint(rl) + t
    pid_off = len(head) if qos else -1
    if qos:
        head += b"\x00\x01"
    filler = bytes((i * 7) & 0xFF for i in range(payload_size - PAYLOAD_MIN))
    body = PAYLOAD.pack(MAGIC, pub_index, 0, 0) + filler
    return head + body, pid_off, len(head)


class Parser:
    """Generic incremental parser: feed bytes, get (first_byte, body) pairs.
    Used for handshakes and rare packets; the hot paths parse inline."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        buf = self.buf
        i, n = 0, len(buf)
        while i + 2 <= n:
            rl, shift, j = 0, 0, i + 1
            while j < n:
                b = buf[j]
                j += 1
                rl |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift >= 28:
                    raise ValueError("malformed remaining length")
            else:
                break  # remaining length not complete yet
            if j + rl > n:
                break
            out.append((buf[i], bytes(buf[j:j + rl])))
            i = j + rl
        del buf[:i]
        return out
