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
#
# TcpServer (tcp_cpython.py) is a GroupCommit: this class holds the gate and
# the sync, the transport side writes (_write) and owns the peers.
import asyncio
import errno
import os

from edge.runtime.flash_cpython import Syncer

_RETRY_S = 0.1  # a failed store sync is retried this often; the acks wait


class GroupCommit:
    def __init__(self):
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

    def stop_syncing(self):
        if self.syncer:
            self.syncer.close()
        self.syncer = None
