# Offline queues on flash (issue #19, docs/persistence.md "Offline queues on
# flash"): a persistent 3.1.1 session whose client is away keeps its QoS 1
# messages in the log only, as FMSG records (layout.py), with no entry per
# message in RAM. The Session's queue ends with FLASH (session.py) and the
# store reads the messages back a window at a time as the client drains
# them (next_msg()). FMSG is the Log's owned kind (record.py): the records
# need no live index in RAM either, and no tombstone each: the session's
# cursor (a CUR record) moves past what its client acknowledged, in order,
# so a session costs a small list here whatever its queue's length, and a
# replay counts its FMSG records per session (Log.owned_stats) instead of
# rebuilding them. Loaded when first needed (ledger.py's fq_*, state.py,
# replay.py): a board whose sessions queue nothing pays nothing for it.
#
# Guarantees (docs/persistence.md): an FMSG is appended, and the PUBACK of
# its publisher waits for it, as for a QMSG. The cursor only moves past
# records whose delivery was acknowledged (PUBACK), so a torn batch or a
# kill -9 can only bring back what was acknowledged already: delivered again,
# at least once, as QoS 1 allows. A message read back and in flight at a
# restart goes out again as new (its pid is not written: a record per
# message drained). QoS 2, and 5.0 sessions (Message Expiry, shared
# subscriptions), stay on the RAM queue.
#
# Per session (ledger.py's index, _FQ): [records live, next seq to read,
# loaded, handed out, {pid: loaded entry}, where the last read stopped], loaded a list of [seq, size on
# flash, Message, state] in seq order, state 0 (not sent yet), a pid (in
# flight) or -1 (acknowledged, to release once all before it are).
from edge.compat import const
from edge.mqtt.session import Message
from edge.store.layout import decode
from edge.store.logread import read_owned

_K_FMSG = const(30)  # layout.py's FMSG
_SID = const(0)
_BYTES = const(2)
_FQ = const(10)
_F_N = const(0)
_F_RD = const(1)
_F_LOAD = const(2)
_F_OUT = const(3)
_F_INFL = const(4)
_F_AT = const(5)  # where the last read stopped: [segment id, offset] (logread.read_owned)
_BATCH = const(8)  # records read back at a time
_RETAIN = const(4)
_RC_QUOTA_EXCEEDED = const(0x97)
_ENTRY_COST = const(208)  # as session.py's
_LIVE = const(4)  # a segment entry's live bytes (record.py's _SEG_LIVE)
# The Session's queue item for its tail on flash (session.py): None there
FLASH = None


def queued(st, sess, msg, retain):
    """sess (away, or with messages on flash already) queues msg at QoS
    1 on flash. 0, or a refusal reason (counted): then the Session
    refuses it too."""
    from edge.store.ledger import _qmsg

    s = st._sess.get(sess)
    if s is None:
        return _RC_QUOTA_EXCEEDED  # (no store session: the Session has no store either)
    body = _qmsg(s[_SID], 1 | (_RETAIN if retain else 0), msg.qos | (_RETAIN if msg.retain else 0),
                 msg.topic, msg.payload)
    blen = len(body[0]) + len(body[1]) + len(body[2])
    rc = st._admit(s, blen, 0, 0)
    if rc:
        return rc
    log = st.log
    before = log.live_bytes
    seq = log.append(_K_FMSG, body, blen)
    if seq < 0:
        st.refused_store += 1
        return _RC_QUOTA_EXCEEDED
    s[_BYTES] += log.live_bytes - before  # (an owned record has no size_of())
    f = s[_FQ]
    if f is None:
        f = s[_FQ] = [0, seq, [], None, {}, [0, 0]]
    f[_F_N] += 1
    return 0


def enqueue(st, sess, msg, retain):
    """Session._enqueue() of a QoS 1 message to the flash queue: True
    if queued, False if refused (counted)."""
    if queued(st, sess, msg, retain):
        sess._refuse()
        return False
    q = sess.queue
    if q and q[-1] is FLASH:
        return True
    if not q:
        sess.queue = [FLASH]
    else:
        q.append(FLASH)
    if sess.conn is None:
        # an away session's held entries count in the memory budget until
        # attach() (session.py _held()): FLASH is one
        sess.limits.budget.add(_ENTRY_COST)
    return True


def next_msg(st, sess):
    """The next message of sess's flash queue to send, as (Message,
    retain): loaded from the log a batch at a time. 0 when none is left
    to send, None when it can't be read now (a failing store)."""
    s = st._sess.get(sess)
    f = s and s[_FQ]
    if not f:
        return 0
    load = f[_F_LOAD]
    for e in load:
        if e[3] == 0:
            break
    else:
        if f[_F_N] <= len(load):
            return 0  # everything live is loaded: sent or acknowledged
        try:
            recs = read_owned(st.log, s[_SID], f[_F_RD], _BATCH, f[_F_AT])
        except OSError:
            return None
        if not recs:
            return 0
        for seq, size, body in recs:
            v = decode(_K_FMSG, body)
            mfl = v[2]
            load.append([seq, size, Message(v[3], v[4], mfl & 3, bool(mfl & 4)), 0, v[1]])
        f[_F_RD] = recs[-1][0] + 1
        e = load[len(load) - len(recs)]
    f[_F_OUT] = e
    return e[2], bool(e[4] & _RETAIN)


def pump(st, sess, room):
    """Session.pump() for the queue's FLASH item, at its head: send
    what the window has room for."""
    conn = sess.conn
    inflight = sess.inflight
    max_bytes = sess.limits.max_queued_bytes
    while room > 0 and sess.next_pid not in inflight and conn.out_bytes <= max_bytes:
        got = next_msg(st, sess)
        if got is None:
            return  # can't read now (a failing store): the next pump
        if not got:
            q = sess.queue  # the flash tail is empty
            if len(q) == 1:
                sess.queue = None
            else:
                del q[0]
                sess.pump()  # what was queued in RAM behind it
            return
        room -= sess._send_new(got[0], 1, got[1])


def sent(st, f, pid, msg):
    # msg_sent() for the message fq_next() handed out: True if it was
    e = f[_F_OUT]
    if e is None or e[2] is not msg:
        return False
    f[_F_OUT] = None
    e[3] = pid
    f[_F_INFL][pid] = e
    return True


def acked(st, s, f, pid):
    # PUBACK for a message of the flash queue: released, with every one
    # before it acknowledged too; the cursor moves past them
    e = f[_F_INFL].pop(pid)
    e[3] = -1
    load = f[_F_LOAD]
    k = 0
    log = st.log
    while k < len(load) and load[k][3] == -1:
        release(log, load[k][0], load[k][1])
        s[_BYTES] -= load[k][1]
        k += 1
    if not k:
        return
    del load[:k]
    f[_F_N] -= k
    cursor(log, s[_SID], load[0][0] if load else f[_F_RD])
    if not f[_F_N] and not f[_F_INFL]:
        s[_FQ] = None  # (the log keeps the cursor)


def end(st, s):
    # The session ended: its flash queue's records are all released
    f = s[_FQ]
    if f is None:
        return
    log = st.log
    sid = s[_SID]
    for e in f[_F_LOAD]:
        release(log, e[0], e[1])
    rd = f[_F_RD]
    at = f[_F_AT]
    while True:
        try:
            recs = read_owned(log, sid, rd, _BATCH, at)
        except OSError:
            break  # kept on flash until the next start ends it (replay.py)
        if not recs:
            break
        for seq, size, body in recs:
            release(log, seq, size)
        rd = recs[-1][0] + 1
    cursor(log, sid, log.next_seq)
    s[_FQ] = None


def restore(st, sess, n, nbytes, first):
    """Replay found n FMSG records of sess (nbytes on flash) from seq
    first on."""
    s = st._sess[sess]
    s[_FQ] = [n, first, [], None, {}, [0, 0]]
    s[_BYTES] += nbytes


def end_owner(st, sid):
    """FMSG records of sid, a session replay did not restore: released."""
    end(st, [sid, 0, 0, 0, 0, 0, 0, 0, 0, 0, [0, 0, [], None, {}, [0, 0]]])


# ---- the Log's owned records (record.py), fqueue's alone: here rather
# than in log.py, so a store with no flash queue holds none of it
def release(log, seq, size):
    """The Log's owned record seq (size bytes on flash) is dead: its
    owner will move its cursor past it (cursor()). One still in the
    batch is dropped from it: it never reaches the flash."""
    log.live_bytes -= size
    i = seq - log._pbase
    pend = log._pend
    if 0 <= i < len(pend) and pend[i] is not None:
        pend[i] = None
        log._pbytes -= size
        log._room += size
    elif seq > log.top:
        log._redo_live -= size
    else:
        log._seg_of(seq)[_LIVE] -= size


def cursor(log, owner, seq):
    """owner's owned records below seq are dead (each release()d): one
    CUR record in the batch, the owner's latest. Promises nothing
    (settled() does not wait for it): a record revived by a torn batch
    is one its owner consumed, delivered again at least once."""
    if log._cur is None:
        log._cur = {}
    log._cur[owner] = seq
    if log._cpend is None:
        log._cpend = {}
    log._cpend[owner] = seq
