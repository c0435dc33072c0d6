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
# Group commit (docs/design.md "Delivery guarantees"): output that may promise what
# the store holds (Connection.promise: a PUBACK, PUBREC, SUBACK, CONNACK)
# is held, in order per connection, with what it may promise: the log's
# next_seq - 1 when it was queued. After every feed (and sync), held output
# goes out as far as Log.settled() reaches: what it promises is durable, or
# void. A record deleted before it was written is void: a
# persistent subscriber's PUBACK that came first ended the delivery, so
# the publisher's PUBACK needs no flash at all (as RabbitMQ confirms a
# persistent message "as soon as it is persisted to disk, or when it is
# consumed on every queue"). For the rest a commit writes the batch and
# syncs it: store.sync_wait_us (self.sync_wait_us) after output began to wait
# when deliveries went out since the last commit (their acks may still
# void their records), at the end of the loop pass when none did (a queue
# for a client that is away: no ack is coming), so the records of all the
# feeds read in one pass share one sync.
#
# The sync itself (an fsync, ~0.6 ms on a VM disk, more on an SD card) runs
# in a helper process (flash_cpython.Syncer: a thread's GIL handovers
# stalled the loop), pipelined: the commit writes the batch to the file and
# hands the fsync to the helper; the loop reads and handles on meanwhile,
# its records gathering in the next batch, until the sync is done: then the
# output it settled goes out and the next commit is due. Output never
# overtakes the sync of a record it promises.
#
# The uplink's outbox (docs/uplink.md "What is promised") is a log of its
# own: a PUBACK (or CoAP 2.04) must not go out before the outbox record of
# its message is durable either. The uplink shell sets `outbox` (that Log)
# and calls outbox_appended(seq) at each append; settled() then holds output
# queued since back until the outbox's settled() passes seq, and every
# commit writes both logs and syncs them in one request to the helper (one
# group commit: the helper fsyncs both descriptors before it answers).
import asyncio
import errno
import os
import socket

from edge.runtime import speedups_cpython
from edge.runtime.clock import now_ms
from edge.runtime.flash_cpython import Syncer

_BACKLOG = 128  # listen() queue
# A peer that leaves this many bytes of our output unread (a publisher that
# never reads its PUBACKs) is not read from until it has taken them all: TCP
# pushes back on it instead of our buffer growing without bound.
_READ_PAUSE = 262144
_RETRY_S = 0.1  # a failed store sync is retried this often; the acks wait


class _Peer(asyncio.Protocol):
    """One socket: hands the transport's events to the TcpServer."""

    __slots__ = ("srv", "cid", "tr")

    def __init__(self, srv):
        self.srv = srv
        self.cid = 0
        self.tr = None

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


class TcpServer:
    def __init__(self, broker, log):
        self.broker = broker
        speedups_cpython.install(broker)  # topic -> matching filters, remembered
        self.log = log
        self.peers = {}     # cid -> _Peer, while the broker may write to it
        self.next_id = 0
        self.server = None  # asyncio Server
        self.port = 0       # the port it is bound to
        self.commit_due = False  # a _commit() is scheduled
        self.syncing = False     # a sync runs in the helper
        self.held = {}           # cid -> [conn, (need, data), ...]: output waiting (flush())
        self.order = []          # (need, cid) of each piece in held, oldest first
        self.sync_wait_us = 0    # how long a commit waits for acks (store.sync_wait_us)
        self.sent_mark = 0       # the store's sent_records at the last commit
        self.loop = None         # the event loop (_loop())
        self.syncer = None       # the sync helper (Syncer), started by the first sync; False: none
        self.sync_top = 0        # what the sync in flight covers (log.top)
        self.udp = None          # the CoAP shell (udp_cpython.py): its held output too
        # other shells whose output waits for the store the same way (the
        # gateway's HTTP publish, gateway/publish.py): each has `held` and
        # release(settled), called after every settle as udp's is
        self.others = []
        self.outbox = None       # the uplink's outbox Log, synced with the store (uplink_cpython.py)
        self.ob_marks = []       # [store next_seq - 1, last outbox seq] per store mark (settled())
        self.ob_top = 0          # what the sync in flight covers of the outbox (its top)

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
        if not self.broker.open(cid, now_ms()):
            tr.close()  # over max_connections
            return
        if self.broker.auth is not None:  # failed logins count per address (edge/auth/guard.py)
            addr = tr.get_extra_info("peername")
            self.broker.auth.open(cid, addr[0] if addr else None)
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
            broker.data_received(cid, data, now_ms())
            if not data:
                broker.connection_lost(cid, now_ms())
            self.flush()
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
        tr = p.tr
        if not tr.is_reading() and not conn.closing:
            tr.resume_reading()
        sess = conn.session
        if sess is not None and sess.conn is conn:
            sess.pump()
            self.flush()

    # ---- the outbox's share of the gate -----------------------------------------
    def outbox_appended(self, seq):
        """The uplink appended outbox record seq: output queued from now on
        may promise it (the local publisher's PUBACK)."""
        m = self.broker.store.log.next_seq - 1
        marks = self.ob_marks
        if marks and marks[-1][0] == m:
            marks[-1][1] = seq
        else:
            marks.append([m, seq])

    def settled(self):
        """Log.settled() of the store, held back by the outbox: output
        queued while the store's next_seq - 1 was m may promise every
        outbox record appended while it was <= m, so it waits until those
        are durable (or void: confirmed upstream before they were written)."""
        s = self.broker.store.log.settled()
        marks = self.ob_marks
        if marks:
            obs = self.outbox.settled()
            while marks and marks[0][1] <= obs:
                del marks[0]  # (few: one per store seq an outbox batch spans)
            if marks and marks[0][0] <= s:
                s = marks[0][0] - 1
        return s

    # ---- output ---------------------------------------------------------------
    def flush(self):
        """Write out everything the broker queued (one write per connection);
        output that may promise records waits until they are durable or
        void (see the head comment)."""
        broker = self.broker
        dirty = broker.dirty
        st = broker.store
        udp = self.udp
        if udp is not None and udp.ep.out:
            udp.flush()  # CoAP notifications of what this feed published
        if st is None:
            if dirty:
                self._write(self._take())
            return
        held = self.held
        log = st.log
        settled = -1
        if dirty:
            need = log.next_seq - 1  # what this output may promise (Log.settled)
            now = []
            for c in dirty:
                e = held.get(c.id)
                if e is None:  # (output held for c goes first: in order)
                    if not c.promise:
                        now.append(c)  # promises nothing (Connection.promise)
                        continue
                    if settled < 0:
                        settled = self.settled()
                    if need <= settled:
                        now.append(c)  # nothing it may promise waits
                        continue
                    e = held[c.id] = [c]
                e.append((need, broker.take(c) if c.out else b""))
                self.order.append((need, c.id))
            dirty[:] = now
            self._write(self._take())
        if held:
            if log.failing:
                self._close_refused()
            # After every feed, not once a loop pass: a call_soon() a pass
            # costs the loop an iteration (an epoll_wait) each; the persistent
            # fan-in ran 15% faster without it (10 interleaved runs)
            self._release(self.settled() if settled < 0 else settled)

    def _close_refused(self):
        # The store is failing (Log.failing): held output waits for a sync
        # that has not happened. A connection the broker closed meanwhile (a
        # 3.1.1 publisher refused, publish.py) is closed now, its held
        # output dropped: an ack in it promised what was never synced
        # (docs/persistence.md "When the store cannot keep it").
        held = self.held
        for cid in [cid for cid in held if held[cid][0].closing]:
            del held[cid]  # (its entries in order: skipped as gone, _release)
            p = self.peers.pop(cid, None)
            if p is not None:
                p.tr.close()

    def _loop(self):
        # The running loop, looked up once: asyncio.get_running_loop() makes
        # a getpid() system call each time (CPython 3.11), at every commit here
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        return loop

    def _take(self):
        # The output the broker queued, out of its connections, in order
        broker = self.broker
        dirty = broker.dirty
        out = []
        for conn in dirty:
            out.append((conn, broker.take(conn) if conn.out else b""))
        dirty.clear()
        return out

    def _release(self, settled):
        # Held output whose promises are kept (Log.settled) goes out, oldest
        # first through `order` (needs only grow along it: a feed that
        # settles nothing costs one comparison, however many wait); a
        # commit is due for the rest (sync_wait_us after it began to wait,
        # for acks that make its records void and their writing needless)
        udp = self.udp
        if udp is not None and udp.held:
            udp.release(settled)
        waiting = False
        for o in self.others:
            if o.held:
                o.release(settled)
                waiting = waiting or bool(o.held)
        held = self.held
        order = self.order
        if order and order[0][0] <= settled:
            out = []
            k = 0
            while k < len(order) and order[k][0] <= settled:
                e = held.get(order[k][1])
                k += 1
                if e is None:
                    continue  # (gone out with an earlier piece)
                i = 1
                while i < len(e) and e[i][0] <= settled:
                    i += 1
                if i > 1:
                    out.append((e[0], e[1][1] if i == 2 else b"".join([x[1] for x in e[1:i]])))
                    if i == len(e):
                        del held[e[0].id]
                    else:
                        del e[1:i]
            del order[:k]
            self._write(out)
        if (held or waiting or (udp is not None and udp.held)) and not self.commit_due and not self.syncing:
            self.commit_due = True
            if self.sync_wait_us and self.broker.store.sent_records != self.sent_mark:
                # records of deliveries in flight: their acks may void them
                self._loop().call_later(self.sync_wait_us / 1e6, self._commit)
            else:
                # (queued ones: no ack is coming soon) at the end of the loop
                # pass: the records of all the feeds read in it share a sync
                self._loop().call_soon(self._commit)

    def commit_soon(self):
        """Output elsewhere (the CoAP shell) waits for the store: release
        what is durable now, and have a commit sync the rest."""
        self._release(self.settled())

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

    def _commit(self):
        # One sync for the batch (and whatever came while the last sync
        # ran), then the output it kept waiting; the outbox's batch in the
        # same sync (the head comment)
        self.commit_due = False
        if self.syncing:
            return
        st = self.broker.store
        log = st.log
        ob = self.outbox
        loop = self._loop()
        self.sent_mark = st.sent_records
        fds = []
        try:
            for lg in (log, ob) if ob is not None else (log,):
                lg.write()
                fd = lg.sync_handle()
                if fd is None:
                    lg.flush()  # synced here (files with no handle), or sync="never"
                else:
                    fds.append(fd)
        except OSError as e:
            self.log(40, "store: write failed (%s): acks held, retrying" % e)
            self.commit_due = True
            loop.call_later(_RETRY_S, self._commit)
            return
        if not fds:  # durable already: out it goes
            self._release(self.settled())
            return
        self.syncing = True
        self.sync_top = log.top
        if ob is not None:
            self.ob_top = ob.top
        if self.syncer is None:
            try:
                self.syncer = Syncer(loop, self._synced)
            except OSError as e:
                self.log(40, "store: no sync helper (%s): syncing on the loop" % e)
                self.syncer = False
        if self.syncer is False:  # slower (the loop waits), never stuck
            try:
                for fd in fds:
                    os.fsync(fd)
            except OSError as e:
                self._synced(e.errno or errno.EIO)
                return
            self._synced(0)
            return
        try:
            self.syncer.submit(*fds)
        except OSError:
            self._synced(errno.EIO)  # as a failed sync: written again, retried

    def _synced(self, err):
        # On the loop, the helper's sync done (err 0) or failed (an errno)
        self.syncing = False
        log = self.broker.store.log
        ob = self.outbox
        top = self.sync_top
        if self.syncer and self.syncer.dead:
            self.syncer.close()
            if self.syncer.answered:
                self.syncer = None  # the next sync starts a new helper
            else:
                # Dead before its first answer (it cannot even start, say):
                # another would die too, and the acks would wait forever
                self.log(40, "store: the sync helper died unused: syncing on the loop")
                self.syncer = False
        if err:
            log.sync_failed()  # the batch is written again, to a new segment
            if ob is not None:
                ob.sync_failed()
            self.log(40, "store: sync failed (%s): acks held, retrying" % os.strerror(err))
            self.commit_due = True
            self._loop().call_later(_RETRY_S, self._commit)
            return
        log.sync_done(top)
        if ob is not None:
            ob.sync_done(self.ob_top)
        self._release(self.settled())

    def close(self):
        if self.server is not None:
            self.server.close()
        if self.syncer:
            self.syncer.close()
        self.syncer = None
        for p in list(self.peers.values()):
            p.tr.close()
        self.peers.clear()
