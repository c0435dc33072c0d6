# A small MQTT 3.1.1 / 5.0 publishing client for a sensor board (docs/fleet.md).
#
# Why not edge/mqtt's codec: a sensor only writes CONNECT, PUBLISH, PUBREL,
# PINGREQ and DISCONNECT and only reads CONNACK, the publish acks, PINGRESP and
# a 5.0 DISCONNECT. edge/mqtt/codec.py (+ packets.py, props.py) decodes and
# encodes every packet of both versions for the broker: ~13 KB of .mpy and a
# class per packet, where these few functions are ~2 KB and build each packet
# as one bytes object (no packet objects on the heap).
#
# Blocking socket with poll(): no asyncio, so a sensor runs in a few KB of heap.
# The one input buffer is preallocated; a packet larger than it (no sensor
# subscribes, so the broker sends none) closes the connection.
import select
import socket
import struct

try:
    from micropython import const
except ImportError:  # CPython, for debugging
    def const(x):
        return x

CONNACK = const(2)
PUBACK = const(4)
PUBREC = const(5)
PUBCOMP = const(7)
PINGRESP = const(13)
DISCONNECT = const(14)
_BUF = const(128)


class MQTTError(OSError):
    pass


def _varint(n):
    out = bytearray()
    while True:
        b = n & 127
        n >>= 7
        out.append(b | 128 if n else b)
        if not n:
            return out


def _s(x):
    # 2-byte length prefix + string/bytes (3.1.1 §1.5.3)
    if type(x) is str:
        x = x.encode()
    return struct.pack("!H", len(x)) + x


class Client:
    def __init__(self, cid, host, port, v5=False, keepalive=30, clean=True,
                 expiry=0, will=None):
        self.cid = cid
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self.v5 = v5
        self.keepalive = keepalive
        self.clean = clean
        self.expiry = expiry  # 5.0 Session Expiry Interval (s); 3.1.1: clean=False
        self.will = will  # (topic, payload, qos) or None
        self.sock = None
        self.buf = bytearray(_BUF)
        self.mv = memoryview(self.buf)
        self.n = 0
        self.poller = select.poll()

    # ---- connection ------------------------------------------------------
    def connect(self, timeout_s=5):
        """TCP connect + CONNECT; returns session_present. Raises OSError."""
        self.close()
        s = socket.socket()
        self.sock = s
        s.settimeout(timeout_s)
        s.connect(self.addr)
        # Non-blocking from here: a blocking readinto waits for a full buffer
        # (MicroPython streams); poll() says when there is something to read
        s.setblocking(False)
        self.n = 0
        self.poller = select.poll()
        self.poller.register(s, select.POLLIN)
        flags = 2 if self.clean else 0
        body = bytearray(b"\x00\x04MQTT")
        body.append(5 if self.v5 else 4)
        w = self.will
        if w:
            flags |= 4 | w[2] << 3
        body.append(flags)
        body += struct.pack("!H", self.keepalive)
        if self.v5:
            # 5.0 §3.1.2.11.2: Session Expiry Interval, or no properties
            body += b"\x05\x11" + struct.pack("!I", self.expiry) if self.expiry else b"\x00"
        body += _s(self.cid)
        if w:
            if self.v5:
                body.append(0)  # no will properties: delay 0 (5.0 §3.1.3.2.2)
            body += _s(w[0]) + _s(w[1])
        self._send(0x10, body)
        deadline = timeout_s * 1000
        while deadline > 0:
            p = self.poll(100)
            deadline -= 100
            if p is None:
                continue
            if p[0] != CONNACK:
                raise MQTTError("expected CONNACK, got type %d" % p[0])
            if p[2]:
                raise MQTTError("CONNACK refused: %d" % p[2])
            return bool(p[1])
        raise MQTTError("no CONNACK")

    def close(self):
        if self.sock is not None:
            try:
                self.poller.unregister(self.sock)
            except (OSError, ValueError, KeyError):
                pass
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def disconnect(self):
        try:
            self._write(b"\xe0\x00")  # 5.0: reason 0, will discarded [MQTT-3.14.4-3]
        except (OSError, AttributeError):
            pass
        self.close()

    # ---- output ----------------------------------------------------------
    def _write(self, data):
        s = self.sock
        n = s.write(data) if hasattr(s, "write") else s.send(data)
        if n != len(data):  # a link that stopped taking bytes: the socket buffer is full
            raise OSError("send buffer full")

    def _send(self, b0, body):
        self._write(bytes((b0,)) + _varint(len(body)) + body)

    def publish(self, topic, payload, qos=0, pid=0, dup=False):
        body = _s(topic)
        if qos:
            body += struct.pack("!H", pid)
        if self.v5:
            body += b"\x00"  # no properties
        self._send(0x30 | qos << 1 | (8 if dup else 0), body + payload)

    def pubrel(self, pid):
        self._write(struct.pack("!BBH", 0x62, 2, pid))

    def ping(self):
        self._write(b"\xc0\x00")

    # ---- input -----------------------------------------------------------
    def poll(self, ms):
        """One packet read within ms: (type, a, b) or None.
        CONNACK: (2, session_present, rc); acks: (type, pid, rc);
        PINGRESP: (13, 0, 0). Raises OSError when the link closed."""
        p = self._parse()
        if p is not None:
            return p
        if not self.poller.poll(ms):
            return None
        s = self.sock
        n = s.readinto(self.mv[self.n:]) if hasattr(s, "readinto") else s.recv_into(self.mv[self.n:])
        if not n:
            raise OSError("closed by peer")
        self.n += n
        return self._parse()

    def _parse(self):
        buf = self.buf
        end = self.n
        if end < 2:
            return None
        rl = 0
        sh = 0
        i = 1
        while True:
            if i >= end:
                return None
            b = buf[i]
            i += 1
            rl |= (b & 127) << sh
            if not b & 128:
                break
            sh += 7
        total = i + rl
        if total > _BUF:
            raise MQTTError("packet of %d bytes over the sensor's buffer" % total)
        if end < total:
            return None
        kind = buf[0] >> 4
        if kind == DISCONNECT:  # 5.0 server DISCONNECT (e.g. 0x8E taken over)
            raise MQTTError("DISCONNECT from broker: 0x%02x" % (buf[i] if rl else 0))
        a = b = 0
        if kind == CONNACK and rl >= 2:
            a = buf[i] & 1
            b = buf[i + 1]
        elif rl >= 2:
            a = buf[i] << 8 | buf[i + 1]
            b = buf[i + 2] if rl > 2 else 0  # 5.0 reason code (§3.4.2.1)
        buf[0:end - total] = buf[total:end]
        self.n = end - total
        return kind, a, b
