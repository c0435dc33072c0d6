# One MQTT network connection as a sans-IO state machine (h11 style): the
# runtime feeds bytes in with receive_data(), pulls packets out with
# next_event(), and collects what the broker queued for it with take().
# Nothing here touches a socket or a clock; time comes in as `now` (ms).
from edge.compat import const
from edge.errors import RemoteProtocolError
from edge.mqtt import codec

# From consts.py, private so they fold into the bytecode (test_consts.py)
_CONNECT = const(1)
_PUBLISH = const(3)
_RC_MALFORMED = const(0x81)
_RC_PROTOCOL_ERROR = const(0x82)
_RC_PACKET_TOO_LARGE = const(0x95)

NEED_DATA = None  # next_event() result when no whole packet is buffered

# States
AWAIT_CONNECT = const(0)  # socket open, no CONNECT yet
CONNECTED = const(1)      # CONNECT accepted (CONNACK 0 queued)
CLOSED = const(2)         # closed by us or by the peer; no more input
ERROR = const(3)          # a protocol error closed it (h11's ERROR)

# Compact the input buffer once this many consumed bytes sit at its front.
_COMPACT_AT = const(4096)


class Connection:
    # Every attribute costs heap per connection on a board: keep them few.
    def __init__(self, cid, now):
        self.id = cid
        self.state = AWAIT_CONNECT
        self.v5 = False
        # Until CONNECT: when the socket opened (connect timeout); then: the
        # last time a packet arrived (keepalive).
        self.last_rx = now
        self.keepalive = 0      # seconds, from CONNECT
        self.session = None     # Session once CONNECT is accepted
        self.will = None        # Message from CONNECT; None after DISCONNECT
        self.buf = bytearray()
        self.pos = 0
        self.raw = None  # bytes of the last PUBLISH decoded (QoS 0 forwarding)
        # Output side, drained by the runtime: the first write of a batch puts
        # the connection on the broker's shared `dirty` list.
        self.dirty = []
        self.out = []
        self.out_bytes = 0
        self.closing = False  # close after the queued output is written

    # ---- input -------------------------------------------------------------
    def receive_data(self, data, now):
        if self.state:  # not before CONNECT: a trickle must not defer the timeout
            self.last_rx = now
        if self.pos and (self.pos >= len(self.buf) or self.pos >= _COMPACT_AT):
            self.buf[0:self.pos] = b""
            self.pos = 0
        self.buf += data

    def next_event(self, max_packet_size):
        """Next whole packet, or NEED_DATA. Raises RemoteProtocolError."""
        if self.state >= CLOSED:
            return NEED_DATA
        buf = self.buf
        end = len(buf)
        if self.pos >= end:
            return NEED_DATA
        n = codec.packet_length(buf, self.pos, end)
        if n < 0:
            return NEED_DATA
        if n > max_packet_size:
            # [MQTT-3.1.2-24] (5.0) / an explicit limit in 3.1.1: refuse it
            # before buffering the body.
            raise RemoteProtocolError(
                _RC_PACKET_TOO_LARGE,
                "packet of %d bytes over max_packet_size %d" % (n, max_packet_size),
            )
        if self.pos + n > end:
            return NEED_DATA
        pkt, used = codec.decode(buf, self.pos, end, self.v5)
        if pkt is None or used != n:
            raise RemoteProtocolError(_RC_MALFORMED, "remaining length does not match contents")
        kind = pkt.kind
        if self.state == AWAIT_CONNECT:
            if kind != _CONNECT:
                # [MQTT-3.1.0-1] the first packet must be CONNECT
                raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "first packet is not CONNECT")
        elif kind == _CONNECT:
            # [MQTT-3.1.0-2] a second CONNECT is a protocol violation
            raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "second CONNECT")
        if kind == _PUBLISH and pkt.qos == 0 and not pkt.retain:
            self.raw = bytes(buf[self.pos:self.pos + n])
        else:
            self.raw = None
        self.pos += n
        return pkt

    def eof_pending(self):
        """Bytes of an incomplete packet are buffered (a truncated packet)."""
        return self.pos < len(self.buf)

    # ---- output ------------------------------------------------------------
    def write(self, data):
        if not self.out:
            self.dirty.append(self)
        self.out.append(data)
        self.out_bytes += len(data)

    def send(self, pkt):
        data = codec.encode(pkt, self.v5)
        if not self.out:
            self.dirty.append(self)
        self.out.append(data)
        self.out_bytes += len(data)
        return data

    def take(self):
        """Everything queued for the socket, as one bytes object (batched)."""
        out = self.out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self.out = []
        self.out_bytes = 0
        return data
