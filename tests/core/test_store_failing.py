# A store that cannot keep what an ack would promise (issue #19, docs/
# persistence.md "When the store cannot keep it"): after a failed write or
# sync (a full or failing flash) new QoS 1/2 publishes are refused (5.0
# PUBACK/PUBREC 0x80, 3.1.1 the connection closed with no ack), counted and
# shown in $SYS/broker/store/state, until a sync succeeds again; a broker
# that runs without its store (store.persistence "best-effort") tells 5.0
# clients in its CONNACK. Plain functions: pytest and tests/mpy_runner.py.
from edge import config
from edge.mqtt.packets import Puback
from edge.mqtt.systree import values
from tests.core._memfiles import MemFiles
from tests.core._pair import Client, make_broker, publish, publishes
from tests.core._store import boot, sub_and_pub

_ENOSPC = 28
_EIO = 5


def _sys(b):
    return dict(values(b))


def _flush_fails(log):
    try:
        log.flush()
        raise AssertionError("the write or sync should fail")
    except OSError:
        pass


def _fail_next_write(b, log, m, pub):
    # The next write of the batch fails, as a full flash does, and so does
    # its retry: failing (one failure alone only holds the acks)
    m.fail = OSError(_ENOSPC)
    publish(pub, "t/x", b"first", 1, pid=1)  # recorded in the batch; its PUBACK held by the runtime
    _flush_fails(log)
    assert not log.failing and log.failures == 1
    got = publish(pub, "t/x", b"between", 1, pid=9)
    assert [(p.kind, p.pid) for p in got] == [(4, 9)], got  # accepted (the runtime holds its ack)
    m.fail = OSError(_ENOSPC)
    _flush_fails(log)
    assert log.failing


def test_a_failed_write_refuses_new_qos1_and_qos2_then_recovers_v5():
    m = MemFiles()
    b, log, _ = boot(m)
    sub, pub = sub_and_pub(b, "t/#", 1, v5=True)
    log.flush()
    assert _sys(b)["store/state"] == "ok"
    _fail_next_write(b, log, m, pub)
    assert _sys(b)["store/state"] == "failing"
    got = publish(pub, "t/x", b"second", 1, pid=2)
    assert [(p.kind, p.pid, p.reason) for p in got] == [(4, 2, 0x80)], got  # 5.0 §3.4.2.1
    got = publish(pub, "t/x", b"third", 2, pid=3)
    assert [(p.kind, p.pid, p.reason) for p in got] == [(5, 3, 0x80)], got
    assert not pub.closed
    assert _sys(b)["store/refused while failing"] == 2
    # QoS 0 promises nothing: still routed
    assert publish(pub, "t/x", b"q0", 0) == []
    # the batch (the first message) written on the next flush: accepted again
    log.flush()
    assert not log.failing and _sys(b)["store/state"] == "ok"
    got = publish(pub, "t/x", b"fourth", 1, pid=4)
    assert [(p.kind, p.pid, p.reason) for p in got] == [(4, 4, 0)], got
    log.flush()
    sub2 = Client(b)
    sub2.connect("sub", clean=False)
    payloads = [p.payload for p in publishes(sub2.recv())]
    assert payloads == [b"first", b"between", b"fourth"], payloads  # the refused ones never went in


def test_a_failed_sync_refuses_and_311_closes_without_ack():
    m = MemFiles()
    b, log, _ = boot(m)
    sub, pub = sub_and_pub(b, "t/#", 1)
    q2 = Client(b)
    q2.connect("q2", clean=False)
    log.flush()
    m.fail_sync = OSError(_EIO)
    publish(pub, "t/x", b"first", 1, pid=1)
    _flush_fails(log)
    m.fail_sync = OSError(_EIO)
    _flush_fails(log)  # the retry fails too
    assert log.failing
    pub.conn.take()  # (the runtime holds this: the first PUBACK promises an unsynced record)
    got = publish(pub, "t/x", b"second", 1, pid=2)
    assert got == [] and pub.closed  # 3.1.1: no refusing PUBACK: closed, no ack
    assert b.store_refused == 1
    # a new persistent session cannot be saved: refused (server unavailable),
    # not acknowledged; a clean one costs the store nothing: accepted, told
    late = Client(b)
    assert late.connect("late", clean=False).reason == 3 and late.closed
    assert "late" not in b.sessions
    assert Client(b).connect("clean-one").reason == 0
    # a resent QoS 2 whose pid the store holds is answered, not refused
    log.flush()  # recovered (the sync succeeds now)
    assert not log.failing
    assert [p.kind for p in publish(q2, "t/y", b"a", 2, pid=7)] == [5]
    log.flush()
    p3 = Client(b)
    p3.connect("p3")
    publish(p3, "t/y", b"b", 1, pid=1)
    for _ in range(2):
        m.fail = OSError(_ENOSPC)
        _flush_fails(log)
    assert log.failing
    assert [p.kind for p in publish(q2, "t/y", b"a", 2, pid=7)] == [5]  # the same pid again


def test_refused_deliveries_are_not_acknowledged_to_a_subscriber_either():
    # a subscriber's acks are not publishes: they go on while the store fails
    m = MemFiles()
    b, log, _ = boot(m)
    sub, pub = sub_and_pub(b, "t/#", 1, offline=False)
    log.flush()
    publish(pub, "t/x", b"m", 1, pid=1)
    got = publishes(sub.recv())
    for _ in range(2):
        m.fail_sync = OSError(_EIO)
        _flush_fails(log)
    assert log.failing
    sub.send(Puback(got[0].pid))
    assert not sub.closed


def test_connack_says_when_the_store_is_off_v5():
    b = make_broker()
    b.store_off = "17696 bytes of heap free, 32768 needed"
    c = Client(b, v5=True)
    ack = c.connect("c5")
    assert ack.reason == 0
    assert ack.props[0x26] == [("store", "best-effort")], ack.props  # User Property
    assert "17696 bytes of heap free" in ack.props[0x1F]  # Reason String
    assert _sys(b)["store/state"] == "best-effort"
    # persistence false: nothing in CONNACK, no store/ topics ($SYS as before)
    b2 = make_broker()
    ack = Client(b2, v5=True).connect("c5")
    assert 0x26 not in (ack.props or {}) and "store/state" not in _sys(b2)


def test_config_persistence_values():
    assert config.load({"store": {"persistence": "best-effort"}})["store"]["persistence"] == "best-effort"
    assert config.load({"store": {"persistence": "Best-Effort"}}, "board")["store"]["persistence"] == "best-effort"
    cfg = config.override(config.load({}), "store", "persistence", "best-effort")
    assert cfg["store"]["persistence"] == "best-effort"
    assert config.override(config.load({}), "store", "persistence", "false")["store"]["persistence"] is False
    assert config.from_argv(["--persistence", "best-effort", "--data", "/nonexistent-h19"])["store"]["persistence"] == "best-effort"
