# CoAP messages (RFC 7252 §3): one datagram is one message, decoded whole or
# refused as a message format error. A message is a tuple
#   (type, code, mid, token, opts, payload)
# with opts a flat list [number, value, number, value, ...] in the order of
# the wire (ascending numbers, RFC 7252 §3.1), values as bytes: one list per
# message and no object per option (docs/design.md H11).
from edge.compat import const

# Message type RST (RFC 7252 §3)
_RST = const(3)
_PAYLOAD_MARKER = const(0xFF)
# Option header nibbles (RFC 7252 §3.1)
_EXT1 = const(13)  # one extension byte, value - 13
_EXT2 = const(14)  # two extension bytes, value - 269
_EXT2_BASE = const(269)
_RESERVED = const(15)  # in a delta or a length: a message format error

# Longest value of each option number we know (RFC 7252 §5.10, RFC 7641
# §2, RFC 7959 §2.1, §4), indexed by number; 0: not one we recognise. A
# byte string: one object, no RAM per entry on a board.
#   3 Uri-Host 255, 4 ETag 8, 6 Observe 3, 7 Uri-Port 2, 11 Uri-Path 255,
#   12 Content-Format 2, 14 Max-Age 4, 15 Uri-Query 255, 17 Accept 2,
#   23 Block2 3, 27 Block1 3, 28 Size2 4, 60 Size1 4
# If-Match (1), If-None-Match (5), Proxy-Uri (35) and Proxy-Scheme (39) are
# left out on purpose: we implement no conditional requests and no proxy,
# so as critical options they make a request fail (check_options).
_MAXLEN = (b"\x00\x00\x00\xff\x08\x00\x03\x02\x00\x00\x00\xff\x02\x00\x04\xff"
           b"\x00\x02\x00\x00\x00\x00\x00\x03\x00\x00\x00\x03\x04\x00\x00\x00"
           b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
           b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04")
_REPEATABLE = (4, 11, 15)  # ETag, Uri-Path, Uri-Query (RFC 7252 §5.10)
_PROXY_URI = const(35)
_PROXY_SCHEME = const(39)
_BAD_OPTION = const(0x82)     # 4.02
_NO_PROXYING = const(0xA5)    # 5.05 Proxying Not Supported


def decode(data):
    """The message in `data` (bytes, one datagram), or None if it is not a
    well-formed CoAP version 1 message (RFC 7252 §3, §4.1)."""
    n = len(data)
    if n < 4:
        return None
    b = data[0]
    tkl = b & 15
    mtype = b >> 4 & 3
    if b >> 6 != 1 or tkl > 8:  # lengths 9-15 are reserved (RFC 7252 §3)
        return None
    code = data[1]
    i = 4 + tkl
    if i > n or (code == 0 and n > 4):
        # an Empty message is the 4-byte header alone (RFC 7252 §4.1)
        return None
    token = data[4:i]
    opts = []
    num = 0
    payload = b""
    while i < n:
        b = data[i]
        i += 1
        if b == _PAYLOAD_MARKER:
            if i == n:
                return None  # a marker with no payload (RFC 7252 §3)
            payload = data[i:]
            break
        delta = b >> 4
        size = b & 15
        if delta >= _EXT1:
            if delta == _RESERVED:
                return None
            if delta == _EXT1:
                if i >= n:
                    return None
                delta = data[i] + _EXT1
                i += 1
            else:
                if i + 1 >= n:
                    return None
                delta = (data[i] << 8 | data[i + 1]) + _EXT2_BASE
                i += 2
        if size >= _EXT1:
            if size == _RESERVED:
                return None
            if size == _EXT1:
                if i >= n:
                    return None
                size = data[i] + _EXT1
                i += 1
            else:
                if i + 1 >= n:
                    return None
                size = (data[i] << 8 | data[i + 1]) + _EXT2_BASE
                i += 2
        if i + size > n:
            return None
        num += delta
        opts.append(num)
        opts.append(data[i:i + size])
        i += size
    return mtype, code, data[2] << 8 | data[3], token, opts, payload


def check_options(opts):
    """0 if every option may be processed, else the response code: 4.02
    Bad Option for a critical option we do not recognise, one repeated that
    may not be, or one with a value too long (RFC 7252 §5.4.1, §5.4.5);
    5.05 for Proxy-Uri/Proxy-Scheme, as we are no proxy (RFC 7252 §5.10.2).
    An elective option in those cases is ignored (RFC 7252 §5.4.1)."""
    last = -1
    for k in range(0, len(opts), 2):
        num = opts[k]
        if num & 1:  # critical (RFC 7252 §5.4.6)
            if num == _PROXY_URI or num == _PROXY_SCHEME:
                return _NO_PROXYING
            top = _MAXLEN[num] if num < len(_MAXLEN) else 0
            if not top or len(opts[k + 1]) > top or (num == last and num not in _REPEATABLE):
                return _BAD_OPTION
        last = num
    return 0


def encode(mtype, code, mid, token, opts, payload):
    """The message as a bytearray. opts: a flat list of numbers (ascending)
    and values (bytes, str, or int for the uint options)."""
    buf = bytearray(4)
    buf[0] = 0x40 | mtype << 4 | len(token)
    buf[1] = code
    buf[2] = mid >> 8
    buf[3] = mid & 0xFF
    buf += token
    last = 0
    for k in range(0, len(opts), 2):
        num = opts[k]
        v = opts[k + 1]
        if type(v) is int:
            v = uint(v)
        elif type(v) is str:
            v = v.encode()
        # RFC 7252 §3.1: each nibble holds the value, or 13/14 for one or
        # two extension bytes that follow in the same order (delta, then
        # length)
        delta = num - last
        size = len(v)
        d = delta if delta < _EXT1 else (_EXT1 if delta < _EXT2_BASE else _EXT2)
        s = size if size < _EXT1 else (_EXT1 if size < _EXT2_BASE else _EXT2)
        buf.append(d << 4 | s)
        for nib, x in ((d, delta), (s, size)):
            if nib == _EXT1:
                buf.append(x - _EXT1)
            elif nib == _EXT2:
                x -= _EXT2_BASE
                buf.append(x >> 8)
                buf.append(x & 0xFF)
        buf += v
        last = num
    if payload:
        buf.append(_PAYLOAD_MARKER)
        buf += payload
    return buf


def empty(mtype, mid):
    """An Empty message: an ACK or RST (RFC 7252 §4.1)."""
    return bytes((0x40 | mtype << 4, 0, mid >> 8, mid & 0xFF))


def reset(data):
    """The RST that rejects a CON in data, or None when there is none to
    send: not a CON (a NON is dropped silently), too short for a Message-ID,
    or not CoAP version 1 (RFC 7252 §3, §4.2, §4.3)."""
    if len(data) < 4 or data[0] >> 4 != 4:  # version 1, type CON (0)
        return None
    return empty(_RST, data[2] << 8 | data[3])


def uint(v):
    """An integer as an option value: big-endian, no leading zero bytes (RFC
    7252 §3.2); as an int when given bytes."""
    if type(v) is int:
        n = 0
        x = v
        while x:
            n += 1
            x >>= 8
        return v.to_bytes(n, "big") if n else b""
    return int.from_bytes(v, "big")


def option(opts, num):
    """The first value of option num, or None."""
    for k in range(0, len(opts), 2):
        if opts[k] == num:
            return opts[k + 1]
    return None


def values(opts, num):
    """Every value of option num, in order."""
    return [opts[k + 1] for k in range(0, len(opts), 2) if opts[k] == num]


def put(opts, num, value):
    """Add option num to a flat list, keeping the numbers in order (after
    any of the same number)."""
    k = 0
    while k < len(opts) and opts[k] <= num:
        k += 2
    opts.insert(k, value)
    opts.insert(k, num)
