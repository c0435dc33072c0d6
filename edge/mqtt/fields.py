# MQTT's data representations, read and written (3.1.1 §1.5 and §2.2.3, 5.0
# §1.5): variable byte integers, two-byte integers and packet ids,
# length-prefixed UTF-8 strings and binary data. The leaf both the packet
# codec (codec.py) and the 5.0 property codec (props.py) build on; the
# readers raise the peer's error (RemoteProtocolError, 0x81 Malformed Packet
# per 5.0 §1.2) when a field runs past the packet's end.
from edge.compat import const
from edge.errors import LocalProtocolError, RemoteProtocolError

_RC_MALFORMED = const(0x81)
_RC_PROTOCOL_ERROR = const(0x82)
_MAX_VARINT = const(268435455)  # 4 bytes of 7 bits (3.1.1 §2.2.3)


def malformed(msg):
    return RemoteProtocolError(_RC_MALFORMED, msg)


def short():
    return malformed("remaining length too short")


def bad_utf8():
    return malformed("invalid UTF-8 [MQTT-1.5.3-1]")


# ---- variable byte integer (3.1.1 §2.2.3, 5.0 §1.5.5) ----------------------
def encode_varint(n):
    if not 0 <= n <= _MAX_VARINT:
        raise LocalProtocolError(_RC_MALFORMED, "varint out of range")
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while n > 127:
        out.append(n & 127 | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf, i, end):
    # (value, next_i); value -1 if buf[i:end] ends inside the varint
    n = 0
    shift = 0
    while i < end:
        b = buf[i]
        i += 1
        n |= (b & 127) << shift
        if not b & 128:
            return n, i
        shift += 7
        if shift == 28:
            raise malformed("varint longer than 4 bytes")
    return -1, i


def packet_length(buf, start, end):
    # fixed header + remaining length of the packet at start; -1 while the
    # remaining-length varint is incomplete
    n, i = read_varint(buf, start + 1, end)
    if n < 0:
        return -1
    return i - start + n


# ---- readers: (value, next_i) from a buffer, within [i, end) ----------------
def read_u16(mv, i, end):
    if i + 2 > end:
        raise short()
    return mv[i] << 8 | mv[i + 1]


def read_pid(mv, i, end):
    pid = read_u16(mv, i, end)
    if not pid:
        # [MQTT-2.3.1-1] packets that carry a packet id need a non-zero one
        raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "packet id 0")
    return pid


def read_bin(mv, i, end):
    # 2-byte length + binary data (§1.5.6) -> (bytes, next_i)
    j = i + 2 + read_u16(mv, i, end)
    if j > end:
        raise short()
    return bytes(mv[i + 2:j]), j


def read_str(mv, i, end):
    # 2-byte length + UTF-8 string (§1.5.3) -> (str, next_i)
    i += 2
    j = i + read_u16(mv, i - 2, end)
    if j > end:
        raise short()
    try:
        s = str(mv[i:j], "utf-8")
    except UnicodeError:
        raise bad_utf8()
    if len(s) != j - i:
        # Not pure ASCII (both decoders reject lone lead and continuation
        # bytes, so equal lengths mean ASCII). MicroPython's decoder accepts
        # overlong forms, surrogates and code points over U+10FFFF, so check
        # by hand on both runtimes (CPython has already rejected those).
        check_utf8(mv, i, j)
    if "\x00" in s:
        raise malformed("U+0000 in a UTF-8 string [MQTT-1.5.3-2]")
    return s, j


def check_utf8(mv, i, j):
    # Well-formed UTF-8 per Unicode Table 3-7 [MQTT-1.5.3-1]: the lead byte
    # gives the number of continuation bytes k and the second byte's range
    # (which excludes overlong forms, surrogates and code points > U+10FFFF).
    while i < j:
        c = mv[i]
        i += 1
        if c < 0x80:
            continue
        k = (c > 0xC1) + (c > 0xDF) + (c > 0xEF) if c < 0xF5 else 0
        lo = 0xA0 if c == 0xE0 else 0x90 if c == 0xF0 else 0x80
        hi = 0x9F if c == 0xED else 0x8F if c == 0xF4 else 0xBF
        if not k or i + k > j or not lo <= mv[i] <= hi:
            raise bad_utf8()
        for m in range(i + 1, i + k):
            if mv[m] & 0xC0 != 0x80:
                raise bad_utf8()
        i += k


# ---- writers ----------------------------------------------------------------
def len_prefixed(x):
    # 2-byte length prefix + UTF-8 string or binary data
    if type(x) is str:
        x = x.encode()
    n = len(x)
    if n > 0xFFFF:
        raise LocalProtocolError(_RC_MALFORMED, "field over 65535 bytes")
    return bytes((n >> 8, n & 255)) + x


def pid_bytes(pid):
    if not 0 < pid < 65536:
        raise LocalProtocolError(_RC_PROTOCOL_ERROR, "packet id %r" % pid)
    return bytes((pid >> 8, pid & 255))
