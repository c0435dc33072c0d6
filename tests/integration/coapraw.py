# A raw CoAP peer for the integration tests (RFC 7252 §3): builds and parses
# messages byte by byte, independently of edge/coap/, for what the client
# libraries will not send (a duplicate CON, a malformed datagram, an RST)
# or hide (Message-IDs, the type of each notification).
import socket
import struct

CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT, DELETE = 1, 2, 3, 4
OBSERVE, URI_PATH, CONTENT_FORMAT, URI_QUERY, BLOCK2, BLOCK1, SIZE2, SIZE1 = 6, 11, 12, 15, 23, 27, 28, 60


def code(s):
    """"2.04" -> 0x44"""
    c, d = s.split(".")
    return int(c) << 5 | int(d)


def _ext(n):
    # RFC 7252 §3.1: 0-12 in the nibble, 13: one byte + 13, 14: two bytes + 269
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes([n - 13])
    return 14, struct.pack("!H", n - 269)


def uint(n):
    """An option's uint value, shortest form (RFC 7252 §3.2)."""
    out = b""
    while n:
        out = bytes([n & 0xFF]) + out
        n >>= 8
    return out


def encode(mtype, mcode, mid, token=b"", options=(), payload=b""):
    """options: [(number, bytes)], any order (sorted here, stable)."""
    out = bytearray([0x40 | mtype << 4 | len(token), mcode])
    out += struct.pack("!H", mid) + token
    last = 0
    for num, val in sorted(options, key=lambda o: o[0]):
        d, dx = _ext(num - last)
        ln, lx = _ext(len(val))
        out += bytes([d << 4 | ln]) + dx + lx + val
        last = num
    if payload:
        out += b"\xff" + payload
    return bytes(out)


def request(mtype, mcode, mid, path, query=(), token=b"", options=(), payload=b""):
    """A request for /path?query (path "ps/a/b": one Uri-Path option per
    segment; an empty segment is an empty option)."""
    opts = [(URI_PATH, seg.encode()) for seg in path.split("/")]
    opts += [(URI_QUERY, q.encode()) for q in query]
    return encode(mtype, mcode, mid, token, opts + list(options), payload)


class Msg:
    def __init__(self, mtype, mcode, mid, token, options, payload):
        self.type, self.code, self.mid, self.token = mtype, mcode, mid, token
        self.options, self.payload = options, payload

    def opt(self, num):
        for n, v in self.options:
            if n == num:
                return v
        return None

    def uint(self, num):
        v = self.opt(num)
        return None if v is None else int.from_bytes(v, "big")

    @property
    def cls(self):
        """0x84 -> "4.04" """
        return "%d.%02d" % (self.code >> 5, self.code & 0x1F)

    def __repr__(self):
        return "Msg(type=%d, code=%s, mid=%d, token=%r, options=%r, payload=%r)" % (
            self.type, self.cls, self.mid, self.token, self.options, self.payload[:40])


def decode(data):
    b0, mcode, mid = data[0], data[1], struct.unpack_from("!H", data, 2)[0]
    assert b0 >> 6 == 1, data
    tkl = b0 & 0x0F
    token = data[4:4 + tkl]
    i = 4 + tkl
    options = []
    num = 0
    while i < len(data):
        if data[i] == 0xFF:
            return Msg(b0 >> 4 & 3, mcode, mid, token, options, data[i + 1:])
        d, ln = data[i] >> 4, data[i] & 0x0F
        i += 1
        vals = []
        for n in (d, ln):
            if n == 13:
                n = data[i] + 13
                i += 1
            elif n == 14:
                n = struct.unpack_from("!H", data, i)[0] + 269
                i += 2
            vals.append(n)
        num += vals[0]
        options.append((num, data[i:i + vals[1]]))
        i += vals[1]
    return Msg(b0 >> 4 & 3, mcode, mid, token, options, b"")


class Peer:
    """One UDP socket talking to the broker's CoAP port."""

    def __init__(self, host, port, timeout=5.0):
        self.addr = (host, port)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.settimeout(timeout)

    def send(self, data):
        self.s.sendto(data, self.addr)

    def recv(self, timeout=5.0):
        self.s.settimeout(timeout)
        data, _ = self.s.recvfrom(65536)
        return decode(data)

    def nothing(self, timeout=0.5):
        """True if no datagram arrives within timeout (a bounded wait for
        an absence: used only after a reply that would have come first)."""
        self.s.settimeout(timeout)
        try:
            self.s.recvfrom(65536)
        except socket.timeout:
            return True
        return False

    def close(self):
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
