# The CPython TCP shell: asyncio Protocols, no streams and no task per
# connection. The transport calls data_received() with whatever one recv()
# got (up to 256 KiB) and that goes straight into the broker; a connection's
# packets are handled in order, never a task per packet. After each feed,
# every connection the broker queued output for gets it in one
# transport.write() (batched), which sends at once when the socket takes it
# and buffers only the rest. (Flushing once per loop pass instead, after all
# of its reads, costs every ack one more epoll_wait of latency: fan-in QoS 1
# ran at two thirds the rate.) Named *cpython* so it never goes onto a board;
# MicroPython's path is tcp.py.
#
# Per connection this holds a transport and one slotted _Peer; the streams
# path held a StreamReader (and its buffer), a StreamWriter, their protocol,
# a Task and its coroutine frame as well.
#
#
# Group commit (output held until what it promises is durable) is the base
# class, commit_cpython.py; this module is the transport side.
import asyncio
import socket

from edge.runtime import speedups_cpython
from edge.runtime.clock import now_ms
from edge.runtime.commit_cpython import GroupCommit

_BACKLOG = 128  # listen() queue
# A peer that leaves this many bytes of our output unread (a publisher that
# never reads its PUBACKs) is not read from until it has taken them all: TCP
# pushes back on it instead of our buffer growing without bound.
_READ_PAUSE = 262144
# A read this big means the socket holds more: the peer is paused until the
# loop's next pass, so a flooding peer gets one read a pass, as every other
# socket does. asyncio reads once per readiness anyway, but uvloop (libuv)
# reads a readable socket up to 32 times in one callback round: three
# flooding publishers took several MB a pass between them and a new
# client's CONNACK waited 0.5-1.7 s for it (docs/security.md "Limits").
_FAIR_READ = 65536


class _Peer(asyncio.Protocol):
    """One socket: hands the transport's events to the TcpServer."""

    __slots__ = ("srv", "cid", "tr", "hold")

    def __init__(self, srv):
        self.srv = srv
        self.cid = 0
        self.tr = None
        self.hold = 0  # not read before this (ms): max_packet_rate

    def connection_made(self, tr):
        self.tr = tr
        self.srv.opened(self)

    def data_received(self, data):
        self.srv.received(self, data)

    def eof_received(self):
        self.srv.received(self, b"")
        return True  # received() closed the transport, after its output

    def connection_lost(self, exc):
        self.srv.lost(self, exc)

    # Write limits of 0 (set in opened()): paused whenever the socket has not
    # taken everything, resumed once it has (the transport keeps the rest).
    def pause_writing(self):
        pass  # conn.out_bytes already says how much waits

    def resume_writing(self):
        self.srv.drained(self)


class TcpServer(GroupCommit):
    def __init__(self, broker, log):
        GroupCommit.__init__(self)
        self.broker = broker
        speedups_cpython.install(broker)  # topic -> matching filters, remembered
        self.log = log
        self.peers = {}     # cid -> _Peer, while the broker may write to it
        self.next_id = 0
        self.server = None  # asyncio Server
        self.port = 0       # the port it is bound to

    async def start(self, host, port):
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._peer, host, port, backlog=_BACKLOG, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]  # port 0: the one taken
        return self.server

    def _peer(self):
        return _Peer(self)

    # ---- transport events ----------------------------------------------------
    def opened(self, p):
        tr = p.tr
        cid = self.next_id = self.next_id + 1
        broker = self.broker
        addr = None
        if broker.auth is not None or broker.limits.max_connections_per_address:
            addr = tr.get_extra_info("peername")  # the IP, not the port
            addr = addr[0] if addr else None
        if not broker.open(cid, now_ms(), addr):
            tr.close()  # over max_connections or the address's quota
            return
        if broker.auth is not None:  # failed logins count per address (edge/auth/guard.py)
            broker.auth.open(cid, addr)
        p.cid = cid
        self.peers[cid] = p
        tr.set_write_buffer_limits(0, 0)
        sock = tr.get_extra_info("socket")
        if sock is not None:
            try:
                # No Nagle (asyncio sets it already; other loops may not): a
                # QoS 0 subscriber sends nothing back, so its delayed ACKs
                # would hold small PUBLISHes ~40 ms.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def received(self, p, data):
        """Bytes from p (b"": EOF): feed the broker, write what it queued."""
        cid = p.cid
        if not cid:
            return
        broker = self.broker
        try:
            wait = broker.data_received(cid, data, now_ms())
            if not data:
                broker.connection_lost(cid, now_ms())
            self.flush()
            if wait:
                # over max_packet_rate (Broker.data_received): not read for wait ms
                p.hold = now_ms() + wait
                p.tr.pause_reading()
                self._loop().call_later(wait / 1000, self._resume, p, True)
            elif len(data) >= _FAIR_READ and p.tr.is_reading():
                p.tr.pause_reading()  # the next pass reads it again (_FAIR_READ)
                self._loop().call_soon(self._resume, p)
        except MemoryError:
            # A full heap costs this connection, not the broker: close it
            # (its will goes out), count it, go on serving.
            broker.stats.conns_oom += 1
            self.log(40, "connection %d closed: out of memory" % cid)
            broker.connection_lost(cid, now_ms())
            self.flush()
            data = b""
        if not data and self.peers.get(cid) is p:
            # EOF: closed after its output (if the broker had not closed it)
            del self.peers[cid]
            p.tr.close()

    def lost(self, p, exc):
        # The transport is closed: by us, the peer, or an error
        cid = p.cid
        if not cid:
            return
        p.cid = 0
        if exc is not None:
            self.log(10, "connection %d: %r" % (cid, exc))
        if self.peers.get(cid) is p:
            del self.peers[cid]
        self.broker.connection_lost(cid, now_ms())
        self.flush()  # e.g. its will

    def drained(self, p):
        # The socket took everything: the session may move queued messages
        # out, and a peer we stopped reading is read again.
        conn = self.broker.conns.get(p.cid)
        if conn is None or self.peers.get(p.cid) is not p:
            return
        conn.out_bytes = 0
        self._resume(p)
        sess = conn.session
        if sess is not None and sess.conn is conn:
            sess.pump()
            self.flush()

    def _resume(self, p, due=False):
        # Read p again, unless something else still holds it: its unread
        # output (_READ_PAUSE), its packet rate (hold; due: its timer, which
        # may fire a little early), a close
        if due:
            p.hold = 0
        conn = self.broker.conns.get(p.cid)
        if conn is None or self.peers.get(p.cid) is not p or conn.closing:
            return
        tr = p.tr
        # (getattr: the gateway's WebSocket peers, gateway/web.py, have no
        # hold until one is set)
        if conn.out_bytes <= _READ_PAUSE and now_ms() >= getattr(p, "hold", 0) and not tr.is_reading():
            tr.resume_reading()

    def _write(self, out):
        peers = self.peers
        for conn, data in out:
            p = peers.get(conn.id)
            if p is None:
                continue  # gone: its output with it
            tr = p.tr
            if data:
                tr.write(data)
                n = conn.out_bytes = tr.get_write_buffer_size()
                if n > _READ_PAUSE and tr.is_reading():
                    tr.pause_reading()
            if conn.closing:
                del peers[conn.id]
                tr.close()  # after the buffered output is written

    def close(self):
        if self.server is not None:
            self.server.close()
        self.stop_syncing()
        for p in list(self.peers.values()):
            p.tr.close()
        self.peers.clear()
