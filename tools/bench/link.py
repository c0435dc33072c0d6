# One MQTT connection of the load generator: an asyncio Protocol (no
# StreamReader: its per-read overhead is what we are avoiding) that runs the
# CONNECT/SUBSCRIBE handshake with a generic parser, then hands every byte to
# its owner's on_data(link, data), the owner's inline hot-path parser.
import asyncio
import socket

from tools.bench import wire


class HandshakeError(Exception):
    pass


class Link(asyncio.Protocol):
    def __init__(self, owner=None):
        self.owner = owner
        self.transport = None
        self.parser = wire.Parser()
        self.fast = False          # True once the owner parses the bytes
        self.waiters = {}          # packet type -> Future of (first byte, body)
        self.paused = False
        self.lost = False
        self.lost_exc = None
        self.other = []            # unexpected packets seen during the handshake

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        if self.fast:
            self.owner.on_data(self, data)
            return
        try:
            pkts = self.parser.feed(data)
        except ValueError as e:
            self._fail(HandshakeError(str(e)))
            return
        for fb, body in pkts:
            fut = self.waiters.pop(fb >> 4, None)
            if fut is not None and not fut.done():
                fut.set_result((fb, body))
            else:
                self.other.append((fb, body))

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self.fast and self.owner is not None:
            self.owner.on_resume(self)

    def connection_lost(self, exc):
        self.lost = True
        self.lost_exc = exc
        self._fail(HandshakeError("connection closed by the broker (%s)" % (exc,)))
        if self.fast and self.owner is not None:
            self.owner.on_lost(self)

    # -- handshake ---------------------------------------------------------------
    def _fail(self, exc):
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(exc)
        self.waiters.clear()

    async def request(self, data, kind):
        """Write data, wait for the next packet of `kind` (the caller bounds
        the wait: asyncio.timeout is cheaper than a wait_for per request)."""
        if self.lost:
            raise HandshakeError("connection already closed")
        fut = asyncio.get_running_loop().create_future()
        self.waiters[kind] = fut
        self.transport.write(data)
        return await fut

    async def handshake(self, client_id, subs=(), keepalive=300, clean=True):
        fb, body = await self.request(wire.connect(client_id, keepalive, clean), wire.CONNACK)
        if len(body) != 2 or body[1] != 0:
            raise HandshakeError("CONNACK refused: %r" % (body,))
        if subs:
            fb, body = await self.request(wire.subscribe(1, subs), wire.SUBACK)
            granted = list(body[2:])
            if 0x80 in granted or len(granted) != len(subs):
                raise HandshakeError("SUBACK refused: %r" % (granted,))

    def go_fast(self, owner=None):
        """From now on the owner parses; bytes already buffered go to it first."""
        if owner is not None:
            self.owner = owner
        self.fast = True
        rest = bytes(self.parser.buf)
        self.parser.buf.clear()
        for fb, body in self.other:  # e.g. a retained message right after SUBACK
            rest = bytes([fb]) + wire.varint(len(body)) + body + rest
        self.other = []
        if rest:
            self.owner.on_data(self, rest)

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def open_link(host, port, client_id, subs=(), timeout=10.0, keepalive=300, clean=True):
    """Connect, CONNECT, SUBSCRIBE; returns the Link (still in handshake mode).
    Raises OSError, HandshakeError or TimeoutError."""
    loop = asyncio.get_running_loop()
    link = None
    try:
        async with asyncio.timeout(timeout):
            _, link = await loop.create_connection(Link, host, port)
            await link.handshake(client_id, subs, keepalive, clean)
    except BaseException:
        if link is not None:
            link.close()
        raise
    return link


async def tcp_pair():
    """Two connected loopback TCP Links (the 'direct' mode: no broker between)."""
    loop = asyncio.get_running_loop()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        a = socket.create_connection(lsock.getsockname(), timeout=5)
        b, _ = lsock.accept()
    finally:
        lsock.close()
    a.setblocking(False)
    b.setblocking(False)
    _, la = await loop.create_connection(Link, sock=a)
    _, lb = await loop.create_connection(Link, sock=b)
    return la, lb
