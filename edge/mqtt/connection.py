# One MQTT network connection as a sans-IO state machine (h11 style): the
# runtime feeds bytes in with receive_data(), pulls packets out with
# next_event(), and collects what the broker queued for it with take().
# Nothing here touches a socket or a clock; time comes in as `now` (ms).
from edge.compat import const
from edge.errors import RemoteProtocolError
from edge.mqtt import codec

# From consts.py, private so they fold into the bytecode (test_consts.py)
_CONNECT = const(1)
_RC_MALFORMED = const(0x81)
_RC_PROTOCOL_ERROR = const(0x82)
_RC_PACKET_TOO_LARGE = const(0x95)

NEED_DATA = None  # next_event() result when no whole packet is buffered

# States
AWAIT_CONNECT = const(0)  # socket open, no CONNECT yet
CONNECTED = const(1)      # CONNECT accepted (CONNACK 0 queued)
CLOSED = const(2)         # closed by us or by the peer; no more input
ERROR = const(3)          # a protocol error closed it (h11's ERROR)

_CONNECT_BYTE = const(0x10)  # CONNECT, flags 0 [MQTT-2.2.2-1]
# First bytes of the acknowledgements, their fixed flags included [MQTT-2.2.2-1]
_PUBACK_BYTE = const(0x40)
_PUBREC_BYTE = const(0x50)
_PUBREL_BYTE = const(0x62)
_PUBCOMP_BYTE = const(0x70)


class Connection:
    # Every instance attribute costs heap per connection on a board
    # (MicroPython keeps them in a hash map that grows 8, 10, 12, 17 slots):
    # nine are set here, and the rarely set ones default on the class.
    v5 = False        # MQTT 5.0: its v5.Peer (truthy), set at CONNECT
    will = None       # Message from CONNECT; None after DISCONNECT
    closing = False   # close after the queued output is written
    out = ()          # output waiting for take(): a list once written to
    peer = None       # client address, while max_connections_per_address counts it
    # max_packet_rate's bucket (Broker.data_received): the packets, in
    # thousandths, it may still send now (a name the board has: Budget.room)
    room = None

    def __init__(self, cid, now, dirty=None):
        self.id = cid
        self.state = AWAIT_CONNECT
        # Until CONNECT: when the socket opened (connect timeout); then: the
        # last time a packet arrived (keepalive).
        self.last_rx = now
        self.keepalive = 0      # seconds, from CONNECT
        self.session = None     # Session once CONNECT is accepted
        # Input: between feeds, only the bytes of an incomplete packet, in a
        # bytearray of our own (b"" when none: an idle connection holds no
        # buffer). During a feed, the data fed in itself, read in place.
        self.buf = b""
        self.pos = 0
        # Output side, drained by the runtime: the first write of a batch puts
        # the connection on the broker's shared `dirty` list.
        self.dirty = [] if dirty is None else dirty
        self.out_bytes = 0

    # ---- input -------------------------------------------------------------
    def receive_data(self, data, now):
        """Feed bytes; call next_event() until it returns NEED_DATA before the
        next feed. `data` is only borrowed: it may be the runtime's shared read
        buffer, so what outlives the feed (an incomplete packet) is copied."""
        if self.state:  # not before CONNECT: a trickle must not defer the timeout
            self.last_rx = now
        buf = self.buf
        if not buf:
            if type(data) is bytearray:
                data = memoryview(data)  # never grow a caller's bytearray
            self.buf = data  # bytes, or a view of the runtime's read buffer
        elif type(data) is bytes:
            # CPython's reads are bytes: the rest of a packet we hold the
            # start of goes in front, and the feed is still bytes (which
            # decodes with no memoryview per field).
            self.buf = bytes(buf) + data
        else:
            buf += data  # our own bytearray (a board: grown in place)
            self.buf = buf

    def _keep_tail(self):
        # End of a feed: hold the incomplete packet (if any) in our own buffer
        buf = self.buf
        pos = self.pos
        if pos >= len(buf):
            self.buf = b""
        elif pos or type(buf) is not bytearray:
            self.buf = bytearray(buf[pos:])
        self.pos = 0

    def next_event(self, max_packet_size):
        """Next whole packet, or NEED_DATA. Raises RemoteProtocolError.
        PUBACK, PUBREC, PUBREL and PUBCOMP in their short form (packet id
        only: all of 3.1.1's, and 5.0's with reason 0 and no properties) come
        back as the int kind << 16 | pid, not as a packet object: after
        PUBLISH they are the most frequent packets, and so they allocate
        nothing (no garbage for a board's GC, less work for CPython)."""
        if self.state >= CLOSED:
            return NEED_DATA
        buf = self.buf
        pos = self.pos
        end = len(buf)
        if pos >= end:
            self._keep_tail()
            return NEED_DATA
        b0 = buf[pos]
        if self.state == AWAIT_CONNECT and b0 != _CONNECT_BYTE:
            # [MQTT-3.1.0-1] judged on the first byte: an HTTP request or a
            # stray PUBLISH is closed at once, not after connect_timeout
            raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "first packet is not CONNECT")
        # The fixed header, read here (a 1-byte remaining length inline) so
        # the codec gets one whole packet: the length is judged first.
        i = pos + 2
        n = buf[pos + 1] if i <= end else -1
        if n > 127:
            n, i = codec.read_varint(buf, pos + 1, end)
        j = i + n
        if n >= 0 and j - pos > max_packet_size:
            # [MQTT-3.1.2-24] (5.0) / an explicit limit in 3.1.1: refuse it
            # before buffering the body.
            raise RemoteProtocolError(
                _RC_PACKET_TOO_LARGE,
                "packet of %d bytes over max_packet_size %d" % (j - pos, max_packet_size),
            )
        if n < 0 or j > end:
            self._keep_tail()
            return NEED_DATA
        if n == 2 and (b0 == _PUBACK_BYTE or b0 == _PUBREC_BYTE or b0 == _PUBREL_BYTE
                       or b0 == _PUBCOMP_BYTE):
            pid = buf[i] << 8 | buf[i + 1]
            if not pid:
                # [MQTT-2.3.1-1] packets that carry a packet id need a non-zero one
                raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "packet id 0")
            self.pos = j
            return (b0 >> 4) << 16 | pid
        # view: a QoS 0 PUBLISH's payload stays in buf (see last_packet)
        pkt, used = codec.decode(buf, pos, j, self.v5, True)
        if pkt is None or used != j - pos:
            raise RemoteProtocolError(_RC_MALFORMED, "remaining length does not match contents")
        kind = pkt.kind
        if self.state == AWAIT_CONNECT:
            if kind != _CONNECT:
                # [MQTT-3.1.0-1] the first packet must be CONNECT
                raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "first packet is not CONNECT")
        elif kind == _CONNECT:
            # [MQTT-3.1.0-2] a second CONNECT is a protocol violation
            raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "second CONNECT")
        self.pos = j
        return pkt

    def last_packet(self, start, lend=False):
        """The wire bytes of the packet next_event() just returned, given
        `pos` before that call (QoS 0 forwarding without re-encoding).
        Bytes of their own, unless `lend` (Broker.lend) and the feed was
        not bytes: then a view, no copy, so a near-limit packet needs no
        fresh ~1 KB block on a fragmented board heap. The view is valid
        until the next feed: write() copies it if it must wait behind
        other output, and a lending runtime writes or copies what take()
        returns before it reads again."""
        buf = self.buf
        if not lend or type(buf) is bytes:
            return bytes(buf[start:self.pos])
        if type(buf) is bytearray:  # our own (a packet that spanned reads)
            buf = memoryview(buf)
        return buf[start:self.pos]

    def need(self):
        """Bytes that complete the packet whose start is held between feeds
        (0: none held, or its length not read yet). A board reads no more
        than that, so a packet spanning reads never needs a block of its
        size plus a whole read (test_27_floods.py: 1 KB publishes grew
        their buffer to 1.9 KB, and a flooded 64 KiB heap had no such block)."""
        buf = self.buf
        if len(buf) < 2:
            return 0
        try:
            n = codec.packet_length(buf, 0, len(buf))
        except RemoteProtocolError:
            return 0  # (next_event closes it)
        return n - len(buf) if n > 0 else 0

    def eof_pending(self):
        """Bytes of an incomplete packet are buffered (a truncated packet)."""
        return self.pos < len(self.buf)

    # ---- output ------------------------------------------------------------
    # With the store on, output may promise what a record holds (a PUBACK,
    # PUBREC, PUBREL, PUBCOMP, SUBACK, CONNACK: docs/design.md "Delivery
    # guarantees"); the runtime holds such output until the record is
    # synced. A QoS 0 or 1 PUBLISH to a subscriber promises nothing: if the
    # broker dies before its record is durable, the publisher never got its
    # PUBACK and sends it again, a duplicate QoS 1 allows. So those go out at
    # once (promise False), unless output that must wait is ahead of them.
    promise = False  # output since the last take() may promise (the runtime reads it)

    def write(self, data, promise=True):
        if promise:
            self.promise = True
        out = self.out
        if out:
            # A view (last_packet) only goes out alone: joined with other
            # output it becomes bytes (MicroPython's join takes bytes only).
            if type(data) is memoryview:
                data = bytes(data)
            if type(out[0]) is memoryview:
                out[0] = bytes(out[0])
            out.append(data)
        else:  # the first write of a batch
            self.dirty.append(self)
            self.out = [data]
        self.out_bytes += len(data)

    def send(self, pkt):
        data = codec.encode(pkt, self.v5)
        self.write(data)
        return data

    # The two packets of the delivery hot path are encoded from their fields,
    # with no packet object built first (less garbage on a board, faster on
    # CPython).
    def send_publish(self, msg, qos=0, retain=False, dup=False, pid=0):
        """Queue a PUBLISH of msg (a session.Message); the bytes, or None
        when a 5.0 client's Maximum Packet Size had it dropped."""
        v5 = self.v5
        if v5:  # properties, expiry, topic aliases: edge/mqtt/v5.py
            return v5.send_publish(self, msg, qos, retain, dup, pid)
        data = codec.encode_publish(msg.topic, msg.payload, qos, retain, dup, pid, None, False)
        self.write(data, qos == 2)  # QoS 2 waits: a duplicate would break exactly once
        return data

    def send_ack(self, kind, pid, reason=0, at=-1, promise=True):
        """Queue a PUBACK/PUBREC/PUBREL/PUBCOMP: successful, the same bytes
        in 3.1.1 and 5.0 (reason 0 and no properties may be left out); a
        reason code only reaches a 5.0 client. at >= 0: ahead of what was
        queued after the first `at` writes (an ack written after the
        deliveries its packet caused goes before them). promise False: a
        refusal, which promises nothing the store holds."""
        if reason and self.v5:
            self.write(codec.encode(codec._CLS[kind](pid, reason), True), promise)
        else:
            self.write(codec.encode_ack(kind, pid), promise)
        out = self.out
        if 0 <= at < len(out) - 1:
            out.insert(at, out.pop())

    def drop_output(self, kept):
        """Forget what was queued after the first `kept` writes (a feed
        that failed: Broker.data_received)."""
        out = self.out
        if len(out) > kept:
            for data in out[kept:]:
                self.out_bytes -= len(data)
            self.out = out[:kept] if kept else ()

    def take(self):
        """Everything queued for the socket, as one bytes object (batched),
        or a view of the receive buffer alone (see last_packet)."""
        out = self.out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self.out = ()  # no list held between batches
        self.out_bytes = 0
        self.promise = False
        return data

