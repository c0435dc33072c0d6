# What a QoS 1 delivery costs the store, and the store kept in step when a
# Session drops a queued delivery unsent (edge/store/state.py): one record
# from routing to ack, in flight or not, the message's too (QMSG); the acks of a subscriber
# that acks in order delete in one run (one tombstone a batch); after a
# crash what was sent at once is resent with its pid and DUP 1, what was
# drained from a queue goes out again as new. Plain functions: pytest and
# tests/mpy_runner.py.
from edge.mqtt.packets import Puback, Publish, Subscribe
from edge.store.record import K_DEL, K_DELS
from tests.core._memfiles import MemFiles
from tests.core._pair import Client, publish, publishes
from tests.core._store import boot, crash, sub_and_pub
from tests.core.test_store_segments import kinds

_K_MSG = 18
_K_QUEUED = 19
_K_INFLIGHT = 20
_K_QMSG = 27
_K_SMSG = 29


def written(m):
    """Record kinds in every segment of the store, oldest first."""
    out = []
    for name in sorted(m.data, key=lambda n: int(n.split(".")[1])):
        out += kinds(m, name)
    return out


def test_a_qos1_delivery_is_one_record_and_its_acks_one_tombstone():
    m = MemFiles()
    b, log, _ = boot(m, max_inflight=5)
    sub, pub = sub_and_pub(b, "t/#", 1, offline=False)
    log.flush()
    before = len(written(m))
    for i in range(20):  # 5 go out at once, 15 wait in the queue
        publish(pub, "t/%d" % i, b"m%d" % i, 1, pid=i + 1)
    log.flush()
    new = written(m)[before:]
    # delivery and message: one record each, the 5 sent at once with their pid
    assert new.count(_K_QMSG) == 15 and new.count(_K_SMSG) == 5
    assert _K_MSG not in new and _K_QUEUED not in new
    got = []
    while len(got) < 20:  # the subscriber acks each batch the window lets out
        pkts = publishes(sub.recv())
        assert pkts
        for p in pkts:
            sub.send(Puback(p.pid))
        got += pkts
    log.flush()
    new = written(m)[before:]
    assert [p.payload for p in got] == [b"m%d" % i for i in range(20)]
    assert _K_INFLIGHT not in new  # moving into the window wrote nothing
    # message and delivery deleted in seq order: runs, not a tombstone each
    assert new.count(K_DELS) + new.count(K_DEL) <= 5, new
    assert len(log) == 2  # the session and its subscription
    b, log, counts = boot(crash(m))
    assert counts["queued"] == 0 and counts["messages"] == 0 and counts["subs"] == 1


def test_qos1_in_flight_at_a_crash_is_resent_with_its_pid_and_dup():
    # [MQTT-4.4.0-1] sent at once (nothing queued before it): its pid is on
    # flash (SMSG), so a restart resends it as it was, DUP 1. What went in
    # flight from the queue has no pid on flash: it goes out again as new.
    m = MemFiles()
    b, log, _ = boot(m, max_inflight=2)
    sub, pub = sub_and_pub(b, "t", 1, offline=False)
    for i in range(4):
        publish(pub, "t", b"m%d" % i, 1, pid=i + 1)
    log.flush()
    first = publishes(sub.recv())
    assert [p.payload for p in first] == [b"m0", b"m1"]
    sub.send(Puback(first[0].pid))  # m0 acked, m1 still in flight; m2 goes out from the queue
    log.flush()
    m1 = first[1].pid
    b, log, counts = boot(crash(m), max_inflight=2)
    assert counts["queued"] == 2 and counts["inflight"] == 1
    sub = Client(b)
    assert sub.connect("sub", clean=False).session_present
    got = publishes(sub.recv())
    # nothing acked is lost, nothing acked comes back: m1 resent with its
    # pid, DUP 1; m2 (drained from the queue) new, DUP 0
    assert [(p.payload, p.pid, p.dup) for p in got] == [(b"m1", m1, True), (b"m2", m1 + 1, False)]
    for p in got:
        sub.send(Puback(p.pid))
    assert [p.payload for p in publishes(sub.recv())] == [b"m3"]
    log.flush()
    b, log, counts = boot(crash(m))
    assert counts["inflight"] == 0 and counts["queued"] == 1  # m3, not acked


def test_acked_smsg_with_other_references_replays_its_message_once():
    # a message sent at once to one subscriber (SMSG) and queued for an
    # offline one: the first acks (DONE), the restart keeps it for the second
    m = MemFiles()
    b, log, _ = boot(m)
    sub, pub = sub_and_pub(b, "t", 1, offline=False)
    away = Client(b)
    away.connect("away", clean=False)
    away.subscribe(("t", 1))
    away.lose()
    publish(pub, "t", b"x", 1, pid=1)
    log.flush()
    got = publishes(sub.recv())
    assert [(p.payload, p.dup) for p in got] == [(b"x", False)]
    sub.send(Puback(got[0].pid))
    log.flush()
    b, log, counts = boot(crash(m))
    assert counts["inflight"] == 0 and counts["queued"] == 1 and counts["messages"] == 1
    assert [e.payload for e in b.sessions["away"].queue] == [b"x"]
    assert b.sessions["sub"].inflight == {}


def test_budget_refusal_leaves_no_record_behind():
    # the memory budget refuses new offline QoS 1 messages: no record of
    # them either, or a restart would bring back what was refused
    m = MemFiles()
    b, log, _ = boot(m, memory_budget_bytes=2048)
    sub, pub = sub_and_pub(b, "q/#", 1)
    for i in range(10):
        publish(pub, "q/%d" % i, b"x" * 100, 1, pid=i + 1)
    log.flush()
    kept = [e.payload for e in b.sessions["sub"].queue]
    assert b.sessions["sub"].dropped > 0 and len(kept) < 10
    b2, log2, counts = boot(crash(m))
    assert counts["queued"] == len(kept) and counts["messages"] == len(kept)
    topics = [e.topic for e in b.sessions["sub"].queue]
    assert [e.topic for e in b2.sessions["sub"].queue] == topics


def test_restored_state_counts_in_the_budget():
    # what a restart brings back (an away session, its queue, a retained
    # message) counts against the memory budget as it did before the
    # restart, and comes back out of it when the client returns
    m = MemFiles()
    b, log, _ = boot(m, memory_budget_bytes=8192)
    sub, pub = sub_and_pub(b, "q/#", 1)
    for i in range(3):
        publish(pub, "q/%d" % i, b"x" * 50, 1, pid=i + 1)
    publish(pub, "r/1", b"kept", 0, retain=True)
    pub.lose()  # the publisher's clean session is gone: only what is kept counts
    log.flush()
    before = b.limits.budget.add(0)
    b2, log2, counts = boot(crash(m), memory_budget_bytes=8192)
    assert counts["queued"] == 3 and counts["retained"] == 1
    budget = b2.limits.budget
    assert budget.add(0) == before
    back = Client(b2)
    assert back.connect("sub", clean=False).session_present
    assert len(publishes(back.recv())) == 3
    # the session and its queue given back (not below zero); the trees'
    # share (the subscription, the retained message) stays
    assert budget.used == 0
    assert budget.add(0) == before - b.limits.budget.used


def _v5_sub_and_pub(b):
    """A 5.0 persistent subscriber "sub" to "t" at QoS 1 (session expiry
    600 s, so its 5.0 messages can expire while queued) and a 5.0 "pub"."""
    sub = Client(b, v5=True)
    sub.connect("sub", clean=False, props={0x11: 600})
    sub.subscribe(("t", 1))
    pub = Client(b, v5=True)
    pub.connect("pub")
    return sub, pub


def test_expired_message_leaves_no_record_behind():
    # a 5.0 message whose Message Expiry passes while queued is dropped by
    # pump(); its record goes too, and the store's queue stays in step
    m = MemFiles()
    b, log, _ = boot(m, max_inflight=1)
    sub, pub = _v5_sub_and_pub(b)
    publish(pub, "t", b"first", 1, pid=1)
    publish(pub, "t", b"brief", 1, pid=2, props={0x02: 1})  # expires in 1 s
    publish(pub, "t", b"last", 1, pid=3)
    log.flush()
    got = publishes(sub.recv())
    assert [p.payload for p in got] == [b"first"]
    b.tick(b.now + 2000)
    sub.send(Puback(got[0].pid), now=b.now)
    got = publishes(sub.recv())
    assert [p.payload for p in got] == [b"last"]  # "brief" expired unsent
    log.flush()
    b2, log2, counts = boot(crash(m))
    assert counts["queued"] == 1 and counts["messages"] == 1  # "last", in flight
    s = b2.sessions["sub"]
    assert [e.payload for e in s.queue] == [b"last"]


def test_only_qos0_and_qos1_deliveries_promise_nothing():
    # Connection.promise: what the runtime may write before the store's sync
    m = MemFiles()
    b, log, _ = boot(m)
    s1, pub = sub_and_pub(b, "t/#", 1, offline=False)
    s2 = Client(b)
    s2.connect("s2", clean=False)
    s2.send(Subscribe(1, [("t/#", 2)]))
    assert s2.conn.promise  # SUBACK: the subscription's record first
    s0 = Client(b)
    s0.connect("s0")
    s0.subscribe(("t/#", 0))
    for c in (s1, s2, s0, pub):
        c.recv()
        assert not c.conn.promise  # take() starts over
    pub.send(Publish("t/1", b"x", 1, False, False, 1))
    assert pub.conn.promise  # PUBACK: the record first
    # QoS 1 and 0 deliveries (s2's too: granted QoS 2, delivered at 1)
    assert not s1.conn.promise and not s0.conn.promise and not s2.conn.promise
    for c in (s1, s2, s0, pub):
        c.recv()
    pub.send(Publish("t/2", b"y", 2, False, False, 2))
    assert pub.conn.promise  # PUBREC
    assert s2.conn.promise  # a QoS 2 delivery waits: a duplicate would break exactly once
    assert not s1.conn.promise and not s0.conn.promise


def test_a_311_store_never_loads_the_50_code():
    import sys

    for name in ("edge.store.msg5", "edge.mqtt.props"):
        sys.modules.pop(name, None)
    m = MemFiles()
    b, log, _ = boot(m)
    sub, pub = sub_and_pub(b, "t/#", 1)
    publish(pub, "t/1", b"x", 1, pid=1, retain=True)
    log.flush()
    b, log, counts = boot(crash(m))
    assert counts["queued"] == 1 and counts["retained"] == 1
    assert "edge.store.msg5" not in sys.modules and "edge.mqtt.props" not in sys.modules


def two_offline(m):
    """Persistent sessions "a" and "b" (away) on "t", and a publisher."""
    b, log, _ = boot(m)
    for cid in ("a", "b"):
        c = Client(b)
        c.connect(cid, clean=False)
        c.subscribe(("t", 1))
        c.lose()
    pub = Client(b)
    pub.connect("pub")
    return b, log, pub


def back(b, cid):
    c = Client(b)
    assert c.connect(cid, clean=False).session_present
    return c, publishes(c.recv())


def test_a_message_outlives_the_delivery_that_holds_it():
    m = MemFiles()
    b, log, pub = two_offline(m)
    publish(pub, "t", b"both", 1, pid=1)  # a's delivery holds it (QMSG), b's refers to it
    log.flush()
    a, got = back(b, "a")
    assert [x.payload for x in got] == [b"both"]
    a.send(Puback(got[0].pid))  # a's delivery is over: a DONE, the record stays for b
    log.flush()
    b, log, counts = boot(crash(m))
    assert counts["queued"] == 1 and counts["messages"] == 1
    assert b.sessions["a"].queue is None
    c, got = back(b, "b")
    assert [x.payload for x in got] == [b"both"]
    c.send(Puback(got[0].pid))
    log.flush()
    assert len(log) == 4  # the sessions and their subscriptions: QMSG and DONE went
    b, log, counts = boot(crash(m))
    assert counts["messages"] == 0 and counts["deleted"] == 0


def test_replay_keeps_a_dropped_sessions_message_another_needs():
    # a's SESSION record is gone (as a torn batch or a corrupt segment can
    # leave it): replay drops a's records, but b still refers to the message
    # a's QMSG holds; it stays (a's sid is never given again), and b gets it
    m = MemFiles()
    b, log, pub = two_offline(m)
    publish(pub, "t", b"both", 1, pid=1)
    st = b.store
    log.delete(st._sess[b.sessions["a"]][1])
    log.flush()
    b, log, counts = boot(crash(m))
    assert "a" not in b.sessions and counts["queued"] == 1 and counts["messages"] == 1
    c, got = back(b, "b")
    assert [x.payload for x in got] == [b"both"]
    b, log, counts = boot(crash(m))  # what replay repaired holds
    assert counts["queued"] == 1 and counts["messages"] == 1 and "a" not in b.sessions
    c, got = back(b, "b")
    c.send(Puback(got[0].pid))
    log.flush()
    assert len(log) == 2  # b's session and subscription


def test_a_long_queue_drains_through_its_head_and_stays_in_step():
    for retain in (False, True):
        _long_queue(retain)


def _long_queue(retain):
    # state.py takes the oldest queued delivery by moving a head (no
    # pop(0) per message) and cuts the list now and then: with a 5.0
    # message expiring mid-queue (unqueued(i) past the head) and new
    # arrivals between the drains, the store's queue stays the Session's:
    # a crash at any point brings back exactly what was still queued.
    # retain: each message is also the retained one, so it is a MSG record
    # and its deliveries QUEUED records that the queue's seqs name (not
    # QMSGs, which the message itself finds)
    m = MemFiles()
    b, log, _ = boot(m, max_inflight=3)
    sub, pub = _v5_sub_and_pub(b)
    pid = 0
    sent = []
    for rnd in range(6):
        for i in range(30):
            pid += 1
            props = {0x02: 1} if i == 20 else None  # expires in 1 s
            publish(pub, "t", b"r%d-%d" % (rnd, i), 1, pid=pid, props=props, retain=retain)
        b.tick(b.now + 2000)
        for _ in range(8):  # eight windows' worth out and acked
            got = publishes(sub.recv())
            sent += [p.payload for p in got]
            for p in got:
                sub.send(Puback(p.pid), now=b.now)
        log.flush()
        queued = [e.payload for e in b.sessions["sub"].queue or ()]
        b2, log2, counts = boot(crash(m.copy()))
        assert len(log2) == len(log), rnd  # replay found nothing to throw away
        inflight = sorted(e.payload for e in b.sessions["sub"].inflight.values())
        again = [e.payload for e in b2.sessions["sub"].queue or ()]
        # in flight at the crash: queued again, ahead of the rest
        assert sorted(again[:len(inflight)]) == inflight, rnd
        assert again[len(inflight):] == queued, rnd
    assert len(sent) == len(set(sent))
    assert b"r0-20" not in sent  # expired unsent
