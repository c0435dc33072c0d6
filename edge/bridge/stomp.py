# STOMP 1.2 client, the subset the uplink needs, sans-IO (docs/design.md H1,
# H5): bytes in, events out; the bytes to send collect in `out`.
#
#   c = Stomp(login, passcode, host="/", heartbeat=15000, max_frame=65536, now=0)
#   sock.send(c.take())                  # CONNECT, then anything queued
#   for ev in c.feed(data, now): ...     # bytes received -> list of event tuples
#   for ev in c.tick(now): ...           # heart-beats; () when nothing happened
#
# Once connected (each queues a frame in `out`; call take() and send):
#   c.send(destination, body, headers=None, content_type=None,
#          persistent=True, receipt=True) -> receipt number (or 0 without)
#   c.subscribe(destination, sub_id, ack="client-individual", headers=None,
#               receipt=False)
#   c.unsubscribe(sub_id)
#   c.ack(ack_id); c.nack(ack_id)        # the MESSAGE's `ack` header
#   c.close()                            # DISCONNECT with a receipt
#
# Events (tuples):
#   ("connected", session, server)       CONNECTED, version 1.2
#   ("confirm", n, False)                RECEIPT for send() number n (the
#                                        same shape as AMQP's confirm)
#   ("message", ack_id, destination, headers, body)  MESSAGE; headers a
#                                        dict of str, body bytes
#   ("error", message, body)             ERROR; the server closes next
#   ("subscribed", sub_id)               the RECEIPT of subscribe(receipt=True)
#   ("close_ok",)                        the RECEIPT of our DISCONNECT
#   ("dead",) (from tick)                nothing heard for 2 heart-beat
#                                        intervals
#
# Heart-beats (STOMP 1.2 "Heart-beating"): we offer `heartbeat` ms both ways;
# we send an EOL when we sent nothing for max(ours, the server's wish), and
# expect something every max(server's offer, ours). A peer that breaks the
# spec raises RemoteProtocolError; misuse raises LocalProtocolError.
from edge.compat import const
from edge.errors import LocalProtocolError, RemoteProtocolError

# reasons for the exceptions (there are no STOMP codes): the MQTT 5.0 ones
# the rest of edge/ uses (edge/errors.py)
_MALFORMED = const(0x81)
_PROTOCOL_ERROR = const(0x82)
_TOO_LARGE = const(0x95)

_CONNECTING = const(0)
CONNECTED = const(1)
_CLOSING = const(2)  # DISCONNECT sent, awaiting its RECEIPT
CLOSED = const(3)

_CLOSE_RECEIPT = "close"
_SUB_RECEIPT = "sub-"  # + the subscription id


def _err(msg):
    return RemoteProtocolError(_MALFORMED, msg)


# STOMP 1.2 "Value Encoding": \r \n : \ in header names and values, in every
# frame but CONNECT and CONNECTED
def escape(s):
    if "\\" in s:
        s = s.replace("\\", "\\\\")
    if "\r" in s:
        s = s.replace("\r", "\\r")
    if "\n" in s:
        s = s.replace("\n", "\\n")
    if ":" in s:
        s = s.replace(":", "\\c")
    return s


def unescape(s):
    i = s.find("\\")
    if i < 0:
        return s
    out = []
    j = 0
    while i >= 0:
        out.append(s[j:i])
        k = "rnc\\".find(s[i + 1:i + 2]) if i + 1 < len(s) else -1
        if k < 0:
            # "Undefined escape sequences such as \t MUST be treated as a
            # fatal protocol error"
            raise _err("undefined escape %r" % s[i:i + 2])
        out.append("\r\n:\\"[k])
        j = i + 2
        i = s.find("\\", j)
    out.append(s[j:])
    return "".join(out)


def frame(command, headers, body=b"", raw=False):
    """One frame's bytes: headers a list of (name, value); raw: no escaping
    (CONNECT). A body gets a content-length header."""
    b = [command]
    for k, v in headers:
        v = str(v)
        b.append(k + ":" + v if raw else escape(k) + ":" + escape(v))
    if body:
        b.append("content-length:%d" % len(body))
    b.append("\n")
    out = bytearray("\n".join(b).encode())
    out += body
    out.append(0)
    return out


class Stomp:
    session = None
    server = None

    def __init__(self, login, passcode, host="/", heartbeat=15000, max_frame=65536, now=0):
        self.heartbeat = heartbeat  # ms offered both ways
        self.hb_out = 0             # negotiated: ms between our heart-beats
        self.hb_in = 0              # negotiated: ms between the server's
        self.max_frame = max_frame  # bound on a received frame
        self.state = _CONNECTING
        self.buf = b""
        self.last_rx = now
        self.last_tx = now
        self._wrote = False
        self.receipt = 0            # last receipt number asked for
        hb = "%d,%d" % (heartbeat, heartbeat)
        # STOMP 1.2 "Connecting": CONNECT frames are not escaped
        self.out = frame("CONNECT", (("accept-version", "1.2"), ("host", host), ("login", login),
                                     ("passcode", passcode), ("heart-beat", hb)), raw=True)

    def take(self):
        """The bytes to send (possibly empty); `out` starts afresh."""
        out = self.out
        self.out = bytearray()
        return out

    # ---- output ------------------------------------------------------------
    def _put(self, command, headers, body=b""):
        if self.state != CONNECTED:
            raise LocalProtocolError(_PROTOCOL_ERROR, "not connected (state %d)" % self.state)
        self.out += frame(command, headers, body)
        self._wrote = True

    def send(self, destination, body, headers=None, content_type=None, persistent=True,
             receipt=True):
        """SEND; with receipt, returns n whose ("confirm", n, False) is the
        server's RECEIPT. headers: extra (name, value) pairs or a dict, e.g.
        amqp-message-id (RabbitMQ maps it to the AMQP message_id)."""
        h = [("destination", destination)]
        if persistent:
            h.append(("persistent", "true"))
        if content_type:
            h.append(("content-type", content_type))
        if headers:
            h.extend(headers.items() if type(headers) is dict else headers)
        n = 0
        if receipt:
            n = self.receipt + 1
            h.append(("receipt", n))
        self._put("SEND", h, body)
        self.receipt = n or self.receipt
        return n

    def subscribe(self, destination, sub_id, ack="client-individual", headers=None, receipt=False):
        """SUBSCRIBE; with receipt, ("subscribed", sub_id) follows once the
        server has it (RabbitMQ: the queue declared and bound), or an ERROR."""
        h = [("destination", destination), ("id", sub_id), ("ack", ack)]
        if headers:
            h.extend(headers.items() if type(headers) is dict else headers)
        if receipt:
            h.append(("receipt", _SUB_RECEIPT + sub_id))
        self._put("SUBSCRIBE", h)

    def unsubscribe(self, sub_id):
        self._put("UNSUBSCRIBE", (("id", sub_id),))

    def ack(self, ack_id):
        # STOMP 1.2 "ACK": id is the MESSAGE's ack header
        self._put("ACK", (("id", ack_id),))

    def nack(self, ack_id):
        self._put("NACK", (("id", ack_id),))

    def close(self):
        """DISCONNECT with a receipt ("Graceful Disconnect"); ("close_ok",)
        follows."""
        if self.state == CONNECTED:
            self._put("DISCONNECT", (("receipt", _CLOSE_RECEIPT),))
            self.state = _CLOSING
        elif self.state == _CONNECTING:
            self.state = CLOSED

    # ---- input ---------------------------------------------------------------
    def feed(self, data, now):
        """Bytes received -> list of events; an incomplete frame is kept."""
        self.last_rx = now
        ev = []
        if self.state == CLOSED:
            return ev
        buf = self.buf + bytes(data) if self.buf else bytes(data)
        end = len(buf)
        i = 0
        while i < end and self.state != CLOSED:
            c = buf[i]
            if c == 10:  # a heart-beat, or an EOL after a frame's NUL
                i += 1
                continue
            if c == 13:
                if i + 1 == end:
                    break
                if buf[i + 1] != 10:
                    raise _err("CR without LF")
                i += 2
                continue
            j = self._frame(buf, i, end, ev)
            if j < 0:
                if end - i > self.max_frame:
                    raise RemoteProtocolError(_TOO_LARGE, "frame over %d bytes" % self.max_frame)
                break
            i = j
        self.buf = buf[i:] if i < end else b""
        return ev

    def _frame(self, buf, i, end, ev):
        # STOMP 1.2 "Augmented BNF": command EOL, header lines, EOL, body,
        # NUL. Returns the offset after the NUL, or -1 if incomplete.
        start = i
        lines = []
        while True:
            j = buf.find(b"\n", i, end)
            if j < 0:
                return -1
            line = buf[i:j - 1] if j > i and buf[j - 1] == 13 else buf[i:j]
            i = j + 1
            if not line:
                break
            try:
                lines.append(str(line, "utf-8"))
            except UnicodeError:
                raise _err("header not UTF-8")
        command = lines[0]
        raw = command == "CONNECTED"
        h = {}
        for line in lines[1:]:
            k = line.find(":")
            if k < 0:
                raise _err("header line without a colon")
            name = line[:k] if raw else unescape(line[:k])
            if name not in h:  # "Repeated Header Entries": the first counts
                h[name] = line[k + 1:] if raw else unescape(line[k + 1:])
        n = h.get("content-length")
        if n is not None:
            try:
                n = int(n)
            except ValueError:
                raise _err("bad content-length")
            if n < 0 or n > self.max_frame:
                raise RemoteProtocolError(_TOO_LARGE, "body of %d bytes" % n)
            if i + n >= end:
                return -1
            if buf[i + n] != 0:
                raise _err("no NUL after content-length bytes")
            j = i + n
        else:
            j = buf.find(b"\x00", i, end)
            if j < 0:
                return -1
        if j - start > self.max_frame:  # whole already, but over the bound
            raise RemoteProtocolError(_TOO_LARGE, "frame over %d bytes" % self.max_frame)
        self._on_frame(command, h, buf[i:j], ev)
        return j + 1

    def _on_frame(self, command, h, body, ev):
        if command == "CONNECTED":
            if self.state != _CONNECTING:
                raise RemoteProtocolError(_PROTOCOL_ERROR, "CONNECTED again")
            if h.get("version") != "1.2":
                raise RemoteProtocolError(_PROTOCOL_ERROR, "version %r, not 1.2" % h.get("version"))
            sx, sy = self._heart_beat(h.get("heart-beat", "0,0"))
            hb = self.heartbeat
            self.hb_out = max(hb, sy) if hb and sy else 0
            self.hb_in = max(sx, hb) if sx and hb else 0
            self.state = CONNECTED
            self.session = h.get("session")
            self.server = h.get("server")
            ev.append(("connected", self.session, self.server))
        elif command == "MESSAGE":
            ev.append(("message", h.get("ack"), h.get("destination"), h, body))
        elif command == "RECEIPT":
            r = h.get("receipt-id")
            if r == _CLOSE_RECEIPT and self.state == _CLOSING:
                self.state = CLOSED
                ev.append(("close_ok",))
            elif r is not None and r.startswith(_SUB_RECEIPT):
                ev.append(("subscribed", r[len(_SUB_RECEIPT):]))
            else:
                try:
                    ev.append(("confirm", int(r), False))
                except (TypeError, ValueError):
                    raise _err("RECEIPT for %r, not ours" % r)
        elif command == "ERROR":
            self.state = CLOSED  # "the server MUST close the connection"
            ev.append(("error", h.get("message", ""), body))
        else:
            raise RemoteProtocolError(_PROTOCOL_ERROR, "unexpected frame %r" % command)

    def _heart_beat(self, v):
        try:
            x, y = v.split(",")
            x = int(x)
            y = int(y)
        except ValueError:
            raise _err("bad heart-beat %r" % v)
        if x < 0 or y < 0:
            raise _err("bad heart-beat %r" % v)
        return x, y

    def tick(self, now):
        """Heart-beats: an EOL when nothing was sent for hb_out ms;
        ("dead",) once nothing was heard for 2 * hb_in ms."""
        if self.state == CLOSED or self.state == _CONNECTING:
            return ()
        if self.hb_in and now - self.last_rx >= 2 * self.hb_in:
            self.state = CLOSED
            return (("dead",),)
        if self._wrote:
            self._wrote = False
            self.last_tx = now
        elif self.hb_out and now - self.last_tx >= self.hb_out:
            self.out += b"\n"
            self.last_tx = now
        return ()
