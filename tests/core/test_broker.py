# Broker flows with in-memory clients (no sockets). Plain assert functions so
# tests/mpy_runner.py runs them under MicroPython too.
from edge.mqtt.consts import CONNACK, PUBLISH, PUBREL, SUBACK, UNSUBACK, PINGRESP
from edge.mqtt import codec, systree
from edge.mqtt.packets import Connect, Disconnect, Pingreq, Puback, Pubrec, Pubcomp, Publish, Unsubscribe
from tests.core._pair import Client, make_broker, publish, publishes, pubrel


def _pair(**cfg):
    b = make_broker(**cfg)
    s = Client(b)
    p = Client(b)
    assert s.connect("sub").reason == 0
    assert p.connect("pub").reason == 0
    return b, s, p


def test_connect_connack_and_ping():
    b = make_broker()
    c = Client(b)
    ack = c.connect("c1")
    assert ack.kind == CONNACK and ack.reason == 0 and not ack.session_present
    c.send(Pingreq())
    assert [p.kind for p in c.recv()] == [PINGRESP]


def test_qos0_1_2_delivery():
    b, s, p = _pair()
    acks = s.subscribe(("t/#", 2))
    assert acks[0].kind == SUBACK and acks[0].codes == [2]
    assert publish(p, "t/0", b"zero") == []
    out = publish(p, "t/1", b"one", 1, pid=7)
    assert out[0].kind == 4 and out[0].pid == 7  # PUBACK
    out = publish(p, "t/2", b"two", 2, pid=8)
    assert out[0].kind == 5 and out[0].pid == 8  # PUBREC
    assert pubrel(p, 8)[0].kind == 7  # PUBCOMP
    got = publishes(s.recv())
    assert [(m.topic, m.payload, m.qos) for m in got] == [
        ("t/0", b"zero", 0), ("t/1", b"one", 1), ("t/2", b"two", 2)]
    assert got[1].pid and got[2].pid and got[1].pid != got[2].pid
    # QoS 2 outbound: PUBREC -> PUBREL -> PUBCOMP
    s.send(Puback(got[1].pid))
    s.send(Pubrec(got[2].pid))
    rel = s.recv()
    assert rel[0].kind == PUBREL and rel[0].pid == got[2].pid
    s.send(Pubcomp(got[2].pid))
    assert s.conn.session.inflight == {}


def _feed_through_shared_buffer(b, cid, wire, sizes):
    # As the MicroPython runtime feeds: views of one read buffer that the
    # next read overwrites, so the broker must copy whatever it keeps.
    rbuf = bytearray(64)
    mv = memoryview(rbuf)
    i = k = 0
    while i < len(wire):
        n = min(sizes[k % len(sizes)], len(wire) - i, len(rbuf))
        k += 1
        rbuf[0:n] = wire[i:i + n]
        b.data_received(cid, mv[:n], 0)
        for j in range(len(rbuf)):
            rbuf[j] = 0xEE  # what the next read might bring
        i += n


def test_packets_split_and_batched_across_reused_read_buffer():
    b, s, p = _pair()
    s.subscribe(("t/#", 2))
    for r, sizes in enumerate(((1,), (3, 7), (64,), (5, 64, 2))):
        wire = b"".join(codec.encode(Publish("t/%d" % i, b"p%d" % i * (i + 1), i % 3, False, False, 20 * r + i + 1))
                        for i in range(12))
        _feed_through_shared_buffer(b, p.cid, wire, sizes)
        assert not p.closed
        assert p.conn.buf == b"" and p.conn.pos == 0  # nothing held when idle
        for ack in p.recv():
            if ack.kind == 5:
                pubrel(p, ack.pid)
        got = publishes(s.recv())
        assert [(m.topic, m.payload, m.qos) for m in got] == [
            ("t/%d" % i, b"p%d" % i * (i + 1), i % 3) for i in range(12)], sizes
        s.ack_all(got)
        s.ack_all(s.recv())  # PUBRELs
        assert s.conn.session.inflight == {}
    # a feed that ends inside a packet keeps only that packet's start
    one = codec.encode(Publish("t/x", b"tail", 0))
    _feed_through_shared_buffer(b, p.cid, one + one[:4], (64,))
    assert bytes(p.conn.buf) == one[:4] and type(p.conn.buf) is bytearray
    _feed_through_shared_buffer(b, p.cid, one[4:], (64,))
    assert [m.payload for m in publishes(s.recv())] == [b"tail", b"tail"]
    # a caller's bytearray is never grown in place
    mine = bytearray(one[:3])
    b.data_received(p.cid, mine, 0)
    b.data_received(p.cid, one[3:], 0)
    assert mine == one[:3] and [m.payload for m in publishes(s.recv())] == [b"tail"]


def test_bytes_feeds_split_anywhere():
    # As CPython's runtime feeds: bytes objects, cut at any offset
    b, s, p = _pair()
    s.subscribe(("t/#", 2))
    wire = b"".join(codec.encode(Publish("t/%d" % i, b"x" * (i * 20), i % 3, False, False, i + 1))
                    for i in range(10))
    for cut in (1, 2, 3, 17, 64, 200):
        for i in range(0, len(wire), cut):
            b.data_received(p.cid, wire[i:i + cut], 0)
        assert not p.closed and p.conn.buf == b"", cut
        for ack in p.recv():
            if ack.kind == 5:
                pubrel(p, ack.pid)
        got = publishes(s.recv())
        assert [(m.topic, len(m.payload)) for m in got] == [("t/%d" % i, i * 20) for i in range(10)]
        s.ack_all(got)
        s.ack_all(s.recv())
        assert s.conn.session.inflight == {}


def test_short_form_acks():
    # PUBACK/PUBREC/PUBREL/PUBCOMP with only a packet id skip the packet
    # objects: the same flows, the same checks
    b, s, p = _pair()
    s.subscribe(("a", 2))
    publish(p, "a", b"1", 1, pid=1)
    publish(p, "a", b"2", 2, pid=2)
    got = publishes(s.recv())
    s.send_raw(bytes((0x40, 2, 0, got[0].pid)) + bytes((0x50, 2, 0, got[1].pid)))
    rel = s.recv()
    assert [(x.kind, x.pid) for x in rel] == [(PUBREL, got[1].pid)]
    s.send_raw(bytes((0x70, 2, 0, got[1].pid)))
    assert s.conn.session.inflight == {}
    p.send_raw(b"\x34\x06\x00\x01a\x00\x05!" + b"\x62\x02\x00\x05")  # PUBLISH QoS 2 + PUBREL
    assert [(x.kind, x.pid) for x in p.recv()] == [(5, 5), (7, 5)]  # PUBREC, PUBCOMP
    assert list(p.conn.session.rx_qos2) == [2]  # pid 5 released, 2 still waits
    # [MQTT-2.3.1-1] packet id 0; [MQTT-2.2.2-2] PUBREL needs flags 0010
    for bad in (b"\x40\x02\x00\x00", b"\x60\x02\x00\x01"):
        b2, s2, p2 = _pair()
        p2.send_raw(bad)
        assert p2.closed and b2.stats.protocol_errors == 1, bad


def test_bad_publish_closes_the_connection():
    # A bad PUBLISH through a connection (next_event, codec.decode) closes
    # it as a protocol error, and nothing of it or after it is delivered
    for bad in (
        b"\x36\x05\x00\x01t\x00\x01",  # [MQTT-3.3.1-4] QoS 3
        b"\x38\x03\x00\x01t",          # [MQTT-3.3.1-2] DUP on QoS 0
        b"\x32\x05\x00\x01t\x00\x00",  # [MQTT-2.3.1-1] packet id 0
        b"\x32\x04\x00\x01t\x00",      # the packet id runs past the end
        b"\x30\x03\x00\x05t",          # the topic runs past the end
        b"\x30\x04\x00\x02\xc3t",      # [MQTT-1.5.3-1] not UTF-8
        b"\x30\x04\x00\x02t\x00",      # [MQTT-1.5.3-2] U+0000
    ):
        b, s, p = _pair()
        s.subscribe(("#", 1))
        p.send_raw(bad + b"\x30\x03\x00\x01t")  # and a good one after it
        assert p.closed and b.stats.protocol_errors == 1, bad
        assert publishes(s.recv()) == [], bad


def test_granted_qos_downgrades_delivery():
    b, s, p = _pair()
    s.subscribe(("a", 1))
    publish(p, "a", b"x", 2, pid=1)
    m = publishes(s.recv())[0]
    assert m.qos == 1


def test_qos2_duplicate_publish_delivered_once():
    b, s, p = _pair()
    s.subscribe(("q", 2))
    publish(p, "q", b"once", 2, pid=5)
    # the publisher did not see PUBREC and resends with the same pid
    assert publish(p, "q", b"once", 2, pid=5)[0].kind == 5
    got = publishes(s.recv())
    assert len(got) == 1
    pubrel(p, 5)
    # after PUBREL the pid is free: a new message with it is new
    publish(p, "q", b"again", 2, pid=5)
    assert len(publishes(s.recv())) == 1


def test_overlapping_subscriptions_deliver_once_at_max_qos():
    b, s, p = _pair()
    s.subscribe(("a/#", 1), ("a/+", 2), ("a/b", 0))
    publish(p, "a/b", b"x", 2, pid=1)
    got = publishes(s.recv())
    assert len(got) == 1 and got[0].qos == 2


def test_retained_set_deliver_and_clear():
    b, s, p = _pair()
    publish(p, "r/1", b"kept", 1, retain=True, pid=1)
    acks = s.subscribe(("r/#", 1))
    assert acks[0].kind == SUBACK
    m = acks[1]
    assert m.kind == PUBLISH and m.retain and m.payload == b"kept" and m.qos == 1
    # a live subscriber gets a retained publish with RETAIN 0 [MQTT-3.3.1-9]
    publish(p, "r/1", b"new", 0, retain=True)
    live = publishes(s.recv())
    assert live[0].payload == b"new" and not live[0].retain
    publish(p, "r/1", b"", 0, retain=True)  # empty payload clears
    s2 = Client(b)
    s2.connect("s2")
    acks = s2.subscribe(("r/#", 0))
    assert len(acks) == 1
    assert len(b.retained) == 0


def test_unsubscribe_stops_delivery():
    b, s, p = _pair()
    s.subscribe(("u", 0))
    s.send(Unsubscribe(2, ["u"]))
    assert s.recv()[0].kind == UNSUBACK
    publish(p, "u", b"x")
    assert publishes(s.recv()) == []
    assert len(b.subs) == 0


def test_dollar_topics_not_matched_by_wildcards():
    b, s, p = _pair()
    s.subscribe(("#", 0), ("+/x", 0))
    publish(p, "$foo/x", b"1")
    b.publish_sys(1000)
    assert publishes(s.recv()) == []
    s2 = Client(b)
    s2.connect("s2")
    got = publishes(s2.subscribe(("$SYS/#", 0)))
    names = [m.topic for m in got]
    assert "$SYS/broker/version" in names and "$SYS/broker/clients/connected" in names
    assert all(m.retain for m in got)


def test_sys_publishes_only_what_is_subscribed():
    b, s, p = _pair()
    b.heap = (100, 200)
    got = publishes(s.subscribe(("$SYS/broker/heap/#", 0)))
    assert [(m.topic, m.payload, m.retain) for m in got] == [
        ("$SYS/broker/heap/current", b"100", True), ("$SYS/broker/heap/maximum", b"200", True)]
    b.heap = (150, 250)
    b.publish_sys(1000)
    got = publishes(s.recv())
    assert [(m.topic, m.payload, m.retain) for m in got] == [
        ("$SYS/broker/heap/current", b"150", False), ("$SYS/broker/heap/maximum", b"250", False)]


def test_client_cannot_publish_into_sys():
    b, s, p = _pair()
    s.subscribe(("$SYS/#", 0))
    s.recv()
    publish(p, "$SYS/broker/version", b"fake")
    assert publishes(s.recv()) == []


def _will_kw():
    return {"will_topic": "w/dead", "will_payload": b"gone", "will_qos": 1}


def _watch(b):
    w = Client(b)
    w.connect("watcher")
    w.subscribe(("w/#", 1))
    return w


def test_will_on_keepalive_expiry():
    b = make_broker()
    w = _watch(b)
    c = Client(b)
    c.connect("dying", keepalive=2, **_will_kw())
    b.tick(2900)  # 1.45 x keepalive: still alive
    assert not c.closed and publishes(w.recv()) == []
    b.tick(3100)  # [MQTT-3.1.2-24] past 1.5 x keepalive
    assert c.closed
    got = publishes(w.recv())
    assert [(m.topic, m.payload) for m in got] == [("w/dead", b"gone")]


def test_will_on_lost_connection_and_protocol_error():
    b = make_broker()
    w = _watch(b)
    c = Client(b)
    c.connect("a", **_will_kw())
    c.lose()
    assert len(publishes(w.recv())) == 1
    c2 = Client(b)
    c2.connect("b", **_will_kw())
    c2.send_raw(b"\x00\x00")  # packet type 0: malformed
    assert c2.closed
    assert len(publishes(w.recv())) == 1


def test_no_will_after_disconnect():
    b = make_broker()
    w = _watch(b)
    c = Client(b)
    c.connect("polite", **_will_kw())
    c.send(Disconnect())
    c.lose()
    b.tick(100000)
    assert publishes(w.recv()) == []


def test_takeover_closes_old_and_publishes_its_will():
    b = make_broker()
    w = _watch(b)
    old = Client(b)
    old.connect("same", **_will_kw())
    new = Client(b)
    assert new.connect("same").reason == 0
    assert old.closed and not new.closed
    assert len(publishes(w.recv())) == 1
    assert b.stats.clients_connected == 2


def test_takeover_that_continues_the_session_keeps_the_will():
    # [MQTT-3.1.4-2] takeover; the session continues (clean session 0 on
    # both connections): the client is back, its will is not published (as
    # 5.0 [MQTT-3.1.3-9] says, and as established brokers do for 3.1.1)
    b = make_broker()
    w = _watch(b)
    old = Client(b)
    old.connect("dev", clean=False, **_will_kw())
    new = Client(b)
    assert new.connect("dev", clean=False).session_present
    assert old.closed and not new.closed
    assert publishes(w.recv()) == []
    # either connection clean: the session ends with the old connection, the will goes
    for old_clean, new_clean in ((False, True), (True, False)):
        old = Client(b)
        old.connect("dev%d" % old_clean, clean=old_clean, **_will_kw())
        Client(b).connect("dev%d" % old_clean, clean=new_clean)
        assert old.closed
        assert [m.payload for m in publishes(w.recv())] == [b"gone"], (old_clean, new_clean)


def test_offline_queue_redelivered_with_session_present():
    b, s, p = _pair()
    s2 = Client(b)
    assert not s2.connect("pers", clean=False).session_present
    s2.subscribe(("q/#", 1))
    s2.send(Disconnect())
    for i in range(10):
        publish(p, "q/%d" % i, b"m%d" % i, 1, pid=i + 1)
    publish(p, "q/zero", b"qos0 not queued", 0)
    s3 = Client(b)
    ack = s3.connect("pers", clean=False)
    assert ack.session_present
    got = publishes(s3.recv())
    assert [m.payload for m in got] == [b"m%d" % i for i in range(10)]


def test_clean_session_discards_state():
    b, s, p = _pair()
    c = Client(b)
    c.connect("pers", clean=False)
    c.subscribe(("x", 1))
    c.lose()
    c2 = Client(b)
    assert not c2.connect("pers", clean=True).session_present
    publish(p, "x", b"m", 1, pid=1)
    assert publishes(c2.recv()) == []
    c2.send(Disconnect())
    c2.lose()
    assert "pers" not in b.sessions


def test_unacked_resent_with_dup_on_reconnect():
    b, s, p = _pair()
    c = Client(b)
    c.connect("r", clean=False)
    c.subscribe(("d", 2), ("e", 1))
    publish(p, "d", b"two", 2, pid=1)
    pubrel(p, 1)
    publish(p, "e", b"one", 1, pid=2)
    first = publishes(c.recv())
    assert [m.dup for m in first] == [False, False]
    c.lose()
    c2 = Client(b)
    assert c2.connect("r", clean=False).session_present
    again = publishes(c2.recv())
    assert [(m.payload, m.dup, m.pid) for m in again] == [
        (b"two", True, first[0].pid), (b"one", True, first[1].pid)]


def test_resend_order_is_send_order_across_pid_wrap():
    b, s, p = _pair()
    c = Client(b)
    c.connect("w", clean=False)
    c.subscribe(("o", 1))
    c.conn.session.next_pid = 65535
    for i in range(3):
        publish(p, "o", b"%d" % i, 1, pid=i + 1)
    first = publishes(c.recv())
    assert [m.pid for m in first] == [65535, 1, 2]
    c.lose()
    c2 = Client(b)
    c2.connect("w", clean=False)
    again = publishes(c2.recv())
    assert [(m.payload, m.pid, m.dup, m.qos) for m in again] == [
        (b"0", 65535, True, 1), (b"1", 1, True, 1), (b"2", 2, True, 1)]


def test_next_pid_still_in_flight_holds_the_window():
    # After a full wrap-around the next packet id may still be in flight: the
    # message waits (pids stay unique and in send order) instead of skipping.
    b, s, p = _pair(max_inflight=5)
    sess = s.conn.session
    s.subscribe(("w", 1))
    sess.next_pid = 65535
    publish(p, "w", b"old", 1, pid=1)
    first = publishes(s.recv())
    assert [m.pid for m in first] == [65535]
    sess.next_pid = 65535  # as if 65535 more had been sent since
    publish(p, "w", b"new", 1, pid=2)
    assert publishes(s.recv()) == [] and len(sess.queue) == 1
    s.send(Puback(65535))
    again = publishes(s.recv())
    assert [(m.payload, m.pid) for m in again] == [(b"new", 65535)]


def test_downgraded_and_retained_deliveries_resend_as_sent():
    b, s, p = _pair()
    publish(p, "keep", b"r", 2, retain=True, pid=1)
    pubrel(p, 1)
    c = Client(b)
    c.connect("dg", clean=False)
    got = c.subscribe(("keep", 1), ("down", 1))  # retained at QoS 1, RETAIN set
    publish(p, "down", b"d", 2, pid=2)  # downgraded to QoS 1
    pubrel(p, 2)
    first = [(m.topic, m.qos, m.retain, m.dup) for m in publishes(got + c.recv())]
    assert first == [("keep", 1, True, False), ("down", 1, False, False)]
    c.lose()
    c2 = Client(b)
    c2.connect("dg", clean=False)
    again = [(m.topic, m.qos, m.retain, m.dup) for m in publishes(c2.recv())]
    assert again == [("keep", 1, True, True), ("down", 1, False, True)]


def test_pubrel_resent_on_reconnect():
    b, s, p = _pair()
    c = Client(b)
    c.connect("r2", clean=False)
    c.subscribe(("d", 2))
    publish(p, "d", b"two", 2, pid=1)
    m = publishes(c.recv())[0]
    c.send(Pubrec(m.pid))
    assert c.recv()[0].kind == PUBREL
    c.lose()
    c2 = Client(b)
    c2.connect("r2", clean=False)
    out = c2.recv()
    assert [(x.kind, x.pid) for x in out] == [(PUBREL, m.pid)]


def test_inflight_window_and_queue_limits():
    b, s, p = _pair(max_inflight=2, max_queued_messages=3)
    s.subscribe(("w", 1))
    for i in range(8):
        publish(p, "w", b"%d" % i, 1, pid=i + 1)
    got = publishes(s.recv())
    assert [m.payload for m in got] == [b"0", b"1"]  # window of 2
    sess = s.conn.session
    assert len(sess.queue) == 3 and sess.dropped == 3 and b.stats.msgs_dropped == 3
    s.send(Puback(got[0].pid))
    nxt = publishes(s.recv())
    assert [m.payload for m in nxt] == [b"2"]


def test_queue_byte_limit_counts_drops():
    b, s, p = _pair(max_inflight=1, max_queued_bytes=64)
    s.subscribe(("w", 1))
    for i in range(5):
        publish(p, "w", b"x" * 30, 1, pid=i + 1)
    sess = s.conn.session
    assert len(publishes(s.recv())) == 1
    assert len(sess.queue) == 2 and sess.dropped == 2 and sess.queued_bytes <= 64


def test_packet_id_allocation_skips_inflight_and_wraps():
    b, s, p = _pair(max_inflight=5)
    sess = s.conn.session
    sess.next_pid = 65534
    s.subscribe(("w", 1))
    for i in range(3):
        publish(p, "w", b"%d" % i, 1, pid=i + 1)
    assert [m.pid for m in publishes(s.recv())] == [65534, 65535, 1]


def test_zero_length_client_id():
    b = make_broker()
    c = Client(b)
    assert c.connect("", clean=True).reason == 0
    assert c.conn.session.client_id
    c2 = Client(b)
    assert c2.connect("", clean=False).reason == 0x02  # [MQTT-3.1.3-8]
    assert c2.closed


def test_bad_protocol_level_and_name():
    b = make_broker()
    c = Client(b)
    assert c.connect("x", level=7).reason == 0x01  # [MQTT-3.1.2-2]
    assert c.closed
    c2 = Client(b)
    assert c2.connect("y", proto="MQTX").reason == 0x01
    assert c2.closed


def test_keepalive_over_max_keepalive_is_refused():
    b = make_broker(max_keepalive=60)
    c = Client(b)
    assert c.connect("slow", keepalive=61).reason == 0x02
    assert c.closed
    c2 = Client(b)
    assert c2.connect("ok", keepalive=60).reason == 0


def test_first_packet_must_be_connect_and_only_once():
    b = make_broker()
    c = Client(b)
    c.send(Pingreq())
    assert c.closed and c.recv() == []
    c2 = Client(b)
    c2.connect("once")
    c2.send(Connect("once"))
    assert c2.closed


def test_non_connect_first_byte_closes_at_once():
    b = make_broker()
    c = Client(b)
    c.send_raw(b"GET / HTTP/1.1\r\n")  # 0x47: not CONNECT, and incomplete as MQTT
    assert c.closed and c.recv() == []


def test_server_only_packets_from_a_client_close_it():
    from edge.mqtt.packets import Connack, Pingresp, Suback, Unsuback
    for pkt in (Connack(False, 0), Suback(1, [0]), Unsuback(1), Pingresp()):
        b = make_broker()
        c = Client(b)
        c.connect("x")
        c.send(pkt)
        assert c.closed and b.stats.protocol_errors == 1, type(pkt).__name__


def test_connect_timeout():
    b = make_broker(connect_timeout=2)
    c = Client(b, now=0)
    b.tick(1500)
    assert not c.closed
    b.tick(2500)
    assert c.closed


def test_max_connections_refuses_sockets():
    b = make_broker(max_connections=2)
    Client(b)
    Client(b)
    assert not b.open(999, 0)
    assert b.stats.conns_refused == 1
    # the count is in $SYS, as the configuration reference says
    got = {m.topic: m.payload for m in systree.messages(b, lambda t: True)}
    assert got["$SYS/broker/clients/refused"] == b"1"


def test_max_packet_size():
    b = make_broker(max_packet_size=64)
    c = Client(b)
    c.connect("big")
    publish(c, "t", b"x" * 100)
    assert c.closed


def test_wildcard_in_publish_topic_closes():
    b, s, p = _pair()
    publish(p, "a/+", b"x")
    assert p.closed and not s.closed


def test_max_subscriptions_gives_failure_code():
    b = make_broker(max_subscriptions=2)
    c = Client(b)
    c.connect("s")
    ack = c.subscribe(("a", 0), ("b", 1), ("c", 2))[0]
    assert ack.codes == [0, 1, 0x80]
    assert b.stats.subs_refused == 1


def test_local_client_api():
    b, s, p = _pair()
    got = []
    lc = b.local_client("coap", lambda msg, qos, retain: got.append((msg.topic, msg.payload, qos, retain)))
    publish(p, "dev/1", b"r", 0, retain=True)
    assert b.subscribe(lc, "dev/#", 1) == 1
    assert got == [("dev/1", b"r", 0, True)]
    s.subscribe(("cmd/#", 1))
    b.publish("cmd/led", b"on", 1)
    assert publishes(s.recv())[0].payload == b"on"
    publish(p, "dev/2", b"v", 1, pid=3)
    assert got[-1] == ("dev/2", b"v", 1, False)
    assert b.unsubscribe(lc, "dev/#")
    assert len(b.subs) == 1


def test_local_client_may_subscribe_from_its_callback():
    # Delivery iterates the subscribers of a filter while a local client's
    # callback runs; subscribing or unsubscribing there must be safe.
    b = make_broker()
    got = []
    late = b.local_client("late", lambda msg, qos, retain: got.append(("late", msg.payload)))

    def first(msg, qos, retain):
        got.append(("first", msg.payload))
        b.subscribe(late, "a/#", 0)
        b.unsubscribe(lc, "a/#")

    lc = b.local_client("first", first)
    b.subscribe(lc, "a/#", 0)
    b.publish("a/1", b"1")
    b.publish("a/2", b"2")
    assert got[0] == ("first", b"1") and got[-1] == ("late", b"2")
    assert ("first", b"2") not in got
