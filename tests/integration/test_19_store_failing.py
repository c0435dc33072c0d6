# 17: no ack without a store (issue #19, docs/persistence.md "When the store
# cannot keep it"). With store.persistence on, a store that cannot open stops
# the start with a message naming what is missing (a board heap too small
# for it); "best-effort" runs without it and tells 5.0 clients in CONNACK and
# everyone in $SYS/broker/store/state. A store that fails while running (its
# directory gone: writes and syncs fail, as on a failing flash) refuses new
# QoS 1/2 publishes: 5.0 PUBACK/PUBREC 0x80, 3.1.1 the connection closed with
# no PUBACK; the acks already held wait, and go out once the store writes
# again; what they acknowledged survives a restart.
import os
import time

import pytest

from . import mqttraw as raw
from .clients import unique_id
from .raw5 import raw5

pytestmark = [pytest.mark.timeout(120), pytest.mark.edge_only("edgebroker's store")]


def test_a_heap_without_room_for_the_store_stops_the_start(runtime, broker_factory):
    if runtime != "micropython":
        pytest.skip("the heap check is the board's (CPython has no heap limit)")
    with pytest.raises(RuntimeError) as e:
        broker_factory(**{"store.persistence": True, "board_heap": "64k"})
    text = str(e.value)
    assert "exited with 2" in text, text
    assert "store.persistence: the store cannot open (" in text and "bytes of heap free, 38912 needed" in text, text
    assert 'store.persistence = "best-effort"' in text and "Traceback" not in text, text


def test_best_effort_runs_without_the_store_and_says_so(runtime, broker_factory, mqtt_client):
    if runtime != "micropython":
        pytest.skip("a store that cannot open on CPython: the failing-store test below")
    b = broker_factory(**{"store.persistence": "best-effort", "board_heap": "64k"})
    assert "running WITHOUT persistence" in b.log_text(), b.log_tail()
    c = mqtt_client(b, v5=True)
    props = c.connack_props[0]
    assert ("store", "best-effort") in props.UserProperty, props
    assert "bytes of heap free" in props.ReasonString, props
    c.subscribe("$SYS/broker/store/state", 0)
    m = c.wait_message(lambda m: m.topic == "$SYS/broker/store/state", what="store state")
    assert m.payload == b"best-effort"
    # and it serves QoS 1 (from RAM, as it said)
    c.subscribe("t17/q1", 1)
    c.publish("t17/q1", b"x", 1)
    c.wait_message(lambda m: m.topic == "t17/q1")


def _failing_broker(runtime, broker_factory):
    # a store that opens (MicroPython: a heap with room for it); small
    # segments, so that CPython (which keeps its segment file open) starts a
    # new file soon after the directory is gone
    cfg = {"store.segment_bytes": 1024}
    if runtime == "micropython":
        cfg["board_heap"] = "128k"
    return broker_factory(**cfg)


def _data_dir(b):
    return str(b.workdir / "data")


def _wait_log(b, text, timeout=20.0):
    deadline = time.monotonic() + timeout
    while text not in b.log_text():
        b.assert_alive()
        assert time.monotonic() < deadline, "no %r in the log:\n%s" % (text, b.log_tail())
        time.sleep(0.05)  # polling the log, not waiting blindly


def _publish_until_held(b, pub, topic):
    # QoS 1 publishes, each waiting for its PUBACK, until one gets none: its
    # record could not be written (the acks wait for the store); the pids
    # acknowledged, and the one held
    acked = []
    for pid in range(1, 200):
        pub.send(raw.publish(topic, b"m%03d" % pid + b"." * 200, qos=1, pid=pid))
        try:
            ack = pub.expect(raw.PUBACK, timeout=3.0)
        except OSError:  # socket.timeout: held
            return acked, pid
        assert ack.body[:2] == bytes((pid >> 8, pid & 0xFF)) and ack.body[2:3] in (b"", b"\x00"), ack
        acked.append(pid)
    raise AssertionError("every PUBACK came: the store never failed\n" + b.log_tail())


def test_a_failing_store_refuses_new_qos12_until_it_writes_again(runtime, broker_factory, mqtt_client):
    b = _failing_broker(runtime, broker_factory)
    assert "store:" in b.log_text() and "WITHOUT" not in b.log_text(), b.log_tail()
    topic = "t17/" + unique_id("f")
    sid = unique_id("s17")
    sub = mqtt_client(b, client_id=sid, clean_session=False)
    sub.subscribe(topic, 1)
    sub.disconnect()  # offline: what it is sent is queued in the store
    watch = mqtt_client(b, v5=True)
    watch.subscribe("$SYS/broker/store/state", 0)
    watch.wait_message(lambda m: m.payload == b"ok", what="store state ok")
    pub = raw.RawClient(b.host, b.port)
    pub.connect(unique_id("p17"), clean=False)
    d = _data_dir(b)
    os.rename(d, d + ".away")  # as a flash that fails: every write and sync from now
    try:
        acked, held = _publish_until_held(b, pub, topic)
        watch.wait_message(lambda m: m.payload == b"failing", what="store state failing")
        # 5.0: refused with 0x80 (5.0 §3.4.2.1), QoS 2 too (§3.5.2.1), at once
        p5, _ = raw5(b)
        p5.send(raw.publish(topic, b"refused", qos=1, pid=5, props=b"\x00"))
        ack = p5.expect(raw.PUBACK, timeout=5.0)
        assert ack.body[:3] == b"\x00\x05\x80", ack
        p5.send(raw.publish(topic, b"refused2", qos=2, pid=6, props=b"\x00"))
        ack = p5.expect(raw.PUBREC, timeout=5.0)
        assert ack.body[:3] == b"\x00\x06\x80", ack
        # a 5.0 client connecting now is told
        late = mqtt_client(b, v5=True)
        assert ("store", "failing") in late.connack_props[0].UserProperty
        # 3.1.1: no PUBACK, the connection closed
        p3 = raw.RawClient(b.host, b.port)
        p3.connect(unique_id("q17"))
        p3.send(raw.publish(topic, b"refused3", qos=1, pid=9))
        got = p3.wait_closed(10.0)
        assert got == b"", "3.1.1: closed with no PUBACK, got %r" % got
        _wait_log(b, "store failing: QoS 1 PUBLISH 9 not acknowledged")
    finally:
        os.rename(d + ".away", d)  # the flash is back
    # the held PUBACK goes out once its record is written and synced
    ack = pub.expect(raw.PUBACK, timeout=15.0)
    assert ack.body[:2] == bytes((held >> 8, held & 0xFF)), ack
    seen = len(watch.messages)
    watch.wait_for(lambda: b"ok" in [m.payload for m in watch.messages[seen:]], what="store state ok again")
    p5.send(raw.publish(topic, b"accepted", qos=1, pid=7, props=b"\x00"))
    ack = p5.expect(raw.PUBACK, timeout=10.0)
    assert ack.body[:2] == b"\x00\x07" and ack.body[2:3] in (b"", b"\x00"), ack
    pub.close()
    p5.close()
    # what was acknowledged is kept: after a restart the subscriber gets it
    # all, and nothing that was refused
    b.stop()
    b.start()
    sub = mqtt_client(b, client_id=sid, clean_session=False, connect=False)
    assert sub.connect() == 1
    want = [b"m%03d" % p for p in acked + [held]] + [b"accepted"]
    got = sub.wait_messages(len(want), topic=topic)
    payloads = [m.payload.rstrip(b".") for m in got]
    assert payloads[:len(want)] == want, payloads
    assert not [p for p in payloads if p.startswith(b"refused")]
