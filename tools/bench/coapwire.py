# CoAP bytes for the CoAP benchmark's load generator, written from RFC 7252
# §3 (message format) and RFC 7641 §2 (the Observe option). Deliberately
# independent of edge/coap/: the endpoint under test must not grade itself,
# and the generator must talk to aiocoap and libcoap just the same.
import struct

VERSION = 1
CON, NON, ACK, RST = 0, 1, 2, 3

# Codes, class << 5 | detail (RFC 7252 §12.1)
EMPTY = 0x00
GET, POST, PUT, DELETE = 0x01, 0x02, 0x03, 0x04
CREATED, DELETED, VALID, CHANGED, CONTENT = 0x41, 0x42, 0x43, 0x44, 0x45
NOT_FOUND = 0x84

# Option numbers (RFC 7252 §12.2, RFC 7641 §2)
OBSERVE = 6
URI_PATH = 11
CONTENT_FORMAT = 12
URI_QUERY = 15

PAYLOAD_MARKER = 0xFF


def code_str(code):
    """'2.05' for 0x45."""
    return "%d.%02d" % (code >> 5, code & 0x1F)


def uint(n):
    """A uint option value: shortest big-endian form, empty for 0 (§3.2)."""
    out = b""
    while n:
        out = bytes([n & 0xFF]) + out
        n >>= 8
    return out


def _ext(n):
    """(4-bit nibble, extended bytes) for an option delta or length (§3.1)."""
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes([n - 13])
    return 14, struct.pack(">H", n - 269)


def encode(mtype, code, mid, token=b"", options=(), payload=b""):
    """One message. options: [(number, bytes)], any order (sorted here,
    stably, so repeated options keep their order)."""
    if len(token) > 8:
        raise ValueError("token longer than 8 bytes")
    out = bytearray([(VERSION << 6) | (mtype << 4) | len(token), code, mid >> 8, mid & 0xFF])
    out += token
    last = 0
    for num, val in sorted(options, key=lambda o: o[0]):
        d, dx = _ext(num - last)
        ln, lx = _ext(len(val))
        out.append((d << 4) | ln)
        out += dx + lx + val
        last = num
    if payload:
        out.append(PAYLOAD_MARKER)
        out += payload
    return bytes(out)


def uri_options(path, query=()):
    """Uri-Path (one per segment) and Uri-Query options for '/a/b', ['x=1']."""
    opts = [(URI_PATH, seg.encode()) for seg in path.strip("/").split("/") if seg]
    opts += [(URI_QUERY, q.encode()) for q in query]
    return opts


def decode(data):
    """(type, code, mid, token, [(number, bytes)], payload); ValueError when
    the datagram is not a well-formed CoAP message (§3, §4.2)."""
    n = len(data)
    if n < 4:
        raise ValueError("shorter than the 4-byte header")
    b0 = data[0]
    if b0 >> 6 != VERSION:
        raise ValueError("version %d" % (b0 >> 6))
    tkl = b0 & 0x0F
    if tkl > 8:
        raise ValueError("token length %d" % tkl)
    i = 4 + tkl
    if i > n:
        raise ValueError("truncated token")
    token = bytes(data[4:i])
    opts = []
    num = 0
    payload = b""
    while i < n:
        b = data[i]
        i += 1
        if b == PAYLOAD_MARKER:
            if i == n:
                raise ValueError("payload marker with no payload")
            payload = bytes(data[i:])
            break
        d, ln = b >> 4, b & 0x0F
        if d == 15 or ln == 15:
            raise ValueError("reserved nibble 15")
        d, i = _read_ext(data, d, i)
        ln, i = _read_ext(data, ln, i)
        num += d
        if i + ln > n:
            raise ValueError("truncated option value")
        opts.append((num, bytes(data[i:i + ln])))
        i += ln
    code = data[1]
    if code == EMPTY and (tkl or i < n or opts):
        raise ValueError("empty message with content")
    return (b0 >> 4) & 3, code, (data[2] << 8) | data[3], token, opts, payload


def _read_ext(data, v, i):
    if v == 13:
        if i >= len(data):
            raise ValueError("truncated extended option field")
        return data[i] + 13, i + 1
    if v == 14:
        if i + 2 > len(data):
            raise ValueError("truncated extended option field")
        return ((data[i] << 8) | data[i + 1]) + 269, i + 2
    return v, i


def option(opts, number):
    """The first value of an option, or None."""
    for num, val in opts:
        if num == number:
            return val
    return None


def to_int(val):
    n = 0
    for b in val:
        n = (n << 8) | b
    return n


def empty(mtype, mid):
    """An Empty message: ACK or RST of mid, or a CON ping (§4.2, §4.3)."""
    return bytes([(VERSION << 6) | (mtype << 4), EMPTY, mid >> 8, mid & 0xFF])


def payload_of(data):
    """The payload of a datagram, walking the options (b"" if none); the hot
    path of an observer, so no option list is built."""
    n = len(data)
    i = 4 + (data[0] & 0x0F)
    while i < n:
        b = data[i]
        if b == PAYLOAD_MARKER:
            return data[i + 1:]
        d, ln = b >> 4, b & 0x0F
        i += 1 + (1 if d == 13 else 2 if d == 14 else 0)
        if ln == 13:
            ln = data[i] + 13
            i += 1
        elif ln == 14:
            ln = ((data[i] << 8) | data[i + 1]) + 269
            i += 2
        i += ln
    return b""
