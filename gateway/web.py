# The gateway's web listeners (docs/gateway.md): one asyncio Protocol per TCP
# connection, HTTP/1.1 parsed by h11. A GET asking for a WebSocket (RFC 6455
# §4.2.1) on [websocket] path becomes an MQTT connection of the broker
# (gateway/ws.py); on the HTTP listener other requests go to the routes
# (gateway/routes.py: status page, /metrics, POST /publish/...). With the
# same bind and port for [websocket] and [http], one listener does both.
#
# wsproto (and h11, which it brings) is imported here only: a broker with
# both sections off never loads it, and a plain `pip install edgebroker`
# runs with no third-party package (tests/runtime/test_install.py).
import asyncio
import socket
from http import HTTPStatus

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData
from wsproto.events import Request as WsRequest
from wsproto.utilities import RemoteProtocolError as WsError

from gateway import httpauth
from gateway import ws as wsmqtt

_HTTP, _MQTT, _LIVE, _CLOSED = range(4)
_BACKLOG = 128
_MAX_HEAD = 16384  # request line and headers (h11's bound; 431 past it)


class Listener:
    """One bound socket and what it serves: MQTT over WebSockets on
    `mqtt_path` (None: not here), the HTTP routes (`http`: web.routes)."""

    def __init__(self, web, sock, mqtt_path, http, tls=False):
        self.web = web
        self.sock = sock
        self.mqtt_path = mqtt_path
        self.http = http
        self.tls = tls  # wss://, https:// (docs/gateway.md "TLS")
        self.server = None
        self.port = sock.getsockname()[1]

    async def start(self, loop, tls=None):
        """tls: the broker's Tls (edge/runtime/tls_cpython.py) when this
        listener serves TLS: a Peer gets its connection after the handshake."""
        kw = tls.server_kw() if tls is not None else {}
        self.server = await loop.create_server(lambda: Peer(self), sock=self.sock, **kw)

    def close(self):
        if self.server is not None:
            self.server.close()
        else:
            self.sock.close()


def bind(host, port, key):
    """A listening TCP socket on host:port; ConfigError naming `key` (e.g.
    "websocket.port") when it cannot listen."""
    from edge.errors import ConfigError
    import errno

    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        s = socket.socket(info[0], socket.SOCK_STREAM)
    except OSError as e:
        raise ConfigError(key.split(".")[0] + ".bind", "cannot listen on %s port %d: %s" % (host, port, e))
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(info[4])
        s.listen(_BACKLOG)
        s.setblocking(False)
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(key, "cannot listen on %s port %d: port %d/tcp is in use" % (host, port, port))
        raise ConfigError(key.split(".")[0] + ".bind", "cannot listen on %s port %d: %s" % (host, port, e))
    return s


def _reason(status):
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _is_upgrade(req):
    # RFC 6455 §4.2.1: Upgrade: websocket, Connection: ... Upgrade ...
    up = conn = False
    for name, value in req.headers:
        if name == b"upgrade" and value.lower() == b"websocket":
            up = True
        elif name == b"connection" and b"upgrade" in [t.strip() for t in value.lower().split(b",")]:
            conn = True
    return up and conn


class Peer:
    """One TCP connection to a web listener: HTTP until an upgrade, then an
    MQTT peer of the TCP shell (attributes cid and tr, as its _Peer) or a
    status page's live feed."""

    def __init__(self, lst):
        self.lst = lst
        self.web = lst.web
        self.mode = _HTTP
        self.cid = 0        # the broker's connection id (MQTT mode)
        self.tr = None      # the transport; a ws.WsTransport in MQTT mode
        self.ws = None      # wsproto WSConnection after an upgrade
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self.raw = bytearray()  # this request's bytes until its head is parsed (the upgrade's)
        self.req = None     # the h11.Request being read
        self.body = []
        self.size = 0
        self.waiting = False  # a response is held (an HTTP publish waiting for the store)
        self.timer = None     # http.idle_timeout's
        self.counted = False  # in web.http_open
        self.rules = True     # the request's ACL Rules (gateway/httpauth.py), True: unchecked

    # ---- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, tr):
        self.tr = tr
        web = self.web
        if web.http_open >= web.max_http:
            # http.max_connections: a 503 (RFC 9110 §15.6.4), counted
            web.stats.refused += 1
            body = b"too many HTTP connections (http.max_connections %d)\n" % web.max_http
            tr.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
                     b"content-length: %d\r\nretry-after: 5\r\nconnection: close\r\n\r\n" % len(body) + body)
            tr.close()
            self.mode = _CLOSED
            return
        web.http_open += 1
        self.counted = True
        self._arm()

    def _arm(self):
        # http.idle_timeout: an HTTP connection with no request in it closes
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(self.web.idle_timeout, self._idle)

    def _idle(self):
        self.timer = None
        if self.mode != _HTTP:
            return
        if self.waiting:  # an answer waits for the store: not idle
            self._arm()
            return
        self.web.stats.idle_closed += 1
        self.tr.close()
        self.mode = _CLOSED

    def _uncount(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.counted:
            self.counted = False
            self.web.http_open -= 1

    def data_received(self, data):
        mode = self.mode
        if mode == _MQTT:
            wsmqtt.feed(self, self.web.srv, data)
        elif mode == _HTTP:
            self._arm()  # a slow upload is not idle
            if self.req is None:
                self.raw += data
            self.h.receive_data(data)
            self._pump()
        elif mode == _LIVE:
            self.web.status.live_data(self, data)

    def eof_received(self):
        if self.mode == _MQTT:
            wsmqtt.feed(self, self.web.srv, b"")
            # (a TLS transport closes itself after it: a True would be
            # ignored, with a warning per connection)
            return not self.lst.tls
        return False  # the transport closes itself

    def connection_lost(self, exc):
        self._uncount()
        if self.mode == _MQTT:
            self.web.srv.lost(self, exc)
        elif self.mode == _LIVE:
            self.web.status.live_lost(self)
        self.mode = _CLOSED

    def pause_writing(self):
        pass

    def resume_writing(self):
        if self.mode == _MQTT:
            self.web.srv.drained(self)

    # ---- HTTP ------------------------------------------------------------------
    def _pump(self):
        h = self.h
        while self.mode == _HTTP and not self.waiting:
            try:
                ev = h.next_event()
            except h11.RemoteProtocolError as e:
                self._fail(e.error_status_hint, str(e))
                return
            if ev is h11.NEED_DATA:
                return
            if ev is h11.PAUSED:
                if self.req is not None and h.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                    self._switch()
                elif h.our_state is h11.DONE and h.their_state is h11.DONE:
                    self._next()  # a pipelined request waits in h11's buffer
                    continue
                return
            t = type(ev)
            if t is h11.Request:
                self._request(ev)
            elif t is h11.Data:
                self.size += len(ev.data)
                if self.size > self.web.max_body:
                    self._too_large()
                    return
                self.body.append(ev.data)
            elif t is h11.EndOfMessage:
                if h.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
                    self._dispatch()
            elif t is h11.ConnectionClosed:
                self.tr.close()
                return

    def _request(self, req):
        self.req = req
        self.body = []
        self.size = 0
        n = req.headers and dict(req.headers).get(b"content-length")
        if n is not None and n.isdigit() and int(n) > self.web.max_body:
            self._too_large()  # at once, not after reading what we will refuse

    def _switch(self):
        # h11 paused on an Upgrade request (its body read, none): a
        # WebSocket on a path this listener serves, else answered as HTTP
        req = self.req
        path = req.target.split(b"?", 1)[0].decode("latin-1")
        rest = self.h.trailing_data[0]
        head = bytes(self.raw[: len(self.raw) - len(rest)])
        if req.method == b"GET" and _is_upgrade(req):
            if path == self.lst.mqtt_path:
                return self._upgrade(head, rest, "mqtt")
            if self.lst.http and self.web.status is not None and path == self.web.live_path:
                return self._upgrade(head, rest, None)
        # not ours: the upgrade is declined by answering it (RFC 9110 §7.8)
        self._dispatch()

    def _upgrade(self, head, rest, subprotocol):
        ws = WSConnection(ConnectionType.SERVER)
        tr = self.tr
        try:
            ws.receive_data(head)
            ev = next(iter(ws.events()), None)
        except WsError as e:  # no Sec-WebSocket-Key, version not 13, ...
            self._reject(ws, 400, "bad WebSocket handshake: %s" % e)
            return
        if type(ev) is not WsRequest:
            self._reject(ws, 400, "bad WebSocket handshake")
            return
        if subprotocol is None and self.web.auth.required:
            # the status page's feed under http.auth, as the page itself
            # (an MQTT upgrade is not: its CONNECT logs in)
            auth = self.web.auth
            if auth.login(self, dict(self.req.headers), False) is None:
                auth.refused(self, "GET " + self.web.live_path)
                self._reject(ws, 401, "a valid user name and password are needed (HTTP Basic)",
                             [tuple(x.encode() for x in httpauth.CHALLENGE)])
                return
        if subprotocol is not None and subprotocol not in ev.subprotocols:
            # [MQTT-6.0.0-3] the client offers "mqtt"; [MQTT-6.0.0-4] we
            # select it, or refuse
            self._reject(ws, 400, 'the WebSocket subprotocol "mqtt" is required (Sec-WebSocket-Protocol: mqtt)')
            return
        self.ws = ws
        self.raw = bytearray()
        tr.write(ws.send(AcceptConnection(subprotocol=subprotocol)))
        if subprotocol is None:
            self.mode = _LIVE
            self.web.status.live_opened(self)
            if rest:
                self.web.status.live_data(self, rest)
            return
        self.mode = _MQTT
        self._uncount()  # from now on in broker.max_connections
        self.web.stats.ws_accepted += 1
        srv = self.web.srv
        self.tr = wsmqtt.WsTransport(tr, ws)
        srv.opened(self)  # (closes it over broker.max_connections)
        if self.cid and rest:
            wsmqtt.feed(self, srv, rest)

    def _reject(self, ws, status, text, more=()):
        body = (text + "\n").encode()
        hdrs = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body)),
                (b"connection", b"close")] + list(more)
        try:
            data = ws.send(RejectConnection(status_code=status, headers=hdrs, has_body=True))
            data += ws.send(RejectData(data=body))
        except Exception:  # wsproto refuses to answer a request it could not parse
            data = b"HTTP/1.1 %d Bad Request\r\n" % status + b"".join(
                b"%s: %s\r\n" % kv for kv in hdrs) + b"\r\n" + body
        self.tr.write(data)
        self.tr.close()
        self.mode = _CLOSED

    def _dispatch(self):
        req = self.req
        if not self.lst.http:  # the WebSocket-only listener
            self.respond(404, "only WebSocket upgrades on %s here\n" % self.lst.mqtt_path)
            return
        self.waiting = True
        self.web.routes.handle(self, req.method.decode("latin-1"), req.target.decode("latin-1"),
                      b"".join(self.body), dict(req.headers))

    def respond(self, status, body, ctype="text/plain; charset=utf-8", headers=()):
        """Send the response to the current request (routes call it, maybe
        later: an HTTP publish waits for the store)."""
        if self.mode != _HTTP:
            return  # gone meanwhile
        if isinstance(body, str):
            body = body.encode()
        h = self.h
        hdrs = [("content-type", ctype), ("content-length", str(len(body))), ("cache-control", "no-store")]
        hdrs += list(headers)
        try:
            data = h.send(h11.Response(status_code=status, headers=hdrs, reason=_reason(status)))
            if body:
                data += h.send(h11.Data(data=body))
            data += h.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.tr.close()
            self.mode = _CLOSED
            return
        self.tr.write(data)
        self.waiting = False
        self._arm()
        if h.our_state is h11.MUST_CLOSE:
            self.tr.close()
            self.mode = _CLOSED
        elif h.their_state is h11.DONE:
            self._next()
            self._pump()
        # else the rest of the request body is still coming: _pump reads it

    def _next(self):
        self.h.start_next_cycle()
        self.req = None
        self.body = []
        self.size = 0
        self.raw = bytearray(self.h.trailing_data[0])

    def _too_large(self):
        # RFC 9110 §15.5.14; the body is not read: the connection closes
        self.web.stats.too_large += 1
        self.respond(413, "request body over broker.max_packet_size (%d bytes)\n" % self.web.max_body,
                     headers=[("connection", "close")])
        self.tr.close()
        self.mode = _CLOSED

    def _fail(self, status, text):
        # a request h11 could not parse (400, or 431 for a head over _MAX_HEAD)
        self.web.stats.bad_requests += 1
        if self.h.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = ("bad request: %s\n" % text).encode()
            self.tr.write(b"HTTP/1.1 %d Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
                          b"content-length: %d\r\nconnection: close\r\n\r\n" % (status, len(body)) + body)
        self.tr.close()
        self.mode = _CLOSED
