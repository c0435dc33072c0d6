# MQTT 3.1.1 codec, sans-IO (docs/design.md H2): decode works on offsets into one
# buffer, encode returns bytes. MQTT 5.0 layouts (reason codes, property
# blocks) are here too; the properties themselves are read and written by
# edge/mqtt/props.py, behind the two V5-PROPS hooks below.
#
# Reason codes for peer errors follow 5.0 §1.2/§2.1.3: a packet that cannot be
# parsed (bad fixed-header or option bits, bad lengths, bad UTF-8) is
# RC_MALFORMED; a parsed packet carrying data the spec forbids (pid 0, empty
# SUBSCRIBE) is RC_PROTOCOL_ERROR. A 3.1.1 connection just closes on either.
from edge.compat import const
from edge.errors import LocalProtocolError, RemoteProtocolError
from edge.mqtt import packets

# Wire numbers from consts.py as private consts: folded into the bytecode, so
# they cost no heap on a board (tests/core/test_consts.py keeps them equal).
_CONNECT = const(1)
_CONNACK = const(2)
_PUBLISH = const(3)
_SUBSCRIBE = const(8)
_SUBACK = const(9)
_UNSUBSCRIBE = const(10)
_UNSUBACK = const(11)
_DISCONNECT = const(14)
_AUTH = const(15)
_SUBACK_FAILURE = const(0x80)
_RC_MALFORMED = const(0x81)
_RC_PROTOCOL_ERROR = const(0x82)
_MAX_VARINT = const(268435455)  # 4 bytes of 7 bits (3.1.1 §2.2.3)
_WILL = const(0)  # "packet kind" of the will property block for the hooks

# Fixed-header flag bits each type must carry [MQTT-2.2.2-1/2], indexed by
# type; 0xFF: PUBLISH, whose flags are dup/qos/retain (checked in decode).
_FLAGS = b"\x00\x00\x00\xff\x00\x00\x02\x00\x02\x00\x02\x00\x00\x00\x00\x00"


def _malformed(msg):
    return RemoteProtocolError(_RC_MALFORMED, msg)


def _short():
    return _malformed("remaining length too short")


def _bad_utf8():
    return _malformed("invalid UTF-8 [MQTT-1.5.3-1]")


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
            raise _malformed("varint longer than 4 bytes")
    return -1, i


def packet_length(buf, start, end):
    # fixed header + remaining length of the packet at start; -1 while the
    # remaining-length varint is incomplete
    n, i = read_varint(buf, start + 1, end)
    if n < 0:
        return -1
    return i - start + n


# ---- field readers: raise when a field runs past the packet end ------------
def _u16(mv, i, end):
    if i + 2 > end:
        raise _short()
    return mv[i] << 8 | mv[i + 1]


def _pid(mv, i, end):
    pid = _u16(mv, i, end)
    if not pid:
        # [MQTT-2.3.1-1] packets that carry a packet id need a non-zero one
        raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "packet id 0")
    return pid


def _bin(mv, i, end):
    # 2-byte length + binary data (§1.5.6) -> (bytes, next_i)
    j = i + 2 + _u16(mv, i, end)
    if j > end:
        raise _short()
    return bytes(mv[i + 2:j]), j


def _str(mv, i, end):
    # 2-byte length + UTF-8 string (§1.5.3) -> (str, next_i)
    i += 2
    j = i + _u16(mv, i - 2, end)
    if j > end:
        raise _short()
    try:
        s = str(mv[i:j], "utf-8")
    except UnicodeError:
        raise _bad_utf8()
    if len(s) != j - i:
        # Not pure ASCII (both decoders reject lone lead and continuation
        # bytes, so equal lengths mean ASCII). MicroPython's decoder accepts
        # overlong forms, surrogates and code points over U+10FFFF, so check
        # by hand on both runtimes (CPython has already rejected those).
        _check_utf8(mv, i, j)
    if "\x00" in s:
        raise _malformed("U+0000 in a UTF-8 string [MQTT-1.5.3-2]")
    return s, j


def _check_utf8(mv, i, j):
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
            raise _bad_utf8()
        for m in range(i + 1, i + k):
            if mv[m] & 0xC0 != 0x80:
                raise _bad_utf8()
        i += k


# ---- V5-PROPS hooks ---------------------------------------------------------
# A 5.0 property block goes through edge/mqtt/props.py, imported here on
# first use (docs/design.md H11): 3.1.1 connections, and 5.0 packets with an empty
# block, never load it. `where` is the packet type (_WILL for the will
# properties), which props.py checks against its allowed-in table.
# `import a.b.c` rather than `from a.b.c import f`: MicroPython builds the
# from-list tuple on every call of a function holding the latter.
def _read_props(mv, i, end, where):
    if i < end and not mv[i]:
        return {}, i + 1  # Property Length 0 [MQTT-2.2.2-1]
    import edge.mqtt.props

    return edge.mqtt.props.decode_props(mv, i, end, where)


def _write_props(props, where):
    if not props:
        return b"\x00"  # [MQTT-2.2.2-1]
    import edge.mqtt.props

    return edge.mqtt.props.encode_props(props, where)


# ---- decoders: (mv, first byte, i, end, v5) -> (packet, next_i) -------------
def _dec_connect(mv, b0, i, end, v5):
    # Protocol name and level are the broker's call (CONNACK 0x01,
    # [MQTT-3.1.2-2]); the codec only reports them.
    proto, i = _str(mv, i, end)
    if i >= end:
        raise _short()
    level = mv[i]
    if level < 3 or level > 5:
        # Unknown level: the rest may have any layout; stop here.
        return _CLS[_CONNECT]("", level=level, proto=proto), end
    if i + 4 > end:
        raise _short()
    f = mv[i + 1]
    keepalive = _u16(mv, i + 2, end)
    i += 4
    wq = f >> 3 & 3
    v5 = level == 5
    # [MQTT-3.1.2-3] reserved bit; [MQTT-3.1.2-11/13/15] will QoS/retain
    # without a will; [MQTT-3.1.2-14] will QoS 3; [MQTT-3.1.2-22] (3.1.1
    # only) a password without a username
    if f & 1 or wq == 3 or (not f & 4 and f & 0x38) or (f & 0xC0 == 0x40 and not v5):
        raise _malformed("bad CONNECT flags 0x%02x" % f)
    props = will_props = will_topic = username = password = None
    will_payload = b""
    if v5:
        props, i = _read_props(mv, i, end, _CONNECT)  # V5-PROPS
    cid, i = _str(mv, i, end)
    if f & 4:
        if v5:
            will_props, i = _read_props(mv, i, end, _WILL)  # V5-PROPS
        will_topic, i = _str(mv, i, end)
        will_payload, i = _bin(mv, i, end)
    if f & 0x80:
        username, i = _str(mv, i, end)
    if f & 0x40:
        password, i = _bin(mv, i, end)
    return _CLS[_CONNECT](cid, bool(f & 2), keepalive, username, password, will_topic,
                   will_payload, wq, bool(f & 0x20), level, proto, will_props,
                   props), i


def _dec_connack(mv, b0, i, end, v5):
    if i + 2 > end:
        raise _short()
    if mv[i] & 0xFE:
        raise _malformed("CONNACK reserved flags [MQTT-3.2.2-1]")
    props = None
    j = i + 2
    if v5:
        props, j = _read_props(mv, j, end, _CONNACK)  # V5-PROPS
    return _CLS[_CONNACK](bool(mv[i]), mv[i + 1], props), j


def _dec_publish(mv, b0, i, end, v5, view=False):
    # flags were judged in decode(). view: a QoS 0 PUBLISH without RETAIN
    # keeps its payload as a slice of mv (a view when mv is one), for a
    # caller that drops the packet before the buffer changes (see decode).
    q = b0 >> 1 & 3
    topic, i = _str(mv, i, end)
    pid = 0
    if q:
        pid = _pid(mv, i, end)
        i += 2
    props = None
    if v5:
        props, i = _read_props(mv, i, end, _PUBLISH)  # V5-PROPS
    payload = mv[i:end]
    if not (view and not b0 & 7):
        payload = bytes(payload)
    # (x != 0 rather than bool(x): a comparison, not a call)
    return _CLS[_PUBLISH](topic, payload, q, b0 & 1 != 0, b0 & 8 != 0,
                   pid, props), end


def _dec_reason(mv, b0, i, end, v5):
    # PUBACK/PUBREC/PUBREL/PUBCOMP: pid first; DISCONNECT/AUTH: no pid.
    # 5.0 §3.4.2.1/§3.14.2.1: reason 0 and an empty block may be left out;
    # 3.1.1 DISCONNECT has no variable header at all.
    kind = b0 >> 4
    pid = 0
    if kind < _DISCONNECT:
        pid = _pid(mv, i, end)
        i += 2
    reason = 0
    props = None
    if v5:
        props = {}
        if i < end:
            reason = mv[i]
            i += 1
            if i < end:
                props, i = _read_props(mv, i, end, kind)  # V5-PROPS
    if kind < _DISCONNECT:
        return _CLS[kind](pid, reason, props), i
    return _CLS[kind](reason, props), i


def _dec_list(mv, b0, i, end, v5):
    # SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK: pid, (5.0: props), a list
    kind = b0 >> 4
    pid = _pid(mv, i, end)
    i += 2
    props = None
    if v5:
        props, i = _read_props(mv, i, end, kind)  # V5-PROPS
    if kind & 1:  # SUBACK, UNSUBACK: one code per filter
        if kind == _UNSUBACK and not v5:
            return _CLS[_UNSUBACK](pid), i  # 3.1.1: the pid only
        return _CLS[kind](pid, list(mv[i:end]), props), end
    if i >= end:
        # [MQTT-3.8.3-3] [MQTT-3.10.3-2]
        raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "no topic filters")
    topics = []
    while i < end:
        t, i = _str(mv, i, end)
        if kind == _SUBSCRIBE:
            if i >= end:
                raise _short()
            o = mv[i]
            i += 1
            if not v5:
                if o > 2:  # [MQTT-3-8.3-4] QoS 3 or reserved bits
                    raise _malformed("bad subscription options")
            elif o & 0xC0:  # [MQTT-3.8.3-5]
                raise _malformed("bad subscription options")
            elif o & 3 == 3 or o & 0x30 == 0x30:  # 5.0 §3.8.3.1
                raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "QoS 3 or retain handling 3")
            t = (t, o)
        topics.append(t)
    return _CLS[kind](pid, topics, props), i


def _dec_empty(mv, b0, i, end, v5):
    return _CLS[b0 >> 4](), i


# Packet classes indexed by type. The codec refers to them only through this
# table: one global instead of fifteen (each global costs heap on a board).
_CLS = (
    None, packets.Connect, packets.Connack, packets.Publish, packets.Puback,
    packets.Pubrec, packets.Pubrel, packets.Pubcomp, packets.Subscribe,
    packets.Suback, packets.Unsubscribe, packets.Unsuback, packets.Pingreq,
    packets.Pingresp, packets.Disconnect, packets.Auth,
)
_DECODERS = (
    None, _dec_connect, _dec_connack, _dec_publish, _dec_reason, _dec_reason,
    _dec_reason, _dec_reason, _dec_list, _dec_list, _dec_list, _dec_list,
    _dec_empty, _dec_empty, _dec_reason, _dec_reason,
)


def decode(buf, start, end, v5=False, view=False):
    # (packet, bytes used) for the packet at buf[start:end], or (None, 0) if
    # it is not all there yet. Raises RemoteProtocolError. view=True: a QoS 0
    # PUBLISH without RETAIN gets its payload as a slice of buf, no copy (the
    # broker forwards it within the feed; a board keeps no ~1 KB copy).
    # Everything else comes out as bytes of its own.
    if end <= start:
        return None, 0
    # Fields are sliced out of buf: a bytearray through a view (one copy,
    # not two); bytes and views as they are (a bytes slice is bytes already).
    mv = memoryview(buf) if type(buf) is bytearray else buf
    b0 = mv[start]
    kind = b0 >> 4
    # Judge the first byte at once: no point waiting for a bad packet's body.
    if kind == _PUBLISH:
        # [MQTT-3.3.1-4] QoS 3; [MQTT-3.3.1-2] DUP on QoS 0
        if b0 & 6 == 6 or b0 & 0x0E == 8:
            raise _malformed("PUBLISH QoS 3 or DUP on QoS 0")
    elif kind == 0 or (kind == _AUTH and not v5):
        raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "reserved packet type %d" % kind)
    elif b0 & 15 != _FLAGS[kind]:  # [MQTT-2.2.2-2]
        raise _malformed("bad header flags 0x%02x" % b0)
    i = start + 2
    n = mv[start + 1] if i <= end else -1
    if n > 127:
        n, i = read_varint(mv, start + 1, end)
    if n < 0 or i + n > end:
        return None, 0
    if kind == _PUBLISH:
        pkt, j = _dec_publish(mv, b0, i, i + n, v5, view)
    else:
        pkt, j = _DECODERS[kind](mv, b0, i, i + n, v5)
    if j != i + n:
        raise _malformed("remaining length too long")
    return pkt, j - start


# ---- encoders: (packet, v5) -> bytes ------------------------------------------
def _lp(x):
    # 2-byte length prefix + UTF-8 string or binary data
    if type(x) is str:
        x = x.encode()
    n = len(x)
    if n > 0xFFFF:
        raise LocalProtocolError(_RC_MALFORMED, "field over 65535 bytes")
    return bytes((n >> 8, n & 255)) + x


def _frame(b0, body):
    return bytes((b0,)) + encode_varint(len(body)) + body


def _pid2(pid):
    if not 0 < pid < 65536:
        raise LocalProtocolError(_RC_PROTOCOL_ERROR, "packet id %r" % pid)
    return bytes((pid >> 8, pid & 255))


def _enc_connect(p, v5):
    v5 = p.level == 5
    f = 2 if p.clean else 0
    b = bytearray(_lp(p.proto))
    at = len(b) + 1  # the flags byte, filled in at the end
    ka = p.keepalive
    b += bytes((p.level, 0, ka >> 8, ka & 255))
    if v5:
        b += _write_props(p.props, _CONNECT)  # V5-PROPS
    b += _lp(p.client_id)
    if p.will_topic is not None:
        f |= 4 | p.will_qos << 3 | (0x20 if p.will_retain else 0)
        if v5:
            b += _write_props(p.will_props, _WILL)  # V5-PROPS
        b += _lp(p.will_topic)
        b += _lp(p.will_payload)
    if p.username is not None:
        f |= 0x80
        b += _lp(p.username)
    if p.password is not None:
        f |= 0x40
        b += _lp(p.password)
    b[at] = f
    return _frame(0x10, b)


def _enc_connack(p, v5):
    r = p.reason
    # [MQTT-3.2.2-4] session present is 0 with a non-zero return code
    sp = 1 if p.session_present and not r else 0
    if v5:
        return _frame(0x20, bytes((sp, r)) + _write_props(p.props, _CONNACK))  # V5-PROPS
    # 3.1.1 return codes are 0-5 (§3.2.2.3); mapping 5.0 reasons to them
    # is the broker's call
    return bytes((0x20, 2, sp, r))


def _enc_publish(p, v5):
    return encode_publish(p.topic, p.payload, p.qos, p.retain, p.dup, p.pid, p.props, v5)


def encode_publish(topic, payload, qos=0, retain=False, dup=False, pid=0, props=None, v5=False):
    """PUBLISH wire bytes from the fields themselves: the broker's delivery
    path needs no Publish object. Few intermediate objects (each one is
    garbage for a board's GC): header and topic length in one piece."""
    t = topic.encode() if type(topic) is str else bytes(topic)
    if type(payload) is not bytes:
        payload = bytes(payload)  # MicroPython's join takes bytes only
    tl = len(t)
    if tl > 0xFFFF or not 0 <= qos <= 2:
        raise LocalProtocolError(_RC_MALFORMED, "topic length or QoS")
    n = 2 + tl + len(payload)
    if qos:
        if not 0 < pid < 65536:
            raise LocalProtocolError(_RC_PROTOCOL_ERROR, "packet id %r" % pid)
        n += 2
    pr = _write_props(props, _PUBLISH) if v5 else b""  # V5-PROPS
    n += len(pr)
    b0 = 0x30 | qos << 1 | (8 if dup else 0) | (1 if retain else 0)
    if n < 128:  # one-byte remaining length: the usual case
        head = bytes((b0, n, tl >> 8, tl & 255))
    else:
        head = bytes((b0,)) + encode_varint(n) + bytes((tl >> 8, tl & 255))
    if qos:
        if pr:
            return b"".join((head, t, bytes((pid >> 8, pid & 255)), pr, payload))
        return b"".join((head, t, bytes((pid >> 8, pid & 255)), payload))
    return b"".join((head, t, pr, payload))


def encode_ack(kind, pid):
    """PUBACK, PUBREC, PUBREL or PUBCOMP for pid, success, in one piece
    (3.1.1, and 5.0 with reason 0 and no properties: §3.4.2.1)."""
    if not 0 < pid < 65536:
        raise LocalProtocolError(_RC_PROTOCOL_ERROR, "packet id %r" % pid)
    return bytes((kind << 4 | _FLAGS[kind], 2, pid >> 8, pid & 255))


def _enc_reason(p, v5):
    # PUBACK/PUBREC/PUBREL/PUBCOMP (pid first), DISCONNECT and AUTH (no pid)
    kind = p.kind
    b0 = kind << 4 | _FLAGS[kind]
    vh = _pid2(p.pid) if kind < _DISCONNECT else b""
    if not v5:
        if kind == _AUTH:
            raise LocalProtocolError(_RC_PROTOCOL_ERROR, "AUTH needs MQTT 5.0")
    elif p.props:
        vh += bytes((p.reason,)) + _write_props(p.props, kind)  # V5-PROPS
    elif p.reason:
        vh += bytes((p.reason,))  # 5.0 §3.4.2.1: props block left out
    return _frame(b0, vh)


def _enc_list(p, v5):
    kind = p.kind
    b = bytearray(_pid2(p.pid))
    if v5:
        b += _write_props(p.props, kind)  # V5-PROPS
    if kind == _SUBSCRIBE:
        for t, o in p.topics:
            b += _lp(t)
            b.append(o)
    elif kind == _UNSUBSCRIBE:
        for t in p.topics:
            b += _lp(t)
    elif v5:
        b += bytes(p.codes or ())
    elif kind == _SUBACK:
        for c in p.codes:  # 3.1.1 §3.9.3: only 0, 1, 2 and 0x80 exist
            b.append(c if c < 0x80 else _SUBACK_FAILURE)
    # (3.1.1 UNSUBACK: the pid only)
    return _frame(kind << 4 | _FLAGS[kind], b)


def _enc_empty(p, v5):
    return bytes((p.kind << 4, 0))


_ENCODERS = (
    None, _enc_connect, _enc_connack, _enc_publish, _enc_reason, _enc_reason,
    _enc_reason, _enc_reason, _enc_list, _enc_list, _enc_list, _enc_list,
    _enc_empty, _enc_empty, _enc_reason, _enc_reason,
)


def encode(pkt, v5=False):
    # Wire bytes of pkt. Raises LocalProtocolError for values the wire cannot
    # carry (pid 0, QoS 3, fields over 65535 bytes...).
    return _ENCODERS[pkt.kind](pkt, v5)
