# MQTT over WebSockets (MQTT 3.1.1 §6, MQTT 5.0 §6; RFC 6455), framed by
# wsproto: after the upgrade (gateway/web.py) the connection is one more
# peer of the CPython TCP shell (edge/runtime/tcp_cpython.py), the same
# broker, sessions and limits as a TCP client. The shell sees a transport
# (WsTransport) whose write() sends one binary frame; what arrives in binary
# frames goes to the broker as a byte stream, whatever the frame boundaries
# ([MQTT-6.0.0-2]: a packet split across frames, or several in one frame).
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

# RFC 6455 §7.4.1 close codes
_NORMAL = 1000
_UNSUPPORTED = 1003  # [MQTT-6.0.0-1] a text frame: not MQTT


class WsTransport:
    """The asyncio transport of an upgraded connection as the TCP shell uses
    it: output in binary frames, the rest passed through."""

    __slots__ = ("tr", "ws")

    def __init__(self, tr, ws):
        self.tr = tr
        self.ws = ws

    def write(self, data):
        if self.ws.state is ConnectionState.OPEN:  # [MQTT-6.0.0-1] binary frames
            self.tr.write(self.ws.send(BytesMessage(data=data)))

    def close(self, code=_NORMAL, reason=""):
        """A close frame (RFC 6455 §5.5.1) if none was sent, then the TCP
        connection, after the output buffered before it."""
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self.tr.write(self.ws.send(CloseConnection(code=code, reason=reason)))
        self.tr.close()

    def get_write_buffer_size(self):
        return self.tr.get_write_buffer_size()

    def set_write_buffer_limits(self, high=None, low=None):
        self.tr.set_write_buffer_limits(high, low)

    def is_reading(self):
        return self.tr.is_reading()

    def pause_reading(self):
        self.tr.pause_reading()

    def resume_reading(self):
        self.tr.resume_reading()

    def get_extra_info(self, name, default=None):
        return self.tr.get_extra_info(name, default)


def feed(peer, srv, data):
    """Bytes from the socket of an MQTT WebSocket peer: frames in, the
    broker fed (srv: the TCP shell); b"" is the peer's EOF."""
    ws = peer.ws
    if not data:
        srv.received(peer, b"")  # EOF without a close frame (RFC 6455 §7.1.5: 1006)
        return
    ws.receive_data(data)
    for ev in ws.events():
        if not peer.cid:
            return  # closed while handling an earlier event
        if type(ev) is BytesMessage:
            if ev.data:
                srv.received(peer, bytes(ev.data))
        elif type(ev) is Ping:
            peer.tr.tr.write(ws.send(ev.response()))  # RFC 6455 §5.5.2
        elif type(ev) is TextMessage:
            # [MQTT-6.0.0-1] "MUST close the Network Connection": as a
            # lost connection (its will goes out)
            srv.log(20, "connection %d: WebSocket text frame, not MQTT: closed" % peer.cid)
            close(peer, srv, _UNSUPPORTED, "MQTT needs binary frames")
            return
        elif type(ev) is CloseConnection:
            if ws.state is ConnectionState.REMOTE_CLOSING:
                peer.tr.tr.write(ws.send(ev.response()))  # RFC 6455 §5.5.1: echo it
            else:
                # a frame wsproto could not parse (ParseFailed: the code
                # says why, RFC 6455 §7.4.1), or our own close answered
                srv.log(20, "connection %d: WebSocket closed: %d %s" % (peer.cid, ev.code, ev.reason or ""))
                if ws.state is ConnectionState.OPEN:
                    peer.tr.tr.write(ws.send(CloseConnection(code=ev.code, reason=ev.reason)))
            srv.received(peer, b"")  # as an EOF: the broker closes the session's connection
            return


def close(peer, srv, code, reason):
    """Close an MQTT WebSocket peer from our side: the close frame, then the
    broker told the connection is gone (a will goes out, as for a dropped
    TCP connection)."""
    tr = peer.tr
    if tr.ws.state is ConnectionState.OPEN:
        tr.tr.write(tr.ws.send(CloseConnection(code=code, reason=reason)))
    srv.received(peer, b"")
