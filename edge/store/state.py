# The broker's persistent state on a Log (edge/store/log.py), sans-IO: the
# broker tells StateStore about each change of what must survive a restart
# (DESIGN "Delivery guarantees"); replay() rebuilds it into a fresh Broker.
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
# A QoS 1 delivery has one record, QUEUED, from the moment it is routed to
# its ack, whether it waits or is in flight: moving it into the window
# writes nothing. After a restart it goes out again as new, with a new pid
# and DUP 0, rather than as a resend of the pid it had ([MQTT-4.4.0-1] asks
# for the pid): to a QoS 1 receiver that is the same, a duplicate it may
# get anyway, and it saves a record and a tombstone per message. QoS 2 keeps
# its pid on flash (INFLIGHT, RELEASED): there the pid is what makes it
# exactly once. A restart may so send a session's QoS 1 messages that were
# in flight after its QoS 2 ones that were too.
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
# Budgets (STYLE H7): the Log's budget_bytes bounds the whole store. New data
# (a delivery, a subscription, a session, a pid, a retained message) is
# admitted only below budget_bytes - reserve_bytes, so a transition that
# replaces a record finds room. Each session's bytes (its records, plus the
# size of each message it refers to, counted once per reference) are bounded
# by session_budget. A refusal returns an MQTT 5.0 reason code (0 is OK) and
# is counted; the broker drops what was refused (and counts it too).
from edge.compat import const
from edge.mqtt.session import RELEASED, Message, unpack
from edge.store.layout import encode
from edge.store.record import body_len, put_varint

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

_RC_PACKET_TOO_LARGE = const(0x95)  # MQTT 5.0 reason codes (§2.4)
_RC_QUOTA_EXCEEDED = const(0x97)
_CLEAN = const(1)      # SESSION flags
_RETAIN = const(4)     # MSG / delivery flags, as session.py's entries
_REC = const(12)       # a record's bytes beyond its body: kind, len, seq, crc (about)
_MSG_COST = const(14)  # a MSG record's bytes beyond (len(msg.topic) + len(msg.payload)) (about)
_BODY_MAX = const(24)  # largest body of a record without strings (about)
_PID_MAX = const(65535)

# Per-session index, a list (cheaper than an instance on a board). Every
# container is None until first needed; _INFL maps pid -> seq of its
# INFLIGHT record, or -seq of its RELEASED record.
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


def _cost(msg):
    # What a reference to msg counts against its session's budget: the
    # bytes its MSG record takes (about). The same for the message's whole
    # life: every reference added is taken off again with this.
    n = len(msg.topic) + len(msg.payload) + _MSG_COST
    if msg.__class__ is not Message:  # Message5: its MSG5 record holds more
        from edge.store.msg5 import extra

        n += extra(msg)
    return n


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


def _qmsg(sid, dflags, mflags, topic, payload):
    # A QMSG body (layout.py "vBBSr") as parts for Log.append: the topic and
    # payload are not copied into one body, only into the batch by write(),
    # and not at all when the subscriber acks before it (most records,
    # flat out: the log elides them)
    tb = topic.encode()
    if sid < 0x80 and len(tb) < 0x80:  # one-byte varints: the usual case
        return bytes((sid, dflags, mflags, len(tb))), tb, payload
    head = bytearray()
    put_varint(head, sid)
    head.append(dflags)
    head.append(mflags)
    put_varint(head, len(tb))
    return bytes(head), tb, payload  # (bytes: record.py joins the parts)


class StateStore:
    def __init__(self, log, session_budget=65536, reserve_bytes=512):
        self.log = log  # opened by the caller; its budget_bytes bounds all
        self.session_budget = session_budget
        self.reserve_bytes = reserve_bytes
        self.refused_session = 0  # over a session's budget
        self.refused_store = 0    # over the store's
        self.refused_size = 0     # a record over the log's max_record
        self._told = 0            # refusals refusals() reported
        self._sess = {}   # Session -> index list (above)
        self._mseq = {}   # Message -> seq of its MSG record
        self._mref = {}   # Message -> references (deliveries, retained) where
                          # more than one: a stored message not in it has one
        self._done = {}   # Message -> seq of the DONE record of its QMSG
        self._ret = {}    # topic -> (seq of RETAINED, Message)
        self._next_sid = 1
        # QoS 1 deliveries recorded as they went out: their acks may end them
        # before the batch is written (Log.settled, tcp_cpython.py's sync wait)
        self.sent_records = 0

    # ---- records ---------------------------------------------------------------
    def _add(self, s, kind, body):
        # Append; seq, or -1 (counted). s: the session the bytes count for.
        log = self.log
        seq = log.append(kind, body)
        if seq < 0:
            if body_len(body) > log.max_record:
                self.refused_size += 1
            else:
                self.refused_store += 1
        elif s is not None:
            s[_BYTES] += log.size_of(seq)
        return seq

    def _del(self, s, seq, elide=True):
        if s is not None:
            s[_BYTES] -= self.log.size_of(seq)
        self.log.delete(seq, elide)

    def _admit(self, s, nbody, mlen, cost):
        # 0 if new records with nbody (+ mlen, a MSG not stored yet; 0 if
        # none) bytes fit, and s (None: no session budget) can take cost
        # more bytes.
        log = self.log
        need = nbody + _REC + (mlen + _REC if mlen else 0)
        if mlen > log.max_record:
            self.refused_size += 1
            return _RC_PACKET_TOO_LARGE
        if s is not None and s[_BYTES] + nbody + _REC + cost > self.session_budget:
            self.refused_session += 1
            return _RC_QUOTA_EXCEEDED
        if log.live_bytes + need > log.budget_bytes - self.reserve_bytes:
            self.refused_store += 1
            return _RC_QUOTA_EXCEEDED
        return 0

    def _msg_body(self, msg):
        # The MSG record still to write for msg, None if it is stored
        if msg in self._mseq:
            return None
        flags = msg.qos | (_RETAIN if msg.retain else 0)
        if msg.__class__ is not Message:  # Message5
            from edge.store.msg5 import body

            return body(msg, flags)
        return encode(_K_MSG, (flags, msg.topic, msg.payload))

    def _ref(self, s, msg, mbody):
        # One more reference to msg; writes its MSG record first if mbody.
        # -1 if that was refused.
        if mbody is not None:
            seq = self._add(None, _K_MSG if msg.__class__ is Message else _K_MSG5, mbody)
            if seq < 0:
                return -1
            self._mseq[msg] = seq  # (its first reference)
        else:
            self._mref[msg] = self._mref.get(msg, 1) + 1
        if s is not None:
            s[_BYTES] += _cost(msg)
        return self._mseq[msg]

    def _unref(self, s, msg):
        if msg not in self._mseq:
            return  # not ours (a wiring slip; replay would clean up)
        if s is not None:
            s[_BYTES] -= _cost(msg)
        n = self._mref.get(msg, 1)
        if n > 2:
            self._mref[msg] = n - 1
        elif n == 2:
            del self._mref[msg]
        else:
            self._del(None, self._mseq.pop(msg))
            done = self._done.pop(msg, 0)
            if done:
                self._del(None, done)

    def _end(self, s, seq, msg):
        # A delivery of msg (its record: seq) ended. A QMSG holds msg too:
        # it goes with msg's last reference; until then a DONE record says
        # its delivery is over.
        if self._mseq.get(msg) != seq:
            self._unref(s, msg)  # first: message then delivery, in seq order (log.py's runs)
            self._del(s, seq)
            return
        if msg not in self._mref:
            # The usual: msg's one reference was this delivery (so no DONE
            # record yet either); _unref() inline, the hot path
            del self._mseq[msg]
            if s is not None:
                s[_BYTES] -= _REC + _cost(msg)
            # quiet: an ended delivery is no output's promise (Log.settled)
            self.log.delete(seq, True, True)
            return
        if s is not None:
            s[_BYTES] -= _REC  # (what _queued() counted)
        done = self._add(None, _K_DONE, encode(_K_DONE, (self.log.next_seq - seq,)))
        if done > 0:  # (refused: a restart sends it again, as QoS 1 may)
            self._done[msg] = done
        self._unref(s, msg)

    def _queued(self, s, msg, flags):
        # A new QUEUED delivery of msg at flags (QoS, RETAIN): (0, seq) or
        # (a refusal reason, -1). A QoS 1 delivery of a message not stored
        # yet takes one record for both (QMSG); a second reference refers to
        # it as to a MSG. (The hot path of a persistent subscriber, every
        # message: no list of values, few calls.)
        if flags & 3 != 1 or msg.__class__ is not Message or msg in self._mseq:
            return self._deliver(s, msg, _K_QUEUED, [s[_SID], 0, flags], 1)
        body = _qmsg(s[_SID], flags, msg.qos | (_RETAIN if msg.retain else 0), msg.topic, msg.payload)
        blen = len(body[0]) + len(body[1]) + len(body[2])
        cost = _cost(msg)
        rc = self._admit(s, 0, blen, cost)
        if rc:
            return rc, -1
        seq = self.log.append(_K_QMSG, body, blen)
        if seq < 0:
            self.refused_store += 1  # (_admit let it by: max_record is checked there)
            return _RC_QUOTA_EXCEEDED, -1
        self._mseq[msg] = seq  # (one reference: not in _mref)
        s[_BYTES] += _REC + cost  # as a QUEUED record and a reference
        return 0, seq

    def _deliver(self, s, msg, kind, vals, at):
        # A new delivery record of msg; vals[at] is filled with @msg.
        # (0, seq) or (a refusal reason, -1).
        mbody = self._msg_body(msg)
        rc = self._admit(s, _BODY_MAX, 0 if mbody is None else len(mbody), _cost(msg))
        if rc:
            return rc, -1
        mseq = self._ref(s, msg, mbody)
        if mseq < 0:
            return _RC_QUOTA_EXCEEDED, -1
        vals[at] = self.log.next_seq - mseq
        seq = self._add(s, kind, encode(kind, vals))
        if seq < 0:
            self._unref(s, msg)
            return _RC_QUOTA_EXCEEDED, -1
        return 0, seq

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
        s = [self._next_sid, 0, 0, expiry, flags, None, None, None, None, 0]
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
        q = sess.queue or ()
        i = 0
        for seq in (s[_QUEUE] or ())[s[_QHEAD]:]:
            if i < len(q):
                self._end(None, seq, unpack(q[i])[0])
            else:
                self._del(None, seq)
            i += 1
        for seq in (s[_RX] or {}).values():
            self._del(None, seq)

    def session_expiry(self, sess):
        """The expiry saved for sess (seconds, EXPIRY_NEVER), 0 if none."""
        s = self._sess.get(sess)
        return s[_EXP] if s else 0

    def session_bytes(self, sess):
        """What sess's budget counts (0 if it is not persisted)."""
        s = self._sess.get(sess)
        return s[_BYTES] if s else 0

    def _infl(self, s):
        if s[_INFL] is None:
            s[_INFL] = {}
        return s[_INFL]

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
        flags = qos | (_RETAIN if retain else 0)
        q = s[_QUEUE]
        mseq = self._mseq.get(msg) if q else None
        if mseq is None:  # (a message we don't hold is no queued one)
            if qos == 1:  # its one record: see the head comment
                rc, seq = self._queued(s, msg, flags)
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

    # ---- figures -------------------------------------------------------------------
    def sys_values(self):
        """($SYS/broker/ name, value) pairs of the store."""
        log = self.log
        yield "store/bytes", log.live_bytes
        yield "store/disk bytes", log.disk_bytes
        yield "store/syncs", log.syncs
        yield "store/bytes written", log.written
        yield "store/refused", self.refused_session + self.refused_store + self.refused_size
        yield "store/quarantined", log.quarantined

    def refusals(self):
        """A log line about the refusals since the last call, or None (the
        broker logs it once a tick: a full store under load would otherwise
        log every message)."""
        n = self.refused_session + self.refused_store + self.refused_size
        if n == self._told:
            return None
        msg = "store: %d records refused (%d over session_budget %d, %d over budget_bytes %d, %d too large)" % (
            n - self._told, self.refused_session, self.session_budget, self.refused_store,
            self.log.budget_bytes, self.refused_size)
        self._told = n
        return msg

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
