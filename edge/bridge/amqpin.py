# AMQP 0-9-1 client (edge/bridge/amqp.py): what the server sends, from the
# frame feed() cut out (on_frame: methods, content headers and bodies,
# heartbeats) to each method's handling. Each
# method it may send, with the kinds of its arguments (as in
# amqpwire.read_fields) and its handler h(c, f, ev) (c the Amqp object, f
# the arguments, ev the event list), or the name of the event it becomes:
# the connection negotiation (start, tune, open-ok, channel.open-ok,
# confirm.select-ok, each answered with the next step) and the server's
# notifications (close, blocked, basic.ack/nack/return/deliver/cancel).
# The states live here too: public names, since a const() whose name starts
# with "_" is not a module attribute on MicroPython and could not be
# imported by amqp.py.
from edge.bridge.amqpwire import _syntax, _u32, read_fields, read_props
from edge.compat import const
from edge.errors import RemoteProtocolError

# Frame types (§4.2.3)
_METHOD = const(1)
_HEADER = const(2)
_BODY = const(3)
_HEARTBEAT = const(8)

# Reply codes (the spec's constants)
_COMMAND_INVALID = const(503)
_CHANNEL_ERROR = const(504)

_FRAME_ERROR = const(501)
_UNEXPECTED_FRAME = const(505)
_NOT_IMPLEMENTED = const(540)
_FRAME_MIN = const(4096)  # frame-min-size (the spec's constants)

# class id << 16 | method id (the spec's class reference; blocked,
# unblocked and basic.nack are RabbitMQ's extensions)
_START = const(0x000A000A)
_START_OK = const(0x000A000B)
_TUNE = const(0x000A001E)
_TUNE_OK = const(0x000A001F)
_OPEN = const(0x000A0028)
_OPEN_OK = const(0x000A0029)
_CLOSE = const(0x000A0032)
_CLOSE_OK = const(0x000A0033)
_BLOCKED = const(0x000A003C)
_UNBLOCKED = const(0x000A003D)
_CH_OPEN = const(0x0014000A)
_CH_OPEN_OK = const(0x0014000B)
_CH_CLOSE = const(0x00140028)
_CH_CLOSE_OK = const(0x00140029)
_Q_DECLARE_OK = const(0x0032000B)
_Q_BIND_OK = const(0x00320015)
_B_QOS_OK = const(0x003C000B)
_B_CONSUME_OK = const(0x003C0015)
_B_CANCEL = const(0x003C001E)
_B_CANCEL_OK = const(0x003C001F)
_B_RETURN = const(0x003C0032)
_B_DELIVER = const(0x003C003C)
_B_ACK = const(0x003C0050)
_B_NACK = const(0x003C0078)
_SELECT = const(0x0055000A)
_SELECT_OK = const(0x0055000B)

# States, in handshake order
WAIT_START = const(0)
WAIT_TUNE = const(1)
WAIT_OPEN = const(2)
WAIT_CHANNEL = const(3)
WAIT_SELECT = const(4)
READY = const(5)
NO_CHANNEL = const(6)  # the server closed channel 1: close() and reconnect
CLOSING = const(7)  # our connection.close sent, awaiting close-ok
CLOSED = const(8)


# ---- incoming methods: arguments (kinds as in read_fields) and handler ----
def _on_start(c, f, ev):
    # §1.4.2.1: version-major, version-minor, server-properties, mechanisms,
    # locales
    if c.state != WAIT_START:
        raise RemoteProtocolError(_UNEXPECTED_FRAME, "connection.start again")
    if f[0] != 0 or f[1] != 9:
        raise RemoteProtocolError(_NOT_IMPLEMENTED, "server speaks %d-%d" % (f[0], f[1]))
    if b"PLAIN" not in f[3].split(b" "):
        raise RemoteProtocolError(_NOT_IMPLEMENTED, "server does not offer PLAIN")
    c.server_properties = f[2]
    # client-properties, mechanism, response, locale (§1.4.2.2). The
    # capabilities make RabbitMQ send connection.blocked, basic.nack,
    # basic.cancel and a connection.close for a refused login.
    # (Pairs, not dicts: the same bytes on both runtimes.)
    props = [("product", "edgebroker"), ("capabilities", ("F", [
        ("publisher_confirms", True), ("basic.nack", True), ("consumer_cancel_notify", True),
        ("connection.blocked", True), ("authentication_failure_close", True)]))]
    c._method(0, _START_OK, "FSXS", (props, "PLAIN", c._login, "en_US"))
    c._login = None
    c.state = WAIT_TUNE


def _limit(ours, theirs):
    # 0 means "no limit" on either side: take the other, else the smaller
    return theirs if not ours else ours if not theirs else min(ours, theirs)


def _on_tune(c, f, ev):
    # §1.4.2.5: channel-max, frame-max, heartbeat; answered with the
    # negotiated values (§1.4.2.6), then connection.open (§1.4.2.7)
    if c.state != WAIT_TUNE:
        raise RemoteProtocolError(_UNEXPECTED_FRAME, "connection.tune out of order")
    c.channel_max = _limit(c.channel_max, f[0])
    c.frame_max = _limit(c.frame_max, f[1])
    if c.frame_max < _FRAME_MIN:
        raise RemoteProtocolError(_FRAME_ERROR, "frame-max %d < %d" % (c.frame_max, _FRAME_MIN))
    c.heartbeat = _limit(c.heartbeat, f[2])
    c._method(0, _TUNE_OK, "sls", (c.channel_max, c.frame_max, c.heartbeat))
    c._method(0, _OPEN, "SSo", (c.vhost, "", 0))
    c.state = WAIT_OPEN


def _on_open_ok(c, f, ev):
    if c.state != WAIT_OPEN:
        raise RemoteProtocolError(_UNEXPECTED_FRAME, "connection.open-ok out of order")
    c._method(1, _CH_OPEN, "S", ("",))
    c.state = WAIT_CHANNEL


def _on_ch_open_ok(c, f, ev):
    if c.state != WAIT_CHANNEL:
        raise RemoteProtocolError(_UNEXPECTED_FRAME, "channel.open-ok out of order")
    c._method(1, _SELECT, "o", (0,))  # confirm.select, no-wait off
    c.state = WAIT_SELECT


def _on_select_ok(c, f, ev):
    if c.state != WAIT_SELECT:
        raise RemoteProtocolError(_UNEXPECTED_FRAME, "confirm.select-ok out of order")
    c.state = READY
    ev.append(("ready",))


def _on_close(c, f, ev):
    # §1.4.2.9: reply-code, reply-text, class-id, method-id; answered with
    # close-ok, after which the connection is over
    c._method(0, _CLOSE_OK, "", ())
    c.state = CLOSED
    ev.append(("closed", f[0], f[1]))


def _on_close_ok(c, f, ev):
    c.state = CLOSED
    ev.append(("close_ok",))


def _on_ch_close(c, f, ev):
    c._method(1, _CH_CLOSE_OK, "", ())
    if c.state < NO_CHANNEL:
        c.state = NO_CHANNEL  # nothing may be published any more
    ev.append(("channel_closed", f[0], f[1]))


def _on_blocked(c, f, ev):
    c.blocked = True
    ev.append(("blocked", f[0]))


def _on_unblocked(c, f, ev):
    c.blocked = False
    ev.append(("unblocked",))


def _on_ack(c, f, ev):
    ev.append(("confirm", f[0], f[1] & 1 == 1))


def _on_nack(c, f, ev):
    ev.append(("nack", f[0], f[1] & 1 == 1))


def _on_return(c, f, ev):
    # basic.return: reply-code, reply-text, exchange, routing-key; content
    # follows. The body is ours: not kept (props carry the message_id).
    c.returned += 1
    c._content = ["return", f[0], f[1], f[3]]


def _on_deliver(c, f, ev):
    # consumer-tag, delivery-tag, redelivered, exchange, routing-key
    c._content = ["deliver", f[1], f[4]]


def _on_cancel(c, f, ev):
    # a consumer cancelled by the server (its queue was deleted): answered
    # unless no-wait (RabbitMQ's consumer_cancel_notify)
    if not f[1] & 1:
        c._method(1, _B_CANCEL_OK, "S", (f[0],))
    ev.append(("cancelled", f[0]))


IN = {
    _START: ("ooFXX", _on_start),
    _TUNE: ("sls", _on_tune),
    _OPEN_OK: ("S", _on_open_ok),
    _CLOSE: ("sSss", _on_close),
    _CLOSE_OK: ("", _on_close_ok),
    _BLOCKED: ("S", _on_blocked),
    _UNBLOCKED: ("", _on_unblocked),
    _CH_OPEN_OK: ("X", _on_ch_open_ok),
    _CH_CLOSE: ("sSss", _on_ch_close),
    _SELECT_OK: ("", _on_select_ok),
    # replies that only become an event: its name, then the arguments
    _Q_DECLARE_OK: ("Sll", "declare_ok"),
    _Q_BIND_OK: ("", "bind_ok"),
    _B_QOS_OK: ("", "qos_ok"),
    _B_CONSUME_OK: ("S", "consume_ok"),
    _B_CANCEL: ("So", _on_cancel),
    _B_RETURN: ("sSSS", _on_return),
    _B_DELIVER: ("SLoSS", _on_deliver),
    _B_ACK: ("Lo", _on_ack),
    _B_NACK: ("Lo", _on_nack),
}


def on_frame(c, ftype, ch, mv, i, end, ev):
    # one frame of feed()'s buffer, mv[i:end] its payload (§4.2.3)
    if c.state == CLOSING and not (ftype == _METHOD and end - i >= 4
                                       and _u32(mv, i) in (_CLOSE, _CLOSE_OK)):
        return  # §1.4.2.9: after close, only close and close-ok count
    if ftype == _HEARTBEAT:
        if ch:
            raise RemoteProtocolError(_COMMAND_INVALID, "heartbeat on channel %d" % ch)
        return
    if c._content and ftype == _METHOD:
        # §4.2.6: content frames follow their method, uninterrupted
        raise RemoteProtocolError(_UNEXPECTED_FRAME, "method inside content")
    if ftype == _METHOD:
        if end - i < 4:
            raise _syntax("short method frame")
        cm = _u32(mv, i)
        if ch != (0 if cm >> 16 == 10 else 1):
            raise RemoteProtocolError(_CHANNEL_ERROR, "method 0x%08x on channel %d" % (cm, ch))
        h = IN.get(cm)
        if h is None:
            raise RemoteProtocolError(_NOT_IMPLEMENTED, "method 0x%08x" % cm)
        f = read_fields(h[0], mv, i + 4, end)
        if type(h[1]) is str:
            ev.append((h[1],) + tuple(f))
        else:
            h[1](c, f, ev)
    elif ftype == _HEADER:
        if not c._content or c._props is not None or ch != 1:
            raise RemoteProtocolError(_UNEXPECTED_FRAME, "content header without method")
        if end - i < 14:
            raise _syntax("short content header")
        size = _u32(mv, i + 4) << 32 | _u32(mv, i + 8)
        c._props = read_props(mv, i + 12, end)
        c._size = size
        kind = c._content[0]
        if kind == "deliver" and size > c.max_body:
            c.oversize += 1
            c._content = ["oversize", c._content[1], c._content[2], size]
        c._body = bytearray() if kind == "deliver" and size <= c.max_body else None
        c._got = 0
        if not size:
            _done(c, ev)
    elif ftype == _BODY:
        if c._props is None or ch != 1:
            raise RemoteProtocolError(_UNEXPECTED_FRAME, "body frame without header")
        c._got += end - i
        if c._got > c._size:
            raise RemoteProtocolError(_FRAME_ERROR, "body over its declared size")
        if c._body is not None:
            c._body += mv[i:end]
        if c._got == c._size:
            _done(c, ev)
    else:
        raise RemoteProtocolError(_FRAME_ERROR, "frame type %d" % ftype)


def _done(c, ev):
    # the content of a deliver or return complete: its event
    k = c._content
    if k[0] == "deliver":
        ev.append(("deliver", k[1], k[2], c._props, bytes(c._body)))
    elif k[0] == "return":
        ev.append(("return", k[1], k[2], k[3], c._props))
    else:
        ev.append(tuple(k))
    c._content = c._props = c._body = None
