# The persistent-state layer (edge/store/state.py, replay.py, outbox.py) over
# in-memory files with a power-cut model: record layouts (golden bytes),
# replay into a real Broker, shared messages, budgets, torn batches,
# compaction. The broker is not wired to the store yet, so each test calls
# the hooks where the broker will. Plain functions: runs under pytest and
# tests/mpy_runner.py.
from edge.mqtt import session as session_mod
from edge.mqtt.packets import Puback, Pubcomp, Publish, Pubrec, Pubrel
from edge.store import ledger as ledger_mod
from edge.store import replay as replay_mod
from edge.store import state as state_mod
from edge.store.layout import LAYOUTS, decode, encode
from edge.store.log import Log
from edge.store.outbox import Outbox
from edge.store.record import put_varint
from edge.store.state import EXPIRY_NEVER
from tests.core._memfiles import MemFiles
from tests.core._pair import Client, make_broker, publish, publishes
from tests.core._store import new_store, restart
from tests.core._util import raises

K_SESSION, K_SUB, K_MSG, K_QUEUED, K_INFLIGHT, K_RELEASED, K_RXQOS2, K_RETAINED = range(16, 24)
K_QMSG, K_DONE = 27, 28
QUOTA = 0x97


def state(b, st):
    """dump(b) and the session expiries the store holds."""
    return dump(b), sorted((cid, st.session_expiry(b.sessions[cid])) for cid in b.sessions)


def parts(e):
    msg, qos, retain = session_mod.unpack(e)
    return (msg.topic, msg.payload, qos, retain)


def dump(b):
    """The persistent state of broker b, comparable across restarts."""
    out = []
    for cid in sorted(b.sessions):
        s = b.sessions[cid]
        if s.clean:
            continue
        nxt = s.next_pid
        infl = []
        for pid in sorted(s.inflight, key=lambda p: (p - nxt) % 65535):
            e = s.inflight[pid]
            infl.append((pid, "rel") if e == 0 else (pid,) + parts(e))
        q = [parts(e) for e in (s.queue or ())]
        subs = sorted(s.subs.items())
        trie = sorted((f, b.subs.get(f, s)) for f in s.subs)
        out.append((cid, subs, trie, infl, q, s.queued_bytes, sorted(s.rx_qos2 or ())))
    ret = sorted((t, m.payload, m.qos) for t, m in b.retained.items())
    return out, ret


def restarted(d):
    """dump() d as a restart replays it. A QoS 1 delivery sent at once keeps
    its pid on flash (SMSG, INFLIGHT), so it comes back in flight as it
    was [MQTT-4.4.0-1]: the scenarios here send all theirs at once, so the
    state is the same. (One drained from a queue comes back first in the
    queue instead, to go out again as new: state.py's head comment,
    drained() below.)"""
    return d


def drained(d):
    """restarted() for a dump whose QoS 1 deliveries in flight were all
    drained from a queue: no pid on flash, so they come back first in the
    queue, in send order, to go out again as new."""
    out = []
    for cid, subs, trie, infl, q, qbytes, rx in d[0]:
        again = [e[1:] for e in infl if e[1] != "rel" and e[3] == 1]
        for e in again:
            qbytes += len(e[0]) + len(e[1])
        out.append((cid, subs, trie, [e for e in infl if e[1] == "rel" or e[3] != 1],
                    again + q, qbytes, rx))
    return out, d[1]


def live(log):
    return [(seq, kind) for seq, kind, body in log.replay()]


def kinds(log):
    return [kind for seq, kind in live(log)]


# ---- layouts ------------------------------------------------------------------
def test_kind_numbers_and_layouts_are_fixed():
    # Records on flash outlive firmware: a changed layout takes a new kind
    assert LAYOUTS == {
        16: "vBvs", 17: "vBs", 18: "BSr", 19: "vvB", 20: "vvvvB", 21: "vvv", 22: "vv", 23: "v",
        25: "vvs", 26: "BSSbr", 27: "vBBSr", 28: "v", 29: "vvBBSr", 30: "vBBSr"}


def test_golden_session_and_message_records():
    body = encode(K_SESSION, (1, 0, EXPIRY_NEVER, "dev-1"))
    assert bytes(body) == b"\x01\x00\xff\xff\xff\xff\x0fdev-1"
    body = encode(K_SESSION, (300, 1, 60, "\u00e9"))
    assert bytes(body) == b"\xac\x02\x01\x3c\xc3\xa9"
    body = encode(K_MSG, (1 | 4, "a/b", b"hi"))
    assert bytes(body) == b"\x05\x03a/bhi"
    # MSG5: flags, topic, sender, the property block (Payload Format 1), payload
    body = encode(26, (1, "a/b", "dev", b"\x02\x01\x01", b"hi"))
    assert bytes(body) == b"\x01\x03a/b\x03dev\x03\x02\x01\x01hi"
    raises(ValueError, decode, 26, b"\x01\x03a/b\x03dev\x09\x02")  # block past the end
    # as they land on flash: kind, len, varint seq + body, crc32 LE
    m, log, st = new_store()
    b = make_broker()
    sess = session_mod.Session("dev-1", False, b.limits, b.stats)
    assert st.session_saved(sess) == 0
    msg = session_mod.Message("a/b", b"hi", 1, True)
    assert st.msg_queued(sess, msg, 2) == 0  # QoS 2: MSG, then QUEUED
    log.flush()
    data = bytes(m.data["log.1"])
    assert b"\x10\x0d\x01\x01\x00\xff\xff\xff\xff\x0fdev-1\xce\xc4\x99\xce" in data
    assert b"\x12\x08\x02\x05\x03a/bhiG\x07\x9ac" in data
    # the queued delivery: sid 1, @msg = 3 - 2, QoS 2
    assert list(log.replay())[2] == (3, K_QUEUED, b"\x01\x01\x02")
    # QoS 1, the message not stored yet: one QMSG, sid 1, QoS 1, the message
    msg = session_mod.Message("c", b"yo", 0)
    assert st.msg_queued(sess, msg, 1) == 0
    assert list(log.replay())[3] == (4, K_QMSG, b"\x01\x01\x00\x01cyo")


SAMPLES = [
    (K_SESSION, [7, 1, 0, "c"]), (K_SESSION, [1, 0, EXPIRY_NEVER, "x" * 200]),
    (K_SUB, [7, 2, "a/+/#"]), (K_SUB, [128, 0x2a, "\u00e9t\u00e9"]),
    (K_MSG, [0, "t", b""]), (K_MSG, [6, "a/b", b"\x00\xff" * 100]),
    (K_QUEUED, [7, 1, 2]), (K_QUEUED, [70000, 300, 5]),
    (K_INFLIGHT, [7, 65535, 3, 0, 1]), (K_INFLIGHT, [7, 1, 2, 1, 6]),
    (K_RELEASED, [7, 9, 4]), (K_RELEASED, [7, 9, 0]),
    (K_RXQOS2, [7, 65535]), (K_RETAINED, [2]),
    (26, [1, "a/b", "dev", b"\x03\x01\x00\x01", b"hi"]), (26, [0, "t", "", b"\x00", b""]),
    (27, [7, 1, 2, "a/b", b"hi"]), (27, [300, 5, 4, "t", b""]), (28, [3]),
]


def test_every_kind_round_trips():
    for kind, vals in SAMPLES:
        body = bytes(encode(kind, vals))
        assert decode(kind, body) == vals, (kind, vals)
        if LAYOUTS[kind][-1] not in "sr":
            # fixed fields only: a byte more, or any byte less, is refused
            raises(ValueError, decode, kind, body + b"\x00")
            for n in range(len(body)):
                raises(ValueError, decode, kind, body[:n])
    raises(ValueError, decode, K_SUB, b"\x01\x00\xff")  # not UTF-8
    raises(ValueError, decode, K_MSG, b"\x00\x05ab")    # topic past the end


def test_private_copies_equal():
    # replay.py and ledger.py repeat state.py's private consts (MicroPython
    # inlines them)
    checked = 0
    for mod in (replay_mod, ledger_mod):
        for name in dir(mod):
            v = getattr(mod, name)
            if name.startswith("_K_") or name in ("_CLEAN", "_SID", "_SEQ", "_BYTES", "_EXP", "_FLAGS",
                                                  "_SUBS", "_INFL", "_QUEUE", "_RX", "_QHEAD", "_RETAIN",
                                                  "_BODY_MAX", "_RC_QUOTA_EXCEEDED"):
                assert getattr(state_mod, name) == v, name
                checked += 1
    assert checked == 34 or not hasattr(state_mod, "_K_MSG")
    if hasattr(replay_mod, "_SHARED"):  # CPython (MicroPython folds private consts)
        from edge.mqtt import v5subs
        assert replay_mod._SHARED == v5subs._SHARED
    if hasattr(state_mod, "_K_MSG"):
        assert sorted(v for k, v in state_mod.__dict__.items() if k.startswith("_K_")) == sorted(LAYOUTS)
    assert session_mod.RELEASED == 0
    assert state_mod.RELEASED is replay_mod.RELEASED is session_mod.RELEASED  # one name, not copies


# ---- a broker scenario with the hooks called where the wiring will ------------
def follow(st, sess):
    """Call the hooks for what sess sent or queued since the last call."""
    s = st._sess[sess]
    known = s[6] or {}
    nxt = sess.next_pid
    for pid in sorted(sess.inflight, key=lambda p: (p - nxt) % 65535):
        e = sess.inflight[pid]
        if pid not in known and e != 0:
            msg, qos, retain = session_mod.unpack(e)
            assert st.msg_sent(sess, pid, msg, qos, retain) == 0
    q = sess.queue or []
    for e in q[len(s[7] or ()) - s[9]:]:  # (_QUEUE from _QHEAD on)
        msg, qos, retain = session_mod.unpack(e)
        assert st.msg_queued(sess, msg, qos, retain) == 0


def scenario(**kw):
    """s1 (clean=0): in flight 1 QoS 1, 2 released, 3 QoS 2, then offline
    with three queued; s2 (clean=0, offline) queues five of the same
    messages; p (clean=0) has QoS 2 pid 7 waiting for PUBREL; one retained
    message. The log is flushed where the broker will (before its acks)."""
    m, log, st = new_store(**kw)
    b = make_broker()
    s1 = Client(b)
    assert s1.connect("s1", clean=False).reason == 0
    ss1 = b.sessions["s1"]
    assert st.session_saved(ss1) == 0
    s1.subscribe(("t/#", 2), ("u", 1))
    assert st.sub_added(ss1, "t/#", 2) == 0 and st.sub_added(ss1, "u", 1) == 0
    s2 = Client(b)
    s2.connect("s2", clean=False)
    ss2 = b.sessions["s2"]
    assert st.session_saved(ss2) == 0
    s2.subscribe(("t/#", 1))
    assert st.sub_added(ss2, "t/#", 1) == 0
    s2.lose()
    p = Client(b)
    p.connect("p", clean=False)
    ps = b.sessions["p"]
    assert st.session_saved(ps) == 0
    log.flush()
    s1.recv()

    def pub(topic, payload, qos, pid, retain=False, rel=True):
        p.send(Publish(topic, payload, qos, retain, False, pid))
        if qos == 2:
            assert st.qos2_seen(ps, pid) == 0
        follow(st, ss1)
        follow(st, ss2)
        if retain:
            assert st.retained(topic, b.retained.get(topic)) == 0
        log.flush()
        if qos == 2 and rel:
            p.send(Pubrel(pid))
            st.qos2_released(ps, pid)
        p.recv()

    pub("t/1", b"one", 1, 1)
    pub("t/2", b"two", 2, 2)
    pub("t/3", b"three", 2, 3)
    got = publishes(s1.recv())
    assert [(x.pid, x.qos) for x in got] == [(1, 1), (2, 2), (3, 2)]
    two = ss1.inflight[2]
    s1.send(Pubrec(2))
    st.released(ss1, 2, two)
    log.flush()
    s1.recv()
    s1.lose()
    pub("t/4", b"four", 1, 4)
    pub("t/5", b"five", 2, 5, retain=True)
    pub("u", b"seven", 2, 7, rel=False)
    return m, log, st, b


def _msg_of(sess, payload):
    for e in list(sess.inflight.values()) + list(sess.queue or ()):
        if e != 0 and session_mod.unpack(e)[0].payload == payload:
            return session_mod.unpack(e)[0]
    return None


def test_scenario_state_before_restart():
    m, log, st, b = scenario()
    d = dump(b)[0]
    s1 = d[1]
    assert s1[0] == "s1"
    assert s1[3] == [(1, "t/1", b"one", 1, False), (2, "rel"), (3, "t/3", b"three", 2, False)]
    assert s1[4] == [("t/4", b"four", 1, False), ("t/5", b"five", 2, False), ("u", b"seven", 1, False)]
    assert d[2][4] == [(t, pl, 1, False) for t, pl in (("t/1", b"one"), ("t/2", b"two"), ("t/3", b"three"),
                                                       ("t/4", b"four"), ("t/5", b"five"))]
    assert d[0][0] == "p" and d[0][6] == [7]


def refs(st):
    """Each stored message's references (_mref holds those of more than one)."""
    return sorted(st._mref.get(m, 1) for m in st._mseq)


def test_replay_rebuilds_the_same_state():
    m, log, st, b = scenario()
    b2, st2, counts, problems = restart(m)
    assert problems == []
    assert dump(b2) == restarted(dump(b))
    assert counts == {"sessions": 3, "subs": 3, "inflight": 3, "queued": 8, "rx_qos2": 1,
                      "retained": 1, "messages": 6, "deleted": 0}
    # the store's own accounting comes back too
    for cid in ("s1", "s2", "p"):
        assert st2.session_bytes(b2.sessions[cid]) == st.session_bytes(b.sessions[cid]), cid
    assert refs(st2) == refs(st) == [1, 1, 2, 2, 2, 3]
    assert sorted(st2._mseq.values()) == sorted(st._mseq.values())
    # and replays again identically (nothing written by replay)
    b3, st3, counts3, problems3 = restart(m)
    assert dump(b3) == dump(b2) and problems3 == []


def test_replayed_session_resumes():
    m, log, st, b = scenario()
    b2, st2, counts, problems = restart(m)
    c = Client(b2)
    ack = c.connect("s1", clean=False)
    assert ack.session_present
    pkts = c.recv()
    # [MQTT-4.4.0-1] unacknowledged PUBLISH/PUBREL resent in the original
    # order with their pids, DUP set: the QoS 1 "one" sent at once too
    # (its SMSG record); then the queue, as new pids in sequence
    assert [(x.kind, x.pid, getattr(x, "dup", None)) for x in pkts] == [
        (3, 1, True), (6, 2, None), (3, 3, True), (3, 4, False), (3, 5, False), (3, 6, False)]
    assert [(x.payload, x.qos) for x in publishes(pkts)] == [
        (b"one", 1), (b"three", 2), (b"four", 1), (b"five", 2), (b"seven", 1)]
    c.send(Puback(1))
    c.send(Pubcomp(2))
    assert c.recv() == []
    # the replayed subscription routes live messages
    p = Client(b2)
    p.connect("px")
    publish(p, "t/9", b"nine", 1, pid=1)
    assert [x.payload for x in publishes(c.recv())] == [b"nine"]


def test_replayed_qos2_pid_is_not_delivered_twice():
    m, log, st, b = scenario()
    b2, st2, counts, problems = restart(m)
    sub = Client(b2)
    sub.connect("watch")
    sub.subscribe(("u", 2))
    p = Client(b2)
    assert p.connect("p", clean=False).session_present
    # the publisher never saw PUBREC for 7 (or did, and resends): DUP PUBLISH
    p.send(Publish("u", b"seven", 2, False, True, 7))
    assert [(x.kind, x.pid) for x in p.recv()] == [(5, 7)]  # PUBREC again
    assert publishes(sub.recv()) == []  # [MQTT-4.3.3-2] not delivered again
    p.send(Pubrel(7))
    assert [(x.kind, x.pid) for x in p.recv()] == [(7, 7)]
    st2.qos2_released(b2.sessions["p"], 7)
    st2.log.flush()
    assert K_RXQOS2 not in kinds(st2.log)


def test_session_saved_late_writes_everything_it_holds():
    # a session persisted after it already held state (e.g. the store was
    # full at CONNECT): one call writes it all, in send order
    m, log, st, b = scenario()
    m2, log2, st2 = new_store()
    for cid in ("s1", "s2", "p"):
        assert st2.session_saved(b.sessions[cid]) == 0
    for t, msg in b.retained.items():
        st2.retained(t, msg)
    log2.flush()
    b3, st3, counts, problems = restart(m2)
    assert problems == [] and dump(b3) == restarted(dump(b))
    # wrap-around: QoS 2 pids 65534, 65535, 1 in flight keep their order
    m4, log4, st4 = new_store()
    sess = session_mod.Session("w", False, b.limits, b.stats)
    sess.next_pid = 2
    for pid in (65534, 65535, 1):
        sess.inflight[pid] = session_mod.Message("t", b"%d" % pid, 2)
    sess.inflight[65535] = 0
    assert st4.session_saved(sess) == 0
    log4.flush()
    b5, st5, counts, problems = restart(m4)
    s5 = b5.sessions["w"]
    assert s5.next_pid == 2 and s5.inflight[65535] == 0
    assert [p for p in sorted(s5.inflight, key=lambda p: (p - 2) % 65535)] == [65534, 65535, 1]


def test_session_update_keeps_its_records():
    m, log, st, b = scenario()
    s1 = b.sessions["s1"]
    n = len(log)
    assert st.session_saved(s1) == 0 and len(log) == n  # unchanged: nothing written
    assert st.session_saved(s1, 3600) == 0 and len(log) == n  # replaced, not added
    assert st.session_expiry(s1) == 3600
    log.flush()
    b2, st2, counts, problems = restart(m)
    assert problems == [] and dump(b2) == restarted(dump(b))
    assert st2.session_expiry(b2.sessions["s1"]) == 3600
    assert st2.session_expiry(b2.sessions["s2"]) == EXPIRY_NEVER


def test_session_deleted_and_unsubscribe():
    m, log, st, b = scenario()
    s1 = b.sessions["s1"]
    st.sub_removed(s1, "u")
    st.session_deleted(b.sessions["s2"])
    log.flush()
    b2, st2, counts, problems = restart(m)
    assert problems == []
    assert sorted(b2.sessions) == ["p", "s1"] and sorted(b2.sessions["s1"].subs) == ["t/#"]
    # s2's references are gone; what s1 still holds is kept, once (its
    # QoS 1 "one" comes back in flight, with its pid)
    assert counts["messages"] == 5 and counts["queued"] == 3
    st.session_deleted(s1)
    st.session_deleted(b.sessions["p"])
    st.retained("t/5", None)
    log.flush()
    assert live(log) == [] and log.live_bytes == 0


# ---- shared messages, budgets ---------------------------------------------------
def offline_sessions(b, st, n, f="t"):
    out = []
    for i in range(n):
        sess = session_mod.Session("c%d" % i, False, b.limits, b.stats)
        assert st.session_saved(sess) == 0
        sess.subs[f] = 1
        assert st.sub_added(sess, f, 1) == 0
        out.append(sess)
    return out


def test_message_stored_once_for_many_sessions():
    m, log, st = new_store()
    b = make_broker()
    ss = offline_sessions(b, st, 5)
    msg = session_mod.Message("t", b"x" * 100, 1)
    for s in ss:
        assert st.msg_queued(s, msg, 1) == 0
    log.flush()
    # the first delivery holds the message (QMSG), the others refer to it
    assert kinds(log).count(K_QMSG) == 1 and kinds(log).count(K_QUEUED) == 4
    mseq = [seq for seq, kind in live(log) if kind == K_QMSG][0]
    # each session counts the message against its own budget
    assert st.session_bytes(ss[0]) > 100 and st.session_bytes(ss[4]) > 100
    for i in range(5):
        assert st.msg_sent(ss[i], 1, msg, 1) == 0  # queue head -> in flight
        assert log.is_live(mseq)
        st.acked(ss[i], 1, msg)
        assert log.is_live(mseq) == (i < 4)
        # the QMSG's own delivery over, the others' not: a DONE says so
        assert kinds(log).count(K_DONE) == (1 if i < 4 else 0)
        assert st.session_bytes(ss[i]) < 50
    log.flush()
    assert not set(kinds(log)) & {K_MSG, K_QMSG, K_DONE, K_QUEUED, K_INFLIGHT}
    # and a retained reference keeps it alive as a delivery does
    st.msg_queued(ss[0], msg, 1)
    st.retained("t", msg)
    st.msg_sent(ss[0], 2, msg, 1)
    st.acked(ss[0], 2, msg)
    assert kinds(log).count(K_QMSG) == 1 and kinds(log).count(K_DONE) == 1
    st.retained("t", None)
    assert not set(kinds(log)) & {K_MSG, K_QMSG, K_DONE}


def test_session_budget_refusal_counted():
    m, log, st = new_store(session_budget=600)
    b = make_broker()
    a, c = offline_sessions(b, st, 2)
    msg = session_mod.Message("t", b"y" * 200, 1)
    assert st.msg_queued(a, msg, 1) == 0
    assert st.msg_queued(a, msg, 1) == 0
    n = len(log)
    assert st.msg_queued(a, msg, 1) == QUOTA  # 3 x 212 > 600
    assert st.refused_session == 1 and len(log) == n
    assert st.msg_sent(a, 9, msg, 1) == 0  # from the queue: a move, never refused
    big = session_mod.Message("t", b"w" * 590, 1)
    assert st.msg_sent(c, 1, big, 1) == QUOTA and st.refused_session == 2  # sent directly
    assert st.msg_queued(c, msg, 1) == 0  # another session has its own budget
    assert st.refused_store == 0 and len(log) == n + 1  # no orphan message


def test_store_budget_and_size_refusals_counted():
    m, log, st = new_store(budget_bytes=2048, reserve_bytes=256, max_record=300)
    b = make_broker()
    ss = offline_sessions(b, st, 2)
    msgs = []
    while True:
        msg = session_mod.Message("t", b"%03d" % len(msgs) + b"." * 150, 2)
        rc = st.msg_queued(ss[len(msgs) % 2], msg, 2)
        if rc:
            break
        msgs.append(msg)
    assert rc == QUOTA and st.refused_store == 1 and st.refused_session == 0
    assert len(msgs) > 5
    pid = 1
    while st.qos2_seen(ss[1], pid) == 0:
        pid += 1
    assert st.refused_store == 2
    assert st.retained("r", session_mod.Message("r", b"v" * 50, 0, True)) == QUOTA
    assert st.refused_store == 3
    assert log.live_bytes <= 2048 - 256 and log.refused == 0
    # transitions still find room (the reserve): queue head -> in flight ->
    # released, a session rewritten
    assert st.msg_sent(ss[0], 1, msgs[0], 2) == 0
    st.released(ss[0], 1, msgs[0])
    assert st.session_saved(ss[0], 60) == 0
    assert log.refused == 0 and st.refused_store == 3
    assert K_RELEASED in kinds(log) and st.session_expiry(ss[0]) == 60
    # larger than the log's max_record: packet too large, nothing written
    m2, log2, st2 = new_store(max_record=300)
    s = offline_sessions(b, st2, 1)[0]
    assert st2.msg_queued(s, session_mod.Message("t", b"q" * 400, 1), 1) == 0x95
    assert st2.refused_size == 1 and len(log2) == 2
    assert st2.msg_queued(s, session_mod.Message("t", b"q", 1), 1) == 0 and len(log2) == 3  # a QMSG


# ---- crashes and damage ------------------------------------------------------------
def snapshot(m):
    c = m.copy()
    c.power_cut(0)
    return c


def test_torn_tail_at_every_byte_of_the_last_record():
    m, log, st, b = scenario(segment_bytes=1 << 20)
    before = state(*restart(snapshot(m))[:2])
    assert before[0] == restarted(dump(b))
    base = snapshot(m)
    s2 = b.sessions["s2"]
    name = "log.%d" % log._segs[-1][0]
    # one record per batch (a batch of several: the next test)
    for step in ("queue", "sub", "rx", "unsub", "unrx"):
        start = len(m.data[name])
        if step == "queue":
            st.msg_queued(s2, _msg_of(s2, b"one"), 1)
        elif step == "sub":
            st.sub_added(s2, "v/w", 0)
        elif step == "rx":
            st.qos2_seen(s2, 9)
        elif step == "unsub":
            st.sub_removed(s2, "v/w")
        else:
            st.qos2_released(s2, 9)
        log.flush()
        end = len(m.data[name])
        assert end > start and name == "log.%d" % log._segs[-1][0]
        for keep in range(end - start):
            c = base.copy()
            c.data[name] = bytearray(m.data[name][:start + keep])
            b2, st2, counts, problems = restart(c)
            assert state(b2, st2) == before, (step, keep)
            assert problems == [], (step, keep, problems)  # the log cut the tail
        base = snapshot(m)
        after = state(*restart(base.copy())[:2])
        assert after != before, step
        before = after


def test_torn_batch_of_a_transition_replays_old_or_new():
    # queued -> in flight -> released, retained replaced, session rewritten,
    # in one batch: every prefix of it replays as the old state or the new,
    # never a lost or doubled delivery
    m, log, st, b = scenario(segment_bytes=1 << 20)
    old = dump(b)
    base = snapshot(m)
    s2 = b.sessions["s2"]
    one = _msg_of(s2, b"one")
    name = "log.%d" % log._segs[-1][0]
    start = len(m.data[name])
    st.msg_sent(s2, 1, one, 2)  # as QoS 2: QoS 1 writes no INFLIGHT (state.py)
    st.released(s2, 1, one)
    st.retained("t/5", session_mod.Message("t/5", b"FIVE", 1, True))
    st.session_saved(s2, 99)
    log.flush()
    end = len(m.data[name])
    seen = set()
    for keep in range(end - start + 1):
        c = base.copy()
        c.data[name] = bytearray(m.data[name][:start + keep])
        b2, st2, counts, problems = restart(c)
        d = dump(b2)
        s2d = [x for x in d[0] if x[0] == "s2"][0]
        infl, q = s2d[3], s2d[4]
        # "one" is there exactly once: queued, in flight or released
        assert len(infl) + len(q) == 5, (keep, infl, q)
        assert [x for x in q if x[1] == b"one"] == [] or infl == [], keep
        assert d[1] in (old[1], [("t/5", b"FIVE", 1)]), keep
        for p in problems:
            assert p[2] in ("superseded", "unreferenced"), (keep, p)
        seen.add((len(infl), infl[0][1] if infl else None, d[1][0][1],
                  st2.session_expiry(b2.sessions["s2"])))
        # replay repaired what it found: the next start finds nothing
        b3, st3, counts, problems = restart(c)
        assert problems == [] and state(b3, st3) == state(b2, st2), keep
    assert (0, None, b"five", EXPIRY_NEVER) in seen
    assert (1, "t/1", b"five", EXPIRY_NEVER) in seen
    assert (1, "rel", b"FIVE", 99) in seen


def test_damaged_records_dropped_and_reported():
    m, log, st = new_store()
    b = make_broker()
    sess = offline_sessions(b, st, 1)[0]
    msg = session_mod.Message("t", b"m", 1)
    st.msg_queued(sess, msg, 1)
    body = bytearray()
    put_varint(body, 42)  # a sid that has no session
    orphan = log.append(K_SUB, body + b"\x01x")
    dangling = log.append(K_QUEUED, b"\x01\x05\x01")  # @msg 5 back: not a message
    bad = log.append(K_MSG, b"\x03\x01t")  # QoS 3
    garbage = log.append(K_SUB, b"\x01")   # too short
    newer = log.append(200, b"from a newer version")
    lone = log.append(K_MSG, encode(K_MSG, (0, "z", b"nobody")))
    log.flush()
    b2, st2, counts, problems = restart(m)
    assert sorted(problems) == sorted([
        (orphan, K_SUB, "no session"), (dangling, K_QUEUED, "no message"),
        (bad, K_MSG, "bad body"), (garbage, K_SUB, "bad body"),
        (newer, 200, "unknown kind"), (lone, K_MSG, "unreferenced")])
    assert counts["deleted"] == 5 and counts["queued"] == 1
    assert b2.sessions["c0"].queue and dump(b2)[0][0][4] == [("t", b"m", 1, False)]
    b3, st3, counts, problems = restart(m)
    assert problems == [(newer, 200, "unknown kind")]  # kept: not ours


# ---- compaction -----------------------------------------------------------------
def store_seqs(st):
    """Every seq the store's index refers to: should be the live set."""
    out = set()
    for s in st._sess.values():
        out.add(s[1])
        for d in (s[5], s[6], s[7] and dict(enumerate(s[7])), s[8]):
            for v in (d or {}).values():
                out.add(v if v > 0 else -v)
    out.update(st._mseq.values())
    out.update(v[0] for v in st._ret.values())
    return out


def test_compaction_keeps_exactly_the_live_state():
    m, log, st, b = scenario()
    s1, s2 = b.sessions["s1"], b.sessions["s2"]
    # churn (the store only): deliveries through every phase, resubscribes,
    # retained messages replaced
    queued = [session_mod.unpack(e)[0] for e in s2.queue]
    for i in range(40):
        msg = session_mod.Message("t/%d" % i, b"p%d" % i, 2)
        assert st.msg_queued(s2, msg, 2) == 0
        queued.append(msg)
        st.sub_added(s1, "x/%d" % (i % 3), i % 3)
        st.retained("r/%d" % (i % 4), session_mod.Message("r/%d" % (i % 4), b"v%d" % i, 0, True))
        if i % 5 == 0:
            log.flush()
    pid = 100
    for msg in queued:
        st.msg_sent(s2, pid, msg, 2)
        if pid % 3:
            st.released(s2, pid, msg)
            if pid % 2:
                st.acked(s2, pid)
        pid += 1
        if pid % 7 == 0:
            log.flush()
    for pid in list(s1.inflight):
        e = s1.inflight[pid]
        st.acked(s1, pid, None if e == 0 else session_mod.unpack(e)[0])
    st.sub_removed(s1, "x/0")
    log.flush()
    before = restart(snapshot(m))[0]
    seqs = set(seq for seq, kind in live(log))
    assert seqs == store_seqs(st)
    garbage = log.disk_bytes - log.live_bytes
    assert garbage > log.live_bytes
    assert log.compact()
    assert log.disk_bytes - log.live_bytes < 32
    assert set(seq for seq, kind in live(log)) == seqs
    b2, st2, counts, problems = restart(snapshot(m))
    assert problems == [] and dump(b2) == dump(before)
    assert store_seqs(st2) == seqs
    # and a message no delivery refers to is not among them
    assert kinds(log).count(K_MSG) + kinds(log).count(K_QMSG) == len(st._mseq)


# ---- the outbox ------------------------------------------------------------------------
def new_outbox(m=None, **kw):
    m = m or MemFiles()
    kw.setdefault("segment_bytes", 256)
    log = Log(m, prefix="outbox", **kw)
    log.open(0)
    return m, Outbox(log)


def test_outbox_append_read_ack():
    m, ob = new_outbox()
    seqs = [ob.append(b"up-%d" % i) for i in range(30)]
    assert seqs == list(range(1, 31)) and len(ob) == 30
    assert ob.read(0, 3) == [(1, b"up-0"), (2, b"up-1"), (3, b"up-2")]
    assert ob.read(29, 5) == [(29, b"up-28"), (30, b"up-29")]
    assert ob.read(31, 5) == [] and ob.read(0, 0) == []
    for s in (1, 2, 4):
        assert ob.ack(s)
    assert not ob.ack(2) and not ob.ack(99)
    assert ob.read(0, 3) == [(3, b"up-2"), (5, b"up-4"), (6, b"up-5")]
    assert len(ob) == 27 and ob.bytes() == ob.log.live_bytes > 0
    # after a restart: everything not acked, in order, the same seqs
    m2, ob2 = new_outbox(snapshot(m))
    assert ob2.read(0, 100) == ob.read(0, 100)
    assert ob2.append(b"next") == 31


def test_outbox_seq_never_reused():
    m, ob = new_outbox()
    for i in range(10):
        ob.ack(ob.append(b"x"))
    assert ob.log.compact() and len(ob) == 0
    m2, ob2 = new_outbox(snapshot(m))
    assert ob2.append(b"y") == 11  # an upstream idempotency key stays unique


def test_outbox_budget_refuses_newest():
    m, ob = new_outbox(budget_bytes=200)
    n = 0
    while ob.append(b"%02d" % n + b"-" * 20) > 0:
        n += 1
    assert n == 6 and ob.refused == 1  # 6 records of 29 bytes fit in 200
    assert ob.append(b"xx" + b"-" * 20) < 0 and ob.refused == 2
    # the oldest are kept, the newest refused
    assert [b[:2] for s, b in ob.read(0, 99)] == [b"%02d" % i for i in range(n)]
    ob.ack(1)
    assert ob.append(b"fits again") == 7  # a refused append takes no seq
    assert ob.append(b"x" * 2000) < 0 and ob.refused == 3  # over max_record


def test_outbox_torn_tail():
    m, ob = new_outbox()
    for i in range(5):
        ob.append(b"keep-%d" % i)
    ob.log.flush()
    base = snapshot(m)
    name = "outbox.%d" % ob.log._segs[-1][0]
    start = len(m.data[name])
    ob.append(b"last one")
    ob.log.flush()
    for keep in range(len(m.data[name]) - start):
        c = base.copy()
        c.data[name] = bytearray(m.data[name][:start + keep])
        m2, ob2 = new_outbox(c)
        assert [b for s, b in ob2.read(0, 10)] == [b"keep-%d" % i for i in range(5)], keep


def test_qmsg_parts_are_the_layout_encoding():
    # ledger._qmsg builds QMSG bodies as parts without layout.encode: the
    # same bytes, on the one-byte fast path and past it
    for sid, topic in ((1, "a/b"), (127, "t" * 127), (128, "t"), (5, "t" * 128), (300, "é/" * 70)):
        parts = ledger_mod._qmsg(sid, 1, 5, topic, b"payload")
        assert b"".join(bytes(p) for p in parts) == bytes(encode(27, (sid, 1, 5, topic, b"payload")))
        assert decode(27, b"".join(bytes(p) for p in parts)) == [sid, 1, 5, topic, b"payload"]
