# AMQP 0-9-1 client, the subset the uplink needs, sans-IO (docs/design.md H1,
# H5): bytes in, events out; the bytes to send collect in `out`.
#
#   c = Amqp(user, password, vhost="/", heartbeat=15, frame_max=131072,
#            channel_max=0, max_body=65536, now=0)
#   (heartbeat s, frame_max, channel_max: ours, negotiated at tune to the
#   smaller non-zero of ours and the server's; 0 on one side takes the
#   other's. A board passes frame_max=4096, the minimum, and a small
#   max_body.)
#   sock.send(c.take())                  # the protocol header, then anything queued
#   for ev in c.feed(data, now): ...     # bytes received -> list of event tuples
#   for ev in c.tick(now): ...           # heartbeats; () when nothing happened
#
# The handshake runs by itself: connection.start -> start-ok (PLAIN),
# tune -> tune-ok + open(vhost), open-ok -> channel.open (channel 1),
# open-ok -> confirm.select, select-ok -> the event ("ready",). Publisher
# confirms are always on (docs/design.md "Upstream").
#
# Once ready (each queues its frames in `out`; call take() and send):
#   c.publish(routing_key, body, qos=1, message_id=None, headers=None,
#             content_type=None, mandatory=True, exchange="amq.topic")
#             -> delivery tag (1, 2, ...); headers: a dict or (name, value)
#             pairs, added after x-mqtt-publish-qos and x-mqtt-dup
#   c.declare_queue(name, durable=True, arguments=None)
#   c.bind(queue, exchange, routing_key)
#   c.qos(prefetch_count)
#   c.consume(queue, consumer_tag="")
#   c.ack(tag, multiple=False); c.nack(tag, multiple=False, requeue=True)
#   c.close(code=200, text="")
#
# Events (tuples, cheap on a board):
#   ("ready",)                          channel 1 open, confirms on
#   ("confirm", tag, multiple)          basic.ack from the server
#   ("nack", tag, multiple)             basic.nack from the server
#   ("return", code, text, routing_key, props)  an unroutable mandatory
#                                       message (body not kept); counted in
#                                       `returned`. Its confirm follows.
#   ("deliver", tag, routing_key, props, body)  a consumed message
#   ("oversize", tag, routing_key, size)  a delivery over max_body, body
#                                       dropped (counted): reject or nack it
#   ("declare_ok", queue, messages, consumers), ("bind_ok",), ("qos_ok",),
#   ("consume_ok", consumer_tag), ("cancelled", consumer_tag)
#   ("blocked", reason), ("unblocked",) connection.blocked/unblocked
#   ("channel_closed", code, text)      channel.close from the server
#                                       (answered); state NO_CHANNEL:
#                                       close() and connect anew
#   ("closed", code, text)              connection.close from the server
#                                       (answered); the connection is over
#   ("close_ok",)                       our close() was acknowledged
#   ("dead",) (from tick)               nothing heard for 2 heartbeat
#                                       intervals
# props: a dict of the basic class's properties that were present
# ("content_type", "headers", "delivery_mode", "message_id", ...).
# `state` is READY once ("ready",) came; `blocked`, `returned` and
# `oversize` are there to read; `tag` is the last delivery tag published.
#
# A peer that breaks the spec raises RemoteProtocolError(reply code); the
# caller then drops the socket (H4). Calling a method in the wrong state
# raises LocalProtocolError.
import struct

from edge.bridge.amqpin import CLOSED, CLOSING, NO_CHANNEL, READY, WAIT_OPEN, WAIT_START, on_frame  # noqa: F401  (READY, NO_CHANNEL: for callers)
from edge.bridge.amqpwire import _shortstr, _u32, write_fields, write_props
from edge.compat import const
from edge.errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"  # AMQP 0-9-1 §4.2.2

# Frame types and the frame end octet (§4.2.3)
_METHOD = const(1)
_HEADER = const(2)
_BODY = const(3)
_FRAME_END = const(0xCE)

# Reply codes (the spec's constants)
_REPLY_SUCCESS = const(200)
_FRAME_ERROR = const(501)
_COMMAND_INVALID = const(503)
_NOT_IMPLEMENTED = const(540)

# class id << 16 | method id: what the client sends beyond the handshake
_CLOSE = const(0x000A0032)
_CLOSE_OK = const(0x000A0033)
_Q_DECLARE = const(0x0032000A)
_Q_BIND = const(0x00320014)
_B_QOS = const(0x003C000A)
_B_CONSUME = const(0x003C0014)
_B_PUBLISH = const(0x003C0028)
_B_ACK = const(0x003C0050)
_B_NACK = const(0x003C0078)
_BASIC = const(60)


class Amqp:
    blocked = False          # connection.blocked in force
    server_properties = None

    def __init__(self, user, password, vhost="/", heartbeat=15, frame_max=131072,
                 channel_max=0, max_body=65536, now=0):
        self.vhost = vhost
        self.heartbeat = heartbeat      # seconds; negotiated at tune
        self.frame_max = frame_max      # negotiated at tune
        self.channel_max = channel_max
        self.max_body = max_body        # bound on a consumed message's body
        self._login = b"\x00" + user.encode() + b"\x00" + password.encode()  # PLAIN (RFC 4616)
        self.state = WAIT_START
        self.out = bytearray(PROTOCOL_HEADER)
        self.buf = b""
        self.last_rx = now
        self.last_tx = now
        self._wrote = False
        self.tag = 0                    # last delivery tag published
        self.returned = 0               # basic.return received
        self.oversize = 0               # deliveries over max_body
        self._content = None            # [kind, ...] of a method awaiting content
        self._props = None
        self._size = 0                  # its body size, from the content header
        self._body = None               # bytearray, or None when dropped
        self._got = 0                   # body octets received so far
        self._pcache = {}               # qos -> the properties publish() sends (no message-id)
        self._mlast = None              # (routing key, exchange, mandatory, its method frame): the last published

    def take(self):
        """The bytes to send (possibly empty); `out` starts afresh."""
        out = self.out
        self.out = bytearray()
        return out

    # ---- output ------------------------------------------------------------
    def _frame(self, ftype, ch, payload):
        # §4.2.3: type, channel, size, payload, frame-end
        out = self.out
        out.append(ftype)
        out += struct.pack(">HI", ch, len(payload))
        out += payload
        out.append(_FRAME_END)
        self._wrote = True

    def _method(self, ch, cm, fmt, args):
        p = bytearray(struct.pack(">I", cm))
        write_fields(p, fmt, args)
        self._frame(_METHOD, ch, p)

    def _publish_props(self, qos, headers, content_type, message_id):
        # The property flags and list as RabbitMQ's MQTT plugin sets them
        h = [("x-mqtt-publish-qos", ("b", qos)), ("x-mqtt-dup", False)]
        if headers:
            h.extend(headers.items() if type(headers) is dict else headers)
        p = bytearray()
        write_props(p, {"content_type": content_type, "headers": h,
                        "delivery_mode": 2 if qos else 1, "message_id": message_id})
        return p

    def _ready(self):
        if self.state != READY:
            raise LocalProtocolError(_COMMAND_INVALID, "channel not open (state %d)" % self.state)

    def publish(self, routing_key, body, qos=1, message_id=None, headers=None,
                content_type=None, mandatory=True, exchange="amq.topic"):
        """basic.publish + content header + body frames split at frame_max;
        returns the delivery tag its confirm will carry. Properties as
        RabbitMQ's MQTT plugin sets them: delivery_mode 2 for QoS >= 1,
        headers x-mqtt-publish-qos (a signed byte, 'b') and x-mqtt-dup."""
        if self.state != READY:
            self._ready()
        n = len(body)
        if headers or content_type is not None or n > self.frame_max - 8:
            return self._publish(routing_key, body, qos, message_id, headers, content_type,
                                 mandatory, exchange)
        # The uplink's case, once per message: the three frames (§4.2.3)
        # written straight into `out` (a drain spent its time in the
        # general encoders). The method frame is the same for every
        # message to a routing key: the last one is kept whole (a sensor
        # publishes on the same topic again and again). The property list
        # up to delivery-mode is the same for every message of a QoS;
        # message-id follows.
        ml = self._mlast
        if ml is None or routing_key != ml[0] or exchange != ml[1] or mandatory != ml[2]:
            rk = routing_key.encode()
            if len(rk) > 255:
                return self._publish(routing_key, body, qos, message_id, headers, content_type,
                                     mandatory, exchange)
            m = bytearray(struct.pack(">I", _B_PUBLISH))
            # reserved-1, exchange, routing-key, mandatory | immediate << 1
            write_fields(m, "sS", (0, exchange))
            m.append(len(rk))
            m += rk
            m.append(1 if mandatory else 0)
            ml = self._mlast = (routing_key, exchange, mandatory,
                                struct.pack(">BHI", _METHOD, 1, len(m)) + m + bytes((_FRAME_END,)))
        mid = message_id.encode() if message_id is not None else None
        if mid is not None and len(mid) > 255:
            return self._publish(routing_key, body, qos, message_id, headers, content_type,
                                 mandatory, exchange)
        pre = self._pcache.get(qos)
        if pre is None:
            pre = self._pcache[qos] = self._publish_props(qos, None, None, None)
        out = self.out
        out += ml[3]
        # content header (§4.2.6): class-id, weight, body size, property
        # flags and list
        out += struct.pack(">BHIHHQ", _HEADER, 1, 12 + len(pre) + (len(mid) + 1 if mid is not None else 0),
                           _BASIC, 0, n)
        if mid is not None:
            i = len(out) + 1
            out += pre
            out[i] |= 0x80  # the message-id flag (property 8)
            out.append(len(mid))
            out += mid
        else:
            out += pre
        if n:  # one body frame (n <= frame_max - 8)
            out += struct.pack(">BBHI", _FRAME_END, _BODY, 1, n)
            out += body
        out.append(_FRAME_END)
        self._wrote = True
        self.tag += 1
        return self.tag

    def _publish(self, routing_key, body, qos, message_id, headers, content_type, mandatory, exchange):
        # the general case: any properties, a body split at frame_max
        # reserved-1, exchange, routing-key, mandatory | immediate << 1
        self._method(1, _B_PUBLISH, "sSSo", (0, exchange, routing_key, 1 if mandatory else 0))
        # §4.2.6: class-id, weight, body size, property flags and list
        p = bytearray(struct.pack(">HHQ", _BASIC, 0, len(body)))
        if headers or content_type is not None:
            p += self._publish_props(qos, headers, content_type, message_id)
        else:
            pre = self._pcache.get(qos)
            if pre is None:
                pre = self._pcache[qos] = self._publish_props(qos, None, None, None)
            p += pre
            if message_id is not None:
                p[13] |= 0x80  # the message-id flag (property 8)
                _shortstr(p, message_id)
        self._frame(_HEADER, 1, p)
        mv = memoryview(body)
        step = self.frame_max - 8  # 7 octets of header, 1 of frame-end
        for i in range(0, len(body), step):
            self._frame(_BODY, 1, mv[i:i + step])
        self.tag += 1
        return self.tag

    def declare_queue(self, name, durable=True, arguments=None, passive=False):
        """queue.declare (§1.7.2.1): bits passive, durable, exclusive,
        auto-delete, no-wait; arguments e.g. {"x-queue-type": "quorum"}.
        Passive: only checks that it exists (404 channel close if not),
        whatever its arguments."""
        self._ready()
        self._method(1, _Q_DECLARE, "sSoF", (0, name, (2 if durable else 0) | (1 if passive else 0), arguments))

    def bind(self, queue, exchange, routing_key, arguments=None):
        self._ready()
        self._method(1, _Q_BIND, "sSSSoF", (0, queue, exchange, routing_key, 0, arguments))

    def qos(self, prefetch_count, prefetch_size=0):
        self._ready()
        self._method(1, _B_QOS, "lso", (prefetch_size, prefetch_count, 0))

    def consume(self, queue, consumer_tag="", arguments=None):
        """basic.consume with acks (no-local, no-ack, exclusive, no-wait off);
        an empty tag lets the server choose (see ("consume_ok", tag))."""
        self._ready()
        self._method(1, _B_CONSUME, "sSSoF", (0, queue, consumer_tag, 0, arguments))

    def ack(self, tag, multiple=False):
        self._ready()
        self._method(1, _B_ACK, "Lo", (tag, 1 if multiple else 0))

    def nack(self, tag, multiple=False, requeue=True):
        self._ready()
        self._method(1, _B_NACK, "Lo", (tag, (1 if multiple else 0) | (2 if requeue else 0)))

    def close(self, code=_REPLY_SUCCESS, text=""):
        """connection.close; ("close_ok",) follows. Nothing else is sent."""
        if self.state >= CLOSING:
            return
        if self.state == WAIT_START:  # no connection to close yet
            self.state = CLOSED
            return
        self._method(0, _CLOSE, "sSss", (code, text, 0, 0))
        self.state = CLOSING

    # ---- input ---------------------------------------------------------------
    def feed(self, data, now):
        """Bytes received -> list of events. An incomplete frame is kept for
        the next feed. Raises RemoteProtocolError (then drop the socket)."""
        self.last_rx = now
        ev = []
        if self.state == CLOSED:
            return ev
        buf = self.buf + bytes(data) if self.buf else bytes(data)
        end = len(buf)
        if self.state == WAIT_START and buf[:4] == b"AMQP"[:min(end, 4)]:
            # §4.2.2: a server that refuses our version answers with its own
            # protocol header and closes
            if end >= 8:
                raise RemoteProtocolError(_NOT_IMPLEMENTED, "version refused: %r" % buf[:8])
            self.buf = buf
            return ev
        mv = memoryview(buf)
        i = 0
        limit = self.frame_max - 8 if self.frame_max else 0x7FFFFFFF  # 0: no limit
        while end - i >= 7 and self.state != CLOSED:
            size = _u32(mv, i + 3)
            if size > limit:
                raise RemoteProtocolError(_FRAME_ERROR, "frame of %d octets over frame-max" % size)
            j = i + 7 + size
            if j >= end:
                break
            if mv[j] != _FRAME_END:
                raise RemoteProtocolError(_FRAME_ERROR, "no frame-end octet")
            on_frame(self, mv[i], mv[i + 1] << 8 | mv[i + 2], mv, i + 7, j, ev)
            i = j + 1
        self.buf = buf[i:] if i < end else b""
        return ev

    def tick(self, now):
        """Heartbeats (§4.2.7): send one when nothing was sent for an
        interval; ("dead",) once nothing was heard for two."""
        hb = self.heartbeat * 1000
        if not hb or self.state < WAIT_OPEN or self.state == CLOSED:
            return ()
        if now - self.last_rx >= 2 * hb:
            self.state = CLOSED
            return (("dead",),)
        if self._wrote:
            # written since the last tick: count from now, so the next
            # heartbeat is at most one tick late (the peer allows two
            # intervals)
            self._wrote = False
            self.last_tx = now
        elif now - self.last_tx >= hb:
            self.out += b"\x08\x00\x00\x00\x00\x00\x00\xce"
            self.last_tx = now
        return ()
