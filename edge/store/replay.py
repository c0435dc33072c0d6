# Rebuilding the broker's state from the log at start. edge/store/state.py
# describes the records and the rules this follows: the later of two records
# for the same thing wins (a torn batch), records of no session, references
# to no message and messages nobody refers to are deleted, and all of it is
# reported. Imported only by StateStore.replay(), once per start.
from edge.compat import const
from edge.mqtt.session import RELEASED, Message, Session, entry
from edge.store.layout import decode
from edge.store.state import EXPIRY_NEVER

# As in state.py (a private const is inlined by MicroPython and can't be
# imported; tests/core/test_store_state.py keeps them equal)
_K_SESSION = const(16)
_K_SUB = const(17)
_K_SUB5 = const(25)
_K_MSG = const(18)
_K_MSG5 = const(26)
_K_QUEUED = const(19)
_K_INFLIGHT = const(20)
_K_RELEASED = const(21)
_K_RXQOS2 = const(22)
_K_RETAINED = const(23)
_K_QMSG = const(27)
_K_DONE = const(28)
_K_SMSG = const(29)
_CLEAN = const(1)
_SHARED = const(0x40)  # a 5.0 shared subscription's flag, as in v5subs.py

_HANDLERS = {
    _K_SESSION: "_session", _K_SUB: "_sub", _K_SUB5: "_sub", _K_MSG: "_msg", _K_MSG5: "_msg", _K_QUEUED: "_queued",
    _K_INFLIGHT: "_inflight", _K_RELEASED: "_released", _K_RXQOS2: "_rxqos2",
    _K_RETAINED: "_retained", _K_QMSG: "_qmsg", _K_DONE: "_done", _K_SMSG: "_smsg",
}

# A session found in the log, a list: sid, SESSION seq (0: none seen),
# client id, flags, expiry, {filter: (seq, opts)}, {pid: (seq, msg or None
# once released, flags, send order)}, [(seq, msg, flags)], {pid: seq}
_W_SID = const(0)
_W_SEQ = const(1)
_W_CID = const(2)
_W_FLAGS = const(3)
_W_EXP = const(4)
_W_SUBS = const(5)
_W_INFL = const(6)
_W_QUEUE = const(7)
_W_RX = const(8)


class Replay:
    def __init__(self, store, broker):
        self.store = store
        self.broker = broker
        self.log = store.log
        self.sids = {}     # sid -> work list
        self.msgs = {}     # seq -> Message
        self.refs = {}     # Message -> references kept
        self.ret = {}      # topic -> (seq, Message)
        self.qmsgs = {}    # seq of a QMSG or SMSG -> its sid
        self.done = {}     # seq of a QMSG -> seq of its DONE
        self.dead = []     # seqs to delete once the walk is over
        self.problems = []
        self.counts = {"sessions": 0, "subs": 0, "inflight": 0, "queued": 0,
                       "rx_qos2": 0, "retained": 0, "messages": 0, "deleted": 0}

    def run(self):
        for seq, kind, body in self.log.replay():
            name = _HANDLERS.get(kind)
            if name is None:
                # a newer version's, or another owner's: not ours to delete
                self.problems.append((seq, kind, "unknown kind"))
                continue
            try:
                vals = decode(kind, body)
            except ValueError:
                self._drop(seq, kind, "bad body")
                continue
            getattr(self, name)(seq, vals)
        self._finish()
        for seq in self.dead:
            self.log.delete(seq)
        self.counts["deleted"] = len(self.dead)
        return self.counts, self.problems

    def _drop(self, seq, kind, why):
        self.dead.append(seq)
        self.problems.append((seq, kind, why))

    def _work(self, sid):
        w = self.sids.get(sid)
        if w is None:
            w = self.sids[sid] = [sid, 0, None, 0, 0, {}, {}, [], {}]
        return w

    # ---- one handler per kind: record -> work lists ----------------------------
    def _session(self, seq, v):
        w = self._work(v[0])
        if w[_W_SEQ]:
            self._drop(w[_W_SEQ], _K_SESSION, "superseded")
        w[_W_SEQ] = seq
        w[_W_FLAGS] = v[1]
        w[_W_EXP] = v[2]
        w[_W_CID] = v[3]

    def _sub(self, seq, v):
        subs = self._work(v[0])[_W_SUBS]
        old = subs.get(v[2])
        if old is not None:
            self._drop(old[0], _K_SUB, "superseded")
        subs[v[2]] = (seq, v[1])

    def _msg(self, seq, v):
        flags = v[0]
        if flags & 3 == 3 or flags > 7:
            self._drop(seq, _K_MSG, "bad body")
        elif len(v) == 3:
            self.msgs[seq] = Message(v[1], v[2], flags & 3, bool(flags & 4))
        else:  # MSG5
            from edge.store import msg5

            try:
                self.msgs[seq] = msg5.message(v, self.broker)
            except ValueError:
                self._drop(seq, _K_MSG5, "bad body")

    def _qmsg(self, seq, v):
        sid, dfl, mfl, topic, payload = v
        if dfl & 3 != 1 or dfl > 7 or mfl & 3 == 3 or mfl > 7:
            self._drop(seq, _K_QMSG, "bad body")
            return
        m = self.msgs[seq] = Message(topic, payload, mfl & 3, bool(mfl & 4))
        self._work(sid)[_W_QUEUE].append((seq, m, dfl))
        self.qmsgs[seq] = sid

    def _smsg(self, seq, v):
        sid, pid, dfl, mfl, topic, payload = v
        if dfl & 3 != 1 or dfl > 7 or mfl & 3 == 3 or mfl > 7 or not 0 < pid < 65536:
            self._drop(seq, _K_SMSG, "bad body")
            return
        m = self.msgs[seq] = Message(topic, payload, mfl & 3, bool(mfl & 4))
        self._put(self._work(sid), pid, (seq, m, dfl, seq))
        self.qmsgs[seq] = sid

    def _done(self, seq, v):
        target = seq - v[0] if v[0] else 0
        sid = self.qmsgs.get(target)
        if sid is None or target in self.done:
            self._drop(seq, _K_DONE, "no message")
            return
        self.done[target] = seq
        w = self._work(sid)
        q = w[_W_QUEUE]
        for i in range(len(q)):
            if q[i][0] == target:
                del q[i]  # its delivery is over; the message is others'
                return
        infl = w[_W_INFL]
        for pid in infl:
            if infl[pid][0] == target:  # an SMSG's
                del infl[pid]
                return

    def _ref(self, seq, kind, back):
        m = self.msgs.get(seq - back) if back else None
        if m is None:
            self._drop(seq, kind, "no message")
        return m

    def _queued(self, seq, v):
        m = self._ref(seq, _K_QUEUED, v[1])
        if m is not None:
            self._work(v[0])[_W_QUEUE].append((seq, m, v[2]))

    def _inflight(self, seq, v):
        m = self._ref(seq, _K_INFLIGHT, v[2])
        if m is not None:
            w = self._work(v[0])
            if v[3]:
                self._unqueue(w, seq - v[3])
            self._put(w, v[1], (seq, m, v[4], seq))

    def _released(self, seq, v):
        w = self._work(v[0])
        prev = seq - v[2] if v[2] else seq
        if v[2]:
            self._unqueue(w, prev)  # a delivery kept as queued (state.msg_sent)
        self._put(w, v[1], (seq, None, 0, prev))

    def _unqueue(self, w, prev):
        # The queued record an INFLIGHT replaced, still live: a torn batch
        q = w[_W_QUEUE]
        for i in range(len(q)):
            if q[i][0] == prev:
                self._drop(prev, _K_QUEUED, "superseded")
                del q[i]
                return

    def _put(self, w, pid, e):
        old = w[_W_INFL].get(pid)
        if old is not None and old[0] not in self.qmsgs:  # an SMSG is a message too: see _drop_all
            self._drop(old[0], _K_INFLIGHT if old[1] else _K_RELEASED, "superseded")
        w[_W_INFL][pid] = e

    def _rxqos2(self, seq, v):
        rx = self._work(v[0])[_W_RX]
        if v[1] in rx:
            self._drop(rx[v[1]], _K_RXQOS2, "superseded")
        rx[v[1]] = seq

    def _retained(self, seq, v):
        m = self._ref(seq, _K_RETAINED, v[0])
        if m is not None:
            old = self.ret.get(m.topic)
            if old is not None:
                self._drop(old[0], _K_RETAINED, "superseded")
            self.ret[m.topic] = (seq, m)

    # ---- work lists -> broker and store -------------------------------------------
    def _finish(self):
        by_cid = {}
        top = 0
        for sid in self.sids:
            w = self.sids[sid]
            top = max(top, sid)
            if not w[_W_SEQ]:
                self._drop_all(w, "no session")
                continue
            other = by_cid.get(w[_W_CID])
            if other is not None:  # one client id, two sessions: the later wins
                if other[_W_SEQ] > w[_W_SEQ]:
                    other, w = w, other
                self._drop_all(other, "client id saved twice")
            by_cid[w[_W_CID]] = w
        for cid in by_cid:
            self._restore(by_cid[cid])
        store = self.store
        owned = self.log.owned_stats
        if owned:
            for sid in owned:  # FMSG records of no session restored
                w = self.sids.get(sid)
                if w is None or by_cid.get(w[_W_CID]) is not w:
                    from edge.store.fqueue import end_owner

                    end_owner(store, sid)
                    self.problems.append((owned[sid][2], 30, "no session: %d queued on flash" % owned[sid][0]))
            self.log.owned_stats = None
        store.restore_sids(top)
        for topic in self.ret:
            seq, m = self.ret[topic]
            if self.broker.retained.set(topic, m):
                store.restore_retained(topic, seq, m)
                self._use(m)
                self.counts["retained"] += 1
            else:
                self._drop(seq, _K_RETAINED, "over the retained limits")
        for seq in self.msgs:
            m = self.msgs[seq]
            n = self.refs.get(m)
            done = self.done.get(seq, 0)
            if n is None:
                self._drop(seq, _K_MSG, "unreferenced")
                if done:
                    self._drop(done, _K_DONE, "unreferenced")
                continue
            store.restore_message(m, seq, n, done)
            self.counts["messages"] += 1

    def _drop_all(self, w, why):
        if w[_W_SEQ]:
            self._drop(w[_W_SEQ], _K_SESSION, why)
        for f in w[_W_SUBS]:
            self._drop(w[_W_SUBS][f][0], _K_SUB, why)
        for pid in w[_W_INFL]:
            e = w[_W_INFL][pid]
            if e[0] not in self.qmsgs:  # an SMSG: dropped with its message if unreferenced
                self._drop(e[0], _K_INFLIGHT if e[1] else _K_RELEASED, why)
        for e in w[_W_QUEUE]:
            if e[0] not in self.qmsgs:  # a QMSG is a message too: dropped if unreferenced
                self._drop(e[0], _K_QUEUED, why)
        for pid in w[_W_RX]:
            self._drop(w[_W_RX][pid], _K_RXQOS2, why)

    def _use(self, m):
        self.refs[m] = self.refs.get(m, 0) + 1

    def _restore(self, w):
        b = self.broker
        store = self.store
        c = self.counts
        flags = w[_W_FLAGS]
        sess = Session(w[_W_CID], bool(flags & _CLEAN), b.limits, b.stats)
        exp = w[_W_EXP]
        if exp != EXPIRY_NEVER:
            # a 5.0 session: its Session Expiry Interval counts again from
            # the restart (the time it was away before is not recorded)
            sess.expiry = exp
            b.v5hub().expiring[sess] = b.now + exp * 1000
        store.restore_session(sess, w[_W_SID], w[_W_SEQ], exp, flags)
        subs = w[_W_SUBS]
        for f in subs:
            seq, opts = subs[f]
            if opts & _SHARED:  # a 5.0 shared subscription: its group
                from edge.mqtt import v5subs
                from edge.mqtt.topics import split_shared

                v5subs.share(b.v5hub(), sess, f, split_shared(f)[1], opts)
            else:
                if opts > 3:  # 5.0 options: delivered through the Hub
                    b.v5hub()
                sess.subs[f] = opts
                b.subs.add(f, sess, opts)
            store.restore_sub(sess, f, seq)
            c["subs"] += 1
        self._restore_inflight(sess, w[_W_INFL])
        q = w[_W_QUEUE]
        if q:
            sess.queue = []
            for seq, m, fl in q:
                sess.queue.append(entry(m, fl & 3, bool(fl & 4)))
                sess.queued_bytes += len(m.topic) + len(m.payload)
                store.restore_queued(sess, seq, m, seq in self.qmsgs)
                self._use(m)
                c["queued"] += 1
        fq = self.log.owned_stats and self.log.owned_stats.get(w[_W_SID])
        if fq:  # its queue's flash tail (fqueue.py): counted, not read
            from edge.store.fqueue import restore

            restore(store, sess, fq[0], fq[1], fq[2])
            sess.queue = (sess.queue or []) + [None]  # FLASH (fqueue.py)
            c["queued"] += fq[0]
        rx = w[_W_RX]
        for pid in rx:
            sess.qos2_seen(pid)  # [MQTT-4.3.3-2] a resent PUBLISH isn't delivered again
            store.restore_rx(sess, pid, rx[pid])
            c["rx_qos2"] += 1
        b.sessions[sess.client_id] = sess
        c["sessions"] += 1

    def _restore_inflight(self, sess, infl):
        if not infl:
            return
        newest = -1
        last = 0
        for pid in infl:
            seq, m, fl, order = infl[pid]
            if m is None:
                sess.inflight[pid] = RELEASED
            else:
                sess.inflight[pid] = entry(m, fl & 3, bool(fl & 4))
                self._use(m)
            self.store.restore_inflight(sess, pid, seq, m, seq in self.qmsgs)
            if order > newest:
                newest = order
                last = pid
            self.counts["inflight"] += 1
        # Pids go out in sequence: the next one follows the last sent, so
        # attach() resends in the order they were first sent
        sess.next_pid = last + 1 if last < 65535 else 1
