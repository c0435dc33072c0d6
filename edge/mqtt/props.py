# MQTT 5.0 properties (§2.2.2): the property table as data, and the reader
# and writer of a property block. Imported lazily by codec.py, and only for a
# non-empty 5.0 block (docs/design.md H11), so a board that sees only 3.1.1 clients
# never loads it.
#
# Values: a dict {property id: value}. Byte, two-byte, four-byte and
# variable byte integers are ints, UTF-8 strings str, binary data bytes.
# User Property (0x26) may repeat anywhere it is allowed and keeps its order
# (§3.3.2.3.7): a list of (name, value) pairs. Subscription Identifier (0x0B)
# may repeat in PUBLISH (§3.3.2.3.8): a list of ints there, an int in
# SUBSCRIBE (§3.8.2.1.2).
#
# Which check lives where:
#  - here, on decode (and the same checks on encode, as LocalProtocolError):
#    the block and every value fit the packet, strings are well-formed UTF-8,
#    varints are at most 4 bytes and minimal [MQTT-1.5.5-1] -> 0x81; an
#    unknown identifier or one not valid for the packet type -> 0x81 as well
#    (§2.2.2.2: "A Control Packet which contains an Identifier which is not
#    valid for its packet type ... is a Malformed Packet"); a property given
#    twice where the spec makes that a Protocol Error, and the context-free
#    value checks (_BOOL and _NONZERO rows below) -> 0x82.
#  - the broker, which knows the connection: Topic Alias 0 [MQTT-3.3.2-8] or
#    above Topic Alias Maximum (§3.3.2.3.4) -> 0x94; a Subscription Identifier in a
#    PUBLISH from a client [MQTT-3.3.4-6]; wildcards in a Response Topic
#    [MQTT-3.3.2-14] (topics.py judges topic names); Authentication Data
#    without Authentication Method (§3.1.2.11.10) and the AUTH exchange
#    (§4.12); a DISCONNECT Session Expiry Interval after a CONNECT with 0
#    (§3.14.2.2.2); Receive Maximum and Maximum Packet Size being exceeded;
#    a Payload Format Indicator 1 with a payload that is not UTF-8 (0x99,
#    optional, §3.3.2.3.2). A Payload Format Indicator other than 0 or 1 is
#    a Protocol Error here (the spec defines only those two; mosquitto and
#    EMQX refuse the rest the same way).
from edge.compat import const
from edge.errors import LocalProtocolError, RemoteProtocolError
from edge.mqtt.codec import _bin, _lp, _str, encode_varint, read_varint

# Reason codes (§2.4); kept here, not in consts.py (public names cost heap)
_RC_MALFORMED = const(0x81)
_RC_PROTOCOL_ERROR = const(0x82)

_PUBLISH = const(3)  # the packet type where 0x0B may repeat

# A table row is one small int: wire type | checks | allowed-in bits.
# Wire types (§1.5); 0-2 are also log2 of the integer's size in bytes.
_BYTE = const(0)
_U16 = const(1)
_U32 = const(2)
_VARINT = const(3)
_UTF8 = const(4)
_BIN = const(5)
_PAIR = const(6)
_TYPE = const(7)
# Checks the spec makes a Protocol Error
_BOOL = const(8)  # a value other than 0 or 1
_NONZERO = const(16)  # the value 0
_LIST = const(32)  # (not a check) repeats in PUBLISH: 0x0B only
# Allowed in: bit (_IN + packet type); packet "type" 0 stands for the will
# properties (§3.1.3.2; the codec's `where`)
_IN = const(6)
_IN_WILL = const(1 << _IN)
_IN_CONN = const(1 << (_IN + 1))
_IN_CACK = const(1 << (_IN + 2))
_IN_PUB = const(1 << (_IN + 3))
_IN_ACKS = const(15 << (_IN + 4))  # PUBACK PUBREC PUBREL PUBCOMP
_IN_SUB = const(1 << (_IN + 8))
_IN_SACK = const(1 << (_IN + 9))
_IN_UNSUB = const(1 << (_IN + 10))
_IN_UACK = const(1 << (_IN + 11))
_IN_DISC = const(1 << (_IN + 14))
_IN_AUTH = const(1 << (_IN + 15))

# Table 2-4 (§2.2.2.2): id -> wire type | checks | packets it may appear in.
# Rows are ints, not (name, type, mask) tuples, and the names live in one
# string: measured under MicroPython with the code in ROMFS (as a board
# runs it), a tuple per row plus a tuple of name strings costs ~3.4 KB of
# heap on the 64-bit unix port, this layout ~0.5 KB (the string stays in
# flash). name() and row() give the three columns back.
_TABLE = {
    0x01: _BYTE | _BOOL | _IN_PUB | _IN_WILL,  # Payload Format Indicator §3.3.2.3.2 (0 or 1)
    0x02: _U32 | _IN_PUB | _IN_WILL,  # Message Expiry Interval §3.3.2.3.3
    0x03: _UTF8 | _IN_PUB | _IN_WILL,  # Content Type §3.3.2.3.9
    0x08: _UTF8 | _IN_PUB | _IN_WILL,  # Response Topic §3.3.2.3.5
    0x09: _BIN | _IN_PUB | _IN_WILL,  # Correlation Data §3.3.2.3.6
    0x0B: _VARINT | _NONZERO | _LIST | _IN_PUB | _IN_SUB,  # Subscription Identifier §3.8.2.1.2
    0x11: _U32 | _IN_CONN | _IN_CACK | _IN_DISC,  # Session Expiry Interval §3.1.2.11.2
    0x12: _UTF8 | _IN_CACK,  # Assigned Client Identifier §3.2.2.3.7
    0x13: _U16 | _IN_CACK,  # Server Keep Alive §3.2.2.3.14
    0x15: _UTF8 | _IN_CONN | _IN_CACK | _IN_AUTH,  # Authentication Method §3.1.2.11.9
    0x16: _BIN | _IN_CONN | _IN_CACK | _IN_AUTH,  # Authentication Data §3.1.2.11.10
    0x17: _BYTE | _BOOL | _IN_CONN,  # Request Problem Information §3.1.2.11.7
    0x18: _U32 | _IN_WILL,  # Will Delay Interval §3.1.3.2.2
    0x19: _BYTE | _BOOL | _IN_CONN,  # Request Response Information §3.1.2.11.6
    0x1A: _UTF8 | _IN_CACK,  # Response Information §3.2.2.3.15
    0x1C: _UTF8 | _IN_CACK | _IN_DISC,  # Server Reference §3.2.2.3.16
    # Reason String §3.2.2.3.9
    0x1F: _UTF8 | _IN_CACK | _IN_ACKS | _IN_SACK | _IN_UACK | _IN_DISC | _IN_AUTH,
    0x21: _U16 | _NONZERO | _IN_CONN | _IN_CACK,  # Receive Maximum §3.1.2.11.3
    0x22: _U16 | _IN_CONN | _IN_CACK,  # Topic Alias Maximum §3.1.2.11.5
    0x23: _U16 | _IN_PUB,  # Topic Alias §3.3.2.3.4 (0 is the broker's check)
    0x24: _BYTE | _BOOL | _IN_CACK,  # Maximum QoS §3.2.2.3.4
    0x25: _BYTE | _BOOL | _IN_CACK,  # Retain Available §3.2.2.3.5
    # User Property §3.1.2.11.8: everywhere but PINGREQ/PINGRESP
    0x26: (_PAIR | _IN_WILL | _IN_CONN | _IN_CACK | _IN_PUB | _IN_ACKS | _IN_SUB | _IN_SACK
           | _IN_UNSUB | _IN_UACK | _IN_DISC | _IN_AUTH),
    0x27: _U32 | _NONZERO | _IN_CONN | _IN_CACK,  # Maximum Packet Size §3.1.2.11.4
    0x28: _BYTE | _BOOL | _IN_CACK,  # Wildcard Subscription Available §3.2.2.3.11
    0x29: _BYTE | _BOOL | _IN_CACK,  # Subscription Identifiers Available §3.2.2.3.12
    0x2A: _BYTE | _BOOL | _IN_CACK,  # Shared Subscription Available §3.2.2.3.13
}
_NAMES = (
    "|01Payload Format Indicator|02Message Expiry Interval|03Content Type"
    "|08Response Topic|09Correlation Data|0BSubscription Identifier"
    "|11Session Expiry Interval|12Assigned Client Identifier|13Server Keep Alive"
    "|15Authentication Method|16Authentication Data|17Request Problem Information"
    "|18Will Delay Interval|19Request Response Information|1AResponse Information"
    "|1CServer Reference|1FReason String|21Receive Maximum|22Topic Alias Maximum"
    "|23Topic Alias|24Maximum QoS|25Retain Available|26User Property"
    "|27Maximum Packet Size|28Wildcard Subscription Available"
    "|29Subscription Identifiers Available|2AShared Subscription Available|"
)


def name(pid):
    # the spec's name of property pid, "0x.." if there is none
    i = _NAMES.find("|%02X" % pid) + 3
    return _NAMES[i:_NAMES.find("|", i)] if i > 2 else "0x%02x" % pid


def row(pid):
    # (name, wire type, allowed-in mask) of property pid, None if unknown.
    # Wire type: "byte", "u16", "u32", "varint", "utf8", "binary" or "pair";
    # mask: bit 1 << t for packet type t, bit 0 for the will properties.
    # (For tools and tests: allocates.)
    r = _TABLE.get(pid)
    if r is None:
        return None
    return name(pid), "byte u16 u32 varint utf8 binary pair".split()[r & _TYPE], r >> _IN


def _malformed(msg):
    return RemoteProtocolError(_RC_MALFORMED, msg)


def _varint(mv, i, end):
    n, j = read_varint(mv, i, end)  # raises beyond 4 bytes
    if n < 0:
        raise _malformed("property runs past its block")
    if j - i > 1 and not mv[j - 1]:
        raise _malformed("varint not minimal [MQTT-1.5.5-1]")
    return n, j


# ---- decode -----------------------------------------------------------------
def _value(mv, i, end, t):
    # (value, next_i) of wire type t at mv[i]; raises 0x81 past end
    if t < _VARINT:  # big-endian 1, 2 or 4 bytes (§1.5.2, §1.5.3)
        j = i + (1 << t)
        if j > end:
            raise _malformed("property runs past its block")
        v = 0
        while i < j:
            v = v << 8 | mv[i]
            i += 1
        return v, j
    if t == _VARINT:
        return _varint(mv, i, end)
    if t == _UTF8:
        return _str(mv, i, end)
    if t == _BIN:
        return _bin(mv, i, end)
    k, i = _str(mv, i, end)  # _PAIR (§1.5.7)
    v, i = _str(mv, i, end)
    return (k, v), i


def _bad_value(r, v):
    # the context-free Protocol Error checks of row r, e.g. Receive Maximum
    # 0 (§3.1.2.11.3), Maximum QoS 2 (§3.2.2.3.4)
    return (r & _BOOL and v > 1) or (r & _NONZERO and not v)


def decode_props(mv, i, end, where):
    """(props dict, next_i) of the property block (Property Length first,
    §2.2.2.1) at mv[i], which must end by `end`; `where` is the packet type,
    0 for the will properties. Raises RemoteProtocolError."""
    n, i = read_varint(mv, i, end)
    if n < 0 or i + n > end:
        raise _malformed("property length overruns the packet")
    end = i + n
    props = {}
    while i < end:
        pid, j = _varint(mv, i, end)  # the identifier is a varint (§2.2.2.2)
        r = _TABLE.get(pid, 0)
        if not r >> (_IN + where) & 1:
            raise _malformed("property %s not valid in packet type %d" % (name(pid), where))
        v, i = _value(mv, j, end, r & _TYPE)
        if _bad_value(r, v):
            raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "%s = %r" % (name(pid), v))
        if r & _TYPE == _PAIR or (r & _LIST and where == _PUBLISH):
            lst = props.get(pid)
            if lst is None:
                props[pid] = lst = []
            lst.append(v)
        elif pid in props:
            # each property's section: "It is a Protocol Error to include
            # ... more than once"
            raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "%s given twice" % name(pid))
        else:
            props[pid] = v
    return props, i


# ---- encode -----------------------------------------------------------------
def _local(msg):
    return LocalProtocolError(_RC_PROTOCOL_ERROR, msg)


def _enc_value(v, t):
    if t <= _VARINT:
        k = 1 << t if t < _VARINT else 4
        if type(v) is not int or not 0 <= v < 1 << 8 * k:
            raise _local("%r does not fit %d bytes" % (v, k))
        return v.to_bytes(k, "big") if t < _VARINT else encode_varint(v)
    if t == _PAIR:
        if type(v) not in (tuple, list) or len(v) != 2 or type(v[0]) is not str \
                or type(v[1]) is not str:
            raise _local("user property %r: not a (str, str) pair" % (v,))
        return _lp(v[0]) + _lp(v[1])
    if (type(v) is str) != (t == _UTF8):  # _UTF8 takes str, _BIN bytes
        raise _local("%r for a %s" % (v, "UTF-8 string" if t == _UTF8 else "binary"))
    return _lp(v)


def encode_props(props, where):
    """Property Length + properties, ids in ascending order (dicts are not
    ordered on MicroPython; the spec gives order no meaning, §2.2.2.2).
    Raises LocalProtocolError for a property or value the packet cannot carry."""
    if not props:
        return b"\x00"  # [MQTT-2.2.2-1]
    out = bytearray()
    for pid in sorted(props):
        r = _TABLE.get(pid, 0) if type(pid) is int else 0
        if not r >> (_IN + where) & 1:
            raise _local("property %r not valid in packet type %d" % (pid, where))
        v = props[pid]
        t = r & _TYPE
        many = t == _PAIR or (r & _LIST and where == _PUBLISH)
        if many and type(v) is int:
            v = (v,)  # one Subscription Identifier
        for x in v if many else (v,):
            b = _enc_value(x, t)
            if _bad_value(r, x):
                raise _local("%s = %r" % (name(pid), x))
            out.append(pid)  # all ids are < 128: one varint byte
            out += b
    return encode_varint(len(out)) + bytes(out)
