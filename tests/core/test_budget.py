# The broker-wide memory budget (broker.memory_budget_bytes, the Budget in
# edge/mqtt/session.py), zero-copy QoS 0 forwarding (Broker.lend) and a
# MemoryError during delivery. Plain assert functions: tests/mpy_runner.py
# runs them under MicroPython too.
from edge.mqtt import systree
from edge import config
from edge.errors import ConfigError
from edge.mqtt import codec
from edge.mqtt.packets import Disconnect, Publish
from edge.mqtt.session import cost, Message
from tests.core._pair import Client, make_broker, publish, publishes

_LIMIT = 4096
_BOARD_BUDGET = 6144  # edge/config.py, the board profile
_BODY = b"x" * 100
_COST = cost(Message("q/0", _BODY))  # 311: topic + payload + the entry cost
# session.py's measured costs (private consts: MicroPython folds them away)
_NODE, _SUB, _SESSION = 192, 128, 320
_AWAY = _SESSION + _SUB + 2 * _NODE  # an away session subscribed to q/# (2 new nodes)


def _offline(b, cid, f, qos):
    c = Client(b)
    assert c.connect(cid, clean=False).reason == 0
    c.subscribe((f, qos))
    c.send(Disconnect())
    return c


def _back(b, cid):
    c = Client(b)
    ack = c.connect(cid, clean=False)
    assert ack.reason == 0 and ack.session_present
    return [m.payload for m in publishes(ack and c.recv())]


def test_config_key_and_defaults():
    assert config.defaults("board")["broker"]["memory_budget_bytes"] == _BOARD_BUDGET
    assert config.defaults("gateway")["broker"]["memory_budget_bytes"] == 268435456
    try:
        config.load({"broker": {"memory_budget_bytes": 100}})
    except ConfigError as e:
        assert "broker.memory_budget_bytes" in str(e) and "1024" in str(e)
    else:
        raise AssertionError("a budget under 1024 was accepted")


def test_offline_queues_count_and_come_back_on_reconnect():
    b = make_broker(memory_budget_bytes=_LIMIT)
    p = Client(b)
    p.connect("pub")
    _offline(b, "away", "q/#", 1)
    budget = b.limits.budget
    assert budget.used == _SESSION and budget.add(0) == _AWAY  # the away session counts
    for i in range(3):
        publish(p, "q/%d" % i, _BODY, 1, pid=i + 1)
    assert budget.add(0) == _AWAY + 3 * _COST
    assert _back(b, "away") == [_BODY] * 3
    # a connected client's session and queue are live traffic; its subscription counts
    assert budget.used == 0 and budget.add(0) == _SUB + 2 * _NODE


def test_full_budget_refuses_new_messages_and_keeps_the_queued_ones():
    # Issue #4: a queued message was acknowledged to its publisher; a full
    # budget refuses the new one instead of dropping an old one
    b = make_broker(memory_budget_bytes=_LIMIT)
    p = Client(b)
    p.connect("pub")
    _offline(b, "a", "q/#", 1)
    _offline(b, "z", "q/#", 1)
    budget = b.limits.budget
    base = budget.add(0)  # two away sessions, two subscriptions, one filter's nodes
    assert base == 2 * (_SESSION + _SUB) + 2 * _NODE
    for i in range(7):
        acks = publish(p, "q/%d" % i, b"%d" % i + _BODY[1:], 1, pid=i + 1)
        assert [(a.kind, a.pid) for a in acks] == [(4, i + 1)]  # 3.1.1: no code to refuse with
        assert budget.add(0) <= _LIMIT
    kept = (_LIMIT - base) // _COST  # 9 of the 14 entries fit
    assert kept == 9 and budget.dropped == 14 - kept
    assert b.stats.msgs_refused == b.stats.msgs_dropped == budget.dropped
    got = _back(b, "a") + _back(b, "z")
    # the oldest arrive, in order; the newest were refused
    assert got == [b"%d" % i + _BODY[1:] for i in range(5)] + [b"%d" % i + _BODY[1:] for i in range(4)]
    assert budget.used == 0
    sysv = dict(systree.values(b))
    assert sysv["budget/dropped"] == budget.dropped and sysv["budget/bytes"] == budget.add(0)


def test_v5_publisher_told_quota_exceeded_when_a_copy_is_refused():
    b = make_broker(memory_budget_bytes=_LIMIT)
    _offline(b, "away", "q/#", 1)
    p = Client(b, v5=True)
    p.connect("pub5")
    kept = (_LIMIT - _AWAY) // _COST  # 10
    for i in range(kept):
        assert publish(p, "q/1", _BODY, 1, pid=i + 1)[0].reason == 0
    assert b.limits.budget.room(_COST) is False
    ack = publish(p, "q/1", _BODY, 1, pid=kept + 1)[0]
    assert (ack.kind, ack.pid, ack.reason) == (4, kept + 1, 0x97)  # Quota exceeded
    # QoS 2: a failed PUBREC ends the exchange, the pid is free again at once
    rec = publish(p, "q/1", _BODY, 2, pid=kept + 2)[0]
    assert (rec.kind, rec.pid, rec.reason) == (5, kept + 2, 0x97)
    assert not b.sessions["pub5"].rx_qos2
    # an online subscriber still gets what it matched; only the offline
    # copy was refused, and the publisher hears of it
    live = Client(b, v5=True)
    live.connect("live")
    live.subscribe(("q/#", 1))
    ack = publish(p, "q/1", _BODY, 1, pid=kept + 3)[0]
    assert ack.reason == 0x97
    assert [m.payload for m in publishes(live.recv())] == [_BODY]
    # room again (the offline client is back): accepted as before
    assert len(_back(b, "away")) == kept
    assert publish(p, "q/1", _BODY, 1, pid=kept + 4)[0].reason == 0


def _full_of_qos2():
    # An offline QoS 2 queue fills the budget: nothing can be made free
    b = make_broker(memory_budget_bytes=_LIMIT)
    p = Client(b)
    p.connect("pub")
    _offline(b, "q2", "q/#", 2)
    for i in range(11):
        publish(p, "q/%d" % i, _BODY, 2, pid=i + 1)
    return b, p


def test_qos2_never_dropped_to_make_room_new_message_is():
    b, p = _full_of_qos2()
    budget = b.limits.budget
    assert budget.add(0) == _AWAY + 10 * _COST and budget.dropped == 1
    assert b.sessions["q2"].dropped == 1
    assert _back(b, "q2") == [_BODY] * 10


def test_a_refused_connect_does_not_take_over():
    # [MQTT-3.1.4-2] the client with the same id is disconnected only once
    # the new connection is accepted: refused for the memory budget, the new
    # CONNECT leaves the old client connected, its will unsent
    b, p = _full_of_qos2()
    w = Client(b)
    w.connect("watcher")
    w.subscribe(("w/#", 0))
    old = Client(b)
    assert old.connect("dev", will_topic="w/dev", will_payload=b"gone").reason == 0
    new = Client(b)
    assert new.connect("dev", clean=False).reason == 3  # needs a persistent session: no room
    assert new.closed and not old.closed
    assert b.sessions["dev"].conn is old.conn
    assert publishes(w.recv()) == []


def test_no_room_refuses_persistent_sessions_and_their_subscriptions():
    b, p = _full_of_qos2()
    budget = b.limits.budget
    late = Client(b)
    assert late.connect("late", clean=False).reason == 3  # Server unavailable
    assert late.closed and budget.refused == 1
    c = Client(b)
    assert c.connect("clean-one").reason == 0  # holds nothing while away
    assert c.subscribe(("q/#", 1))[0].codes == [1]
    pers = Client(b)
    short = _AWAY - (_LIMIT - budget.add(0))  # the headroom: what an away session needs
    budget.used -= short  # just enough: the session is accepted ...
    assert pers.connect("pers", clean=False).reason == 0
    budget.used += short
    assert pers.subscribe(("q/#", 1))[0].codes == [0x80]  # ... its filter is not
    assert budget.refused == 2 and b.stats.subs_refused == 1


def test_retained_within_the_budget():
    b = make_broker(memory_budget_bytes=_LIMIT)
    p = Client(b)
    p.connect("pub")
    budget = b.limits.budget
    for i in range(8):
        publish(p, "r/%d" % i, _BODY, 0, retain=True)
    # each a message and its node, the first the "r" node too
    assert len(b.retained) == 7 and budget.dropped == 1
    assert budget.add(0) == 7 * (_COST + _NODE) + _NODE
    publish(p, "r/0", b"y" * 100, 0, retain=True)  # a replacement fits
    assert b.retained.get("r/0").payload == b"y" * 100
    publish(p, "r/0", b"z" * 500, 0, retain=True)  # a bigger one does not ...
    assert b.retained.get("r/0") is None  # ... and the old value goes too
    assert budget.add(0) == 6 * (_COST + _NODE) + _NODE
    publish(p, "r/1", b"", 0, retain=True)  # cleared: its share comes back
    assert budget.add(0) == 5 * (_COST + _NODE) + _NODE and len(b.retained) == 5


def _lend_feed(b, cid, wire, sub):
    # As edge/runtime/tcp.py feeds with Broker.lend set: one read buffer,
    # and the output written (here: taken) before the next read reuses it
    rbuf = bytearray(256)
    rbuf[0:len(wire)] = wire
    b.data_received(cid, memoryview(rbuf)[:len(wire)], 0)
    out = list(sub.conn.out)
    data = b.take(sub.conn)
    taken = bytes(data)  # what the socket gets now
    for j in range(len(rbuf)):
        rbuf[j] = 0xEE  # the next read
    return out, data, taken


def test_lent_qos0_forward_is_a_view_alone_and_bytes_joined():
    b = make_broker()
    b.lend = True  # as edge/runtime/tcp.py sets it
    s = Client(b)
    s.connect("s")
    s.subscribe(("t/#", 0))
    p = Client(b)
    p.connect("p")
    one = codec.encode(Publish("t/a", b"1" * 40, 0))
    out, data, taken = _lend_feed(b, p.cid, one, s)
    assert len(out) == 1 and type(data) is memoryview and taken == one  # no copy
    two = codec.encode(Publish("t/b", b"2" * 10, 0))
    out, data, taken = _lend_feed(b, p.cid, one + two, s)
    assert type(data) is bytes and data == one + two  # joined: a copy
    # a payload still in the read buffer reaches a local client as a copy
    got = []
    b.subscribe(b.local_client("l", lambda m, q, r: got.append(m.payload)), "t/#", 0)
    _lend_feed(b, p.cid, two, s)
    assert got == [b"2" * 10] and type(got[0]) is bytes
    # without lend (the default) the forward is bytes of its own
    b.lend = False
    out, data, taken = _lend_feed(b, p.cid, one, s)
    assert type(data) is bytes and data == one


def test_memory_error_in_one_delivery_still_acks_and_serves_others():
    b = make_broker()
    ok = Client(b)
    ok.connect("ok")
    ok.subscribe(("m/#", 1))
    bad = Client(b)
    bad.connect("bad")
    bad.subscribe(("m/#", 1))

    def full(msg, qos, retain=False):
        raise MemoryError("memory allocation failed")

    b.sessions["bad"].deliver = full
    p = Client(b)
    p.connect("pub")
    acks = publish(p, "m/1", b"v", 1, pid=7)
    assert [(a.kind, a.pid) for a in acks] == [(4, 7)] and not p.closed  # PUBACK
    assert [m.payload for m in publishes(ok.recv())] == [b"v"]
    assert b.stats.deliveries_oom == 1 and b.stats.msgs_dropped == 1


def test_memory_error_in_a_persistent_delivery_withholds_the_ack():
    # A persistent session's delivery that the heap could not keep must not
    # be acknowledged: the feed fails with its output dropped (the runtime
    # closes the connection), the publisher sends again what it has no ack
    # for, and this time it is kept. Those served the first time get it
    # twice, as QoS 1 allows; nothing acknowledged is lost.
    from edge.mqtt.packets import Puback
    from tests.core._memfiles import MemFiles
    from tests.core._store import boot

    b, log, _ = boot(MemFiles())
    ok = Client(b)
    ok.connect("ok")
    ok.subscribe(("#", 1))
    keep = Client(b)
    keep.connect("keep", clean=False)
    keep.subscribe(("m/#", 1))
    keep.lose()  # offline: its queue is the store's
    st = b.store
    real = st.msg_queued
    fail = [True]

    def full(sess, msg, qos, retain=False):
        if fail[0]:
            raise MemoryError("memory allocation failed")
        return real(sess, msg, qos, retain)

    st.msg_queued = full
    p = Client(b)
    p.connect("pub")
    feed = codec.encode(Publish("x/1", b"first", 1, False, False, 6)) + codec.encode(
        Publish("m/1", b"v", 1, False, False, 7))
    try:
        p.send_raw(feed)
    except MemoryError:
        pass
    else:
        raise AssertionError("the MemoryError did not reach the runtime")
    assert p.recv() == []  # no PUBACK from the failed feed, 6's neither
    assert b.stats.deliveries_oom == 1
    assert [m.payload for m in publishes(ok.recv())] == [b"first", b"v"]
    # the runtime closes the connection; the client connects again and resends
    p.lose()
    fail[0] = False
    p = Client(b)
    p.connect("pub")
    p.send_raw(feed)
    assert [(a.kind, a.pid) for a in p.recv()] == [(4, 6), (4, 7)]
    assert [m.payload for m in publishes(ok.recv())] == [b"first", b"v"]  # twice: QoS 1
    log.flush()
    keep = Client(b)
    assert keep.connect("keep", clean=False).session_present
    got = publishes(keep.recv())
    assert [m.payload for m in got] == [b"v"]
    for m in got:
        keep.send(Puback(m.pid))


def test_memory_error_in_a_wills_persistent_delivery_is_counted_not_raised():
    # A will (or a local publish) has no ack to hold back: a persistent
    # session's delivery the heap cannot keep is counted and dropped as
    # before, and the closing connection's cleanup runs to its end
    from tests.core._memfiles import MemFiles
    from tests.core._store import boot

    b, log, _ = boot(MemFiles())
    keep = Client(b)
    keep.connect("keep", clean=False)
    keep.subscribe(("w/#", 1))
    keep.lose()

    def full(sess, msg, qos, retain=False):
        raise MemoryError("memory allocation failed")

    b.store.msg_queued = full
    dying = Client(b)
    dying.connect("dying", will_topic="w/x", will_payload=b"gone", will_qos=1)
    dying.lose()  # the will goes out: no ack anywhere
    assert b.stats.deliveries_oom == 1 and b.stats.msgs_dropped == 1
    assert "dying" not in b.sessions  # clean: its session went with it


def test_memory_error_in_the_close_log_line_still_cleans_up():
    # A board's heap can be too full to format "client X closed: ...": the
    # line is lost, not the cleanup (a clean session's subscriptions would
    # stay in the trie, its count and its will with them)
    b = make_broker()
    s = Client(b)
    s.connect("s")
    s.subscribe(("t/#", 1))
    c = Client(b)
    c.connect("c", will_topic="w/c", will_payload=b"gone")
    watcher = Client(b)
    watcher.connect("watch")
    watcher.subscribe(("w/#", 0))

    def full(level, msg):
        raise MemoryError("allocating 272 bytes")

    b.log = full
    connected = b.stats.clients_connected
    s.lose()
    c.lose()
    assert b.stats.clients_connected == connected - 2
    assert "s" not in b.sessions and "c" not in b.sessions
    assert not b.subs.match_subs("t/x")
    assert [m.payload for m in publishes(watcher.recv())] == [b"gone"]  # the will went out


def test_v5_publisher_told_quota_exceeded_when_a_clients_queue_is_full():
    # The other limit a copy is refused for: an online client's queue
    # (behind its window, max_queued_messages), counted as refused
    b = make_broker(max_inflight=1, max_queued_messages=2)
    slow = Client(b)
    slow.connect("slow")
    slow.subscribe(("q/#", 1))
    p = Client(b, v5=True)
    p.connect("pub5")
    codes = [publish(p, "q/1", b"m%d" % i, 1, pid=i + 1)[0].reason for i in range(5)]
    assert codes == [0, 0, 0, 0x97, 0x97], codes  # 1 in flight + 2 queued
    assert b.stats.msgs_refused == 2 == b.sessions["slow"].dropped
    assert [m.payload for m in publishes(slow.recv())] == [b"m0"]
