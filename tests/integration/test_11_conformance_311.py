# 11: MQTT 3.1.1 conformance: the normative statements no other test exercised
# (docs/conformance.md names each test here in its row). Raw sockets throughout,
# so that what the spec says byte by byte is checked byte by byte.
#
# "Nothing else arrived / was stored" is checked with a marker, as in test_02: the
# marker goes to the broker after the action under test, so anything the broker
# was going to send (or had stored) comes first.
import struct
import time

import pytest

from . import mqttraw as raw
from .clients import round_trip, unique_id

pytestmark = pytest.mark.timeout(60)

ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def topic(name):
    return "t11/%s/%s" % (name, unique_id("x"))


def pid2(pid):
    return struct.pack("!H", pid)


def connect_packet(flags, payload, keepalive=60):
    """A level 4 CONNECT with exactly these flags and payload bytes (mqttraw.connect
    derives the flags from the fields; these tests need them to disagree)."""
    return raw.packet(0x10, raw.ustr("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
                      + payload)


def still_serving(broker):
    broker.assert_alive()
    round_trip(broker.host, broker.port)
    broker.assert_alive()


def closed_without_connack(broker, data):
    """data on a fresh connection: the broker closes it having sent nothing
    ([MQTT-3.1.4-1]), and goes on serving others."""
    with raw.RawClient(broker.host, broker.port) as c:
        c.send(data)
        got = c.wait_closed(timeout=5)
    assert got == b"", "broker sent %r before closing" % (got,)
    still_serving(broker)


def raw_sub(broker, filters, client_id=None, pid=1):
    """A raw client subscribed to filters [(filter, qos)], its SUBACK checked."""
    c = raw.RawClient(broker.host, broker.port)
    c.connect(client_id or unique_id("sub"))
    c.send(raw.subscribe(pid, filters))
    ack = c.expect(raw.SUBACK)
    assert (ack.first_byte, ack.body) == (0x90, pid2(pid) + bytes(q for _, q in filters))
    return c


def publish_acked(c, t, payload, qos, pid=1, retain=False, dup=False):
    """PUBLISH on raw client c and complete its QoS flow as the publisher."""
    c.send(raw.publish(t, payload, qos=qos, pid=pid if qos else None, retain=retain, dup=dup))
    if qos == 1:
        assert c.expect(raw.PUBACK).body == pid2(pid)
    elif qos == 2:
        assert c.expect(raw.PUBREC).body == pid2(pid)
        c.send(raw.pubrel(pid))
        assert c.expect(raw.PUBCOMP).body == pid2(pid)


def clear_retained(broker, t):
    with raw.RawClient(broker.host, broker.port) as c:
        c.connect(unique_id("clr"))
        publish_acked(c, t, b"", 1, retain=True)


def wait_broker_closed(broker, client_id, timeout=10.0):
    """Wait until the broker's log says it let client_id go: a close on one
    socket and a PUBLISH on another may be handled in either order."""
    marks = ("client %s closed" % client_id,          # edgebroker
             "Client %s disconnected" % client_id,    # mosquitto (reference mode)
             "Client %s closed its connection" % client_id,
             "on client %s, disconnecting" % client_id)
    deadline = time.monotonic() + timeout
    while not any(m in broker.log_text() for m in marks):
        assert time.monotonic() < deadline, "the broker never let %s go:\n%s" % (
            client_id, broker.log_tail(30))
        time.sleep(0.02)  # polling the broker's log for the event, with a deadline


# -- 1.5.3 UTF-8 strings ---------------------------------------------------------------

def test_bom_in_topic_and_payload_is_kept(shared_broker):
    # [MQTT-1.5.3-3] EF BB BF is U+FEFF wherever it appears and is never skipped or
    # stripped: a topic holding it is delivered byte for byte and matches only a
    # filter holding it too
    b = shared_broker
    bare = topic("bom")
    t = "\ufeff" + bare + "/\ufeff"
    assert raw.ustr(t)[2:5] == b"\xef\xbb\xbf"
    with raw_sub(b, [(t, 0)]) as sub, raw_sub(b, [(bare + "/", 0), (bare, 0)]) as stripped, \
            raw.RawClient(b.host, b.port) as pub:
        pub.connect(unique_id("bompub"))
        pub.send(raw.publish(t, b"\xef\xbb\xbfpayload"))
        p = sub.expect(raw.PUBLISH)
        assert (p.first_byte, p.body) == (0x30, raw.ustr(t) + b"\xef\xbb\xbfpayload")
        pub.send(raw.publish(bare, b"marker"))
        p = stripped.expect(raw.PUBLISH)
        assert (p.first_byte, p.body) == (0x30, raw.ustr(bare) + b"marker")


# -- 2.3.1 packet identifiers ----------------------------------------------------------

@pytest.mark.parametrize("pub_qos,sub_qos", [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0)])
def test_qos0_publish_has_no_packet_id(shared_broker, pub_qos, sub_qos):
    # [MQTT-2.3.1-5] a QoS 0 PUBLISH has no packet id: what the broker sends at QoS 0
    # (a QoS 0 message, or a QoS 1/2 one downgraded to a QoS 0 subscription) is the
    # topic and the payload, nothing between them; the retained copy likewise
    b = shared_broker
    t = topic("q0pid")
    with raw_sub(b, [(t, sub_qos)]) as sub, raw.RawClient(b.host, b.port) as pub:
        pub.connect(unique_id("q0pub"))
        publish_acked(pub, t, b"live", pub_qos, pid=0x0102, retain=True)
        p = sub.expect(raw.PUBLISH)
        assert (p.first_byte, p.body) == (0x30, raw.ustr(t) + b"live")
    with raw.RawClient(b.host, b.port) as late:
        late.connect(unique_id("q0late"))
        late.send(raw.subscribe(3, [(t, sub_qos)]))
        late.expect(raw.SUBACK)
        p = late.expect(raw.PUBLISH)
        assert (p.first_byte, p.body) == (0x31, raw.ustr(t) + b"live")
    clear_retained(b, t)


def test_suback_carries_the_subscribe_packet_id(shared_broker):
    # [MQTT-2.3.1-7] [MQTT-3.8.4-2] each SUBACK has the packet id of the SUBSCRIBE it
    # answers: three pipelined, with ids that differ in both bytes
    b = shared_broker
    t = topic("subackpid")
    pids = (0x1234, 0xFFFF, 0x0001)
    with raw.RawClient(b.host, b.port) as c:
        c.connect(unique_id("subackpid"))
        c.send(b"".join(raw.subscribe(pid, [(t + "/%d" % i, i)]) for i, pid in enumerate(pids)))
        for i, pid in enumerate(pids):
            p = c.expect(raw.SUBACK)
            assert (p.first_byte, p.body) == (0x90, pid2(pid) + bytes([i]))


def test_unsuback_carries_the_unsubscribe_packet_id(shared_broker):
    # [MQTT-2.3.1-7] [MQTT-3.10.4-4] every UNSUBSCRIBE gets an UNSUBACK with its
    # packet id: three pipelined, one of a filter never subscribed
    b = shared_broker
    t = topic("unsubackpid")
    pids = (0xABCD, 0x00FF, 0x0100)
    with raw_sub(b, [(t + "/0", 1), (t + "/1", 0)]) as c:
        c.send(b"".join(raw.unsubscribe(pid, [t + "/%d" % i]) for i, pid in enumerate(pids)))
        for pid in pids:
            p = c.expect(raw.UNSUBACK)
            assert (p.first_byte, p.body) == (0xB0, pid2(pid))


# -- 3.1 CONNECT -----------------------------------------------------------------------

@pytest.mark.parametrize("clean", [True, False], ids=["clean-1", "clean-0"])
def test_retained_message_survives_the_publishers_session(shared_broker, clean):
    # [MQTT-3.1.2-7] retained messages are not part of the session state: they stay
    # when the session of the client that published them ends
    b = shared_broker
    t = topic("retsess")
    cid = unique_id("retpub")
    with raw.RawClient(b.host, b.port) as pub:
        pub.connect(cid, clean=clean)
        publish_acked(pub, t, b"kept", 1, pid=5, retain=True)
        pub.send(raw.DISCONNECT_BYTES)
        assert pub.wait_closed() == b""
    if not clean:
        # the persistent session ends: a CleanSession 1 CONNECT discards it
        with raw.RawClient(b.host, b.port) as pub:
            assert pub.connect(cid, clean=True).session_present == 0
            pub.send(raw.DISCONNECT_BYTES)
            assert pub.wait_closed() == b""
    with raw.RawClient(b.host, b.port) as sub:
        sub.connect(unique_id("retsub"))
        sub.send(raw.subscribe(1, [(t, 1)]))
        sub.expect(raw.SUBACK)
        got = sub.expect(raw.PUBLISH).publish_fields()
        assert got[:5] == (t, b"kept", 1, True, False)
        sub.send(raw.puback(got[5]))
    clear_retained(b, t)


@pytest.mark.parametrize("flags,payload", [
    # [MQTT-3.1.2-9] Will Flag 1: the Will Topic and Will Message are in the payload
    pytest.param(0x06, raw.ustr("wf"), id="will-flag-1-no-will-fields"),
    pytest.param(0x06, raw.ustr("wf") + raw.ustr("t11/w"), id="will-flag-1-no-will-message"),
    # [MQTT-3.1.2-18] User Name Flag 0: no user name in the payload
    pytest.param(0x02, raw.ustr("un") + raw.ustr("user"), id="username-flag-0-but-username"),
    # [MQTT-3.1.2-19] User Name Flag 1: a user name in the payload
    pytest.param(0x82, raw.ustr("un"), id="username-flag-1-no-username"),
    # [MQTT-3.1.2-20] Password Flag 0: no password in the payload
    pytest.param(0x82, raw.ustr("pw") + raw.ustr("user") + raw.ustr("secret"),
                 id="password-flag-0-but-password"),
    # [MQTT-3.1.2-21] Password Flag 1: a password in the payload
    pytest.param(0xC2, raw.ustr("pw") + raw.ustr("user"), id="password-flag-1-no-password"),
    # [MQTT-3.1.3-3] the ClientId is present (the first payload field)
    pytest.param(0x02, b"", id="no-client-id"),
    pytest.param(0x02, b"\x00", id="client-id-length-cut"),
])
def test_connect_payload_must_match_its_flags(shared_broker, flags, payload):
    # A payload missing a field its flags announce, or holding one they do not, is
    # malformed: closed without CONNACK [MQTT-3.1.4-1]
    closed_without_connack(shared_broker, connect_packet(flags, payload))


@pytest.mark.parametrize("username,password", [
    pytest.param("user", None, id="username"),
    pytest.param("user", b"\x00\xffsecret", id="username-password"),
    pytest.param(None, None, id="neither"),
])
def test_connect_payload_fields_in_order(shared_broker, username, password):
    # [MQTT-3.1.3-1] ClientId, Will Topic, Will Message, User Name, Password, in that
    # order; [MQTT-3.1.2-19] [MQTT-3.1.2-21] a user name / password present with its
    # flag is read: the CONNECT is accepted, the packet after it is parsed where it
    # starts, and the will comes out with the topic and message of fields 2 and 3
    b = shared_broker
    t = topic("order")
    cid = unique_id("order")
    flags = 0x02 | 0x04 | (1 << 3)    # clean, will at QoS 1
    payload = raw.ustr(cid) + raw.ustr(t) + raw.ustr(b"will message")
    if username is not None:
        flags |= 0x80
        payload += raw.ustr(username)
    if password is not None:
        flags |= 0x40
        payload += raw.ustr(password)
    with raw_sub(b, [(t, 1)]) as sub:
        c = raw.RawClient(b.host, b.port)
        c.send(connect_packet(flags, payload) + raw.PINGREQ_BYTES)
        ack = c.read_packet()
        assert (ack.first_byte, ack.body) == (0x20, b"\x00\x00")
        p = c.read_packet()
        assert (p.first_byte, p.body) == (0xD0, b"")
        c.abort()
        got = sub.expect(raw.PUBLISH).publish_fields()
        assert got[:5] == (t, b"will message", 1, False, False)
        sub.send(raw.puback(got[5]))


def test_will_flag_0_publishes_nothing_on_abnormal_close(broker):
    # [MQTT-3.1.2-12] Will Flag 0: no will is published when the connection ends,
    # however it ends. A fresh broker, so '#' sees all there is.
    b = broker
    t = topic("nowill")
    with raw_sub(b, [("#", 1)]) as watcher:
        cids = []
        for how in ("fin", "rst", "protocol-error"):
            cid = unique_id("nowill-" + how)
            cids.append(cid)
            c = raw.RawClient(b.host, b.port)
            c.connect(cid)
            c.send(raw.subscribe(1, [(t, 1)]))
            c.expect(raw.SUBACK)
            if how == "fin":
                c.close()
            elif how == "rst":
                c.abort()
            else:
                c.send(b"\xe2\x00")     # DISCONNECT with bad flags: closed, not a DISCONNECT
                assert c.wait_closed() == b""
                c.close()
        for cid in cids:
            wait_broker_closed(b, cid)
        with raw.RawClient(b.host, b.port) as pub:
            pub.connect(unique_id("marker"))
            pub.send(raw.publish(t, b"marker"))
            p = watcher.expect(raw.PUBLISH)
        assert p.publish_fields()[:2] == (t, b"marker")


def test_will_retain_0_is_published_not_retained(shared_broker):
    # [MQTT-3.1.2-16] Will Retain 0: the will goes out as a non-retained message, to
    # the subscribers of the moment (RETAIN 0), and is not stored for later ones
    b = shared_broker
    t = topic("willr0")
    with raw_sub(b, [(t, 1)]) as sub:
        cid = unique_id("willr0")
        c = raw.RawClient(b.host, b.port)
        c.connect(cid, will=(t, b"bye", 1, False))
        c.abort()
        p = sub.expect(raw.PUBLISH)
        got = p.publish_fields()
        assert got[:5] == (t, b"bye", 1, False, False) and p.flags == 0x02
        sub.send(raw.puback(got[5]))
    with raw_sub(b, [(t, 1)]) as late, raw.RawClient(b.host, b.port) as pub:
        pub.connect(unique_id("willr0pub"))
        pub.send(raw.publish(t, b"marker"))
        assert late.expect(raw.PUBLISH).publish_fields()[:4] == (t, b"marker", 0, False)


CLIENT_IDS = [ALNUM[0:23], ALNUM[23:46], ALNUM[46:62] + ALNUM[0:7], "Z"]


@pytest.mark.parametrize("cid", CLIENT_IDS, ids=["0-m", "n-K", "L-Z", "one-char"])
def test_client_ids_of_1_to_23_alphanumerics_accepted(shared_broker, cid):
    # [MQTT-3.1.3-5] ClientIds of 1 to 23 bytes of 0-9a-zA-Z are accepted, each the
    # name of its own session: kept under that exact id (case and all)
    assert 1 <= len(cid) <= 23 and set(cid) <= set(ALNUM)
    assert set("".join(CLIENT_IDS)) == set(ALNUM)
    b = shared_broker
    with raw.RawClient(b.host, b.port) as c:
        c.send(raw.connect(cid, clean=True))
        ack = c.read_packet()
        assert (ack.first_byte, ack.body) == (0x20, b"\x00\x00")
        c.send(raw.DISCONNECT_BYTES)
        assert c.wait_closed() == b""
    for sp in (0, 1):
        with raw.RawClient(b.host, b.port) as c:
            c.send(raw.connect(cid, clean=False))
            ack = c.read_packet()
            assert (ack.first_byte, ack.body) == (0x20, bytes([sp, 0]))
            c.send(raw.DISCONNECT_BYTES)
            assert c.wait_closed() == b""
    if cid.swapcase() != cid:
        with raw.RawClient(b.host, b.port) as c:
            assert c.connect(cid.swapcase(), clean=False).session_present == 0
            c.send(raw.DISCONNECT_BYTES)
            assert c.wait_closed() == b""
        with raw.RawClient(b.host, b.port) as c:
            assert c.connect(cid.swapcase(), clean=True).session_present == 0
    with raw.RawClient(b.host, b.port) as c:
        assert c.connect(cid, clean=True).session_present == 0   # session discarded


@pytest.mark.parametrize("will_topic", [
    pytest.param(b"t11/\xff", id="byte-ff"),
    pytest.param(b"t11/\xc0\xaf", id="overlong"),
    pytest.param(b"t11/\xed\xa0\x80", id="surrogate"),
    pytest.param(b"t11/\x00x", id="nul"),
])
def test_will_topic_must_be_utf8(shared_broker, will_topic):
    # [MQTT-3.1.3-10] the Will Topic is a UTF-8 encoded string: ill-formed, the
    # CONNECT is closed without CONNACK
    closed_without_connack(shared_broker, raw.connect(unique_id("wt"), will=(will_topic, b"x", 0, False)))


def test_will_topic_utf8_kept_intact(shared_broker):
    # [MQTT-3.1.3-10] a well-formed non-ASCII Will Topic is the topic the will goes to
    b = shared_broker
    t = topic("w\u00e9ll\u20ac\U0001f600")
    with raw_sub(b, [(t, 0)]) as sub:
        c = raw.RawClient(b.host, b.port)
        c.connect(unique_id("wtutf8"), will=(t, b"x", 0, False))
        c.abort()
        p = sub.expect(raw.PUBLISH)
        assert (p.first_byte, p.body) == (0x30, raw.ustr(t) + b"x")


@pytest.mark.parametrize("username", [
    pytest.param(b"\xff", id="byte-ff"),
    pytest.param(b"us\xc0\xafer", id="overlong"),
    pytest.param(b"\xed\xbf\xbf", id="surrogate"),
    pytest.param(b"us\x00er", id="nul"),
])
def test_username_must_be_utf8(shared_broker, username):
    # [MQTT-3.1.3-11] the User Name is a UTF-8 encoded string: ill-formed, the
    # CONNECT is closed without CONNACK ...
    closed_without_connack(shared_broker, raw.connect(unique_id("un"), username=username))
    # ... and a well-formed non-ASCII one is accepted
    with raw.RawClient(shared_broker.host, shared_broker.port) as c:
        c.connect(unique_id("un"), username="\u00fcser\u20ac\U0001f600")


@pytest.mark.parametrize("refusal,connack", [
    pytest.param(dict(level=6), b"\x00\x01", id="protocol-level"),
    pytest.param(dict(clean=False, client_id=""), b"\x00\x02", id="empty-client-id"),
])
def test_nothing_processed_after_a_refused_connect(shared_broker, refusal, connack):
    # [MQTT-3.1.4-5] after refusing a CONNECT (a CONNACK with a non-zero return code)
    # the server processes nothing else the client sent: PUBLISH (retained), SUBSCRIBE
    # and PINGREQ pipelined behind it go unanswered, unrouted and unstored
    b = shared_broker
    t = topic("refused")
    kw = dict(client_id=unique_id("refused"))
    kw.update(refusal)
    with raw_sub(b, [(t, 1)]) as sub:
        with raw.RawClient(b.host, b.port) as c:
            c.send(raw.connect(**kw) + raw.publish(t, b"must not", qos=1, pid=1, retain=True)
                   + raw.subscribe(2, [(t, 1)]) + raw.PINGREQ_BYTES)
            got = c.wait_closed()
        assert got == b"\x20\x02" + connack
        with raw.RawClient(b.host, b.port) as pub:
            pub.connect(unique_id("refusedpub"))
            pub.send(raw.publish(t, b"marker"))
            assert sub.expect(raw.PUBLISH).publish_fields()[:2] == (t, b"marker")
    with raw_sub(b, [(t, 0)]) as late, raw.RawClient(b.host, b.port) as pub:
        pub.connect(unique_id("refusedpub"))
        pub.send(raw.publish(t, b"marker2"))
        assert late.expect(raw.PUBLISH).publish_fields()[:4] == (t, b"marker2", 0, False)


# -- 3.3 PUBLISH -----------------------------------------------------------------------

@pytest.mark.parametrize("qos", [1, 2])
def test_forwarded_publish_does_not_copy_incoming_dup(shared_broker, qos):
    # [MQTT-3.3.1-3] the DUP flag of the PUBLISH a subscriber gets is the server's
    # own (0: a first attempt), not the publisher's; retained copies too
    b = shared_broker
    t = topic("dup")
    with raw_sub(b, [(t, qos)]) as sub, raw.RawClient(b.host, b.port) as pub:
        pub.connect(unique_id("duppub"))
        publish_acked(pub, t, b"resent", qos, pid=77, retain=True, dup=True)
        p = sub.expect(raw.PUBLISH)
        pid = p.publish_fields()[5]
        assert (p.first_byte, p.body) == (0x30 | qos << 1, raw.ustr(t) + pid2(pid) + b"resent")
        if qos == 1:
            sub.send(raw.puback(pid))
        else:
            sub.send(raw.pubrec(pid))
            sub.expect(raw.PUBREL)
            sub.send(raw.pubcomp(pid))
    with raw.RawClient(b.host, b.port) as late:
        late.connect(unique_id("duplate"))
        late.send(raw.subscribe(1, [(t, qos)]))
        late.expect(raw.SUBACK)
        p = late.expect(raw.PUBLISH)
        pid = p.publish_fields()[5]
        assert (p.first_byte, p.body) == (0x31 | qos << 1, raw.ustr(t) + pid2(pid) + b"resent")
    clear_retained(b, t)


def test_retain_0_neither_stores_nor_replaces(shared_broker):
    # [MQTT-3.3.1-12] a PUBLISH with RETAIN 0 is not stored, and does not remove or
    # replace the topic's retained message
    b = shared_broker
    kept, plain = topic("ret0kept"), topic("ret0plain")
    with raw.RawClient(b.host, b.port) as pub:
        pub.connect(unique_id("ret0pub"))
        publish_acked(pub, kept, b"old", 1, pid=1, retain=True)
        publish_acked(pub, kept, b"new", 1, pid=2)
        publish_acked(pub, kept, b"", 1, pid=3)     # not even an empty one deletes
        publish_acked(pub, plain, b"plain", 1, pid=4)
        with raw_sub(b, [(kept, 1)]) as late:
            got = late.expect(raw.PUBLISH).publish_fields()
            assert got[:5] == (kept, b"old", 1, True, False)
            late.send(raw.puback(got[5]))
            pub.send(raw.publish(kept, b"marker"))
            assert late.expect(raw.PUBLISH).publish_fields()[:4] == (kept, b"marker", 0, False)
        with raw_sub(b, [(plain, 1)]) as late:
            pub.send(raw.publish(plain, b"marker"))
            assert late.expect(raw.PUBLISH).publish_fields()[:4] == (plain, b"marker", 0, False)
    clear_retained(b, kept)


@pytest.mark.edge_only("which topics a client may not publish to is the broker's policy")
@pytest.mark.parametrize("forbidden", ["$SYS/t11/forged", "$share/g/t11"])
@pytest.mark.parametrize("qos", [1, 2])
def test_unauthorized_publish_acknowledged_as_usual(shared_broker, forbidden, qos):
    # [MQTT-3.3.5-2] a PUBLISH the server does not authorize (a client writing into
    # $SYS, or to a $share/ name) gets the normal acknowledgement for its QoS (or a
    # close): here PUBACK, or PUBREC then PUBCOMP, with its packet id; not delivered
    b = shared_broker
    uniq = unique_id("forbid")
    t = forbidden + "/" + uniq
    marker = "t11/forbid/" + uniq
    with raw_sub(b, [(t, qos), (marker, 0)]) as sub, raw.RawClient(b.host, b.port) as pub:
        pub.connect(unique_id("forbidpub"))
        pub.send(raw.publish(t, b"fake", qos=qos, pid=0x4242))
        p = pub.read_packet()
        assert (p.first_byte, p.body) == ((0x40 if qos == 1 else 0x50), b"\x42\x42")
        if qos == 2:
            pub.send(raw.pubrel(0x4242))
            p = pub.read_packet()
            assert (p.first_byte, p.body) == (0x70, b"\x42\x42")
        pub.send(raw.publish(marker, b"marker"))
        assert sub.expect(raw.PUBLISH).publish_fields()[:2] == (marker, b"marker")


# -- 3.10 UNSUBSCRIBE ------------------------------------------------------------------

@pytest.mark.parametrize("flt", [
    pytest.param(b"t11/\xff", id="byte-ff"),
    pytest.param(b"t11/\xc0\xaf", id="overlong"),
    pytest.param(b"t11/\xed\xa0\x80", id="surrogate"),
    pytest.param(b"t11/\x00x", id="nul"),
])
def test_unsubscribe_filter_must_be_utf8(shared_broker, flt):
    # [MQTT-3.10.3-1] UNSUBSCRIBE filters are UTF-8 encoded strings: an ill-formed
    # one closes the connection, with no UNSUBACK
    b = shared_broker
    with raw.RawClient(b.host, b.port) as c:
        c.connect(unique_id("unsutf8"))
        c.send(raw.unsubscribe(1, [flt]))
        got = c.wait_closed(timeout=5)
    assert got == b"", "broker sent %r before closing" % (got,)
    still_serving(b)


@pytest.mark.parametrize("qos", [1, 2])
def test_unsubscribe_completes_deliveries_in_flight(shared_broker, qos):
    # [MQTT-3.10.4-3] a QoS 1/2 delivery started before the UNSUBSCRIBE is completed:
    # acknowledged as usual, and resent (PUBLISH with DUP, or PUBREL) on reconnection
    # until it is
    b = shared_broker
    t = topic("unsinflight")
    cid = unique_id("unsinflight")
    sub = raw.RawClient(b.host, b.port)
    sub.connect(cid, clean=False)
    sub.send(raw.subscribe(1, [(t, qos)]))
    sub.expect(raw.SUBACK)
    with raw.RawClient(b.host, b.port) as pub:
        pub.connect(unique_id("unsinflightpub"))
        publish_acked(pub, t, b"started", qos, pid=9)
    p = sub.expect(raw.PUBLISH)
    pid = p.publish_fields()[5]
    assert (p.first_byte, p.body) == (0x30 | qos << 1, raw.ustr(t) + pid2(pid) + b"started")
    sub.send(raw.unsubscribe(2, [t]))
    assert sub.expect(raw.UNSUBACK).body == pid2(2)
    if qos == 2:
        sub.send(raw.pubrec(pid))
        p = sub.expect(raw.PUBREL)
        assert (p.first_byte, p.body) == (0x62, pid2(pid))
    sub.abort()     # no PUBACK / PUBCOMP
    with raw.RawClient(b.host, b.port) as sub:
        assert sub.connect(cid, clean=False).session_present == 1
        p = sub.read_packet()
        if qos == 1:
            assert (p.first_byte, p.body) == (0x3A, raw.ustr(t) + pid2(pid) + b"started")
            sub.send(raw.puback(pid))
        else:
            assert (p.first_byte, p.body) == (0x62, pid2(pid))
            sub.send(raw.pubcomp(pid))
        # complete, and unsubscribed: nothing more comes
        with raw.RawClient(b.host, b.port) as pub:
            pub.connect(unique_id("unsinflightpub"))
            publish_acked(pub, t, b"after", 1, pid=10)
        sub.send(raw.PINGREQ_BYTES)
        assert sub.read_packet().type == raw.PINGRESP
    with raw.RawClient(b.host, b.port) as sub:
        sub.connect(cid, clean=True)    # the session goes


def test_unsubscribe_several_filters_one_unsuback(shared_broker):
    # [MQTT-3.10.4-6] an UNSUBSCRIBE of several filters is handled as that many
    # UNSUBSCRIBEs in a row (a filter listed twice, or never subscribed, included),
    # answered by one UNSUBACK
    b = shared_broker
    base = topic("unsmany")
    a, bb, c = base + "/a", base + "/b", base + "/c"
    with raw_sub(b, [(a, 1), (bb, 1), (c, 1), (base + "/+", 0)]) as sub:
        sub.send(raw.unsubscribe(0x0909, [a, base + "/+", a, base + "/never", bb])
                 + raw.PINGREQ_BYTES)
        p = sub.read_packet()
        assert (p.first_byte, p.body) == (0xB0, b"\x09\x09")
        assert sub.read_packet().type == raw.PINGRESP      # one UNSUBACK only
        with raw.RawClient(b.host, b.port) as pub:
            pub.connect(unique_id("unsmanypub"))
            for i, t in enumerate((a, bb, c)):
                publish_acked(pub, t, t.encode(), 1, pid=i + 1)
        got = sub.expect(raw.PUBLISH).publish_fields()
        assert got[:4] == (c, c.encode(), 1, False)
        sub.send(raw.puback(got[5]))
        sub.send(raw.PINGREQ_BYTES)
        assert sub.read_packet().type == raw.PINGRESP
