# Tiny hand-rolled MQTT 3.1.1 encoders and a blocking raw-socket client, for
# crafting exactly the bytes a test needs (including broken ones). 5.0: the
# `props` arguments are raw property blocks (Property Length included), so a
# test can write a broken one byte by byte.
# Deliberately independent of edge/: the code under test must not grade itself.
import socket
import struct
import time

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PINGREQ_BYTES = b"\xc0\x00"
DISCONNECT_BYTES = b"\xe0\x00"


# -- encoders ----------------------------------------------------------------

def varint(n):
    """Remaining Length encoding (3.1.1 §2.2.3)."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ustr(s):
    """Length-prefixed string; bytes pass through untouched (for bad UTF-8)."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    return struct.pack("!H", len(s)) + s


def packet(first_byte, body):
    return bytes([first_byte]) + varint(len(body)) + body


def connect(client_id="", clean=True, keepalive=60, will=None, username=None,
            password=None, proto_name=b"MQTT", level=4, reserved_flag=False, props=b"\x00",
            will_props=b"\x00"):
    """will = (topic, payload, qos, retain). props, will_props: level 5 only."""
    flags = 0
    payload = ustr(client_id)
    if clean:
        flags |= 0x02
    if will is not None:
        w_topic, w_payload, w_qos, w_retain = will
        flags |= 0x04 | (w_qos << 3) | (0x20 if w_retain else 0)
        if isinstance(w_payload, str):
            w_payload = w_payload.encode()
        payload += (will_props if level == 5 else b"") + ustr(w_topic) + \
            struct.pack("!H", len(w_payload)) + w_payload
    if username is not None:
        flags |= 0x80
        payload += ustr(username)
    if password is not None:
        flags |= 0x40
        payload += ustr(password)
    if reserved_flag:
        flags |= 0x01
    var = ustr(proto_name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        var += props
    return packet(0x10, var + payload)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=None, first_byte=None,
            props=None):
    if isinstance(payload, str):
        payload = payload.encode()
    if first_byte is None:
        first_byte = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = ustr(topic)
    if pid is None and (first_byte >> 1) & 0x03:
        pid = 1
    if pid is not None:
        body += struct.pack("!H", pid)
    if props is not None:  # a 5.0 PUBLISH
        body += props
    return packet(first_byte, body + payload)


def subscribe(pid, filters, first_byte=0x82, props=None):
    """filters: list of (filter, qos); props: a 5.0 property block."""
    body = struct.pack("!H", pid) + (props or b"")
    for f, q in filters:
        body += ustr(f) + bytes([q])
    return packet(first_byte, body)


def unsubscribe(pid, filters, first_byte=0xA2):
    body = struct.pack("!H", pid)
    for f in filters:
        body += ustr(f)
    return packet(first_byte, body)


def puback(pid):
    return packet(0x40, struct.pack("!H", pid))


def pubrec(pid):
    return packet(0x50, struct.pack("!H", pid))


def pubrel(pid, first_byte=0x62):
    return packet(first_byte, struct.pack("!H", pid))


def pubcomp(pid):
    return packet(0x70, struct.pack("!H", pid))


# -- decoding what the broker sends back -----------------------------------------

class Packet:
    def __init__(self, first_byte, body):
        self.first_byte = first_byte
        self.type = first_byte >> 4
        self.flags = first_byte & 0x0F
        self.body = body

    def __repr__(self):
        return "Packet(type=%d, flags=0x%x, body=%r)" % (self.type, self.flags, self.body)

    # CONNACK
    @property
    def session_present(self):
        return self.body[0] & 0x01

    @property
    def return_code(self):
        return self.body[1]

    # PUBLISH
    def publish_fields(self):
        """-> (topic, payload, qos, retain, dup, pid)"""
        qos = (self.flags >> 1) & 0x03
        tlen = struct.unpack_from("!H", self.body, 0)[0]
        topic = self.body[2:2 + tlen].decode("utf-8")
        i = 2 + tlen
        pid = None
        if qos:
            pid = struct.unpack_from("!H", self.body, i)[0]
            i += 2
        return topic, self.body[i:], qos, bool(self.flags & 1), bool(self.flags & 8), pid


class Closed(Exception):
    """The broker closed the connection (EOF or reset)."""


class RawClient:
    """A blocking socket with deadline-based reads. Never sleeps blindly."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            raise Closed()
        self.buf += chunk

    def _try_parse(self):
        if len(self.buf) < 2:
            return None
        mult, n, i = 1, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise ValueError("broker sent a malformed remaining length")
        if len(self.buf) < i + n:
            return None
        pkt = Packet(self.buf[0], self.buf[i:i + n])
        self.buf = self.buf[i + n:]
        return pkt

    def read_packet(self, timeout=5.0):
        """Next packet; raises Closed on EOF, socket.timeout on deadline."""
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._try_parse()
            if pkt is not None:
                return pkt
            if self.eof:
                raise Closed()
            self._fill(deadline)

    def expect(self, ptype, timeout=5.0):
        pkt = self.read_packet(timeout)
        assert pkt.type == ptype, "expected packet type %d, got %r" % (ptype, pkt)
        return pkt

    def connect(self, client_id, timeout=5.0, **kw):
        """CONNECT and require CONNACK accepted; returns the CONNACK packet."""
        self.send(connect(client_id, **kw))
        ack = self.expect(CONNACK, timeout)
        assert ack.body[1] == 0, "CONNACK refused: %r" % (ack,)
        return ack

    def wait_closed(self, timeout=5.0):
        """Wait until the broker closes the socket; return the bytes it sent first.

        AssertionError if it is still open at the deadline."""
        deadline = time.monotonic() + timeout
        got = self.buf
        self.buf = b""
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("broker did not close the connection within %.1fs "
                                     "(received %r)" % (timeout, got))
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.eof = True
            got += chunk
        return got

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Close with RST instead of FIN (linger 0): a 'network failure'."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
