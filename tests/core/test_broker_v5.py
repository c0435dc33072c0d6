# MQTT 5.0 broker flows with in-memory clients (no sockets): CONNECT/CONNACK
# properties, server DISCONNECT reason codes, session expiry, will delay,
# message expiry, flow control, topic aliases, mixed 3.1.1/5.0 delivery.
# Plain assert functions so tests/mpy_runner.py runs them under MicroPython.
from edge.mqtt import codec
from edge.mqtt.consts import CONNACK, DISCONNECT, PUBACK, PUBLISH, PUBREC
from edge.mqtt.packets import Disconnect, Pubrec, Publish, Subscribe, Unsubscribe
from tests.core._pair import Client, make_broker, publish, publishes, pubrel


def _v5(b, cid, **kw):
    c = Client(b, v5=True)
    ack = c.connect(cid, **kw)
    assert ack.kind == CONNACK and ack.reason == 0, (ack.kind, ack.reason)
    return c, ack


def _disconnected(c):
    pkts = c.recv()
    assert c.closed
    assert pkts and pkts[-1].kind == DISCONNECT, [p.kind for p in pkts]
    return pkts[-1].reason


def test_connack_properties_and_truthful_flags():
    b = make_broker(max_inflight=7, max_packet_size=4096, max_topic_alias=3)
    c, ack = _v5(b, "c1")
    assert ack.props[0x21] == 7          # Receive Maximum
    assert ack.props[0x27] == 4096       # Maximum Packet Size
    assert ack.props[0x22] == 3          # Topic Alias Maximum
    assert 0x12 not in ack.props and 0x13 not in ack.props
    # absent Retain / Wildcard Available mean available; what is not served says 0
    assert 0x25 not in ack.props and 0x28 not in ack.props
    assert not b.conns[c.cid].closing


def test_retain_available_0_when_nothing_can_be_retained():
    b = make_broker(max_retained_messages=0)
    c, ack = _v5(b, "c")
    assert ack.props[0x25] == 0  # truthful: absent would mean available
    pkts = publish(c, "r", b"x", retain=True)
    assert c.closed and pkts[-1].kind == DISCONNECT and pkts[-1].reason == 0x9A  # §3.3.1.3
    w = Client(b, v5=True)
    ack = w.connect("w", will_topic="w", will_payload=b"bye", will_retain=True)
    assert ack.reason == 0x9A and w.closed  # §3.2.2.3.5
    ok, _ = _v5(b, "ok")
    publish(ok, "plain", b"x")
    assert not ok.closed
    b = make_broker(max_retained_bytes=0)
    _, ack = _v5(b, "c")
    assert ack.props[0x25] == 0


def test_assigned_client_identifier_also_without_clean_start():
    b = make_broker()
    c, ack = _v5(b, "", clean=False, props={0x11: 30})
    cid = ack.props[0x12]
    assert cid and cid in b.sessions and b.sessions[cid].conn is b.conns[c.cid]


def test_zero_length_id_refused_with_0x85_when_not_allowed():
    b = make_broker(allow_zero_length_clientid=False)
    c = Client(b, v5=True)
    ack = c.connect("")
    assert ack.reason == 0x85 and c.closed


def test_server_keep_alive_caps_instead_of_refusing():
    b = make_broker(max_keepalive=30)
    c, ack = _v5(b, "k", keepalive=600)
    assert ack.props[0x13] == 30
    assert b.conns[c.cid].keepalive == 30
    c2, ack2 = _v5(b, "k0", keepalive=0)  # 0 (none) is capped too
    assert ack2.props[0x13] == 30
    c3, ack3 = _v5(b, "k3", keepalive=20)
    assert 0x13 not in ack3.props
    # keepalive timeout: DISCONNECT 0x8D
    b.tick(46000)
    assert _disconnected(c) == 0x8D


def test_request_response_information():
    # §3.1.2.11.6: Response Information only when asked for and configured
    b = make_broker(response_information="resp/")
    _, ack = _v5(b, "asker", props={0x19: 1})
    assert ack.props[0x1A] == "resp/asker"
    _, ack = _v5(b, "quiet", props={0x19: 0})
    assert 0x1A not in ack.props
    _, ack = _v5(b, "", props={0x19: 1})  # the assigned id is the root's end
    assert ack.props[0x1A] == "resp/" + ack.props[0x12]
    b = make_broker()  # default "": never sent
    _, ack = _v5(b, "asker", props={0x19: 1})
    assert 0x1A not in ack.props


def test_request_problem_information():
    b = make_broker()
    c, _ = _v5(b, "told")  # absent: 1, a refused filter is explained
    ack = c.subscribe(("a/#/b", 0))[0]
    assert ack.codes == [0x8F] and "a/#/b" in ack.props[0x1F]
    c, _ = _v5(b, "small", props={0x27: 8})  # no Reason String over its Maximum Packet Size
    ack = c.subscribe(("a/#/b", 0))[0]
    assert ack.codes == [0x8F] and not ack.props
    # [MQTT-3.1.2-29] 0: no Reason String on a SUBACK ...
    c, _ = _v5(b, "silent", props={0x17: 0})
    ack = c.subscribe(("a/#/b", 0), ("ok", 0))[0]
    assert ack.codes == [0x8F, 0] and not ack.props and not c.closed
    # ... but still on a DISCONNECT (allowed there)
    c.send_raw(b"\xf0\x00")
    c.recv()
    assert c.closed


def test_a_filter_refused_for_a_limit_is_explained():
    # a refused subscription carries a Reason String naming the limit
    b = make_broker(max_subscriptions=1)
    c, _ = _v5(b, "c")
    ack = c.subscribe(("a", 0), ("b", 1), ("$share/g/c", 1))[0]
    assert ack.codes == [0, 0x97, 0x97]  # 5.0: Quota exceeded for a limit of ours (§3.9.3)
    assert "max_subscriptions 1 reached" in ack.props[0x1F]
    assert b.stats.subs_refused == 2


def test_request_information_not_0_or_1_is_a_protocol_error():
    b = make_broker()
    for pid in (b"\x17", b"\x19"):  # raw: our encoder refuses the value
        c = Client(b, v5=True)
        c.send_raw(b"\x10\x12\x00\x04MQTT\x05\x02\x00\x3c\x02" + pid + b"\x02\x00\x03bad")
        ack = c.recv()[0]
        assert ack.kind == CONNACK and ack.reason == 0x82 and c.closed
    ok, _ = _v5(b, "other")
    assert not ok.closed


def test_auth_method_gets_connack_0x8c():
    b = make_broker()
    c = Client(b, v5=True)
    ack = c.connect("a", props={0x15: "SCRAM-SHA-1", 0x16: b"x"})
    assert ack.reason == 0x8C and c.closed
    ok, _ = _v5(b, "other")  # the broker serves on
    assert not ok.closed


def test_auth_packet_and_protocol_errors_get_disconnect_reason():
    b = make_broker()
    c, _ = _v5(b, "a")
    c.send_raw(b"\xf0\x00")  # AUTH with no authentication started
    assert _disconnected(c) == 0x82
    c, _ = _v5(b, "b")
    # a PUBLISH whose property block runs past the packet: malformed
    c.send_raw(b"\x30\x07\x00\x01t\x05\x01\x01x")
    assert _disconnected(c) == 0x81
    c, _ = _v5(b, "c")
    c.send_raw(b"\x30\x09\x00\x01t\x04\x01\x01\x01\x01x")  # Payload Format given twice
    assert _disconnected(c) == 0x82
    c, _ = _v5(b, "d")
    c.send_raw(b"\x30\x06\x00\x01t\x02\x11\x00")  # Session Expiry in PUBLISH
    assert _disconnected(c) == 0x81
    c, _ = _v5(b, "e")
    c.send_raw(b"\x30\x06\x00\x01t\x02\x7f\x00")  # unknown property id
    assert _disconnected(c) == 0x81


def test_session_taken_over_gets_0x8e():
    b = make_broker()
    c, _ = _v5(b, "same")
    _v5(b, "same")
    assert _disconnected(c) == 0x8E


def test_session_expiry_keeps_then_ends_the_session():
    b = make_broker()
    c, _ = _v5(b, "s", clean=False, props={0x11: 10})
    c.subscribe(("t", 1))
    c.lose(1000)
    assert "s" in b.sessions
    p, _ = _v5(b, "p")
    publish(p, "t", b"queued", 1, pid=1)
    b.tick(5000)
    c2 = Client(b, v5=True)
    ack = c2.connect("s", clean=False, props={0x11: 10}, now=6000)
    assert ack.session_present
    assert [m.payload for m in publishes(c2.recv())] == [b"queued"]
    c2.lose(7000)
    b.tick(16999)
    assert "s" in b.sessions
    b.tick(17001)
    assert "s" not in b.sessions
    # Session Expiry absent (0): the session ends with the connection
    c3, _ = _v5(b, "zero", clean=False)
    c3.lose(0)
    assert "zero" not in b.sessions


def test_session_expiry_changed_on_disconnect():
    b = make_broker()
    c, _ = _v5(b, "s", clean=False, props={0x11: 100})
    c.send(Disconnect(0, {0x11: 0}))
    assert c.closed and "s" not in b.sessions
    c, _ = _v5(b, "s2", clean=False, props={0x11: 5})
    c.send(Disconnect(0, {0x11: 0xFFFFFFFF}))
    b.tick(10 ** 9)
    assert "s2" in b.sessions  # never expires now
    # [MQTT-3.14.2-2] from 0 to non-zero: a protocol error
    c, _ = _v5(b, "s3")
    c.send(Disconnect(0, {0x11: 60}))
    assert _disconnected(c) == 0x82
    assert "s3" not in b.sessions


def _watch_wills(b, topic="will/#"):
    w, _ = _v5(b, "watcher")
    w.subscribe((topic, 0))
    return w


def test_will_delay_cancelled_by_reconnect_in_time():
    b = make_broker()
    w = _watch_wills(b)
    will = {"will_topic": "will/a", "will_payload": b"gone", "will_props": {0x18: 5}}
    c, _ = _v5(b, "a", clean=False, props={0x11: 60}, **will)
    c.lose(1000)
    b.tick(3000)
    assert publishes(w.recv()) == []
    _v5(b, "a", clean=False, props={0x11: 60}, now=4000)
    b.tick(7000)
    assert publishes(w.recv()) == []


def test_takeover_that_continues_the_session_cancels_the_will():
    # [MQTT-3.1.3-9] a new connection for the session before the Will Delay
    # has passed (a takeover is one): no will, delayed or not
    b = make_broker()
    w = _watch_wills(b)
    for delay in (0, 5):
        will = {"will_topic": "will/a", "will_payload": b"gone", "will_props": {0x18: delay}}
        old, _ = _v5(b, "a%d" % delay, clean=False, props={0x11: 60}, **will)
        _v5(b, "a%d" % delay, clean=False, props={0x11: 60}, now=1000)
        assert old.closed
        b.tick(10000)
        assert publishes(w.recv()) == [], delay
    # Clean Start on the new connection: the session ends, the will goes
    old, _ = _v5(b, "c", clean=False, props={0x11: 60}, will_topic="will/c", will_payload=b"end")
    _v5(b, "c", clean=True, now=1000)
    assert [m.payload for m in publishes(w.recv())] == [b"end"]


def test_will_delay_fires_after_delay_or_at_session_end():
    b = make_broker()
    w = _watch_wills(b)
    c, _ = _v5(b, "a", clean=False, props={0x11: 60}, will_topic="will/a",
               will_payload=b"late", will_props={0x18: 5, 0x03: "text/plain"})
    c.lose(1000)
    b.tick(5999)
    assert publishes(w.recv()) == []
    b.tick(6001)
    got = publishes(w.recv())
    assert [(m.topic, m.payload, m.props.get(0x03)) for m in got] == [("will/a", b"late", "text/plain")]
    assert 0x18 not in got[0].props  # Will Delay is not forwarded
    # the session ends (expiry 2 s) before the delay (50 s): the will goes then
    c, _ = _v5(b, "b", clean=False, props={0x11: 2}, will_topic="will/b",
               will_payload=b"end", will_props={0x18: 50})
    c.lose(10000)
    b.tick(11000)
    assert publishes(w.recv()) == []
    b.tick(12001)
    assert [m.payload for m in publishes(w.recv())] == [b"end"]


def test_disconnect_with_will_message_0x04_publishes_the_will():
    b = make_broker()
    w = _watch_wills(b)
    c, _ = _v5(b, "a", will_topic="will/x", will_payload=b"bye")
    c.send(Disconnect(0x04))
    assert [m.payload for m in publishes(w.recv())] == [b"bye"]
    c, _ = _v5(b, "a2", will_topic="will/y", will_payload=b"no")
    c.send(Disconnect(0))
    assert publishes(w.recv()) == []


def test_message_expiry_counted_down_and_expired_dropped():
    b = make_broker()
    s, _ = _v5(b, "s", clean=False, props={0x11: 600})
    s.subscribe(("t", 1))
    old = Client(b)
    old.connect("old", clean=False)
    old.subscribe(("t", 1))
    s.lose(0)
    old.lose(0)
    p, _ = _v5(b, "p")
    publish(p, "t", b"short", 1, pid=1, props={0x02: 5})
    publish(p, "t", b"long", 1, pid=2, props={0x02: 100})
    b.tick(10000)
    s = Client(b, v5=True)
    s.connect("s", clean=False, props={0x11: 600}, now=10000)
    got = publishes(s.recv())
    assert [m.payload for m in got] == [b"long"]
    assert got[0].props[0x02] == 90  # 100 s minus the 10 s it waited
    old = Client(b)
    old.connect("old", clean=False, now=10000)
    assert [m.payload for m in publishes(old.recv())] == [b"long"]  # 3.1.1: no properties
    assert b.stats.msgs_dropped == 2


def test_receive_maximum_toward_the_client():
    b = make_broker(max_inflight=10)
    s, _ = _v5(b, "s", props={0x21: 2})
    s.subscribe(("t", 1))
    p, _ = _v5(b, "p")
    for i in range(5):
        publish(p, "t", b"%d" % i, 1, pid=i + 1)
    got = publishes(s.recv())
    assert len(got) == 2  # [MQTT-3.3.4-7] no more than its Receive Maximum
    s.ack_all(got)
    assert len(publishes(s.recv())) == 2


def test_receive_maximum_exceeded_gets_0x93():
    b = make_broker(max_inflight=2)
    p, _ = _v5(b, "p")
    publish(p, "t", b"1", 2, pid=1)
    publish(p, "t", b"2", 2, pid=2)
    publish(p, "t", b"2", 2, pid=2)  # a resend is not a new one
    assert not p.closed
    pubrel(p, 1)
    publish(p, "t", b"3", 2, pid=3)
    assert not p.closed
    p.send(Publish("t", b"4", 2, False, False, 4))
    assert _disconnected(p) == 0x93


def test_maximum_packet_size_toward_the_client_drops_and_counts():
    b = make_broker()
    s, _ = _v5(b, "s", props={0x27: 64})
    s.subscribe(("t", 1))
    p, _ = _v5(b, "p")
    publish(p, "t", b"x" * 100, 1, pid=1)
    publish(p, "t", b"small", 1, pid=2)
    got = publishes(s.recv())
    assert [m.payload for m in got] == [b"small"]
    assert b.stats.msgs_dropped == 1
    assert list(b.sessions["s"].inflight) == [got[0].pid]  # the big one is done with


def test_oversize_packet_from_client_gets_0x95():
    b = make_broker(max_packet_size=64)
    p, ack = _v5(b, "p")
    assert ack.props[0x27] == 64
    p.send(Publish("t", b"x" * 100))
    assert _disconnected(p) == 0x95


def test_topic_alias_from_the_client():
    b = make_broker(max_topic_alias=2)
    s, _ = _v5(b, "s")
    s.subscribe(("a/#", 0))
    p, _ = _v5(b, "p")
    publish(p, "a/1", b"one", props={0x23: 1})
    publish(p, "", b"two", props={0x23: 1})
    publish(p, "a/2", b"three", props={0x23: 1})  # remapped
    publish(p, "", b"four", props={0x23: 1})
    got = publishes(s.recv())
    assert [(m.topic, m.payload) for m in got] == [
        ("a/1", b"one"), ("a/1", b"two"), ("a/2", b"three"), ("a/2", b"four")]
    assert all(0x23 not in (m.props or {}) for m in got)
    for bad, rc in ((0, 0x94), (3, 0x94)):
        p, _ = _v5(b, "p")
        p.send(Publish("a/1", b"x", props={0x23: bad}))
        assert _disconnected(p) == rc, bad
    p, _ = _v5(b, "p")
    p.send(Publish("", b"x", props={0x23: 2}))  # never set
    assert _disconnected(p) == 0x82


def test_topic_alias_toward_the_client():
    b = make_broker()
    s, _ = _v5(b, "s", props={0x22: 1})
    s.subscribe(("a/#", 0))
    p, _ = _v5(b, "p")
    for t in ("a/1", "a/1", "a/2", "a/1"):
        publish(p, t, b"m")
    got = publishes(s.recv())
    assert [(m.topic, m.props.get(0x23)) for m in got] == [
        ("a/1", 1), ("", 1), ("a/2", None), ("", 1)]


def test_payload_format_utf8_checked_0x99():
    b = make_broker()
    s, _ = _v5(b, "s")
    s.subscribe(("t", 0))
    p, _ = _v5(b, "p")
    publish(p, "t", "zürich".encode(), props={0x01: 1})
    assert [m.props[0x01] for m in publishes(s.recv())] == [1]
    publish(p, "t", b"\xff\xfe", props={0x01: 0})  # binary: not checked
    assert len(publishes(s.recv())) == 1
    p.send(Publish("t", b"caf\xc3", props={0x01: 1}))
    assert _disconnected(p) == 0x99
    assert publishes(s.recv()) == []


def test_request_response_and_user_properties_forwarded_untouched():
    b = make_broker()
    s, _ = _v5(b, "s", props={0x19: 1, 0x17: 0})
    s.subscribe(("req", 1))
    p, _ = _v5(b, "p")
    props = {0x08: "resp/p", 0x09: b"\x00\x01corr", 0x26: [("a", "1"), ("a", "2"), ("b", "")],
             0x03: "application/json"}
    publish(p, "req", b"{}", 1, pid=1, props=dict(props))
    got = publishes(s.recv())
    assert got[0].props == props


def test_response_topic_with_wildcard_refused():
    b = make_broker()
    p, _ = _v5(b, "p")
    p.send(Publish("t", b"", props={0x08: "resp/#"}))
    assert _disconnected(p) == 0x90


def test_subscription_identifier_from_a_client_is_a_protocol_error():
    b = make_broker()
    p, _ = _v5(b, "p")
    p.send_raw(b"\x30\x07\x00\x01t\x02\x0b\x01x")
    assert _disconnected(p) == 0x82


def test_mixed_versions_both_ways():
    b = make_broker()
    new, _ = _v5(b, "new")
    old = Client(b)
    old.connect("old")
    new.subscribe(("m/#", 1))
    old.subscribe(("m/#", 1))
    to_new = publishes(publish(new, "m/5", b"from5", 1, pid=1, props={0x26: [("k", "v")], 0x01: 1}))
    to_old = publishes(publish(old, "m/3", b"from3", 1, pid=1))
    to_new += publishes(new.recv())
    assert [(m.topic, m.payload, m.props) for m in to_old] == [("m/5", b"from5", None), ("m/3", b"from3", None)]
    assert [(m.topic, m.payload) for m in to_new] == [("m/5", b"from5"), ("m/3", b"from3")]
    assert to_new[0].props == {0x01: 1, 0x26: [("k", "v")]}
    assert not to_new[1].props


def test_mixed_versions_expiry_and_alias_apply_to_a_3_1_1_subscriber():
    # §3.3.2.3.3: a message expires for every subscriber; §3.3.2.3.4: an
    # alias is the publisher's connection's only, 3.1.1 gets the topic
    b = make_broker()
    old = Client(b)
    old.connect("old", clean=False)
    old.subscribe(("x/#", 1))
    old.lose(0)
    new, _ = _v5(b, "new")
    publish(new, "x/short", b"s", 1, pid=1, props={0x02: 1, 0x23: 1})
    publish(new, "", b"l", 1, pid=2, props={0x02: 60, 0x23: 1})
    b.tick(1500)
    old = Client(b, now=1500)
    old.connect("old", clean=False, now=1500)
    got = publishes(old.recv())
    assert [(m.topic, m.payload, m.props) for m in got] == [("x/short", b"l", None)]


def test_unsuback_reason_codes():
    b = make_broker()
    c, _ = _v5(b, "c")
    c.subscribe(("a", 0))
    c.send(Unsubscribe(2, ["a", "b"]))
    ack = c.recv()[0]
    assert ack.codes == [0, 0x11]


def test_pubrec_for_v5_and_3_1_1_unchanged():
    b = make_broker()
    s, _ = _v5(b, "s")
    s.subscribe(("t", 2))
    p, _ = _v5(b, "p")
    out = publish(p, "t", b"q2", 2, pid=9)
    assert out[0].kind == 5 and out[0].pid == 9
    pubrel(p, 9)
    got = publishes(s.recv())
    assert got[0].kind == PUBLISH and got[0].qos == 2
    s.send(Pubrec(got[0].pid))
    assert s.recv()[0].kind == 6


# ---- subscriptions: options, identifiers, shared ------------------------------------
def test_no_local():
    b = make_broker()
    c, _ = _v5(b, "c")
    other, _ = _v5(b, "o")
    c.subscribe(("t", 0 | 4))  # No Local
    assert publishes(publish(c, "t", b"mine")) == []
    publish(other, "t", b"theirs")
    assert [m.payload for m in publishes(c.recv())] == [b"theirs"]


def test_retain_as_published():
    b = make_broker()
    rap, _ = _v5(b, "rap")
    plain, _ = _v5(b, "plain")
    rap.subscribe(("t", 8))
    plain.subscribe(("t", 0))
    p, _ = _v5(b, "p")
    publish(p, "t", b"r", retain=True)
    assert [m.retain for m in publishes(rap.recv())] == [True]   # [MQTT-3.3.1-12]
    assert [m.retain for m in publishes(plain.recv())] == [False]  # [MQTT-3.3.1-13]


def test_retain_handling_0_1_2():
    b = make_broker()
    p, _ = _v5(b, "p")
    publish(p, "r/a", b"kept", retain=True)
    c, _ = _v5(b, "c")
    assert len(publishes(c.subscribe(("r/#", 0)))) == 1  # RH 0: at every subscribe
    assert len(publishes(c.subscribe(("r/#", 0)))) == 1
    c1, _ = _v5(b, "c1")
    assert len(publishes(c1.subscribe(("r/#", 0x10)))) == 1  # RH 1: only when new
    assert publishes(c1.subscribe(("r/#", 0x10))) == []
    c2, _ = _v5(b, "c2")
    assert publishes(c2.subscribe(("r/#", 0x20))) == []  # RH 2: never


def test_subscription_identifiers_delivered():
    b = make_broker()
    p, _ = _v5(b, "p")
    publish(p, "a/b", b"old", retain=True)
    c, _ = _v5(b, "c")
    got = publishes(c.subscribe(("a/+", 1), props={0x0B: 7}))
    assert [m.props[0x0B] for m in got] == [[7]]  # retained too
    c.subscribe(("a/#", 0), pid=2, props={0x0B: 300})
    c.subscribe(("x", 0), pid=3)  # none
    c.recv()
    publish(p, "a/b", b"both")
    got = publishes(c.recv())
    assert len(got) == 1 and sorted(got[0].props[0x0B]) == [7, 300] and got[0].qos == 0
    publish(p, "x", b"plain")
    got = publishes(c.recv())
    assert not (got[0].props or {}).get(0x0B)


def test_invalid_filter_gets_suback_0x8f_and_connection_stays():
    b = make_broker()
    c, _ = _v5(b, "c")
    ack = c.subscribe(("a/#/b", 0), ("ok", 1), ("$share/g+/x", 0))[0]
    assert ack.codes == [0x8F, 1, 0x8F] and not c.closed


def test_shared_subscription_round_robin():
    b = make_broker()
    m1, _ = _v5(b, "m1")
    m2, _ = _v5(b, "m2")
    m1.subscribe(("$share/g/job/#", 1))
    m2.subscribe(("$share/g/job/#", 1))
    other, _ = _v5(b, "other")
    other.subscribe(("$share/h/job/#", 0))
    p, _ = _v5(b, "p")
    for i in range(4):
        publish(p, "job/%d" % i, b"%d" % i, 1, pid=i + 1)
    a = [m.payload for m in publishes(m1.recv())]
    c = [m.payload for m in publishes(m2.recv())]
    assert len(a) == 2 and len(c) == 2 and sorted(a + c) == [b"0", b"1", b"2", b"3"]
    assert len(publishes(other.recv())) == 4  # each group gets every message


def test_shared_member_departs_its_unacked_messages_go_to_another():
    b = make_broker()
    m1, _ = _v5(b, "m1")
    m2, _ = _v5(b, "m2")
    m1.subscribe(("$share/g/t", 2))
    m2.subscribe(("$share/g/t", 2))
    p, _ = _v5(b, "p")
    for i in range(4):
        out = publish(p, "t", b"%d" % i, 2 if i % 2 else 1, pid=i + 1)
        if out[0].kind == 5:
            pubrel(p, i + 1)
    got1 = publishes(m1.recv())
    got2 = publishes(m2.recv())
    assert len(got1) == 2 and len(got2) == 2
    m2.ack_all(got2)  # m2 acknowledges; m1 never does and goes away
    m2.recv()
    m1.lose()
    again = publishes(m2.recv())
    assert sorted(m.payload for m in again) == sorted(m.payload for m in got1)
    m2.ack_all(again)
    # the group lives on with one member; unsubscribing the last removes it
    m2.send(Unsubscribe(9, ["$share/g/t"]))
    assert m2.recv()[0].codes == [0]
    assert not b.v5.groups and b.subs.match_subs("t") == []


def test_shared_no_local_is_a_protocol_error():
    b = make_broker()
    c, _ = _v5(b, "c")
    c.send(Subscribe(1, [("$share/g/t", 4)]))
    assert _disconnected(c) == 0x82


def test_3_1_1_client_and_v5_options_on_one_topic():
    b = make_broker()
    old = Client(b)
    old.connect("old")
    old.subscribe(("t", 1))
    new, _ = _v5(b, "new")
    new.subscribe(("t", 1 | 4 | 8), props={0x0B: 5})
    publish(old, "t", b"x", 1, pid=1, retain=True)
    got = publishes(new.recv())
    assert got[0].props[0x0B] == [5] and got[0].retain
    publish(new, "t", b"y", 1, pid=1)  # No Local: old gets it, new does not
    assert [m.payload for m in publishes(old.recv())] == [b"y"]
    assert publishes(new.recv()) == []


def test_pid_not_found_0x92_on_pubrel_and_pubrec():
    b = make_broker()
    c, _ = _v5(b, "c")
    got = pubrel(c, 77)  # nothing waits for PUBREL 77
    assert got[0].kind == 7 and got[0].pid == 77 and got[0].reason == 0x92
    c.send(Pubrec(78))
    got = c.recv()
    assert got[0].kind == 6 and got[0].pid == 78 and got[0].reason == 0x92
    old = Client(b)
    old.connect("old")
    assert codec.encode(pubrel(old, 77)[0]) == b"\x70\x02\x00\x4d"  # 3.1.1: as ever


def test_malformed_v5_connect_gets_connack_reason():
    b = make_broker()
    for props, rc in ((b"\x02\x7f\x00", 0x81),              # unknown property
                      (b"\x02\x21\x00", 0x81),              # runs past the block
                      (b"\x06\x11\x00\x00\x00\x01\x11", 0x81),
                      (b"\x03\x21\x00\x00", 0x82),          # Receive Maximum 0
                      (b"\x04\x17\x01\x17\x01", 0x82)):     # given twice
        body = b"\x00\x04MQTT\x05\x02\x00\x3c" + props + b"\x00\x01c"
        c = Client(b, v5=True)
        c.send_raw(bytes((0x10, len(body))) + body)
        pkts = c.recv()
        assert c.closed and pkts and pkts[0].kind == CONNACK and pkts[0].reason == rc, (props, pkts)


def test_session_past_its_expiry_is_not_resumed_before_tick():
    b = make_broker()
    c, _ = _v5(b, "s", clean=False, props={0x11: 2})
    c.subscribe(("t", 1))
    c.lose(0)
    c2 = Client(b, v5=True)
    ack = c2.connect("s", clean=False, props={0x11: 2}, now=2500)  # no tick ran
    assert not ack.session_present


def test_retained_message_expires_and_keeps_no_session_alive():
    b = make_broker()
    p, _ = _v5(b, "p")
    publish(p, "r/x", b"brief", retain=True, props={0x02: 2})
    publish(p, "r/y", b"lasting", retain=True, props={0x02: 100})
    p.send(Disconnect(0))
    b.tick(1000)
    c, _ = _v5(b, "c", now=1000)
    c.send(Subscribe(1, [("r/#", 0)]), 1000)
    got = publishes(c.recv())
    assert sorted((m.payload, m.props[0x02]) for m in got) == [(b"brief", 1), (b"lasting", 99)]
    assert b.retained.get("r/x").sender == "p"  # the client id, not its Session
    b.tick(3001)
    c2, _ = _v5(b, "c2", now=3001)
    c2.send(Subscribe(1, [("r/#", 0)]), 3001)
    assert [m.payload for m in publishes(c2.recv())] == [b"lasting"]
    assert b.retained.get("r/x") is None


def test_puback_and_pubrec_0x10_when_no_subscriber_matched():
    b = make_broker()
    p, _ = _v5(b, "p")
    assert [(a.kind, a.reason) for a in publish(p, "nobody", b"x", 1, pid=1)] == [(4, 0x10)]
    assert [(a.kind, a.reason) for a in publish(p, "nobody", b"x", 2, pid=2)] == [(5, 0x10)]
    s, _ = _v5(b, "s")
    s.subscribe(("somebody", 1))
    assert [(a.kind, a.reason) for a in publish(p, "somebody", b"x", 1, pid=3)] == [(4, 0)]
    old = Client(b)
    old.connect("old")
    assert codec.encode(publish(old, "nobody", b"x", 1, pid=4)[0]) == b"\x40\x02\x00\x04"  # 3.1.1


def test_a_failed_pubrec_ends_the_qos2_flow():
    # 5.0 §4.3.3 [MQTT-4.3.3]: a PUBREC with a reason code >= 0x80 ends the
    # flow: no PUBREL is due, and the next delivery goes out
    b = make_broker()
    s, _ = _v5(b, "s", props={0x21: 1})  # Receive Maximum 1
    s.subscribe(("t", 2))
    p, _ = _v5(b, "p")
    for i in range(2):
        publish(p, "t", b"%d" % i, 2, pid=i + 1)
        p.recv()
    (first,) = publishes(s.recv())
    assert first.payload == b"0"
    s.send(Pubrec(first.pid, 0x80))
    got = s.recv()
    assert [x.kind for x in got] == [PUBLISH], [x.kind for x in got]  # no PUBREL
    assert got[0].payload == b"1"
    assert not b.sessions["s"].inflight.get(first.pid)


def test_publish_into_sys_or_share_is_not_authorized():
    # 5.0: a PUBLISH to a $SYS topic or a $share/... name (a filter form,
    # §4.8.2) gets PUBACK/PUBREC 0x87 Not authorized, and goes nowhere
    b = make_broker()
    s, _ = _v5(b, "s")
    s.subscribe(("$SYS/#", 0), ("$share/#", 0))
    s.recv()
    p, _ = _v5(b, "p")
    for i, topic in enumerate(("$SYS/broker/x", "$share/g/t")):
        acks = publish(p, topic, b"x", 1, pid=i + 1)
        assert [(a.kind, a.reason) for a in acks] == [(PUBACK, 0x87)], topic
    acks = publish(p, "$SYS/y", b"x", 2, pid=9)
    assert [(a.kind, a.reason) for a in acks] == [(PUBREC, 0x87)]
    assert not publishes(s.recv()) and not p.closed


def test_a_message_over_the_clients_maximum_packet_size_does_not_stall_the_next():
    # [MQTT-3.1.2-25] a message too large for the client is dropped as if
    # delivered; the queue behind it moves on (it took no slot of the window)
    b = make_broker()
    s, _ = _v5(b, "s", props={0x27: 64, 0x21: 1})  # Maximum Packet Size 64, Receive Maximum 1
    s.subscribe(("t", 1))
    p, _ = _v5(b, "p")
    publish(p, "t", b"a", 1, pid=1)
    publish(p, "t", b"x" * 100, 1, pid=2)  # queued behind "a", too large
    for i in range(3):
        publish(p, "t", b"%d" % i, 1, pid=i + 3)
    got = []
    for _ in range(6):
        pkts = s.recv()
        got += [m.payload for m in publishes(pkts)]
        s.ack_all(pkts)
    assert got == [b"a", b"0", b"1", b"2"], got
    assert b.stats.msgs_dropped == 1


def test_a_property_value_out_of_range_is_a_protocol_error():
    # a Payload Format Indicator other than 0 or 1 on a PUBLISH: DISCONNECT
    # 0x82, not forwarded (every property's range is checked the same way:
    # tests/core/test_props.py test_value_checks)
    b = make_broker()
    s, _ = _v5(b, "s")
    s.subscribe(("t", 0))
    p, _ = _v5(b, "p")
    # PUBLISH QoS 0 "t", properties: 0x01 = 2
    p.send_raw(b"\x30\x07\x00\x01t\x02\x01\x02x")
    assert _disconnected(p) == 0x82
    assert publishes(s.recv()) == []



def test_the_ack_of_a_publish_goes_before_the_deliveries_it_caused():
    # A client subscribed to the topic it publishes gets its PUBACK/PUBREC
    # (the answer to its own packet) before the delivery its PUBLISH caused,
    # as clients written against other brokers expect
    for qos, ack in ((1, PUBACK), (2, PUBREC)):
        b = make_broker()
        c, _ = _v5(b, "c")
        c.subscribe(("t", 2))
        got = publish(c, "t", b"x", qos, pid=7)
        assert [p.kind for p in got] == [ack, PUBLISH], (qos, [p.kind for p in got])
        assert got[0].pid == 7


def test_a_filter_deeper_than_max_topic_levels_is_quota_exceeded():
    # max_topic_levels is our limit, not the spec's: 3.1.1 gets 0x80, a 5.0
    # client 0x97 Quota exceeded with a Reason String; the connection stays
    b = make_broker(max_topic_levels=4)
    c, _ = _v5(b, "c")
    ack = c.subscribe(("a/b/c/d", 0), ("a/b/c/d/e", 0))[0]
    assert ack.codes == [0, 0x97] and "a/b/c/d/e" in ack.props[0x1F]
    assert not c.closed

