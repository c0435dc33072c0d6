# Group commit on the MicroPython runtime (tcp.py), as CPython's
# commit_cpython.py does it (docs/persistence.md "Group commit"; issue #19):
# output that may promise what the store holds (Connection.promise: a
# PUBACK, PUBREC, SUBACK, CONNACK) is held, in order per connection, with
# what it may promise (the log's next_seq - 1 when it was queued), and goes
# out once Log.settled() reaches it: what it promises is durable, or void (a
# record deleted before it was written: a subscriber's PUBACK came first).
# The rest goes out at once. One commit (write + sync) covers every feed
# read before it runs: it is a task that runs after the reads the poller
# woke in the same round (sync_wait_us later when deliveries went out since
# the last commit, whose acks may still void their records). On littlefs each
# sync copies the file's last block into a fresh one (an erase): one sync
# per batch, not per read, is what keeps a board's flash alive
# (docs/persistence.md "Flash wear").
#
# A commit that fails (Log.failing: a full or failing flash) is retried
# every _RETRY_MS; meanwhile the broker refuses new QoS 1/2 publishes, and a
# connection it closes for that is closed at once, its held output dropped
# (docs/persistence.md "When the store cannot keep it").
#
# The uplink's outbox (docs/uplink.md "What is promised"), when the uplink
# runs (edge/runtime/uplink.py sets `outbox`, its Log, and calls
# outbox_appended(seq) at each append): a PUBACK must not go out before the
# outbox record of its message is durable either, so settled() holds output
# queued since an append back until the outbox's settled() passes it, and a
# commit syncs both logs (as tcp_cpython.py does it).
#
# Imported only when the store is open: a board without one pays nothing.
import asyncio

from edge.compat import const

_RETRY_MS = const(100)


class Committer:
    def __init__(self, srv, log, wait_us):
        self.srv = srv
        self.store = srv.broker.store
        self.log = log  # the runtime's log(level, msg)
        self.wait_ms = wait_us // 1000
        self.held = {}   # cid -> [conn, (need, data), ...]
        self.order = []  # (need, cid) of each piece in held, oldest first
        self.due = False  # a commit task is on its way
        self.sent_mark = 0  # the store's sent_records at the last commit
        self.outbox = None  # the uplink's outbox Log (uplink.py), synced with the store
        self.ob_marks = []  # [store next_seq - 1, last outbox seq] (settled())

    def outbox_appended(self, seq):
        """The uplink appended outbox record seq: output queued from now on
        may promise it (the local publisher's PUBACK)."""
        m = self.store.log.next_seq - 1
        marks = self.ob_marks
        if marks and marks[-1][0] == m:
            marks[-1][1] = seq
        else:
            marks.append([m, seq])

    def settled(self):
        """Log.settled() of the store, held back by the outbox: output
        queued while the store's next_seq - 1 was m may promise every outbox
        record appended while it was <= m: it waits until they are durable
        (or void: confirmed upstream before they were written)."""
        s = self.store.log.settled()
        marks = self.ob_marks
        if marks:
            obs = self.outbox.settled()
            while marks and marks[0][1] <= obs:
                del marks[0]
            if marks and marks[0][0] <= s:
                s = marks[0][0] - 1
        return s

    def hold(self, dirty):
        """tcp.py's flush(): take the output of dirty that must wait for the
        store out of it (into held); release what is settled now."""
        held = self.held
        wal = self.store.log
        settled = self.settled()
        if dirty:
            need = wal.next_seq - 1  # what this output may promise
            keep = []
            take = self.srv.broker.take
            for c in dirty:
                e = held.get(c.id)
                if e is None:  # (output held for c goes first: in order)
                    if not c.promise or need <= settled:
                        keep.append(c)
                        continue
                    e = held[c.id] = [c]
                e.append((need, take(c) if c.out else b""))
                self.order.append((need, c.id))
            dirty[:] = keep
        if held:
            self.release(settled)

    def release(self, settled):
        # Held output whose promises are kept goes out, oldest first along
        # `order` (needs only grow along it); a commit is due for the rest
        held = self.held
        order = self.order
        k = 0
        while k < len(order) and order[k][0] <= settled:
            e = held.get(order[k][1])
            k += 1
            if e is None:
                continue  # (gone out with an earlier piece, or closed)
            i = 1
            while i < len(e) and e[i][0] <= settled:
                i += 1
            if i > 1:
                data = e[1][1] if i == 2 else b"".join([x[1] for x in e[1:i]])
                if i == len(e):
                    del held[e[0].id]
                else:
                    del e[1:i]
                self._send(e[0], data)
        if k:
            del order[:k]
        if held and not self.due:
            self.due = True
            asyncio.create_task(self._commit())

    def _send(self, conn, data):
        # tcp.py flush()'s write of one connection's output, for output
        # taken earlier (kept there, not as a method of its own: the
        # board's TcpServer costs heap without the store too)
        srv = self.srv
        cid = conn.id
        w = srv.writers.get(cid)
        if w is None:
            return
        try:
            conn.out_bytes = srv._write(cid, w, data)
        except OSError:
            conn.closing = True
        except MemoryError:
            conn.closing = True  # (as flush(): lost output, closed, counted)
            srv.broker.stats.conns_oom += 1
        if (conn.out_bytes or conn.closing) and cid not in srv.draining:
            srv.draining[cid] = True  # (a dict: tcp.py says why)
            asyncio.create_task(srv._drain(conn, w))

    async def _commit(self):
        st = self.store
        wal = st.log
        # after the reads woken with this one (their records join the
        # batch); longer when deliveries went out, whose acks may void records
        await asyncio.sleep_ms(self.wait_ms if st.sent_records != self.sent_mark else 0)
        while True:
            self.sent_mark = st.sent_records
            try:
                wal.flush()
                if self.outbox is not None:
                    self.outbox.flush()  # (the uplink's records: the same promise)
                break
            except OSError as e:
                self.log(40, "store: sync failed (%s): acks held, retrying" % e)
                self.close_refused()
                await asyncio.sleep_ms(_RETRY_MS)
            except MemoryError:
                # A full heap while framing the batch (log.py write() leaves
                # it pending): the acks wait, the connections' closes and
                # acks free heap, the flush is tried again. Escaping, it
                # ended this task with `due` set, and no commit ever ran
                # again (tools/crash.py at 128 KiB: every ack held)
                self.close_refused()
                await asyncio.sleep_ms(_RETRY_MS)
        self.due = False
        self.release(self.settled())

    def close_refused(self):
        # The store is failing: a connection the broker closed meanwhile (a
        # 3.1.1 publisher refused, publish.py) is closed now, its held
        # output dropped: an ack in it promised what was never synced
        held = self.held
        srv = self.srv
        for cid in [cid for cid in held if held[cid][0].closing]:
            del held[cid]
            w = srv.writers.get(cid)
            if w is not None and cid not in srv.draining:
                srv._forget(cid, w)
