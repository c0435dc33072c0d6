# 08: flash persistence across restarts (issue #4, docs/design.md "Delivery
# guarantees"): a persistent session with its subscription and queued QoS 1
# messages, and a retained message, survive kill -9; a torn tail and a
# garbage segment in the data directory do not stop the start, the log says
# what was cut and quarantined, and what came before the damage is kept.
# The core-level cases (every cut position, bit flips, zero tails) are in
# tests/core/test_store_damage.py; the many-kill run is tests/test_crash_harness.py.
#
# MicroPython runs these at a 256 KiB heap: at the board's 64 KiB the store
# does not fit and the broker starts without it (logged), see README
# "Persistence".
import os

import pytest

from . import conftest
from . import mqttraw as raw
from .clients import unique_id

pytestmark = [pytest.mark.timeout(90), pytest.mark.edge_only("edgebroker's store")]


@pytest.fixture(autouse=True)
def _heap_for_the_store():
    old = conftest.HEAPSIZE
    conftest.HEAPSIZE = "256k"
    yield
    conftest.HEAPSIZE = old


def _kill9_restart(b):
    assert "persistence OFF" not in b.log_text(), b.log_tail()
    b.proc.kill()
    b.proc.wait()
    b.stop()  # closes its log file
    b.start()


def _fill(b, mqtt_client, cid, base, n):
    sub = mqtt_client(b, client_id=cid, clean_session=False)
    assert sub.subscribe(base + "/#", 1) == [1]
    sub.disconnect()
    pub = mqtt_client(b)
    pub.publish(base + "/r", b"kept", 1, retain=True)
    for i in range(n):
        pub.publish(base + "/m", b"%d" % i, 1)  # PUBACKed: durable
    pub.disconnect()


def test_session_queue_and_retained_survive_kill9(broker_factory, mqtt_client):
    b = broker_factory()
    cid, base = unique_id("p08"), "t08/" + unique_id("k")
    _fill(b, mqtt_client, cid, base, 5)
    _kill9_restart(b)
    sub = mqtt_client(b, client_id=cid, clean_session=False, connect=False)
    assert sub.connect() == 1  # [MQTT-3.2.2-2] the session came back
    got = sub.wait_messages(5, topic=base + "/m")
    assert [m.payload for m in got] == [b"%d" % i for i in range(5)]
    sub.wait_message(lambda m: m.topic == base + "/r", what="the retained publish, queued")
    fresh = mqtt_client(b)
    fresh.subscribe(base + "/r", 1)
    m = fresh.wait_message(lambda m: m.topic == base + "/r", what="retained")
    assert m.payload == b"kept" and m.retain
    b.assert_alive()


def _tail(names):
    # The file that holds the end of the last segment: the segment itself,
    # or on MicroPython its last piece, `<segment>+<offset>` (a small synced
    # batch kept as a file of its own: docs/persistence.md "Flash wear")
    last = max((n.partition("+")[0] for n in names), key=lambda n: int(n.split(".")[1]))
    pieces = [n for n in names if n.startswith(last + "+")]
    return max(pieces, key=lambda n: int(n.rpartition("+")[2])) if pieces else last


def test_torn_tail_and_garbage_segment_at_start(broker_factory, mqtt_client):
    b = broker_factory()
    cid, base = unique_id("p08"), "t08/" + unique_id("g")
    _fill(b, mqtt_client, cid, base, 3)
    b.stop()
    data = b.workdir / "data"
    segs = sorted(n for n in os.listdir(data) if n.startswith("state."))
    assert segs, os.listdir(data)
    with open(data / _tail(segs), "ab") as f:
        f.write(b"\x13\x40\x07half a record, then the power went")  # a torn tail
    with open(data / "state.999", "wb") as f:
        f.write(os.urandom(300))  # not a store file at all
    b.start()
    log = b.log_text()
    assert "cut at byte" in log, b.log_tail()
    assert "state.999 unreadable" in log and "quarantined as state.999.corrupt-" in log, b.log_tail()
    assert any(n.startswith("state.999.corrupt-") for n in os.listdir(data))
    sub = mqtt_client(b, client_id=cid, clean_session=False, connect=False)
    assert sub.connect() == 1
    got = sub.wait_messages(3, topic=base + "/m")
    assert [m.payload for m in got] == [b"0", b"1", b"2"]
    b.assert_alive()


def test_qos1_in_flight_at_kill9_is_resent_with_its_pid_and_dup(broker_factory):
    # [MQTT-4.4.0-1] a QoS 1 PUBLISH the subscriber got and did not ack is
    # resent after a kill -9 with the same packet id and DUP 1 (issue #19:
    # its pid is on flash, docs/persistence.md "What persists")
    b = broker_factory()
    cid, topic = unique_id("p08d"), "t08/" + unique_id("d")
    with raw.RawClient(b.host, b.port) as sub:
        sub.connect(cid, clean=False)
        sub.send(raw.subscribe(1, [(topic, 1)]))
        assert sub.expect(raw.SUBACK).body[2:] == b"\x01"
        with raw.RawClient(b.host, b.port) as pub:
            pub.connect(unique_id("p08p"))
            pub.send(raw.publish(topic, b"once", 1, pid=7))
            assert pub.expect(raw.PUBACK).body == b"\x00\x07"  # durable from here on
        first = sub.expect(raw.PUBLISH).publish_fields()
        assert first[1] == b"once" and first[2] == 1 and not first[4], first
        # no PUBACK from the subscriber
        _kill9_restart(b)
    with raw.RawClient(b.host, b.port) as sub:
        assert sub.connect(cid, clean=False).session_present
        again = sub.expect(raw.PUBLISH).publish_fields()
        # (topic, payload, qos, retain, dup, pid): the same pid, DUP 1
        assert again == (topic, b"once", 1, False, True, first[5]), (first, again)
        sub.send(raw.puback(first[5]))
        sub.send(raw.PINGREQ_BYTES)
        sub.expect(raw.PINGRESP)  # nothing else was queued
    b.assert_alive()


@pytest.mark.micropython_only("a board's offline queue on flash (edge/store/fqueue.py)")
@pytest.mark.timeout(240)
def test_board_queue_larger_than_its_heap_survives_kill9_and_drains_in_order(broker_factory, mqtt_client):
    # Issue #19: on the 96 KiB board an away session's QoS 1 queue is on
    # flash, so 300 messages of 64 bytes (about 113 KB held in RAM, and
    # some 470 KiB of heap to replay them there: python -m tools.replayheap
    # --ram --min-heap) survive a kill -9, replay and drain in order
    n = 300
    b = broker_factory(board_heap="96k", **{"store.persistence": True})
    cid, base = unique_id("p08q"), "t08/" + unique_id("q")
    sub = mqtt_client(b, client_id=cid, clean_session=False)
    assert sub.subscribe(base + "/#", 1) == [1]
    sub.disconnect()
    pub = mqtt_client(b)
    for i in range(n):
        pub.publish(base + "/m", b"%03d" % i + bytes(61), 1)  # PUBACKed: durable
    pub.disconnect()
    _kill9_restart(b)
    assert "%d queued" % n in b.log_text(), b.log_tail()  # replay counted them, on flash
    sub = mqtt_client(b, client_id=cid, clean_session=False, connect=False)
    assert sub.connect() == 1
    got = sub.wait_messages(n, timeout=120, topic=base + "/m")
    assert [m.payload[:3] for m in got] == [b"%03d" % i for i in range(n)]
    assert "MemoryError" not in b.log_text(), b.log_tail()
    b.assert_alive()
