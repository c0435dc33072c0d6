# AMQP 0-9-1 wire fields for edge/bridge/amqp.py (docs/design.md H2: readers
# work on offsets into one buffer): method arguments, field tables (§4.2.5.5)
# and the basic class's content properties (§4.2.6.1). Readers take
# (mv, i, end) and return (value, next_i), raising RemoteProtocolError(502)
# for a field that runs past its frame; writers append to a bytearray.
#
#   read_table / write_table     field table <-> dict
#   read_value / write_value     one field value (typed by Python type, or
#                                explicitly as a (type char, value) tuple)
#   read_field / read_fields / write_fields   method arguments by kind letter
#   read_props / write_props     content header property flags + list <-> dict
import struct

from edge.compat import const
from edge.errors import LocalProtocolError, RemoteProtocolError

_SYNTAX_ERROR = const(502)  # reply code syntax-error (the spec's constants)

# Field-table value types, as RabbitMQ reads and writes them (AMQP 0-9-1
# §4.2.5.5 with RabbitMQ's errata: 's' is a signed short, not a short
# string; 'l' a signed 64-bit). Fixed-size numbers: type char, struct format
# and size at the same index (strings, not dicts: no heap on a board).
_NUM_T = "bBsuIilLfdT"
_NUM_F = "bBhHiIqQfdQ"
_NUM_N = b"\x01\x01\x02\x02\x04\x04\x08\x08\x04\x08\x08"

# Basic class properties in flag order, bit 15 first (§4.2.6.1, class
# basic): name and kind (S shortstr, F table, o octet, L 64-bit timestamp).
_PROPS = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
          "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
          "type", "user_id", "app_id", "cluster_id")
_PROP_KINDS = "SSFooSSSSLSSSS"


def _syntax(msg):
    return RemoteProtocolError(_SYNTAX_ERROR, msg)


# ---- field codec (§4.2.5): readers take (mv, i, end) and return (v, next_i)
def _u32(mv, i):
    return mv[i] << 24 | mv[i + 1] << 16 | mv[i + 2] << 8 | mv[i + 3]


def _need(i, end):
    if i > end:
        raise _syntax("field runs past its frame")


def _text(mv, i, j):
    try:
        return str(mv[i:j], "utf-8")
    except UnicodeError:
        return bytes(mv[i:j])  # not text: keep the bytes


def read_table(mv, i, end):
    """A field table at i -> (dict, next_i)."""
    _need(i + 4, end)
    j = i + 4 + _u32(mv, i)
    _need(j, end)
    i += 4
    d = {}
    while i < j:
        n = mv[i]
        _need(i + 1 + n, j)
        k = _text(mv, i + 1, i + 1 + n)
        d[k], i = read_value(mv, i + 1 + n, j)
    return d, j


def read_value(mv, i, end):
    _need(i + 1, end)
    t = chr(mv[i])
    i += 1
    k = _NUM_T.find(t)
    if k >= 0:
        j = i + _NUM_N[k]
        _need(j, end)
        return struct.unpack_from(">" + _NUM_F[k], mv, i)[0], j
    if t == "t":
        _need(i + 1, end)
        return mv[i] != 0, i + 1
    if t == "S" or t == "x":
        _need(i + 4, end)
        j = i + 4 + _u32(mv, i)
        _need(j, end)
        return (_text(mv, i + 4, j) if t == "S" else bytes(mv[i + 4:j])), j
    if t == "F":
        return read_table(mv, i, end)
    if t == "A":
        _need(i + 4, end)
        j = i + 4 + _u32(mv, i)
        _need(j, end)
        a = []
        i += 4
        while i < j:
            v, i = read_value(mv, i, j)
            a.append(v)
        return a, j
    if t == "D":  # decimal: scale octet, unsigned 32-bit value
        _need(i + 5, end)
        return (mv[i], _u32(mv, i + 1)), i + 5
    if t == "V":
        return None, i
    raise _syntax("unknown field type %r" % t)


def _shortstr(out, s):
    b = s.encode() if type(s) is str else s
    if len(b) > 255:
        raise LocalProtocolError(_SYNTAX_ERROR, "short string over 255 bytes")
    out.append(len(b))
    out += b


def _longstr(out, b):
    if type(b) is str:
        b = b.encode()
    out += struct.pack(">I", len(b))
    out += b


def write_table(out, d):
    """Append a field table: a dict, or a list of (name, value) pairs for a
    fixed order (MicroPython's dicts do not keep insertion order); None or
    empty -> an empty table. A value is typed by its Python type (bool t,
    int I or l, float d, str S, bytes x, None V, dict F, list A), or
    explicitly as a (type char, value) tuple."""
    start = len(out)
    out += b"\x00\x00\x00\x00"
    if d:
        for k, v in (d.items() if type(d) is dict else d):
            _shortstr(out, k)
            write_value(out, v)
    struct.pack_into(">I", out, start, len(out) - start - 4)


def write_value(out, v):
    if type(v) is tuple:
        t, v = v
    elif v is True or v is False:
        t = "t"
    elif type(v) is int:
        t = "I" if -0x80000000 <= v < 0x80000000 else "l"
    elif type(v) is float:
        t = "d"
    elif type(v) is str:
        t = "S"
    elif v is None:
        t = "V"
    elif type(v) is dict:
        t = "F"
    elif type(v) is list:
        t = "A"
    else:
        t = "x"  # bytes, bytearray, memoryview
    out.append(ord(t))
    k = _NUM_T.find(t)
    if k >= 0:
        out += struct.pack(">" + _NUM_F[k], v)
    elif t == "t":
        out.append(1 if v else 0)
    elif t == "S" or t == "x":
        _longstr(out, v)
    elif t == "F":
        write_table(out, v)
    elif t == "A":
        start = len(out)
        out += b"\x00\x00\x00\x00"
        for x in v:
            write_value(out, x)
        struct.pack_into(">I", out, start, len(out) - start - 4)
    elif t == "D":
        out.append(v[0])
        out += struct.pack(">I", v[1])
    elif t != "V":
        raise LocalProtocolError(_SYNTAX_ERROR, "unknown field type %r" % t)


def read_field(t, mv, i, end):
    """One method argument by kind letter -> (value, next_i): o octet (and
    packed bits), s short, l long, L long long, S short string, X long
    string (bytes), F table."""
    if t == "o":
        _need(i + 1, end)
        return mv[i], i + 1
    if t == "s":
        _need(i + 2, end)
        return mv[i] << 8 | mv[i + 1], i + 2
    if t == "l":
        _need(i + 4, end)
        return _u32(mv, i), i + 4
    if t == "L":
        _need(i + 8, end)
        return _u32(mv, i) << 32 | _u32(mv, i + 4), i + 8
    if t == "S":
        _need(i + 1, end)
        j = i + 1 + mv[i]
        _need(j, end)
        return _text(mv, i + 1, j), j
    if t == "X":
        _need(i + 4, end)
        j = i + 4 + _u32(mv, i)
        _need(j, end)
        return bytes(mv[i + 4:j]), j
    return read_table(mv, i, end)


def read_fields(fmt, mv, i, end):
    f = []
    for t in fmt:
        v, i = read_field(t, mv, i, end)
        f.append(v)
    return f


def write_fields(out, fmt, args):
    for t, v in zip(fmt, args):
        if t == "o":
            out.append(v)
        elif t == "s":
            out += struct.pack(">H", v)
        elif t == "l":
            out += struct.pack(">I", v)
        elif t == "L":
            out += struct.pack(">Q", v)
        elif t == "S":
            _shortstr(out, v)
        elif t == "X":
            _longstr(out, v)
        else:
            write_table(out, v)


def read_props(mv, i, end):
    """A content header's property flags and list (§4.2.6.1) -> dict."""
    _need(i + 2, end)
    flags = mv[i] << 8 | mv[i + 1]
    if flags & 1:  # continuation flag: basic has only 14 properties
        raise _syntax("property flags continue")
    i += 2
    p = {}
    for n in range(14):
        if flags & (0x8000 >> n):
            p[_PROPS[n]], i = read_field(_PROP_KINDS[n], mv, i, end)
    return p


def write_props(out, p):
    start = len(out)
    out += b"\x00\x00"
    flags = 0
    for n in range(14):
        v = p.get(_PROPS[n])
        if v is not None:
            flags |= 0x8000 >> n
            write_fields(out, _PROP_KINDS[n], (v,))
    struct.pack_into(">H", out, start, flags)
