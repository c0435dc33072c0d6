# 04: last will: published on keepalive expiry, on a connection lost without
# DISCONNECT (FIN, RST, killed process), on a protocol error and on takeover;
# never after a clean DISCONNECT (MQTT 3.1.1 §3.1.2.5, [MQTT-3.1.2-8..10]).
import time

import pytest

from . import mqttraw as raw
from .conftest import KEEPALIVE_1S_LATEST
from .clients import MosquittoSub, unique_id

pytestmark = pytest.mark.timeout(60)


def will_topic():
    return "t04/will/" + unique_id("w")


def watcher(broker, mqtt_client, t, qos=1):
    w = mqtt_client(broker)
    w.subscribe(t, qos)
    return w


def test_will_on_keepalive_expiry(shared_broker, mqtt_client):
    t = will_topic()
    w = watcher(shared_broker, mqtt_client, t)
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.connect(unique_id("silent"), keepalive=1, will=(t, b"gone quiet", 1, False))
        t0 = time.monotonic()
        # the client now goes silent, socket left open
        (m,) = w.wait_messages(1, timeout=10, topic=t)
        elapsed = m.t - t0
        assert m.payload == b"gone quiet" and m.qos == 1 and m.retain == 0
        # 1.5 x keepalive = 1.5 s; allow for a broker that polls once a second
        assert 1.0 <= elapsed <= KEEPALIVE_1S_LATEST, "will after %.2fs, expected ~1.5s" % elapsed
        assert c.wait_closed() == b""


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_will_on_socket_closed_without_disconnect(shared_broker, mqtt_client, how):
    t = will_topic()
    w = watcher(shared_broker, mqtt_client, t)
    c = raw.RawClient(shared_broker.host, shared_broker.port)
    c.connect(unique_id("drop"), keepalive=60, will=(t, b"lost " + how.encode(), 1, False))
    t0 = time.monotonic()
    c.close() if how == "fin" else c.abort()
    (m,) = w.wait_messages(1, timeout=5, topic=t)
    assert m.payload == b"lost " + how.encode()
    assert m.t - t0 < 3.0      # on detection of the close, not at keepalive expiry (90 s)


def test_will_on_killed_client_process(shared_broker, mqtt_client):
    b = shared_broker
    t = will_topic()
    w = watcher(b, mqtt_client, t, qos=2)
    victim = MosquittoSub(b.host, b.port, "t04/victim/" + unique_id("v"),
                          extra=["-k", "60", "--will-topic", t, "--will-payload", "killed",
                                 "--will-qos", "2"])
    try:
        victim.wait_subscribed()
        victim.kill()               # SIGKILL: the socket dies with the process
    finally:
        victim.kill()
    (m,) = w.wait_messages(1, timeout=5, topic=t)
    assert (m.payload, m.qos) == (b"killed", 2)


def test_no_will_after_clean_disconnect(shared_broker, mqtt_client):
    t = will_topic()
    w = watcher(shared_broker, mqtt_client, t)
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.connect(unique_id("polite"), will=(t, b"must not appear", 1, False))
        c.send(raw.DISCONNECT_BYTES)
        # [MQTT-3.14.4-3] will discarded; the broker then closes the connection
        assert c.wait_closed() == b""
    mqtt_client(shared_broker).publish(t, b"marker", qos=1)
    w.wait_message(lambda m: m.payload == b"marker")
    assert [m.payload for m in w.messages] == [b"marker"]


def test_no_will_after_paho_disconnect(shared_broker, mqtt_client):
    t = will_topic()
    w = watcher(shared_broker, mqtt_client, t)
    c = mqtt_client(shared_broker, will=(t, b"must not appear", 1, False))
    c.disconnect()
    mqtt_client(shared_broker).publish(t, b"marker", qos=1)
    w.wait_message(lambda m: m.payload == b"marker")
    assert [m.payload for m in w.messages] == [b"marker"]


def test_will_retained_and_qos2(shared_broker, mqtt_client):
    t = will_topic()
    c = raw.RawClient(shared_broker.host, shared_broker.port)
    c.connect(unique_id("retwill"), will=(t, b"offline", 2, True))
    c.abort()
    # a subscriber arriving afterwards gets it as a retained message
    late = mqtt_client(shared_broker)
    late.subscribe(t, 2)
    # the will may be published just after our SUBSCRIBE: live (retain 0) or retained
    m = late.wait_message(lambda m: m.topic == t, timeout=5)
    assert (m.payload, m.qos) == (b"offline", 2)
    later = mqtt_client(shared_broker)
    later.subscribe(t, 2)
    (m2,) = later.wait_messages(1, topic=t)
    assert (m2.payload, m2.qos, m2.retain) == (b"offline", 2, 1)
    # clear the retained will so the shared broker stays tidy
    mqtt_client(shared_broker).publish(t, b"", qos=1, retain=True)


def test_will_on_protocol_error(shared_broker, mqtt_client):
    # [MQTT-3.1.2-8] the server closes because of a protocol error -> will published
    t = will_topic()
    w = watcher(shared_broker, mqtt_client, t)
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.connect(unique_id("bad"), will=(t, b"protocol error", 1, False))
        c.send(raw.publish("x", b"y", first_byte=0x36))     # QoS 3
        c.wait_closed()
    (m,) = w.wait_messages(1, timeout=5, topic=t)
    assert m.payload == b"protocol error"


def test_takeover_publishes_will_of_first_client(shared_broker, mqtt_client):
    t = will_topic()
    w = watcher(shared_broker, mqtt_client, t)
    cid = unique_id("take-will")
    first = raw.RawClient(shared_broker.host, shared_broker.port)
    second = raw.RawClient(shared_broker.host, shared_broker.port)
    try:
        first.connect(cid, will=(t, b"taken over", 1, False))
        second.connect(cid)
        assert first.wait_closed() == b""
        (m,) = w.wait_messages(1, timeout=5, topic=t)
        assert m.payload == b"taken over"
        # the new connection has no will: its clean DISCONNECT publishes nothing more
        second.send(raw.DISCONNECT_BYTES)
        second.wait_closed()
        mqtt_client(shared_broker).publish(t, b"marker", qos=1)
        w.wait_message(lambda m: m.payload == b"marker")
        assert [m.payload for m in w.messages] == [b"taken over", b"marker"]
    finally:
        first.close()
        second.close()


def test_takeover_continuing_the_session_sends_no_will(shared_broker, mqtt_client):
    # Both connections with clean session 0: the session continues, the
    # client is back, so the old connection's will is not published
    # ([MQTT-3.1.3-9] in 5.0; established brokers do the same for 3.1.1)
    t = will_topic()
    w = watcher(shared_broker, mqtt_client, t)
    cid = unique_id("take-keep")
    first = raw.RawClient(shared_broker.host, shared_broker.port)
    second = raw.RawClient(shared_broker.host, shared_broker.port)
    try:
        first.connect(cid, clean=False, will=(t, b"must not go", 1, False))
        ack = second.connect(cid, clean=False)
        assert ack.body[0] == 1  # session present
        assert first.wait_closed() == b""
        second.send(raw.DISCONNECT_BYTES)
        second.wait_closed()
        mqtt_client(shared_broker).publish(t, b"marker", qos=1)
        w.wait_message(lambda m: m.payload == b"marker")
        assert [m.payload for m in w.messages] == [b"marker"]
    finally:
        first.close()
        second.close()

