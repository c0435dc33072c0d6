# 08: MQTT 5.0 on the same listener, against paho-mqtt's MQTT 5 client and raw
# sockets for bad input, on both runtimes (the MicroPython one with the board
# profile at 64 KiB: 8 connections, 1 KB packets, Receive Maximum 4, 4 topic
# aliases). One test per feature of issue #3; every bad-input case ends with
# the broker still serving others.
import struct
import time

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from . import mqttraw as raw
from .clients import Client, props, round_trip, unique_id
from .raw5 import block, u16, u32

pytestmark = [pytest.mark.timeout(90), pytest.mark.edge_only("5.0 behaviour the issue specifies")]

# Under MicroPython the board runs at 96 KiB (persistence on), an ESP32
# without PSRAM: the 5.0 modules (7.7 KB) with the board's limits do not
# add up at 64 KiB (docs/heap.md "Not yet adding up: 5.0 at 64 KiB"); the
# 3.1.1 suites stay at 64 KiB.
BROKER_CONFIG = {"max_packet_size": 1024, "max_inflight": 4, "max_topic_alias": 4, "board_heap": "96k",
                 "max_keepalive": 300, "response_information": "resp/"}


@pytest.fixture
def b5(runtime, request):
    """The broker for one test: under MicroPython a fresh one per test (with
    the 5.0 support loaded, a 64 KiB board has ~11 KB left for connections,
    and a module's worth of tests fragments it until a 300-byte allocation
    fails: README "MQTT 5.0"); one per module on CPython."""
    return request.getfixturevalue("broker" if runtime == "micropython" else "shared_broker")


def v5(broker, mqtt_client, **kw):
    return mqtt_client(broker, v5=True, **kw)


def still_serving(broker):
    broker.assert_alive()
    round_trip(broker.host, broker.port)
    broker.assert_alive()


def raw5(broker, client_id=None, props_block=b"\x00", **kw):
    """A raw 5.0 connection, CONNACK 0 read; returns (client, CONNACK body)."""
    c = raw.RawClient(broker.host, broker.port)
    c.send(raw.connect(client_id or unique_id("raw5"), level=5, props=props_block, **kw))
    ack = c.expect(raw.CONNACK)
    assert ack.body[1] == 0, ack
    return c, ack.body


def disconnect_reason(c):
    """The reason code of the DISCONNECT the broker sends before closing."""
    while True:
        p = c.read_packet()
        if p.type == raw.DISCONNECT:
            c.wait_closed()
            return p.body[0]


# -- CONNECT / CONNACK --------------------------------------------------------------

def test_connack_properties_assigned_id_and_flags(b5, mqtt_client):
    c = v5(b5, mqtt_client, client_id="", connect=False)
    c.connect()
    p = c.connack_props[0]
    assert p.ReceiveMaximum == 4
    assert p.MaximumPacketSize == 1024
    assert p.TopicAliasMaximum == 4
    assert p.AssignedClientIdentifier  # [MQTT-3.2.2-16]
    for flag in ("RetainAvailable", "WildcardSubscriptionAvailable",
                 "SubscriptionIdentifierAvailable", "SharedSubscriptionAvailable"):
        assert getattr(p, flag, 1) == 1, flag  # absent = available, and all are


@pytest.mark.broker_config(max_retained_messages=0)
def test_retain_available_0_when_nothing_can_be_retained(broker, mqtt_client):
    c = v5(broker, mqtt_client)
    assert c.connack_props[0].RetainAvailable == 0  # truthful (§3.2.2.3.5)
    r, _ = raw5(broker)
    with r:
        r.send(raw.publish("ra/x", b"p", 0, retain=True, props=b"\x00"))
        assert disconnect_reason(r) == 0x9A  # §3.3.1.3
    with raw.RawClient(broker.host, broker.port) as w:
        w.send(raw.connect(unique_id("rw"), level=5, props=b"\x00", will=("ra/w", b"bye", 0, True)))
        assert w.expect(raw.CONNACK).body[1] == 0x9A
        w.wait_closed()
    still_serving(broker)


def test_server_keep_alive_caps_the_keepalive(b5, mqtt_client):
    c = v5(b5, mqtt_client, keepalive=1000, connect=False)
    c.connect()
    assert c.connack_props[0].ServerKeepAlive == 300


def test_request_response_information(b5, mqtt_client):
    cid = unique_id("rri")
    c = v5(b5, mqtt_client, client_id=cid, connect=False,
           connect_props=props("CONNECT", RequestResponseInformation=1))
    c.connect()
    root = c.connack_props[0].ResponseInformation
    assert root == "resp/" + cid  # §3.1.2.11.6, broker.response_information
    c.subscribe(root + "/#", 1)  # a responder answers under it
    v5(b5, mqtt_client).publish(root + "/r1", b"answer", 1)
    assert c.wait_messages(1)[0].payload == b"answer"
    q = v5(b5, mqtt_client, connect=False)  # not asked: not sent
    q.connect()
    assert not hasattr(q.connack_props[0], "ResponseInformation")


def _suback_props(c, topic):
    c.subscribe(topic, 0)
    mid = max(c.suback_props)
    return c.subacks[mid], c.suback_props[mid]


def test_request_problem_information(b5, mqtt_client):
    told = v5(b5, mqtt_client)
    # (paho refuses to send a filter with a misplaced wildcard; this one it sends)
    codes, p = _suback_props(told, "$share//rpi")
    assert codes == [0x8F] and "$share//rpi" in p.ReasonString
    # [MQTT-3.1.2-29] 0: no Reason String (nor User Property) on the SUBACK
    silent = v5(b5, mqtt_client, connect_props=props("CONNECT", RequestProblemInformation=0))
    codes, p = _suback_props(silent, "$share//rpi")
    assert codes == [0x8F] and not hasattr(p, "ReasonString") and not hasattr(p, "UserProperty")
    still_serving(b5)


@pytest.mark.parametrize("pid", [0x17, 0x19])
def test_request_information_not_0_or_1_gets_connack_0x82(b5, pid):
    with raw.RawClient(b5.host, b5.port) as c:
        c.send(raw.connect(unique_id("ri"), level=5, props=block(bytes((pid, 2)))))
        assert c.expect(raw.CONNACK).body[1] == 0x82
        c.wait_closed()
    still_serving(b5)


def test_auth_method_gets_connack_0x8c(b5):
    with raw.RawClient(b5.host, b5.port) as c:
        method = b"SCRAM-SHA-256"
        c.send(raw.connect(unique_id("auth"), level=5, props=block(b"\x15" + u16(len(method)) + method)))
        ack = c.expect(raw.CONNACK)
        assert ack.body[1] == 0x8C
        c.wait_closed()
    still_serving(b5)


# -- Session Expiry, Will Delay, Message Expiry ----------------------------------------

def test_session_expiry_and_its_change_on_disconnect(b5, mqtt_client):
    cid = unique_id("sx")
    topic = "sx/" + cid
    c = v5(b5, mqtt_client, client_id=cid, clean_session=False, connect=False,
           connect_props=props("CONNECT", SessionExpiryInterval=60))
    assert c.connect() == 0
    c.subscribe(topic, 1)
    c.disconnect()
    pub = v5(b5, mqtt_client)
    pub.publish(topic, b"while away", 1)
    c = v5(b5, mqtt_client, client_id=cid, clean_session=False, connect=False,
           connect_props=props("CONNECT", SessionExpiryInterval=60))
    assert c.connect() == 1  # session present
    assert c.wait_messages(1)[0].payload == b"while away"
    # DISCONNECT with Session Expiry Interval 0: the session ends now
    c.disconnect(properties=props("DISCONNECT", SessionExpiryInterval=0))
    c = v5(b5, mqtt_client, client_id=cid, clean_session=False, connect=False,
           connect_props=props("CONNECT", SessionExpiryInterval=60))
    assert c.connect() == 0


def test_will_delay_sent_late_or_cancelled(b5, mqtt_client):
    watcher = v5(b5, mqtt_client)
    base = "wd/" + unique_id("wd")
    watcher.subscribe(base + "/#", 1)
    cid = unique_id("wd")
    for name, back in (("late", False), ("cancelled", True)):
        with raw.RawClient(b5.host, b5.port) as c:
            c.send(raw.connect(cid, clean=False, level=5, props=block(b"\x11" + u32(60)),
                               will=(base + "/" + name, name, 1, False),
                               will_props=block(b"\x18" + u32(2))))
            assert c.expect(raw.CONNACK).body[1] == 0
            gone = time.monotonic()
            c.abort()  # no DISCONNECT: the will is due, after 2 s
        if back:
            again = v5(b5, mqtt_client, client_id=cid, clean_session=False)
            time.sleep(3.5)  # past the delay: nothing may come
            assert [m for m in watcher.messages if m.topic.endswith("/cancelled")] == []
            again.disconnect(properties=props("DISCONNECT", SessionExpiryInterval=0))
        else:
            m = watcher.wait_messages(1, topic=base + "/late")[0]
            assert m.t - gone >= 1.5, m.t - gone


def test_will_sent_at_session_end_before_its_delay(b5, mqtt_client):
    # [MQTT-3.1.3-9] the earlier of Will Delay (30 s) and session end (1 s)
    watcher = v5(b5, mqtt_client)
    topic = "wd/" + unique_id("we")
    watcher.subscribe(topic, 1)
    with raw.RawClient(b5.host, b5.port) as c:
        c.send(raw.connect(unique_id("we"), clean=False, level=5, props=block(b"\x11" + u32(1)),
                           will=(topic, b"end", 1, False), will_props=block(b"\x18" + u32(30))))
        assert c.expect(raw.CONNACK).body[1] == 0
        gone = time.monotonic()
        c.abort()
    m = watcher.wait_messages(1, topic=topic, timeout=10)[0]
    assert m.payload == b"end" and 0.5 <= m.t - gone < 5, m.t - gone


def test_message_expiry_counted_down_and_dropped(b5, mqtt_client):
    cid = unique_id("mx")
    topic = "mx/" + cid
    sub = v5(b5, mqtt_client, client_id=cid, clean_session=False,
             connect_props=props("CONNECT", SessionExpiryInterval=60))
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = v5(b5, mqtt_client)
    pub.publish(topic, b"short", 1, properties=props("PUBLISH", MessageExpiryInterval=1))
    pub.publish(topic, b"long", 1, properties=props("PUBLISH", MessageExpiryInterval=60))
    time.sleep(2.5)
    sub = v5(b5, mqtt_client, client_id=cid, clean_session=False, connect=False,
             connect_props=props("CONNECT", SessionExpiryInterval=0))
    sub.connect()
    m = sub.wait_messages(1)[0]
    time.sleep(0.5)
    assert [x.payload for x in sub.messages] == [b"long"]
    assert 55 <= m.props.MessageExpiryInterval <= 58


# -- flow control, packet size, topic aliases ------------------------------------------

def test_receive_maximum_both_ways(b5, mqtt_client):
    # toward the client: no more unacknowledged QoS 1 than its Receive Maximum 1
    topic = "rm/" + unique_id("rm")
    c, _ = raw5(b5, props_block=block(b"\x21" + u16(1)))
    with c:
        c.send(raw.subscribe(1, [(topic, 1)], props=b"\x00"))
        c.expect(raw.SUBACK)
        pub = v5(b5, mqtt_client)
        for i in range(3):
            pub.publish(topic, b"%d" % i, 1)
        first = c.expect(raw.PUBLISH)
        with pytest.raises(OSError):
            c.read_packet(timeout=1.0)  # nothing more until PUBACK
        c.send(raw.puback(first.publish_fields()[5]))
        c.expect(raw.PUBLISH)
    # from the client: a fifth QoS 2 PUBLISH not released is over our 4
    c, _ = raw5(b5)
    with c:
        for pid in range(1, 6):
            c.send(raw.publish("rm/x", b"q2", 2, pid=pid, props=b"\x00"))
        assert disconnect_reason(c) == 0x93
    still_serving(b5)


def test_maximum_packet_size_both_ways(b5, mqtt_client):
    topic = "mp/" + unique_id("mp")
    small = v5(b5, mqtt_client, connect_props=props("CONNECT", MaximumPacketSize=128))
    small.subscribe(topic, 1)
    pub = v5(b5, mqtt_client)
    pub.publish(topic, b"x" * 300, 1)  # over 128: dropped, counted
    pub.publish(topic, b"fits", 1)
    assert small.wait_messages(1)[0].payload == b"fits"
    time.sleep(0.3)
    assert len(small.messages) == 1
    c, _ = raw5(b5)
    with c:
        c.send(raw.publish("mp/big", b"y" * 1100, 0, props=b"\x00"))  # over our 1024
        assert disconnect_reason(c) == 0x95
    still_serving(b5)


def test_topic_alias_both_ways(b5, mqtt_client):
    topic = "ta/" + unique_id("ta")
    sub = v5(b5, mqtt_client)
    sub.subscribe(topic, 0)
    # toward the broker: set alias 1, then use it alone
    c, _ = raw5(b5, props_block=block(b"\x22" + u16(2)))  # we take 2
    with c:
        c.send(raw.subscribe(1, [(topic, 0)], props=b"\x00"))
        c.expect(raw.SUBACK)
        c.send(raw.publish(topic, b"one", 0, props=block(b"\x23" + u16(1))))
        c.send(raw.publish("", b"two", 0, props=block(b"\x23" + u16(1))))
        got = sub.wait_messages(2)
        assert [(m.topic, m.payload) for m in got] == [(topic, b"one"), (topic, b"two")]
        # toward the client: the first PUBLISH sets alias 1, the next uses it alone
        p1 = c.expect(raw.PUBLISH)
        p2 = c.expect(raw.PUBLISH)
        t = raw.ustr(topic)
        assert p1.body == t + b"\x03\x23\x00\x01" + b"one", p1
        assert p2.body == b"\x00\x00" + b"\x03\x23\x00\x01" + b"two", p2
    for alias in (0, 5):  # 0, and above our Topic Alias Maximum 4
        c, _ = raw5(b5)
        with c:
            c.send(raw.publish(topic, b"x", 0, props=block(b"\x23" + u16(alias))))
            assert disconnect_reason(c) == 0x94, alias
    still_serving(b5)


# -- subscriptions -------------------------------------------------------------------

def test_subscription_options(b5, mqtt_client):
    base = "so/" + unique_id("so")
    me = v5(b5, mqtt_client)
    me.subscribe(base + "/nl", options=SubscribeOptions(qos=1, noLocal=True))
    me.subscribe(base + "/rap", options=SubscribeOptions(qos=1, retainAsPublished=True))
    me.publish(base + "/nl", b"mine", 1)
    other = v5(b5, mqtt_client)
    other.publish(base + "/nl", b"theirs", 1)
    other.publish(base + "/rap", b"kept", 1, retain=True)
    got = me.wait_messages(2)
    assert [(m.topic, m.payload, m.retain) for m in got] == [
        (base + "/nl", b"theirs", 0), (base + "/rap", b"kept", 1)]
    # Retain Handling: 0 at every subscribe, 1 only for a new one, 2 never
    for rh, expect in ((0, 2), (1, 1), (2, 0)):
        s = v5(b5, mqtt_client)
        for _ in range(2):
            s.subscribe(base + "/rap", options=SubscribeOptions(qos=1, retainHandling=rh))
        time.sleep(0.3)
        assert len(s.messages) == expect, (rh, s.messages)
        s.disconnect()
    other.publish(base + "/rap", b"", 1, retain=True)  # clear it


def test_subscription_identifiers(b5, mqtt_client):
    base = "si/" + unique_id("si")
    s = v5(b5, mqtt_client)
    s.subscribe(base + "/+", 1, properties=props("SUBSCRIBE", SubscriptionIdentifier=7))
    s.subscribe(base + "/#", 0, properties=props("SUBSCRIBE", SubscriptionIdentifier=42))
    v5(b5, mqtt_client).publish(base + "/a", b"x", 1)
    m = s.wait_messages(1)[0]
    assert sorted(m.props.SubscriptionIdentifier) == [7, 42] and m.qos == 1


def test_shared_subscriptions(b5, mqtt_client):
    topic = "sh/" + unique_id("sh")
    share = "$share/g/" + topic
    a = v5(b5, mqtt_client)
    b = v5(b5, mqtt_client)
    a.subscribe(share, 1)
    b.subscribe(share, 1)
    pub = v5(b5, mqtt_client)
    for i in range(6):
        pub.publish(topic, b"%d" % i, 1)
    time.sleep(0.5)
    assert len(a.messages) == 3 and len(b.messages) == 3  # round-robin
    assert sorted(m.payload for m in a.messages + b.messages) == [b"%d" % i for i in range(6)]
    # a member that never acknowledges, then goes: its messages go to b
    c, _ = raw5(b5)
    c.send(raw.subscribe(1, [(share, 1)], props=b"\x00"))
    c.expect(raw.SUBACK)
    a.disconnect()
    # a's DISCONNECT and pub's PUBLISHes come on different sockets: publish
    # once the broker has let a go, or a may still be dealt one
    deadline = time.monotonic() + 10
    while "client %s closed" % a.client_id not in b5.log_text():
        assert time.monotonic() < deadline, "the broker never saw a leave"
        time.sleep(0.02)
    b.messages.clear()
    pub.publish(topic, b"to-c-or-b-1", 1)
    pub.publish(topic, b"to-c-or-b-2", 1)
    held = [c.expect(raw.PUBLISH)]
    c.abort()
    b.wait_messages(2)
    assert sorted(m.payload for m in b.messages) == [b"to-c-or-b-1", b"to-c-or-b-2"]
    assert held[0].publish_fields()[1] in (b"\x00to-c-or-b-1", b"\x00to-c-or-b-2")  # (empty property block first)


# -- request/response, user properties, payload format ------------------------------------

def test_properties_forwarded_untouched(b5, mqtt_client):
    topic = "rr/" + unique_id("rr")
    s = v5(b5, mqtt_client, connect_props=props("CONNECT", RequestResponseInformation=1))
    s.subscribe(topic, 1)
    p = props("PUBLISH", ResponseTopic="reply/" + topic, CorrelationData=b"\x00\x01id",
              ContentType="application/json", PayloadFormatIndicator=1,
              UserProperty=[("a", "1"), ("a", "2")])
    v5(b5, mqtt_client).publish(topic, "{\"é\": 1}".encode(), 1, properties=p)
    m = s.wait_messages(1)[0].props
    assert m.ResponseTopic == "reply/" + topic and m.CorrelationData == b"\x00\x01id"
    assert m.ContentType == "application/json" and m.PayloadFormatIndicator == 1
    assert m.UserProperty == [("a", "1"), ("a", "2")]


def test_payload_not_utf8_with_the_indicator_gets_0x99(b5):
    c, _ = raw5(b5)
    with c:
        c.send(raw.publish("pf/x", b"caf\xc3", 1, pid=1, props=block(b"\x01\x01")))
        assert disconnect_reason(c) == 0x99
    still_serving(b5)


@pytest.mark.parametrize("props_block, reason", [
    pytest.param(b"\x05\x01\x01", 0x81, id="length-past-packet"),
    pytest.param(block(b"\x7f\x00"), 0x81, id="unknown-id"),
    pytest.param(block(b"\x01\x01\x01\x00"), 0x82, id="duplicate"),
    pytest.param(block(b"\x11" + u32(5)), 0x81, id="wrong-packet"),
    pytest.param(block(b"\x0b\x01"), 0x82, id="subscription-id-from-client"),
])
def test_malformed_properties(b5, props_block, reason):
    c, _ = raw5(b5)
    with c:
        c.send(raw.publish("mf/x", b"p", 0, props=props_block))
        assert disconnect_reason(c) == reason
    still_serving(b5)


@pytest.mark.parametrize("props_block, reason", [
    pytest.param(block(b"\x7f\x00"), 0x81, id="unknown-id"),
    pytest.param(block(b"\x17\x01\x17\x01"), 0x82, id="duplicate"),
    pytest.param(block(b"\x23" + u16(1)), 0x81, id="wrong-packet"),
])
def test_malformed_connect_properties_get_connack_reason(b5, props_block, reason):
    with raw.RawClient(b5.host, b5.port) as c:
        c.send(raw.connect(unique_id("mc"), level=5, props=props_block))
        ack = c.expect(raw.CONNACK)
        assert ack.body[1] == reason
        c.wait_closed()
    still_serving(b5)


def test_server_disconnect_on_takeover_0x8e_and_keepalive_0x8d(b5):
    cid = unique_id("to")
    first, _ = raw5(b5, cid)
    with first:
        second, _ = raw5(b5, cid)  # [MQTT-3.1.4-3] the first is told why
        with second:
            assert disconnect_reason(first) == 0x8E
    c, _ = raw5(b5, keepalive=1)
    with c:
        t = time.monotonic()
        assert disconnect_reason(c) == 0x8D  # 1.5 x keepalive without a packet
        assert time.monotonic() - t < 4.0
    still_serving(b5)


def test_protocol_error_gets_disconnect_0x82(b5):
    c, _ = raw5(b5)
    with c:
        c.send(b"\xf0\x00")  # AUTH, with no authentication under way
        assert disconnect_reason(c) == 0x82
    still_serving(b5)


# -- mixed versions ----------------------------------------------------------------------

def test_mixed_versions(b5, mqtt_client):
    topic = "mix/" + unique_id("mix")
    old = mqtt_client(b5)
    new = v5(b5, mqtt_client)
    old.subscribe(topic, 1)
    new.subscribe(topic, 1)
    new.publish(topic, b"from 5", 1, properties=props("PUBLISH", UserProperty=[("k", "v")],
                                                       MessageExpiryInterval=30))
    old.publish(topic, b"from 3.1.1", 1)
    assert sorted(m.payload for m in old.wait_messages(2)) == [b"from 3.1.1", b"from 5"]
    got = {m.payload: m for m in new.wait_messages(2)}
    assert got[b"from 5"].props.UserProperty == [("k", "v")]
    assert not hasattr(got[b"from 3.1.1"].props, "UserProperty")


def test_client_class_speaks_both(b5):
    # the helper itself: a 5.0 paho client round trip on its own
    c = Client(b5.host, b5.port, v5=True)
    try:
        c.connect()
        c.subscribe("self/" + c.client_id, 1)
        c.publish("self/" + c.client_id, b"me", 1)
        assert c.wait_messages(1)[0].payload == b"me"
    finally:
        c.disconnect()


def test_full_budget_refuses_new_messages_puback_quota_exceeded(broker_factory, mqtt_client):
    # Issue #4: a full memory budget refuses the new message for an away
    # client (never drops one it queued and acknowledged), and a 5.0
    # publisher hears of it: PUBACK 0x97 Quota exceeded (§3.4.2.1)
    # 1024 of it the away session, its subscription and 3 tree nodes
    # (edge/mqtt/session.py, docs/heap.md)
    # The store off: with it, a board keeps a 3.1.1 session's QoS 1 queue on
    # flash, bounded by store.session_budget instead of the memory budget
    # (docs/persistence.md "Offline queues on flash"), which is what this
    # test is about
    b = broker_factory(memory_budget_bytes=2048, **{"store.persistence": False})
    t = "t08/quota/" + unique_id("q")
    away = unique_id("away")
    sub = mqtt_client(b, client_id=away, clean_session=False)
    sub.subscribe(t, 1)
    sub.disconnect()
    pub = v5(b, mqtt_client)
    codes = {}
    pub.c.on_publish = lambda c, ud, mid, rc, p: codes.__setitem__(mid, rc.value)
    # small payloads: on a 64 KiB board the reconnect's output is one
    # allocation, and a fragmented heap may not have a large one
    mids = [pub.publish(t, b"%03d" % i + b"x" * 20, qos=1).mid for i in range(16)]
    got = [codes[m] for m in mids]
    kept = got.count(0)
    # each held message counts 208 + topic + payload: some fit, the rest are refused
    assert 0 < kept < 16 and got == [0] * kept + [0x97] * (16 - kept), got
    back = mqtt_client(b, client_id=away, clean_session=False, connect=False)
    assert back.connect() == 1  # session present
    msgs = back.wait_messages(kept, topic=t)
    assert [int(m.payload[:3]) for m in msgs] == list(range(kept))  # the queued ones, in order
    b.assert_alive()


def _publish5(p):
    # (pid, payload) of a 5.0 QoS 1/2 PUBLISH read raw: topic, pid, properties
    n = struct.unpack("!H", p.body[:2])[0]
    pid = struct.unpack("!H", p.body[2 + n:4 + n])[0]
    i = 4 + n
    plen = shift = 0
    while True:  # the property block's length, a variable byte integer
        b = p.body[i]
        i += 1
        plen |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    return pid, p.body[i + plen:]


@pytest.mark.parametrize("recv_max", [1, 2, None])
@pytest.mark.parametrize("qos", [1, 2])
def test_receive_maximum_window_with_publishers_elsewhere(broker_factory, mqtt_client, recv_max, qos):
    # A raw 5.0 subscriber with Receive Maximum 1, 2 or the default acks each
    # delivery as it comes; QoS 1/2 messages from another connection arrive
    # all, in order, never more unacknowledged than its window [MQTT-3.3.4-7]
    b = broker_factory()
    t = "t08/window/" + unique_id("w")
    block = b"\x03\x21" + struct.pack("!H", recv_max) if recv_max else b"\x00"
    sub, _ = raw5(b, props_block=block)
    sub.send(raw.subscribe(1, [(t, qos)], props=b"\x00"))
    sub.expect(raw.SUBACK)
    n = 12
    pub = v5(b, mqtt_client)
    for i in range(n):
        pub.publish(t, b"%02d" % i, qos=qos)
    got = []
    unacked = set()
    while len(got) < n:
        p = sub.read_packet(timeout=10)
        if p.type == raw.PUBLISH:
            pid, payload = _publish5(p)
            got.append(payload)
            unacked.add(pid)
            assert len(unacked) <= (recv_max or 65535), unacked
            sub.send(raw.puback(pid) if qos == 1 else raw.pubrec(pid))
            if qos == 1:
                unacked.discard(pid)
        elif p.type == raw.PUBREL:
            pid = struct.unpack("!H", p.body[:2])[0]
            sub.send(raw.pubcomp(pid))
            unacked.discard(pid)
        else:
            raise AssertionError("unexpected %r" % (p,))
    assert got == [b"%02d" % i for i in range(n)]
    sub.close()


@pytest.mark.parametrize("qos", [1, 2])
def test_own_publish_acked_before_its_delivery(broker_factory, qos):
    # A 5.0 client subscribed to the topic it publishes: the answer to its
    # PUBLISH (PUBACK/PUBREC) comes before the delivery that PUBLISH caused
    b = broker_factory()
    t = "t08/self/" + unique_id("s")
    c, _ = raw5(b)
    c.send(raw.subscribe(1, [(t, 2)], props=b"\x00"))
    c.expect(raw.SUBACK)
    c.send(raw.publish(t, b"me", qos=qos, pid=9, props=b"\x00"))
    first = c.read_packet()
    assert first.type == (raw.PUBACK if qos == 1 else raw.PUBREC), first
    assert struct.unpack("!H", first.body[:2])[0] == 9
    assert c.read_packet().type == raw.PUBLISH
    c.close()
