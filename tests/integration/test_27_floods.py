# 27: floods (issue #21, 6), on the board (tools/board.py at 80 KiB, see
# BROKER_CONFIG; persistence off) and on CPython: 100 connections at once,
# a client that subscribes to `#` and never reads, a publisher at full speed with 1 KB payloads. The
# broker refuses what exceeds its limits (counted in $SYS/broker/...), keeps
# serving a well-behaved client (a QoS 1 round trip during and after the
# flood), stays up, and never prints a MemoryError or a traceback.
#
# Each attacker has its own loopback address (Linux routes 127/8 to lo), as
# on a plant's network: the 100 connections from 127.0.0.1 (their quota,
# max_connections_per_address, holds 2 of the board's 6 slots), the `#`
# reader from 127.0.0.3, the publisher from 127.0.0.4, the well-behaved
# client from 127.0.0.2.
import socket
import threading
import time

import pytest

from . import mqttraw as raw
from ._limits import raw_from, round_trip_qos1
from .clients import unique_id

pytestmark = [pytest.mark.timeout(120), pytest.mark.edge_only("edgebroker's limits and $SYS")]

FLOOD_SECONDS = 8
BROKER_CONFIG = {
    "max_connections_per_address": 2,
    "connect_timeout": 2,  # the silent half of the 100 is closed within the test
    "store.persistence": False,
    "sys_interval": 1,
    # The board at 80 KiB, where this holds with the board's defaults (3 runs
    # of 3, no connection closed out of memory). At 64 KiB it does not yet:
    # the heap is full to the last few KB in pieces (docs/heap.md "Floods")
    "board_heap": "80k",
}
PAYLOAD = b"p" * 1000  # with its header under the board's max_packet_size of 1024
FLOODERS = 6  # test_new_client_served_under_publish_flood


def _open_100(broker):
    """100 sockets at once from 127.0.0.1: half send a CONNECT, half nothing."""
    socks = []
    for i in range(100):
        try:
            s = socket.create_connection((broker.host, broker.port), timeout=5,
                                         source_address=("127.0.0.1", 0))
        except OSError:
            continue  # the listen backlog was full: refused too
        socks.append(s)
        if i % 2:
            try:
                s.sendall(raw.connect(unique_id("flood%d" % i)))
            except OSError:
                pass
    return socks


def _silent_subscriber(broker):
    """Subscribes to # at QoS 1 from 127.0.0.3, then never reads."""
    c = raw_from(broker, "127.0.0.3")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills soon
    c.connect(unique_id("deaf"))
    c.send(raw.subscribe(1, [("#", 1)]))
    c.expect(raw.SUBACK)
    return c


def _publisher(broker, stop, sent):
    """QoS 0, 1 KB payloads, as fast as the socket takes them, from 127.0.0.4."""
    c = raw_from(broker, "127.0.0.4")
    c.connect(unique_id("firehose"))
    batch = raw.publish("flood/firehose", PAYLOAD) * 16
    c.sock.settimeout(0.5)
    try:
        while not stop.is_set():
            try:
                c.sock.sendall(batch)
                sent[0] += 16
            except socket.timeout:
                continue  # held back: the broker reads it at its rate
    except OSError:
        pass  # closed by the broker: also a refusal
    finally:
        c.close()


def _sys_values(broker):
    """Every $SYS/broker/ value, read from 127.0.0.2 (sent at once on
    subscribing, as retained)."""
    c = raw_from(broker, "127.0.0.2")
    try:
        c.connect(unique_id("sys"), timeout=10)
        c.send(raw.subscribe(1, [("$SYS/broker/#", 0)]))
        got = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:  # all of them come at once: read until a quiet second
                p = c.read_packet(1.0 if got else 5.0)
            except socket.timeout:
                break
            if p.type == raw.PUBLISH:
                topic, payload = p.publish_fields()[:2]
                got[topic[len("$SYS/broker/"):]] = payload.decode()
        return got
    finally:
        c.close()


def test_floods(broker):
    stop = threading.Event()
    sent = [0]
    deaf = _silent_subscriber(broker)
    pub = threading.Thread(target=_publisher, args=(broker, stop, sent), daemon=True)
    pub.start()
    socks = []
    during = []
    try:
        socks = _open_100(broker)
        t_end = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < t_end:
            # a well-behaved client is served during the flood (the bound is
            # generous: a loaded 2-core machine runs every test at once)
            during.append(round_trip_qos1(broker, unique_id("good"), timeout=10))
            broker.assert_alive()
        assert during and max(during) < 5, during
    finally:
        stop.set()
        pub.join(10)
        for s in socks:
            s.close()
        deaf.close()
    broker.assert_alive()
    after = round_trip_qos1(broker, unique_id("after"), timeout=10)
    assert after < 5
    v = _sys_values(broker)
    assert sent[0] > 100, "the publisher never got going (%d sent)" % sent[0]
    # refused: the 100 beyond their address's quota (or the board's 6 slots)
    assert int(v["limits/max_connections_per_address"]) + int(v["limits/max_connections"]) >= 90, v
    assert int(v["limits/connect_timeout"]) >= 1, v  # the silent ones that got a slot
    # the `#` reader that never reads: its QoS 0 copies dropped, counted
    assert int(v["publish/messages/dropped"]) >= 1, v
    if broker.runtime == "micropython":  # the board's max_packet_rate (500 a second)
        assert int(v["limits/max_packet_rate"]) >= 1, v
    # refused by the limits, not by a full heap
    assert v["clients/out of memory"] == "0", v
    log = broker.log_text()
    assert "MemoryError" not in log and "Traceback" not in log, broker.log_tail()
    assert "limits refused" in log  # logged as counts, once an interval
    assert len([ln for ln in log.splitlines() if "limits refused" in ln]) <= FLOOD_SECONDS + 20
    broker.assert_alive()


def _flooder(broker, i, stop):
    """QoS 0, 1 KB payloads, as fast as the socket takes them (its own
    address: none of the quotas applies)."""
    c = raw_from(broker, "127.0.1.%d" % (i + 1))
    c.connect(unique_id("fl%d" % i))
    batch = raw.publish("flood/%d" % i, PAYLOAD) * 64
    c.sock.settimeout(0.5)
    try:
        while not stop.is_set():
            try:
                c.sock.sendall(batch)
            except socket.timeout:
                continue
    except OSError:
        pass
    finally:
        c.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_new_client_served_under_publish_flood(runtime, broker_factory, monkeypatch, loop):
    # 6 publishers flooding: a new client's CONNACK and a QoS 1 round trip
    # within a bound generous for a loaded 2-core machine. uvloop read a
    # flooding socket up to 32 times a loop pass (libuv): a new client
    # waited 2.5-6 s here (11-31 s measured last session with other floods)
    # before tcp_cpython.py paused a peer after a read of 64 KiB until the
    # next pass
    if runtime != "cpython":
        pytest.skip("the CPython event loops")
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    monkeypatch.setenv("EDGEBROKER_LOOP", loop)
    broker = broker_factory()
    assert "event loop: %s" % loop in broker.log_text()
    stop = threading.Event()
    threads = [threading.Thread(target=_flooder, args=(broker, i, stop), daemon=True)
               for i in range(FLOODERS)]
    for t in threads:
        t.start()
    took = []
    try:
        time.sleep(1.0)  # the flood under way (a fixed warm-up, not a wait for a result)
        for _ in range(5):
            took.append(round_trip_qos1(broker, unique_id("new"), timeout=30))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    # 0.05-0.17 s on either loop on the CI machine; uvloop before the
    # fix: 2.5-6 s. 3 s: far above the one, below most of the other
    assert max(took) < 3, took
    broker.assert_alive()
