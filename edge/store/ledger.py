# The ledger of the broker's persistent state (edge/store/state.py's
# StateStore is one): each record it appends or deletes on the Log, what
# that costs which budget, the message records with their references, and
# the indexes of which records hold what (a session's, the retained
# messages'), rebuilt at start through the restore_* calls replay makes.
#
# A message is stored once, however many deliveries (and the retained store)
# refer to it, and deleted with its last reference. A QoS 1 delivery of a
# message not stored yet takes one record for both (QMSG); once other
# references to its message remain when that delivery ends, a DONE record
# says so. The record layouts: edge/store/layout.py.
#
# Budgets (docs/design.md H7): the Log's budget_bytes bounds the whole
# store. New data (a delivery, a subscription, a session, a pid, a retained
# message) is admitted only below budget_bytes - reserve_bytes, so a
# transition that replaces a record finds room. Each session's bytes (its
# records, plus the size of each message it refers to, counted once per
# reference) are bounded by session_budget. A refusal returns an MQTT 5.0
# reason code (0 is OK) and is counted; the broker drops what was refused
# (and counts it too).
from edge.compat import const
from edge.mqtt.session import Message
from edge.store.layout import encode
from edge.store.record import body_len, put_varint

# As in state.py (a private const is inlined by MicroPython and can't be
# imported; tests/core/test_store_state.py keeps them equal)
_K_MSG = const(18)
_K_MSG5 = const(26)  # a 5.0 message, its properties too (msg5.py)
_K_QUEUED = const(19)
_K_INFLIGHT = const(20)
_K_QMSG = const(27)  # a QoS 1 delivery and its message, one record
_K_DONE = const(28)  # a QMSG's delivery ended; others still refer to its message
_K_SMSG = const(29)  # a QMSG sent at once, with its pid
_RC_PACKET_TOO_LARGE = const(0x95)  # MQTT 5.0 reason codes (§2.4)
_RC_QUOTA_EXCEEDED = const(0x97)
_RETAIN = const(4)     # MSG / delivery flags, as session.py's entries
_REC = const(12)       # a record's bytes beyond its body: kind, len, seq, crc (about)
_MSG_COST = const(14)  # a MSG record's bytes beyond (len(msg.topic) + len(msg.payload)) (about)
_BODY_MAX = const(24)  # largest body of a record without strings (about)

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
_QHEAD = const(9)  # _QUEUE's entries before it have gone in flight (state.py)


def _cost(msg):
    # What a reference to msg counts against its session's budget: the
    # bytes its MSG record takes (about). The same for the message's whole
    # life: every reference added is taken off again with this.
    n = len(msg.topic) + len(msg.payload) + _MSG_COST
    if msg.__class__ is not Message:  # Message5: its MSG5 record holds more
        from edge.store.msg5 import extra

        n += extra(msg)
    return n


def _qmsg(sid, dflags, mflags, topic, payload, pid=0):
    # A QMSG body (layout.py "vBBSr"), or an SMSG's with pid ("vvBBSr"), as
    # parts for Log.append: the topic and payload are not copied into one
    # body, only into the batch by write(), and not at all when the
    # subscriber acks before it (most records, flat out: the log elides them)
    tb = topic.encode()
    if sid < 0x80 and len(tb) < 0x80:  # one-byte varints: the usual case
        if not pid:
            return bytes((sid, dflags, mflags, len(tb))), tb, payload
        if pid < 0x80:
            return bytes((sid, pid, dflags, mflags, len(tb))), tb, payload
        if pid < 0x4000:
            return bytes((sid, pid & 0x7F | 0x80, pid >> 7, dflags, mflags, len(tb))), tb, payload
        return (bytes((sid, pid & 0x7F | 0x80, pid >> 7 & 0x7F | 0x80, pid >> 14, dflags, mflags, len(tb))),
                tb, payload)
    head = bytearray()
    put_varint(head, sid)
    if pid:
        put_varint(head, pid)
    head.append(dflags)
    head.append(mflags)
    put_varint(head, len(tb))
    return bytes(head), tb, payload  # (bytes: record.py joins the parts)


class Ledger:
    # Offline QoS 1 queues on flash (edge/store/fqueue.py, a board's
    # default): None, or fq() bound, set by the runtime
    # (edge/runtime/persist.py). The Session calls it by a name its module
    # holds already (session.py): a board's 64 KiB boot with auth had no
    # room for another interned name (tests/integration/test_21_auth.py)
    queue = None

    def __init__(self, log, session_budget, reserve_bytes):
        self.log = log  # opened by the caller; its budget_bytes bounds all
        self.session_budget = session_budget
        self.reserve_bytes = reserve_bytes
        self.refused_session = 0  # over a session's budget
        self.refused_store = 0    # over the store's
        self.refused_size = 0     # a record over the log's max_record
        self._told = 0            # refusals refusals() reported
        self._mseq = {}   # Message -> seq of its MSG record
        self._mref = {}   # Message -> references (deliveries, retained) where
                          # more than one: a stored message not in it has one
        self._done = {}   # Message -> seq of the DONE record of its QMSG
        self._sess = {}   # Session -> index list (above)
        self._ret = {}    # topic -> (seq of RETAINED, Message)
        self._next_sid = 1

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

    def _queued(self, s, msg, flags, pid=0):
        # A new QUEUED delivery of msg at flags (QoS, RETAIN), or with pid
        # one sent at once: (0, seq) or (a refusal reason, -1). A QoS 1
        # delivery of a message not stored yet takes one record for both
        # (QMSG, SMSG with its pid); a second reference refers to it as to a
        # MSG. (The hot path of a persistent subscriber, every message: no
        # list of values, few calls.)
        if flags & 3 != 1 or msg.__class__ is not Message or msg in self._mseq:
            if pid:
                return self._deliver(s, msg, _K_INFLIGHT, [s[_SID], pid, 0, 0, flags], 2)
            return self._deliver(s, msg, _K_QUEUED, [s[_SID], 0, flags], 1)
        body = _qmsg(s[_SID], flags, msg.qos | (_RETAIN if msg.retain else 0), msg.topic, msg.payload, pid)
        blen = len(body[0]) + len(body[1]) + len(body[2])
        cost = _cost(msg)
        rc = self._admit(s, 0, blen, cost)
        if rc:
            return rc, -1
        seq = self.log.append(_K_SMSG if pid else _K_QMSG, body, blen)
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

    # ---- the flash queue (fqueue.py, loaded when first used) -----------------------
    def fq(self, sess, msg, x):
        """Ledger.queue, for the Session: msg, a QoS 1 message, queued on
        flash (x: its RETAIN), True if queued; or with msg None, the
        queue's FLASH item at its head: sent from while the window has
        room x."""
        if msg is None:
            from edge.store.fqueue import pump

            return pump(self, sess, x)
        from edge.store.fqueue import enqueue

        return enqueue(self, sess, msg, x)

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

    # ---- restart: what replay (edge/store/replay.py) found in the log, kept ----
    def restore_session(self, sess, sid, seq, expiry, flags):
        """sess's SESSION record at seq (sid, expiry, flags as written); the
        restore_* calls for sess come after this one."""
        self._sess[sess] = [sid, seq, self.log.size_of(seq), expiry, flags, None, None, None, None, 0, None]

    def restore_sub(self, sess, f, seq):
        """sess's subscription to filter f, its record at seq."""
        self._restore_in(sess, _SUBS, f, seq)

    def restore_inflight(self, sess, pid, seq, msg, smsg=False):
        """pid's INFLIGHT record at seq (msg: the message it refers to), or
        its SMSG if smsg (which holds msg too), or its RELEASED record (msg
        None)."""
        s = self._sess[sess]
        if msg is None:
            self._infl(s)[pid] = -seq
        else:
            self._infl(s)[pid] = seq
            s[_BYTES] += _cost(msg)
        s[_BYTES] += _REC if smsg else self.log.size_of(seq)  # as _queued() counts

    def restore_queued(self, sess, seq, msg, qmsg):
        """The next queued delivery of msg, its record at seq: a QMSG (which
        holds msg too) if qmsg, else a QUEUED."""
        s = self._sess[sess]
        if s[_QUEUE] is None:
            s[_QUEUE] = []
        s[_QUEUE].append(seq)
        s[_BYTES] += (_REC if qmsg else self.log.size_of(seq)) + _cost(msg)  # as _queued() counts

    def restore_rx(self, sess, pid, seq):
        """sess's incoming QoS 2 pid waiting for PUBREL, its record at seq."""
        self._restore_in(sess, _RX, pid, seq)

    def _restore_in(self, sess, field, key, seq):
        s = self._sess[sess]
        if s[field] is None:
            s[field] = {}
        s[field][key] = seq
        s[_BYTES] += self.log.size_of(seq)

    def restore_retained(self, topic, seq, msg):
        self._ret[topic] = (seq, msg)

    def restore_sids(self, top):
        """Sids up to top were in the log (kept or not): new sessions take
        the ones after it."""
        self._next_sid = top + 1

    def restore_message(self, msg, seq, refs, done):
        """Replay found msg's record at seq with refs (> 0) references kept,
        and done, the seq of its QMSG's DONE record (0: none)."""
        self._mseq[msg] = seq
        if refs > 1:  # (one: not in _mref)
            self._mref[msg] = refs
        if done:
            self._done[msg] = done
