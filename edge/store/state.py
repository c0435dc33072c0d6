# The broker's persistent state on a Log (edge/store/log.py), sans-IO: the
# broker tells StateStore about each change of what must survive a restart
# (docs/design.md "Delivery guarantees"); replay() rebuilds it into a fresh
# Broker.
# The runtime writes no PUBACK/PUBREC/CONNACK before what it promises is
# synced, or void: a delivery acknowledged before its record was written
# needs no flash (Log.settled; the deletion that ends it is quiet).
#
# What persists: sessions that outlive their connection (clean=0, or a 5.0
# expiry > 0) with their subscriptions, outgoing QoS 1/2 deliveries (queued,
# or in flight with their pid and phase), incoming QoS 2 pids waiting for
# PUBREL, and retained messages. Clean sessions cost nothing here.
#
# The records and their layouts: edge/store/layout.py.
#
# Removal is the log's own tombstone, not a record kind of ours: UNSUBSCRIBE,
# an ack, PUBREL, a retained message cleared or replaced, a session deleted,
# each deletes the record(s) it ends; a message record is deleted with its
# last reference. So the log's live records are exactly the live state and
# compaction keeps nothing else, with no rule of ours to teach it.
#
# A QoS 1 delivery has one record from routing to ack. Sent at once, it
# carries its pid (SMSG; INFLIGHT for a stored message): a restart resends
# it with that pid and DUP 1 [MQTT-4.4.0-1]. Queued first (QMSG, QUEUED,
# or FMSG on flash: fqueue.py), moving it into the window writes nothing,
# and after a restart it goes out as new (new pid, DUP 0): the same to a
# QoS 1 receiver, and a record and a tombstone less per message drained
# (docs/persistence.md). QoS 2 keeps its pid on flash (INFLIGHT, RELEASED):
# there the pid is what makes it exactly once.
#
# A change that replaces a record (queued -> in flight -> released, a new
# subscription QoS, a session rewrite, a retained message replaced) appends
# the new record before deleting the old one. A torn batch keeps a prefix
# of it (record.py), so it holds the old state, or the new one with the old
# record still live: replay lets the later record win and deletes the
# earlier one. Deleting a session deletes its SESSION record first, so a
# torn batch leaves records of no session, which replay removes, never half
# a session. Messages are written before their first reference.
#
# What each record costs which budget, and the message records with their
# references: edge/store/ledger.py (the Ledger StateStore is).
from edge.compat import const
from edge.mqtt.session import RELEASED, unpack
from edge.store.layout import encode
from edge.store.ledger import Ledger

EXPIRY_NEVER = const(0xFFFFFFFF)

_K_SESSION = const(16)
_K_SUB = const(17)
_K_SUB5 = const(25)  # options over a byte (layout.py)
_K_MSG = const(18)
_K_MSG5 = const(26)  # a 5.0 message, its properties too (msg5.py)
_K_QUEUED = const(19)
_K_INFLIGHT = const(20)
_K_RELEASED = const(21)
_K_RXQOS2 = const(22)
_K_RETAINED = const(23)
_K_QMSG = const(27)  # a QoS 1 delivery and its message, one record
_K_DONE = const(28)  # a QMSG's delivery ended; others still refer to its message
_K_SMSG = const(29)  # a QMSG sent at once, with its pid
_K_FMSG = const(30)  # a QoS 1 delivery queued on flash (fqueue.py)

_RC_QUOTA_EXCEEDED = const(0x97)  # MQTT 5.0 reason code (§2.4)
_CLEAN = const(1)      # SESSION flags
_RETAIN = const(4)     # MSG / delivery flags, as session.py's entries
_BODY_MAX = const(24)  # largest body of a record without strings (about)
_PID_MAX = const(65535)

# Per-session index, as in ledger.py (a private const is inlined by
# MicroPython and can't be imported; tests/core/test_store_state.py keeps
# them equal)
_SID = const(0)
_SEQ = const(1)    # SESSION record
_BYTES = const(2)  # what session_budget counts
_EXP = const(3)
_FLAGS = const(4)
_SUBS = const(5)   # {filter: seq}
_INFL = const(6)   # {pid: +-seq}
_QUEUE = const(7)  # [seq], oldest first from index _QHEAD on (mirrors Session.queue)
_RX = const(8)     # {pid: seq}
_QHEAD = const(9)  # _QUEUE's entries before it have gone in flight (below)
_FQ = const(10)    # the flash queue (fqueue.py), None if empty


def _take_oldest(s, q):
    # The seq of the oldest queued delivery of s (q: its _QUEUE, not empty),
    # which leaves the queue. Not q.pop(0), a move of the whole list for
    # each message of a long queue: the head moves on, and the list is
    # cut once half of it is behind the head (amortized O(1)).
    h = s[_QHEAD]
    seq = q[h]
    h += 1
    if h == len(q):
        s[_QUEUE] = None
        h = 0
    elif h >= 16 and 2 * h >= len(q):
        del q[:h]
        h = 0
    s[_QHEAD] = h
    return seq


class StateStore(Ledger):
    # The MicroPython runtime's group commit (edge/runtime/commit.py), set
    # by edge/runtime/main.py once the store opened (tcp.py finds it here)
    commit = None

    def __init__(self, log, session_budget=65536, reserve_bytes=512):
        super().__init__(log, session_budget, reserve_bytes)
        # QoS 1 deliveries recorded as they went out: their acks may end them
        # before the batch is written (Log.settled, tcp_cpython.py's sync wait)
        self.sent_records = 0

    # ---- sessions --------------------------------------------------------------
    def session_saved(self, sess, expiry=None):
        """CONNECT made or updated sess. expiry (seconds) defaults to
        EXPIRY_NEVER for clean=0 and 0 for clean=1; 0 is not persisted (and
        deletes what was). A session saved for the first time is written
        with everything it already holds, or not at all. 0 or a reason."""
        if expiry is None:
            expiry = 0 if sess.clean else EXPIRY_NEVER
        s = self._sess.get(sess)
        if not expiry:
            self.session_deleted(sess)
            return 0
        flags = _CLEAN if sess.clean else 0
        if s is not None:
            if s[_EXP] == expiry and s[_FLAGS] == flags:
                return 0  # the usual reconnect: nothing to write
            seq = self._add(s, _K_SESSION, encode(_K_SESSION, (s[_SID], flags, expiry, sess.client_id)))
            if seq < 0:
                return _RC_QUOTA_EXCEEDED
            self._del(s, s[_SEQ])
            s[_SEQ] = seq
            s[_EXP] = expiry
            s[_FLAGS] = flags
            return 0
        body = encode(_K_SESSION, (self._next_sid, flags, expiry, sess.client_id))
        rc = self._admit(None, len(body), 0, 0)
        if rc:
            return rc
        s = [self._next_sid, 0, 0, expiry, flags, None, None, None, None, 0, None]
        s[_SEQ] = self._add(s, _K_SESSION, body)
        if s[_SEQ] < 0:
            return _RC_QUOTA_EXCEEDED
        self._next_sid += 1
        self._sess[sess] = s
        rc = self._write_all(sess)
        if rc:
            self.session_deleted(sess)
        return rc

    def _write_all(self, sess):
        # What a session held before it was first saved (a new one: nothing)
        rc = 0
        for f in sess.subs:
            rc = rc or self.sub_added(sess, f, sess.subs[f])
        nxt = sess.next_pid
        for pid in sorted(sess.inflight, key=lambda p: (p - nxt) % _PID_MAX):  # send order
            if rc:
                break
            e = sess.inflight[pid]
            if e == RELEASED:
                rc = self._released_only(sess, pid)
            else:
                msg, qos, retain = unpack(e)
                rc = self.msg_sent(sess, pid, msg, qos, retain)
        for e in sess.queue or ():
            if rc:
                break
            if e is None:  # FLASH (fqueue.py)
                continue  # (a session with a flash queue was saved already)
            msg, qos, retain = unpack(e)
            rc = self.msg_queued(sess, msg, qos, retain)
        for pid in sess.rx_qos2 or ():
            rc = rc or self.qos2_seen(sess, pid)
        return rc

    def _released_only(self, sess, pid):
        s = self._sess[sess]
        rc = self._admit(s, _BODY_MAX, 0, 0)
        seq = -1 if rc else self._add(s, _K_RELEASED, encode(_K_RELEASED, (s[_SID], pid, 0)))
        if seq < 0:
            return rc or _RC_QUOTA_EXCEEDED
        self._infl(s)[pid] = -seq
        return 0

    def session_deleted(self, sess):
        """sess ended (a clean CONNECT took its client id, or it expired).
        Call before the Session's entries are dropped: the messages they
        hold lose a reference."""
        s = self._sess.pop(sess, None)
        if s is None:
            return
        self._del(None, s[_SEQ])  # first: see the head comment
        for seq in (s[_SUBS] or {}).values():
            self._del(None, seq)
        infl = s[_INFL] or {}
        for pid in infl:
            seq = infl[pid]
            e = sess.inflight.get(pid, RELEASED)
            if seq > 0 and e != RELEASED:
                self._end(None, seq, unpack(e)[0])
            else:
                self._del(None, seq if seq > 0 else -seq)
        if s[_FQ] is not None:
            from edge.store.fqueue import end

            end(self, s)
        q = [e for e in sess.queue or () if e is not None]  # (not FLASH: fqueue.py)
        i = 0
        for seq in (s[_QUEUE] or ())[s[_QHEAD]:]:
            if i < len(q):
                self._end(None, seq, unpack(q[i])[0])
            else:
                self._del(None, seq)
            i += 1
        for seq in (s[_RX] or {}).values():
            self._del(None, seq)

    # ---- subscriptions -----------------------------------------------------------
    def sub_added(self, sess, f, opts):
        """SUBSCRIBE granted sess filter f with the options opts (new,
        or replacing). 0 or a reason: refused, the broker answers 0x80."""
        s = self._sess.get(sess)
        if s is None:
            return 0
        kind = _K_SUB if opts <= 0xFF else _K_SUB5  # 5.0 options over a byte
        body = encode(kind, (s[_SID], opts, f))
        rc = self._admit(None, len(body), 0, 0)
        seq = -1 if rc else self._add(s, kind, body)
        if seq < 0:
            return rc or _RC_QUOTA_EXCEEDED
        if s[_SUBS] is None:
            s[_SUBS] = {}
        old = s[_SUBS].get(f)
        s[_SUBS][f] = seq
        if old is not None:
            self._del(s, old)
        return 0

    def sub_removed(self, sess, f):
        s = self._sess.get(sess)
        subs = s and s[_SUBS]
        if subs and f in subs:
            self._del(s, subs.pop(f))

    # ---- outgoing QoS 1/2 --------------------------------------------------------
    def msg_queued(self, sess, msg, qos, retain=False):
        """sess queues msg (offline, or its window is full). 0, or a reason
        (counted): then the Session must not queue it either, the store's
        queue mirrors the Session's."""
        s = self._sess.get(sess)
        if s is None:
            return 0
        rc, seq = self._queued(s, msg, qos | (_RETAIN if retain else 0))
        if not rc:
            if s[_QUEUE] is None:
                s[_QUEUE] = []
            s[_QUEUE].append(seq)
        return rc

    def msg_sent(self, sess, pid, msg, qos, retain=False):
        """sess sent msg as a new PUBLISH with pid. If the store has queued
        deliveries for sess, it is the oldest of them (a Session sends
        directly only when its queue is empty): that one moves in flight.
        Otherwise 0 or a reason (counted): the broker then drops it."""
        s = self._sess.get(sess)
        if s is None:
            return 0
        if s[_FQ] is not None:
            from edge.store.fqueue import sent

            if sent(self, s[_FQ], pid, msg):
                return 0  # its FMSG stays until the ack (fqueue.py)
        flags = qos | (_RETAIN if retain else 0)
        q = s[_QUEUE]
        mseq = self._mseq.get(msg) if q else None
        if mseq is None:  # (a message we don't hold is no queued one)
            if qos == 1:  # its one record, with its pid: see the head comment
                rc, seq = self._queued(s, msg, flags, pid)
                self.sent_records += 1
            else:
                rc, seq = self._deliver(s, msg, _K_INFLIGHT, [s[_SID], pid, 0, 0, flags], 2)
            if not rc:
                self._infl(s)[pid] = seq
            return rc
        prev = _take_oldest(s, q)
        if qos == 1:
            self._infl(s)[pid] = prev  # no record: its QUEUED one stays until the ack
            return 0
        nxt = self.log.next_seq
        seq = self._add(s, _K_INFLIGHT, encode(_K_INFLIGHT, (s[_SID], pid, nxt - mseq, nxt - prev, flags)))
        if seq < 0:
            seq = prev  # kept as queued: a restart sends it again, as new
        else:
            self._del(s, prev)
        self._infl(s)[pid] = seq
        return 0

    def released(self, sess, pid, msg):
        """PUBREC came for pid (msg: the message it carried), PUBREL goes
        out: the message is no longer needed for sess."""
        s = self._sess.get(sess)
        infl = s and s[_INFL]
        seq = infl.get(pid) if infl else None
        if seq is None or seq < 0:
            return
        new = self._add(s, _K_RELEASED, encode(_K_RELEASED, (s[_SID], pid, self.log.next_seq - seq)))
        if new < 0:
            return  # still in flight on flash: a restart resends with DUP
        self._del(s, seq, False)  # the link to the QUEUED it replaced (log.delete)
        infl[pid] = -new
        self._unref(s, msg)

    def acked(self, sess, pid, msg=None):
        """PUBACK (msg: the message it acks) or PUBCOMP (msg None) ended
        pid's delivery."""
        s = self._sess.get(sess)
        if s is not None and s[_FQ] is not None and pid in s[_FQ][4]:
            from edge.store.fqueue import acked

            acked(self, s, s[_FQ], pid)
            return
        infl = s and s[_INFL]
        seq = infl.pop(pid, None) if infl else None
        if seq is None:
            return
        if not infl:
            s[_INFL] = None
        if seq < 0:
            self._del(s, -seq)
        elif msg is not None:
            self._end(s, seq, msg)
        else:
            self._del(s, seq)

    def unqueued(self, sess, i, msg):
        """sess dropped its i-th queued delivery, msg, unsent (a 5.0
        message expired, the memory budget made room, a shared
        subscription's message went to another member)."""
        s = self._sess.get(sess)
        q = s and s[_QUEUE]
        if not q or i >= len(q) - s[_QHEAD]:
            return
        seq = q.pop(s[_QHEAD] + i)
        if len(q) == s[_QHEAD]:
            s[_QUEUE] = None
            s[_QHEAD] = 0
        self._end(s, seq, msg)

    # ---- incoming QoS 2 ----------------------------------------------------------
    def qos2_seen(self, sess, pid):
        """A new incoming QoS 2 pid (PUBREC goes out after the flush)."""
        s = self._sess.get(sess)
        if s is None or (s[_RX] and pid in s[_RX]):
            return 0
        rc = self._admit(None, _BODY_MAX, 0, 0)
        seq = -1 if rc else self._add(s, _K_RXQOS2, encode(_K_RXQOS2, (s[_SID], pid)))
        if seq < 0:
            return rc or _RC_QUOTA_EXCEEDED
        if s[_RX] is None:
            s[_RX] = {}
        s[_RX][pid] = seq
        return 0

    def qos2_released(self, sess, pid):
        s = self._sess.get(sess)
        rx = s and s[_RX]
        if rx and pid in rx:
            self._del(s, rx.pop(pid))

    # ---- retained ----------------------------------------------------------------
    def retained(self, topic, msg):
        """The retained message for topic is now msg; None (or an empty
        payload) cleared it. 0 or a reason: then the old one is cleared too,
        as RetainStore.set does (a stale value must not pass as the latest)."""
        old = self._ret.pop(topic, None)
        rc = 0
        if msg is not None and msg.payload:
            mbody = self._msg_body(msg)
            rc = self._admit(None, _BODY_MAX, 0 if mbody is None else len(mbody), 0)
            mseq = -1 if rc else self._ref(None, msg, mbody)
            seq = -1
            if mseq >= 0:
                seq = self._add(None, _K_RETAINED, encode(_K_RETAINED, (self.log.next_seq - mseq,)))
                if seq < 0:
                    self._unref(None, msg)
            if seq < 0:
                rc = rc or _RC_QUOTA_EXCEEDED
            else:
                self._ret[topic] = (seq, msg)
        if old is not None:
            self._del(None, old[0])
            self._unref(None, old[1])
        return rc
    # ---- restart -------------------------------------------------------------------
    def replay(self, broker):
        """Rebuild the stored state into broker (fresh: no sessions yet):
        Sessions (offline) with subscriptions in broker.subs, in-flight
        entries, queues, incoming QoS 2 pids; retained messages. Deletes
        records that a torn batch or a corrupt segment left inconsistent.
        Returns (counts, problems): counts a dict, problems a list of
        (seq, kind, what). Call after log.open(), before any other call;
        flush the log after it (the deletions are in its batch)."""
        from edge.store.replay import Replay  # once per start: not kept on a board

        return Replay(self, broker).run()
