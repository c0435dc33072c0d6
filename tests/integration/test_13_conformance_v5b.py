# 13: MQTT 5.0 conformance, PUBLISH to the end of the standard: one test per
# normative statement of docs/conformance.md that no other test exercised, on
# raw sockets (byte-exact where the spec is), against both runtimes (the
# MicroPython one with the board profile at 64 KiB). Strings, CONNECT and
# CONNACK: test_12_conformance_v5.py.
import time

import pytest

from . import mqttraw as raw
from .clients import unique_id
from .raw5 import (ack5, block, closed_by_broker, disconnect_reason, next_pub, parse_props,
                   publish_qos1, publisher, raw5, read_varint, still_serving, subscriber, u16,
                   u32, unsubscribe5, wait_until)

pytestmark = [pytest.mark.timeout(90), pytest.mark.edge_only("5.0 conformance of edgebroker")]

BROKER_CONFIG = {"max_packet_size": 1024, "max_inflight": 4, "max_topic_alias": 4}

EXPIRY_60 = b"\x11" + u32(60)  # Session Expiry Interval 60 s
RECEIVE_MAX_1 = b"\x21" + u16(1)


@pytest.fixture
def b5(runtime, request):
    """As test_08's: a fresh broker per test under MicroPython, one per
    module on CPython."""
    return request.getfixturevalue("broker" if runtime == "micropython" else "shared_broker")


def publish_qos2(c, topic, payload, pid=1, props=b"\x00"):
    """The publisher's whole QoS 2 exchange; returns the PUBREC's reason code."""
    c.send(raw.publish(topic, payload, 2, pid=pid, props=props))
    rec = c.expect(raw.PUBREC)
    assert rec.body[:2] == u16(pid), rec
    reason = rec.body[2] if len(rec.body) > 2 else 0
    if reason < 0x80:
        c.send(raw.pubrel(pid))
        comp = c.expect(raw.PUBCOMP)
        assert comp.body == u16(pid), comp
    return reason


def receive_qos2(c, p):
    """The subscriber's side of a QoS 2 delivery p: PUBREC, PUBREL, PUBCOMP."""
    c.send(raw.pubrec(p.pid))
    rel = c.expect(raw.PUBREL)
    assert rel.body == u16(p.pid), rel
    c.send(raw.pubcomp(p.pid))


def end_session(c):
    """DISCONNECT with Session Expiry Interval 0: the session ends now."""
    c.send(raw.packet(0xE0, b"\x00" + block(b"\x11" + u32(0))))
    c.wait_closed()
    c.close()


def reason_string(body, at):
    """The Reason String of an ack or DISCONNECT whose property block starts
    at body[at], or None."""
    if len(body) <= at:
        return None
    n, i = read_varint(body, at)
    return dict(parse_props(body[i:i + n])).get(0x1F)


# -- PUBLISH (§3.3) ---------------------------------------------------------------------------

def test_outgoing_dup_is_set_only_on_retransmission(b5):
    # [MQTT-3.3.1-3] DUP going out depends on the outgoing PUBLISH alone: a
    # PUBLISH that came in with DUP 1 goes out with DUP 0 the first time, and
    # with DUP 1 when it is sent again on the session's next connection
    cid = unique_id("dup")
    t = "dup/" + cid
    sub = subscriber(b5, t, 1, client_id=cid, props_block=block(EXPIRY_60), clean=False)
    pub = publisher(b5)
    with pub:
        pub.send(raw.publish(t, b"m", 1, dup=True, pid=3, props=b"\x00"))
        pub.expect(raw.PUBACK)
    first = next_pub(sub)
    assert first.payload == b"m" and not first.dup, first
    sub.abort()  # no PUBACK
    closed_by_broker(b5, cid)
    sub, ack = raw5(b5, cid, block(EXPIRY_60), clean=False)
    with sub:
        assert ack[0] == 1, ack
        again = next_pub(sub)
        assert (again.payload, again.pid, again.dup) == (b"m", first.pid, True), again
        sub.send(raw.puback(again.pid))
        end_session(sub)


def test_retain_0_neither_stores_nor_touches_the_retained_message(b5):
    # [MQTT-3.3.1-8] RETAIN 0: not stored, and the topic's retained message
    # is neither replaced nor (by an empty payload) removed
    t = "r0/" + unique_id("r0")
    pub = publisher(b5)
    with pub:
        publish_qos1(pub, t, b"kept", retain=True)
        publish_qos1(pub, t, b"live", pid=2)
        publish_qos1(pub, t, b"", pid=3)
        s = subscriber(b5, t, 1)
        with s:
            p = next_pub(s)
            assert (p.payload, p.retain) == (b"kept", True), p
            s.send(raw.puback(p.pid))
            publish_qos1(pub, t, b"sentinel", pid=4)
            p = next_pub(s)
            assert p.payload == b"sentinel", p  # one retained message only
            s.send(raw.puback(p.pid))
        publish_qos1(pub, t, b"", pid=5, retain=True)  # clear it


def test_topic_aliases_do_not_carry_over_to_another_connection(b5):
    # [MQTT-3.3.2-7] Topic Alias mappings belong to one network connection:
    # on the session's next connection the server sends the full topic again
    # (with a fresh alias), and an alias the client set before is unknown
    # (an empty topic with it: Protocol Error 0x82)
    cid = unique_id("alias")
    t = "alias/" + cid
    props = block(EXPIRY_60, b"\x22" + u16(2))  # Topic Alias Maximum 2
    c, _ = raw5(b5, cid, props, clean=False)
    with c:
        c.send(raw.subscribe(1, [(t, 0)], props=b"\x00"))
        c.expect(raw.SUBACK)
        c.send(raw.publish(t, b"one", 0, props=block(b"\x23" + u16(1))))  # alias 1 = t, ours
        p = next_pub(c)
        assert (p.topic, p.prop(0x23)) == (t.encode(), 1), p  # alias 1 = t, the server's
        c.send(raw.publish("", b"two", 0, props=block(b"\x23" + u16(1))))
        p = next_pub(c)
        assert (p.topic, p.payload, p.prop(0x23)) == (b"", b"two", 1), p
        c.send(raw.DISCONNECT_BYTES)
        c.wait_closed()
    closed_by_broker(b5, cid)
    c, ack = raw5(b5, cid, props, clean=False)
    with c:
        assert ack[0] == 1, ack
        pub = publisher(b5)
        with pub:
            publish_qos1(pub, t, b"three")
        p = next_pub(c)
        assert (p.topic, p.payload, p.prop(0x23)) == (t.encode(), b"three", 1), p
        c.send(raw.publish("", b"four", 0, props=block(b"\x23" + u16(1))))
        assert disconnect_reason(c) == 0x82
    c, _ = raw5(b5, cid, props, clean=False)
    with c:
        end_session(c)
    still_serving(b5)


def _string_property_not_utf8(b5, prop):
    for bad in (b"a\xff", b"a\xed\xa0\x80", b"a\x00"):  # invalid byte, surrogate, U+0000
        c, _ = raw5(b5)
        with c:
            c.send(raw.publish("sp/x", b"p", 1, pid=1, props=block(prop + raw.ustr(bad))))
            assert disconnect_reason(c) == 0x81, bad
    still_serving(b5)


def test_response_topic_not_utf8_is_malformed(b5):
    # [MQTT-3.3.2-13] the Response Topic is a UTF-8 string: DISCONNECT 0x81
    _string_property_not_utf8(b5, b"\x08")


def test_content_type_not_utf8_is_malformed(b5):
    # [MQTT-3.3.2-19] the Content Type is a UTF-8 string: DISCONNECT 0x81
    _string_property_not_utf8(b5, b"\x03")


def test_at_send_quota_0_other_packets_still_flow(b5):
    # [MQTT-3.3.4-10] [MQTT-4.9.0-3] with the client's Receive Maximum (1)
    # used up, only QoS 1/2 PUBLISH waits: PUBREL, PINGRESP, SUBACK, UNSUBACK
    # and the acks of the client's own PUBLISH go out at once
    t = "quota/" + unique_id("quota")
    sub = subscriber(b5, t, 2, props_block=block(RECEIVE_MAX_1))
    pub = publisher(b5)
    with sub, pub:
        assert publish_qos2(pub, t, b"m1", pid=1) == 0
        assert publish_qos2(pub, t, b"m2", pid=2) == 0  # held: the quota is 0
        p1 = next_pub(sub)
        assert p1.payload == b"m1", p1
        sub.send(raw.pubrec(p1.pid))
        assert sub.expect(raw.PUBREL).body == u16(p1.pid)  # quota still 0 until PUBCOMP
        sub.send(raw.PINGREQ_BYTES)
        sub.expect(raw.PINGRESP)
        sub.send(raw.subscribe(2, [(t + "/other", 1)], props=b"\x00"))
        assert sub.expect(raw.SUBACK).body == u16(2) + b"\x00\x01"
        sub.send(unsubscribe5(3, [t + "/other"]))
        assert sub.expect(raw.UNSUBACK).body == u16(3) + b"\x00\x00"
        sub.send(raw.publish(t + "/own", b"q1", 1, pid=4, props=b"\x00"))
        assert sub.expect(raw.PUBACK).body[:2] == u16(4)
        sub.send(raw.publish(t + "/own", b"q2", 2, pid=5, props=b"\x00"))
        assert sub.expect(raw.PUBREC).body[:2] == u16(5)
        sub.send(raw.pubrel(5))
        assert sub.expect(raw.PUBCOMP).body[:2] == u16(5)
        sub.send(raw.pubcomp(p1.pid))  # quota back to 1: now m2
        p2 = next_pub(sub)
        assert p2.payload == b"m2", p2
        receive_qos2(sub, p2)


# -- SUBSCRIBE, UNSUBSCRIBE (§3.8 - §3.11) --------------------------------------------------

def test_resubscribe_resends_retained_and_loses_nothing(b5):
    # [MQTT-3.8.4-4] SUBSCRIBE again to the same filter with Retain Handling
    # 0: the retained message is sent again, and nothing in flight or queued
    # for the replaced subscription is lost. Receive Maximum 1 keeps one
    # message in flight and the next ones queued while it is replaced.
    t = "resub/" + unique_id("resub")
    pub = publisher(b5)
    with pub:
        publish_qos1(pub, t, b"r", retain=True)
        sub = subscriber(b5, t, 1, props_block=block(RECEIVE_MAX_1))
        with sub:
            first = next_pub(sub)
            assert (first.payload, first.retain) == (b"r", True), first
            publish_qos1(pub, t, b"m1", pid=2)
            publish_qos1(pub, t, b"m2", pid=3)
            sub.send(raw.subscribe(2, [(t, 1)], props=b"\x00"))  # options 0x01: Retain Handling 0
            assert sub.expect(raw.SUBACK).body == u16(2) + b"\x00\x01"
            sub.send(raw.puback(first.pid))
            got = []
            for _ in range(3):
                p = next_pub(sub)
                got.append((p.payload, p.retain))
                sub.send(raw.puback(p.pid))
            assert sorted(got) == [(b"m1", False), (b"m2", False), (b"r", True)], got
            publish_qos1(pub, t, b"sentinel", pid=4)
            p = next_pub(sub)
            assert p.payload == b"sentinel", p  # and nothing twice
            sub.send(raw.puback(p.pid))
        publish_qos1(pub, t, b"", pid=5, retain=True)  # clear it


def test_suback_reason_string_dropped_over_maximum_packet_size(b5):
    # [MQTT-3.9.2-1] the SUBACK of a refused filter carries a Reason String,
    # unless it would exceed the client's Maximum Packet Size: then not
    bad = "$share//" + unique_id("rs")  # an empty ShareName: 0x8F, the connection stays
    c, _ = raw5(b5, props_block=block(b"\x27" + u32(1000)))
    with c:
        c.send(raw.subscribe(5, [(bad, 0)], props=b"\x00"))
        ack = c.expect(raw.SUBACK)
        assert ack.body[:2] == u16(5) and ack.body[-1] == 0x8F, ack
        assert reason_string(ack.body, 2), ack
        assert 2 + len(ack.body) > 16  # (so with 16 it cannot fit)
    c, _ = raw5(b5, props_block=block(b"\x27" + u32(16)))
    with c:
        c.send(raw.subscribe(5, [(bad, 0)], props=b"\x00"))
        ack = c.expect(raw.SUBACK)
        assert (ack.first_byte, ack.body) == (0x90, u16(5) + b"\x00\x8f"), ack
        c.send(raw.PINGREQ_BYTES)
        c.expect(raw.PINGRESP)
    still_serving(b5)


def test_unsubscribe_filter_not_utf8_is_malformed(b5):
    # [MQTT-3.10.3-1] UNSUBSCRIBE's filters are UTF-8 strings: DISCONNECT 0x81
    for bad in (b"u/\xff", b"u/\xc0\xaf", b"u/\x00"):
        c, _ = raw5(b5)
        with c:
            c.send(unsubscribe5(1, [b"ok", bad]))
            assert disconnect_reason(c) == 0x81, bad
    still_serving(b5)


def test_unsubscribe_completes_deliveries_in_flight(b5):
    # [MQTT-3.10.4-3] deliveries of QoS 1 and 2 already started when the
    # subscription goes are completed: the QoS 2 exchange goes on (PUBREL),
    # the unacknowledged QoS 1 message is sent again on the session's next
    # connection; new messages no longer match
    cid = unique_id("unsub")
    base = "unsub/" + cid
    sub = subscriber(b5, base + "/+", 2, client_id=cid, props_block=block(EXPIRY_60), clean=False)
    pub = publisher(b5)
    with pub:
        assert publish_qos2(pub, base + "/q2", b"two") == 0
        assert publish_qos1(pub, base + "/q1", b"one", pid=2) == 0
        p2 = next_pub(sub)
        p1 = next_pub(sub)
        assert (p2.payload, p2.qos, p1.payload, p1.qos) == (b"two", 2, b"one", 1), (p2, p1)
        sub.send(unsubscribe5(3, [base + "/+"]))
        assert sub.expect(raw.UNSUBACK).body == u16(3) + b"\x00\x00"
        assert publish_qos1(pub, base + "/q1", b"new", pid=3) == 0x10  # no subscription now
        receive_qos2(sub, p2)
        sub.send(raw.PINGREQ_BYTES)
        sub.expect(raw.PINGRESP)  # (the PUBCOMP was read: the reset below cannot lose it)
        sub.abort()  # p1 not acknowledged
        closed_by_broker(b5, cid)
        sub, ack = raw5(b5, cid, block(EXPIRY_60), clean=False)
        with sub:
            assert ack[0] == 1, ack
            again = next_pub(sub)
            assert (again.payload, again.pid, again.dup) == (b"one", p1.pid, True), again
            sub.send(raw.puback(again.pid))
            sub.send(raw.PINGREQ_BYTES)
            sub.expect(raw.PINGRESP)  # and nothing else was due
            end_session(sub)


# -- DISCONNECT (§3.14) ---------------------------------------------------------------------

def test_disconnect_reason_string_dropped_over_maximum_packet_size(b5):
    # [MQTT-3.14.2-3] the server's DISCONNECT carries a Reason String unless
    # that would exceed the client's Maximum Packet Size: then 0x82 alone
    c, _ = raw5(b5)
    with c:
        c.send(b"\xf0\x00")  # AUTH with no authentication under way: Protocol Error
        p = c.read_packet()
        assert p.type == raw.DISCONNECT and p.body[0] == 0x82 and reason_string(p.body, 1), p
        c.wait_closed()
    c, _ = raw5(b5, props_block=block(b"\x27" + u32(8)))
    with c:
        c.send(b"\xf0\x00")
        assert c.wait_closed() == b"\xe0\x01\x82"
    still_serving(b5)


def test_nothing_is_sent_after_the_servers_disconnect(b5):
    # [MQTT-3.14.4-1] after its DISCONNECT the server sends nothing more on
    # that connection: not the answers to packets that followed the error,
    # not the messages for a session taken over by another connection
    c, _ = raw5(b5)
    with c:
        c.send(b"\xf0\x00" + raw.PINGREQ_BYTES + raw.subscribe(1, [("x", 0)], props=b"\x00"))
        assert disconnect_reason(c) == 0x82  # (which checks that nothing follows)
    cid = unique_id("after")
    t = "after/" + cid
    old = subscriber(b5, t, 1, client_id=cid, props_block=block(EXPIRY_60), clean=False)
    with old:
        new, ack = raw5(b5, cid, block(EXPIRY_60), clean=False)
        with new:
            assert ack[0] == 1, ack
            pub = publisher(b5)
            with pub:
                publish_qos1(pub, t, b"m")
            p = next_pub(new)
            assert p.payload == b"m", p
            new.send(raw.puback(p.pid))
            assert disconnect_reason(old) == 0x8E
            end_session(new)
    still_serving(b5)


# -- sessions, QoS flows (§4.1 - §4.3) ----------------------------------------------------------

def test_session_kept_while_the_connection_is_open(b5):
    # [MQTT-4.1.0-1] the session is not discarded while its connection is
    # open, however long past its Session Expiry Interval (1 s here): 2.5 s
    # later its subscription still delivers and its unacknowledged message is
    # still held (sent again on the next connection)
    cid = unique_id("open")
    t = "open/" + cid
    sub = subscriber(b5, t, 1, client_id=cid, props_block=block(b"\x11" + u32(1)), clean=False)
    pub = publisher(b5)
    with pub:
        assert publish_qos1(pub, t, b"held") == 0
        held = next_pub(sub)
        wait_until(time.monotonic() + 2.5)
        sub.send(raw.PINGREQ_BYTES)
        sub.expect(raw.PINGRESP)
        assert publish_qos1(pub, t, b"later", pid=2) == 0  # the subscription is there
        p = next_pub(sub)
        assert p.payload == b"later", p
        sub.send(raw.puback(p.pid))
    # leave, with a longer expiry (1 s could pass before the reconnection)
    sub.send(raw.packet(0xE0, b"\x00" + block(EXPIRY_60)))
    sub.wait_closed()
    sub.close()
    closed_by_broker(b5, cid)
    sub, ack = raw5(b5, cid, block(EXPIRY_60), clean=False)
    with sub:
        assert ack[0] == 1, ack
        p = next_pub(sub)
        assert (p.payload, p.pid, p.dup) == (b"held", held.pid, True), p
        sub.send(raw.puback(p.pid))
        end_session(sub)


def test_publish_after_puback_with_the_same_id_is_new(b5):
    # [MQTT-4.3.2-5] once the server has sent PUBACK, a PUBLISH with that
    # Packet Identifier is a new message, DUP or not
    t = "pid1/" + unique_id("pid1")
    sub = subscriber(b5, t, 1)
    pub = publisher(b5)
    with sub, pub:
        for payload, dup in ((b"first", False), (b"second", True), (b"third", False)):
            pub.send(raw.publish(t, payload, 1, dup=dup, pid=7, props=b"\x00"))
            assert pub.expect(raw.PUBACK).body[:2] == u16(7)
        for payload in (b"first", b"second", b"third"):
            p = next_pub(sub)
            assert p.payload == payload, p
            sub.send(raw.puback(p.pid))


def test_sent_qos2_publish_is_not_expired(b5):
    # [MQTT-4.3.3-7] once the QoS 2 PUBLISH has been sent, Message Expiry no
    # longer applies to it: past its 1 s it is sent again on the session's
    # next connection, and its exchange completes; the message with the same
    # expiry still queued behind Receive Maximum 1 expires ([MQTT-3.3.2-5])
    cid = unique_id("x2")
    t = "x2/" + cid
    props = block(EXPIRY_60, RECEIVE_MAX_1)
    sub = subscriber(b5, t, 2, client_id=cid, props_block=props, clean=False)
    pub = publisher(b5)
    with pub:
        t0 = time.monotonic()
        assert publish_qos2(pub, t, b"sent", pid=1, props=block(b"\x02" + u32(1))) == 0
        assert publish_qos2(pub, t, b"queued", pid=2, props=block(b"\x02" + u32(1))) == 0
        sent = next_pub(sub)
        assert sent.payload == b"sent", sent
        sub.abort()  # no PUBREC
        closed_by_broker(b5, cid)
        wait_until(t0 + 2.5)  # both messages' Message Expiry Interval has passed
        sub, ack = raw5(b5, cid, props, clean=False)
        with sub:
            assert ack[0] == 1, ack
            p = next_pub(sub)
            assert (p.payload, p.pid, p.dup) == (b"sent", sent.pid, True), p
            receive_qos2(sub, p)
            assert publish_qos2(pub, t, b"sentinel", pid=3) == 0
            p = next_pub(sub)
            assert p.payload == b"sentinel", p  # "queued" expired
            receive_qos2(sub, p)
            end_session(sub)


def test_failed_pubrec_frees_the_packet_id(b5):
    # [MQTT-4.3.3-9] after a PUBREC of 0x80 or above (0x87: a client may not
    # publish under $SYS), a PUBLISH with that Packet Identifier is a new
    # message: delivered, PUBREC 0x00, its exchange completes
    t = "rec80/" + unique_id("rec80")
    sub = subscriber(b5, t, 2)
    pub = publisher(b5)
    with sub, pub:
        pub.send(raw.publish("$SYS/" + t, b"refused", 2, pid=9, props=b"\x00"))
        assert pub.expect(raw.PUBREC).body == u16(9) + b"\x87"
        pub.send(raw.publish(t, b"new", 2, pid=9, props=b"\x00"))
        rec = pub.expect(raw.PUBREC)
        assert rec.body == u16(9), rec  # success, matched (no reason code)
        pub.send(raw.pubrel(9))
        assert pub.expect(raw.PUBCOMP).body == u16(9)
        p = next_pub(sub)
        assert (p.payload, p.qos) == (b"new", 2), p
        receive_qos2(sub, p)


def test_qos2_exchange_completes_after_message_expiry(b5):
    # [MQTT-4.3.3-13] the server as QoS 2 receiver completes the exchange
    # even though the message's expiry (1 s) has passed: PUBREL 2 s later
    # gets PUBCOMP 0x00 (not 0x92 Packet Identifier not found)
    t = "x13/" + unique_id("x13")
    sub = subscriber(b5, t, 2)
    pub = publisher(b5)
    with sub, pub:
        t0 = time.monotonic()
        pub.send(raw.publish(t, b"x", 2, pid=4, props=block(b"\x02" + u32(1))))
        assert pub.expect(raw.PUBREC).body == u16(4)
        wait_until(t0 + 2.0)
        pub.send(raw.pubrel(4))
        assert pub.expect(raw.PUBCOMP).body == u16(4)
        p = next_pub(sub)
        assert p.payload == b"x", p
        receive_qos2(sub, p)


# -- shared subscriptions (§4.8.2) -----------------------------------------------------------

def test_shared_members_get_their_own_granted_qos(b5):
    # [MQTT-4.8.2-3] each member of a shared subscription gets its messages
    # at the QoS it was granted: QoS 2 messages arrive at QoS 0 at one
    # member, at QoS 1 at the other (round robin: two each)
    t = "shq/" + unique_id("shq")
    share = "$share/g/" + t
    a = subscriber(b5, share, 0)
    b = subscriber(b5, share, 1)
    pub = publisher(b5)
    with a, b, pub:
        for i in range(4):
            assert publish_qos2(pub, t, b"%d" % i, pid=i + 1) == 0
        got_a = [next_pub(a) for _ in range(2)]
        got_b = [next_pub(b) for _ in range(2)]
        for p in got_b:
            b.send(raw.puback(p.pid))
        assert [(p.qos, p.pid) for p in got_a] == [(0, None)] * 2, got_a
        assert [p.qos for p in got_b] == [1, 1], got_b
        assert sorted(p.payload for p in got_a + got_b) == [b"0", b"1", b"2", b"3"]


@pytest.mark.parametrize("qos", [1, 2])
def test_shared_delivery_refused_by_its_member_is_discarded(b5, qos):
    # [MQTT-4.8.2-6] a member that answers a shared delivery with PUBACK or
    # PUBREC 0x80: the message is discarded, not sent to another member,
    # not even when that member then leaves
    t = "shd/" + unique_id("shd")
    share = "$share/g/" + t
    a_id = unique_id("shda")
    a = subscriber(b5, share, qos, client_id=a_id)
    b = subscriber(b5, share, qos)
    pub = publisher(b5)
    send = publish_qos1 if qos == 1 else publish_qos2
    with a, b, pub:
        assert send(pub, t, b"m1", pid=1) == 0
        p = next_pub(a)  # round robin: the first member
        assert p.payload == b"m1", p
        a.send(ack5(raw.PUBACK if qos == 1 else raw.PUBREC, p.pid, 0x80))
        a.send(raw.PINGREQ_BYTES)
        a.expect(raw.PINGRESP)  # (no PUBREL for a failed PUBREC)
        for want in (b"m2", b"m3"):
            if want == b"m3":  # a leaves: what it held would go to b now
                a.send(raw.DISCONNECT_BYTES)
                a.wait_closed()
                closed_by_broker(b5, a_id)
            assert send(pub, t, want, pid=2) == 0
            p = next_pub(b)
            assert p.payload == want, p  # never m1
            if qos == 1:
                b.send(raw.puback(p.pid))
            else:
                receive_qos2(b, p)
