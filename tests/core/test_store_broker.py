# The store wired into the broker (issue #4): every change of persistent
# state goes through the StateStore hooks, Broker.restore() rebuilds it, and
# what a batch recorded is still pending (unsynced) when the broker has
# queued the ack that promises it, so the runtime can sync first. Over
# in-memory files with a power-cut model (tests/core/_memfiles.py): a
# "crash" keeps only what was synced. Plain functions: pytest and
# tests/mpy_runner.py.
from edge.mqtt import systree
from edge.mqtt.packets import Connect, Publish, Puback, Pubrec, Pubrel, Unsubscribe
from tests.core._memfiles import MemFiles
from tests.core._pair import Client, make_broker, publish, publishes
from tests.core._store import boot, crash, sub_and_pub


def sys_value(b, name):
    for msg in systree.messages(b, lambda t: t == "$SYS/broker/" + name):
        return int(msg.payload)
    return None


def test_queued_qos1_survives_a_crash_once_synced():
    m = MemFiles()
    b, log, _ = boot(m)
    sub, pub = sub_and_pub(b, "t/#", 1)
    pub.send(Publish("t/1", b"one", 1, False, False, 7))
    # the PUBACK is queued, the record is not durable yet: the runtime
    # must sync before it writes the PUBACK out
    assert log.pending() > 0
    log.flush()
    assert [p.kind for p in pub.recv()] == [4]
    b, log, counts = boot(crash(m))
    assert counts["sessions"] == 1 and counts["queued"] == 1 and counts["subs"] == 1
    sub = Client(b)
    ack = sub.connect("sub", clean=False)
    assert ack.session_present
    got = publishes(sub.recv())
    assert [(p.topic, p.payload, p.qos) for p in got] == [("t/1", b"one", 1)]
    # acked: gone after the next crash
    sub.send(Puback(got[0].pid))
    log.flush()
    b, log, counts = boot(crash(m))
    assert counts["queued"] == 0 and counts["inflight"] == 0 and counts["messages"] == 0


def test_unsynced_batch_is_lost_whole_not_half():
    m = MemFiles()
    b, log, _ = boot(m)
    sub, pub = sub_and_pub(b, "t", 1)
    log.flush()
    publish(pub, "t", b"x", 1, pid=1)  # never synced: its PUBACK never went out
    b, log, counts = boot(crash(m))
    assert counts["sessions"] == 1 and counts["subs"] == 1 and counts["queued"] == 0


def test_inflight_and_qos2_phases_survive():
    m = MemFiles()
    b, log, _ = boot(m)
    sub, pub = sub_and_pub(b, "a", 2, offline=False)
    publish(pub, "a", b"1", 2, pid=1)
    publish(pub, "a", b"2", 2, pid=2)
    got = publishes(sub.recv())
    assert len(got) == 2
    sub.send(Pubrec(got[0].pid))  # first: PUBREL phase; second: in flight
    log.flush()
    b, log, counts = boot(crash(m))
    assert counts["inflight"] == 2
    sub = Client(b)
    sub.connect("sub", clean=False)
    again = sub.recv()
    # [MQTT-4.4.0-1] PUBREL for the released one, PUBLISH DUP for the other
    assert [(p.kind, p.pid) for p in again] == [(6, got[0].pid), (3, got[1].pid)]
    assert again[1].dup and again[1].payload == b"2"


def test_incoming_qos2_pid_survives_no_second_delivery():
    m = MemFiles()
    b, log, _ = boot(m)
    sub = Client(b)
    sub.connect("sub", clean=False)
    sub.subscribe(("q", 2))
    pub = Client(b)
    pub.connect("pub", clean=False)
    pub.send(Publish("q", b"once", 2, False, False, 9))
    assert log.pending() > 0  # the pid: durable before PUBREC goes out
    log.flush()
    assert [p.kind for p in pub.recv()] == [5]
    b, log, counts = boot(crash(m))
    assert counts["rx_qos2"] == 1
    sub = Client(b)
    sub.connect("sub", clean=False)
    first = publishes(sub.recv())
    assert [p.payload for p in first] == [b"once"]
    pub = Client(b)
    pub.connect("pub", clean=False)
    # [MQTT-4.3.3-2] the publisher resends (no PUBREC seen): not delivered again
    pub.send(Publish("q", b"once", 2, False, True, 9))
    assert [p.kind for p in pub.recv()] == [5]
    assert publishes(sub.recv()) == []
    pub.send(Pubrel(9))
    log.flush()
    b, log, counts = boot(crash(m))
    assert counts["rx_qos2"] == 0


def test_subscriptions_retained_and_unsubscribe_survive():
    m = MemFiles()
    b, log, _ = boot(m)
    c = Client(b)
    c.connect("c", clean=False)
    c.subscribe(("x/#", 1), ("y", 0))
    publish(c, "r/1", b"kept", 1, retain=True, pid=3)
    publish(c, "r/2", b"gone", 0, retain=True)
    publish(c, "r/2", b"", 0, retain=True)  # cleared
    c.send(Unsubscribe(4, ["y"]))
    log.flush()
    b, log, counts = boot(crash(m))
    assert counts["retained"] == 1 and counts["subs"] == 1
    assert sorted(b.sessions["c"].subs.items()) == [("x/#", 1)]
    assert b.retained.get("r/1").payload == b"kept" and b.retained.get("r/2") is None


def test_clean_session_costs_nothing_and_takeover_deletes():
    m = MemFiles()
    b, log, _ = boot(m)
    c = Client(b)
    c.connect("c", clean=True)
    c.subscribe(("t", 1))
    assert log.pending() == 0 and len(log) == 0
    c.lose()
    c = Client(b)
    c.connect("d", clean=False)
    c.subscribe(("t", 1))
    log.flush()
    assert len(log) == 2
    c.lose()
    c = Client(b)
    c.connect("d", clean=True)  # [MQTT-3.1.2-6] the old session ends
    log.flush()
    assert len(log) == 0
    b, log, counts = boot(crash(m))
    assert counts["sessions"] == 0


def test_store_full_refuses_counted_in_sys_and_log():
    m = MemFiles()
    lines = []
    b, log, _ = boot(m, budget=4096, session_budget=1500)
    b.log = lambda level, msg: lines.append((level, msg))
    sub, pub = sub_and_pub(b, "t", 1)
    for i in range(40):
        publish(pub, "t", b"p" * 100, 1, pid=i + 1)
    queued = len(b.sessions["sub"].queue)
    assert 0 < queued < 40
    refused = sys_value(b, "store/refused")
    assert refused == 40 - queued, (refused, queued)
    assert b.stats.msgs_dropped == 40 - queued
    b.tick(1000)
    assert any(level == 30 and "records refused" in msg for level, msg in lines), lines
    log.flush()
    b2, log2, counts = boot(crash(m), budget=4096, session_budget=1500)
    assert counts["queued"] == queued  # what was accepted, all of it


def test_store_full_tells_a_v5_publisher_quota_exceeded():
    # a 5.0 publisher learns its message was not kept for a subscriber:
    # PUBACK 0x97, not a success the store cannot keep (issue #4)
    m = MemFiles()
    b, log, _ = boot(m, budget=4096, session_budget=1500)
    sub, pub = sub_and_pub(b, "t", 1, v5=True)
    codes = [publish(pub, "t", b"p" * 100, 1, pid=i + 1)[0].reason for i in range(40)]
    queued = len(b.sessions["sub"].queue)
    assert codes == [0] * queued + [0x97] * (40 - queued), codes
    assert b.stats.msgs_refused == 40 - queued


def test_session_budget_counts_a_v5_message_s_properties():
    # A MSG5 record holds the message's properties too: a 5.0 publisher's
    # large User Property counts against the subscriber's session_budget as
    # its payload would (issue #4: the per-session byte limit is explicit)
    m = MemFiles()
    b, log, _ = boot(m, budget=65536, session_budget=1500)
    sub, pub = sub_and_pub(b, "t", 1, v5=True)
    base = b.store._sess[b.sessions["sub"]][2]  # _BYTES: its session and subscription
    big = {0x26: [("k", "v" * 300)]}
    codes = [publish(pub, "t", b"p", 1, pid=i + 1, props=dict(big))[0].reason for i in range(20)]
    queued = len(b.sessions["sub"].queue)
    # each held message takes over 300 bytes of flash: 1500 hold 4 of them
    assert 0 < queued <= 4 and codes == [0] * queued + [0x97] * (20 - queued), codes
    st = b.store
    assert st._sess[b.sessions["sub"]][2] <= 1500  # _BYTES, what the budget counted
    log.flush()
    b2, log2, counts = boot(crash(m), budget=65536, session_budget=1500)
    assert counts["queued"] == queued
    # delivered and acked, the session's count goes back to what it was
    back = Client(b2)
    back.connect("sub", clean=False)
    got = publishes(back.recv())
    assert len(got) == queued and got[0].props is None  # (a 3.1.1 subscriber)
    for g in got:
        back.send_raw(bytes((0x40, 2, g.pid >> 8, g.pid & 255)))
    s2 = b2.store._sess[b2.sessions["sub"]]
    assert not s2[7] and not s2[6] and s2[2] == base, (s2, base)  # _QUEUE, _INFL, _BYTES


def test_new_session_refused_when_store_full():
    m = MemFiles()
    b, log, _ = boot(m, budget=4096)
    log.budget_bytes = 0  # nothing fits any more
    c = Client(b)
    ack = c.connect("late", clean=False)
    assert ack.reason == 3 and c.closed  # server unavailable, not a false promise
    assert "late" not in b.sessions
    c = Client(b)
    assert c.connect("clean-one", clean=True).reason == 0  # costs the store nothing


def test_sys_store_figures():
    m = MemFiles()
    b, log, _ = boot(m)
    c = Client(b)
    c.connect("c", clean=False)
    c.subscribe(("t", 1))
    log.flush()
    assert sys_value(b, "store/bytes") == log.live_bytes > 0
    assert sys_value(b, "store/syncs") == log.syncs >= 1
    assert sys_value(b, "store/quarantined") == 0
    assert not list(systree.messages(make_broker(), lambda t: t.startswith("$SYS/broker/store")))


def test_connect_packet_unchanged_for_clean_clients():
    # persistence on, a clean client: the same bytes out as without a store
    b0 = make_broker()
    b1, log, _ = boot(MemFiles())
    outs = []
    for b in (b0, b1):
        c = Client(b)
        c.send(Connect("z", True, 30))
        outs.append(c.conn.take())
    assert outs[0] == outs[1]



def test_v5_session_expiry_options_identifier_and_shared_survive():
    # A 5.0 session's expiry, its subscription options with an identifier
    # (over a byte: record kind SUB5) and its shared subscription all come
    # back after a crash; the expiry counts again from the restart.
    m = MemFiles()
    b, log, _ = boot(m)
    c = Client(b, v5=True)
    c.connect("c5", clean=False, props={0x11: 60})
    c.subscribe(("a/+", 1 | 0x04), props={0x0B: 300})  # No Local, identifier 300
    c.subscribe(("$share/g/s", 1), pid=2)
    c.lose()
    log.flush()
    b, log, counts = boot(crash(m))
    sess = b.sessions["c5"]
    assert sess.expiry == 60 and counts["subs"] == 2
    assert b.v5.expiring[sess] == b.now + 60000  # counting from the restart
    assert sorted(sess.subs) == ["$share/g/s", "a/+"]
    pub = Client(b)
    pub.connect("pub")
    publish(pub, "a/b", b"one", 1, pid=1)
    publish(pub, "s", b"two", 1, pid=2)
    c = Client(b, v5=True)
    c.connect("c5", clean=False, props={0x11: 60})
    got = publishes(c.recv())
    assert [m.payload for m in got] == [b"one", b"two"]
    assert got[0].props[0x0B] == [300] and not (got[1].props or {}).get(0x0B)
    # it expires 60 s after the restart when away again
    c.lose()
    b.tick(b.now + 61000)
    assert "c5" not in b.sessions


def test_v5_message_properties_survive():
    # A 5.0 message is stored as MSG5 with its property block: a queued
    # delivery and a retained message come back with them after a crash;
    # the Message Expiry left counts again from the restart.
    m = MemFiles()
    b, log, _ = boot(m)
    c = Client(b, v5=True)
    c.connect("c5", clean=False, props={0x11: 600})
    c.subscribe(("r/#", 1))
    c.lose()
    p = Client(b, v5=True)
    p.connect("p5")
    props = {0x01: 1, 0x02: 120, 0x03: "text/plain", 0x08: "r/reply", 0x09: b"\x00corr",
             0x26: [("k", "v"), ("k", "w")]}
    publish(p, "r/1", b"queued", 1, pid=1, props=dict(props))
    publish(p, "r/2", b"kept", 1, retain=True, pid=2, props={0x08: "r/back"})
    log.flush()
    b, log, counts = boot(crash(m), now=500000)  # a restart, its clock anew
    assert counts["queued"] == 2 and counts["retained"] == 1 and counts["messages"] == 2
    c = Client(b, v5=True)
    assert c.connect("c5", clean=False, props={0x11: 600}, now=b.now).session_present
    got = publishes(c.recv())
    assert [x.payload for x in got] == [b"queued", b"kept"]
    assert got[1].props[0x08] == "r/back"
    g = got[0].props
    assert g[0x01] == 1 and g[0x03] == "text/plain" and g[0x08] == "r/reply" and g[0x09] == b"\x00corr"
    assert g[0x26] == [("k", "v"), ("k", "w")]
    assert g[0x02] == 120  # what was left when written, counted from the restart
    c2 = Client(b, v5=True)
    c2.connect("late")
    kept = [x for x in publishes(c2.subscribe(("r/#", 1))) if x.payload == b"kept"]
    assert kept and kept[0].retain and kept[0].props[0x08] == "r/back"


def test_a_v5_message_that_expired_while_down_is_not_delivered():
    m = MemFiles()
    b, log, _ = boot(m)
    c = Client(b, v5=True)
    c.connect("c5", clean=False, props={0x11: 600})
    c.subscribe(("e", 1))
    c.lose()
    p = Client(b, v5=True)
    p.connect("p5")
    publish(p, "e", b"brief", 1, pid=1, props={0x02: 2})
    log.flush()
    b, log, counts = boot(crash(m))
    assert counts["queued"] == 1
    b.tick(b.now + 3000)
    c = Client(b, v5=True)
    c.connect("c5", clean=False, props={0x11: 600}, now=b.now)
    assert publishes(c.recv()) == []  # [MQTT-3.3.2-5] its 2 s ran out after the restart
