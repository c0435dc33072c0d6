# The MicroPython TCP shell around the broker (CPython's is tcp_cpython.py).
# One task per connection reads and feeds the broker; a connection's packets
# are handled in order, never a task per packet. After each feed, every
# connection the broker queued output for gets it in one write (batched). A
# write goes out at once when the socket takes it; only a backlog needs a
# drain task, spawned on demand.
#
# The sockets go straight on MicroPython's asyncio poller
# (asyncio.core._io_queue, as its own streams do): per connection that saves
# the Stream object, its extra-info dict and the peer address a board would
# otherwise keep for nothing, and a read allocates no more than a view of the
# one shared read buffer (no per-read coroutine).
#
# With the store open, output that promises its records (a PUBACK, PUBREC,
# CONNACK...) waits until they are synced or void, and one sync covers the
# feeds of a poller round (commit.py, as commit_cpython.py: docs/design.md
# "Delivery guarantees", docs/persistence.md "Flash wear").
import asyncio
import errno
import random

from edge.runtime.clock import now_ms

# MicroPython's poller (its stubs do not declare asyncio.core)
_io_queue = asyncio.core._io_queue  # type: ignore[attr-defined]

# The shared read buffer. 1 KB reads keep up with a board's links and leave
# 1 KB more heap than 2 KB would (a bigger packet just takes two reads).
_RBUF_SIZE = 1024
_BACKLOG = 128  # listen() queue
_PORT_TRIES = 32  # random ports tried for port 0 (_bind)

# One receive buffer for every connection. Each read is handed to the broker
# before the next wait, so sharing is safe (the broker copies what it keeps).
# Allocated at import, before the heap fragments: a large block in one piece
# is hard to find on a board later on.
_RBUF = bytearray(_RBUF_SIZE)
_RMV = memoryview(_RBUF)


def _bind(s, socket, host, port):
    # The port bound. Port 0 is any free port, but MicroPython's sockets
    # have no getsockname() to say which one the OS took: one of the dynamic
    # range (49152-65535, RFC 6335) is picked here, another if it is taken.
    for i in range(_PORT_TRIES):
        p = port or 49152 + random.getrandbits(14)
        try:
            s.bind(socket.getaddrinfo(host, p)[0][-1])
            return p
        except OSError as e:
            if port or i == _PORT_TRIES - 1 or e.errno != errno.EADDRINUSE:
                raise


class TcpServer:
    def __init__(self, broker, log):
        self.broker = broker
        # flush() follows every feed and copies what a socket does not take
        # (_write): QoS 0 may go out as views of _RBUF, with no copy
        broker.lend = True
        self.log = log
        self.writers = {}   # cid -> socket
        # cid -> the chunks the socket has not taken yet, in order: a list,
        # never one bytes grown by concatenation, which for a reader that
        # stopped reading needed twice its backlog in one block at once
        # (the 64 KiB board ran out of heap in tests/integration/test_27_floods.py)
        self.pending = {}
        # cid -> True while a drain task runs. A dict, not a set: MicroPython's
        # set.add() that hits MemoryError while growing leaves the set with
        # its new size and its old table (py/map.c mp_set_rehash), so it
        # forgets its members and the next `in` reads past the table; the
        # 64 KiB board under tools/fuzz.py died of SIGSEGV there. A dict
        # allocates its new table before it changes anything.
        self.draining = {}
        self.next_id = 0
        self.server = None  # the listening socket
        self.port = 0       # the port it is bound to
        self.task = None    # the accept loop
        self.udp = None     # the CoAP shell (udp.py), flushed after each feed too
        self.tls = None     # the TLS listener: (socket, accept task)
        self.hold = 0       # ms the connection just read waits (max_packet_rate)

    async def start(self, host, port, tls=None):
        """Listen on host:port; the port bound. tls: the TLS listener's
        wrap(socket) (tls.py), beside the plain one."""
        import socket

        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            p = _bind(s, socket, host, port)
            s.listen(_BACKLOG)
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        t = asyncio.create_task(self._accept(s, tls))
        if tls is None:
            self.server, self.task, self.port = s, t, p
        else:
            self.tls = (s, t)
        return p

    # ---- output ---------------------------------------------------------------
    def _write(self, cid, w, data):
        """Hand data to the socket; returns how many bytes it has not taken."""
        q = self.pending.get(cid)
        if q is not None:  # keep the order: behind what already waits
            # a view of the read buffer (Connection.last_packet) must not
            # wait past the next read: copied
            q.append(bytes(data) if type(data) is memoryview else data)
            n = 0
            for data in q:
                n += len(data)
            return n
        n = w.write(data) or 0  # None: it would block
        if n >= len(data):
            return 0
        self.pending[cid] = [bytes(data[n:])]  # (copied, as above)
        return len(data) - n

    def _durable(self):
        # Sync the store's batch; False if that failed (the output is held
        # and the next flush, at the latest the tick's, retries)
        st = self.broker.store
        if st is None or not st.log.pending():
            return True
        try:
            st.log.flush()
            return True
        except OSError as e:
            self.log(40, "store: sync failed (%s): acks held, retrying" % e)
            return False

    def flush(self):
        """Write out everything the broker queued; called after each feed.
        With the store open, output that may promise its records waits for
        them in the Committer (commit.py); the rest goes out now."""
        broker = self.broker
        dirty = broker.dirty
        udp = self.udp
        if udp is not None and udp.ep.out:
            udp.flush()  # CoAP notifications of what this feed published
        st = broker.store
        if st is not None:
            # the store's group commit, set by main.py once the store opened
            c = st.commit
            if c is not None and (dirty or c.held):
                c.hold(dirty)  # (takes what must wait out of dirty)
        i = 0
        while i < len(dirty):  # writing may not add, but closing a peer can
            conn = dirty[i]
            i += 1
            cid = conn.id
            w = self.writers.get(cid)
            if w is None:
                conn.take()
                continue
            try:
                data = broker.take(conn)
                if data:
                    conn.out_bytes = self._write(cid, w, data)
            except OSError:
                conn.closing = True
            except MemoryError:
                # This connection's output is lost: close it (a persistent
                # session gets its unacknowledged messages again on
                # reconnect), count it, and write the others' output.
                conn.closing = True
                broker.stats.conns_oom += 1
            if (conn.out_bytes or conn.closing) and cid not in self.draining:
                self.draining[cid] = True
                asyncio.create_task(self._drain(conn, w))
        dirty.clear()

    def _push(self, cid, sock):
        # A plain generator, awaited: write the pending bytes out as the
        # socket takes them
        p = self.pending
        while cid in p:
            yield _io_queue.queue_write(sock)
            q = p[cid]
            data = q[0]
            n = sock.write(data) or 0
            if n >= len(data):
                q.pop(0)
                if not q:
                    del p[cid]
            elif n:
                q[0] = memoryview(data)[n:]  # the rest, not a copy of it

    async def _drain(self, conn, w):
        cid = conn.id
        try:
            while True:
                await self._push(cid, w)
                conn.out_bytes = 0
                if conn.out:  # more was queued meanwhile
                    st = self.broker.store
                    if st is not None and st.commit is not None and (conn.promise or cid in st.commit.held):
                        break  # flush(), below, holds it until what it promises is kept
                    conn.out_bytes = self._write(cid, w, self.broker.take(conn))
                    continue
                if conn.closing:
                    break
                if not conn.out_bytes:
                    sess = conn.session
                    if sess is not None and sess.conn is conn:
                        sess.pump()  # room again: move queued messages out
                        if conn.out:
                            continue
                    break
        except OSError:
            conn.closing = True
        except MemoryError:
            # As in flush(): this connection's output is lost, so it is
            # closed (never left waiting for output that cannot come) and
            # counted; the others go on
            conn.closing = True
            self.broker.stats.conns_oom += 1
        finally:
            self.draining.pop(cid, None)
        if conn.closing:
            self._forget(cid, w)
        self.flush()

    def _forget(self, cid, w):
        # Close w and drop what we hold for it
        if self.writers.get(cid) is w:
            del self.writers[cid]
        self.pending.pop(cid, None)
        try:
            w.close()
        except OSError:
            pass

    # ---- input ----------------------------------------------------------------
    def _opened(self, w, peer):
        """Register a new socket from address peer (bytes or None); its id,
        or 0 if the broker refused it."""
        cid = self.next_id = self.next_id + 1
        broker = self.broker
        try:
            if not broker.open(cid, now_ms(), peer):
                return 0
            if broker.auth is not None:
                broker.auth.open(cid, peer)
            self.writers[cid] = w
        except MemoryError:
            # No heap for its state: refused like one over max_connections,
            # counted; the task must not die holding the socket (found by
            # tools/fuzz.py on the 64 KiB board). An address auth kept for
            # it goes with the next sweep of ids no longer open (guard.py)
            broker.conns.pop(cid, None)
            broker.stats.conns_oom += 1
            return 0
        return cid

    def _closed(self, cid, w):
        # The read side ended: tell the broker, send what it still queued
        self.broker.connection_lost(cid, now_ms())
        self.flush()
        return cid not in self.draining  # else the drain task closes it

    def _accept(self, lsock, tls=None):
        # The accept loop, a plain generator on the poller; tls: the TLS
        # listener's wrap (tls.py)
        while True:
            yield _io_queue.queue_read(lsock)
            try:
                sock, addr = lsock.accept()
            except OSError:
                continue  # the peer gave up already
            broker = self.broker
            if broker.auth is not None or broker.limits.max_connections_per_address:
                # failed logins (edge/auth/guard.py) and open sockets
                # (max_connections_per_address) count per address: the
                # sockaddr's IP, not its port (an opaque sockaddr here:
                # IPv4's address at bytes 4-8, IPv6's at 8-24)
                addr = bytes(addr[4:8]) if len(addr) <= 16 else bytes(addr[8:24])
            else:
                addr = None
            sock.setblocking(False)
            try:
                # No Nagle: a QoS 0 subscriber sends nothing back, so its
                # delayed ACKs would hold small PUBLISHes ~40 ms. MicroPython
                # names no constants: IPPROTO_TCP 6, TCP_NODELAY 1 (Linux, lwIP).
                sock.setsockopt(6, 1, 1)
            except OSError:
                pass
            # Registered here, before a task exists: a refused socket (over
            # max_connections or its address's quota) costs no task, nor TLS
            cid = self._opened(sock, addr)
            addr = None
            if not cid:
                sock.close()
                continue
            try:
                if tls is not None:
                    # TLS: the handshake runs in its first reads
                    sock = self.writers[cid] = tls(sock)
                asyncio.create_task(self._serve(sock, cid))
            except MemoryError:
                # no heap for its task: closed as one refused, counted; the
                # accept loop goes on (it must never die of a flood)
                self.broker.stats.conns_oom += 1
                self.broker.connection_lost(cid, now_ms())
                self._forget(cid, sock)

    def _serve(self, sock, cid):
        # One task per connection, a plain generator that waits
        # on the poller. It lives as long as the connection, so its frame is
        # kept small (three locals, no try blocks): the work and the cleanup
        # are in _readable(), whose frame lasts one read.
        while cid:
            yield _io_queue.queue_read(sock)
            cid = self._readable(cid, sock)
            if self.hold:  # over max_packet_rate: TCP holds the client back
                # not read for hold ms (MicroPython's sleep_ms takes its
                # deadline when called; _readable set hold, for this read
                # only). No method of its own: a function is a name and an
                # object a board keeps from boot on
                yield from asyncio.sleep_ms(self.hold)  # type: ignore[attr-defined]

    def _readable(self, cid, sock):
        """The socket has data, EOF or an error. Feeds the broker;
        returns cid to go on reading, 0 once the connection is over (it is
        then closed, on any exception too)."""
        broker = self.broker
        go_on = False
        self.hold = 0  # (not this read's if it is left from another's)
        try:
            # the rest of a packet begun in an earlier read, if one is held,
            # and no more (Connection.need)
            n = broker.conns[cid].need()
            n = sock.readinto(_RMV[:n] if 0 < n < _RBUF_SIZE else _RBUF)
            if n is None:
                go_on = True  # spurious wake-up, nothing read
            else:
                self.hold = broker.data_received(cid, _RMV[:n], now_ms()) or 0
                self.flush()
                go_on = n and not broker.conns[cid].closing
        except OSError as e:
            self.log(10, "connection %d: %r" % (cid, e))
        except MemoryError as e:
            # A full heap costs this connection, not the broker: close it
            # (its will goes out), count it, go on serving.
            broker.stats.conns_oom += 1
            try:
                self.log(40, "connection %d closed: out of memory (%s)" % (cid, e))
            except MemoryError:
                pass  # no heap for the line either; the count above stands
        finally:
            if not go_on:
                try:
                    gone = self._closed(cid, sock)
                except MemoryError:
                    # The broker's cleanup ran out of heap part way: the
                    # socket is still closed and forgotten, never leaked
                    # with a task that died holding it
                    broker.stats.conns_oom += 1
                    gone = True
                if gone:
                    self._forget(cid, sock)
        return cid if go_on else 0

    def close(self):
        if self.task is not None:
            self.task.cancel()
        if self.server is not None:
            self.server.close()
        if self.tls is not None:
            self.tls[1].cancel()
            self.tls[0].close()
        for cid in list(self.writers):
            try:
                self.writers.pop(cid).close()
            except OSError:
                pass
