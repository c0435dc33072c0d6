# 12: MQTT 5.0 conformance, strings, packet ids, CONNECT and CONNACK: one test
# per normative statement of docs/conformance.md that no other test exercised,
# on raw sockets (byte-exact where the spec is), against both runtimes (the
# MicroPython one with the board profile at 64 KiB). PUBLISH and later
# statements: test_13_conformance_v5b.py.
import pytest

from . import mqttraw as raw
from .clients import unique_id
from .raw5 import (block, closed_by_broker, connect5, disconnect_reason, next_pub, parse_props,
                   publish_qos1, publisher, raw5, read_varint, refused, still_serving, subscriber,
                   u16, u32, unsubscribe5, user_prop, wait_log)

pytestmark = [pytest.mark.timeout(90), pytest.mark.edge_only("5.0 conformance of edgebroker")]

BROKER_CONFIG = {"max_packet_size": 1024, "max_inflight": 4, "max_topic_alias": 4}

EXPIRY_60 = b"\x11" + u32(60)  # Session Expiry Interval 60 s
REFUSED_0x81 = b"\x00\x81\x00"  # CONNACK body: Session Present 0, Malformed Packet, no properties


@pytest.fixture
def b5(runtime, request):
    """As test_08's: a fresh broker per test under MicroPython (a 64 KiB
    board fragments over a module's worth of 5.0 tests), one per module on
    CPython."""
    return request.getfixturevalue("broker" if runtime == "micropython" else "shared_broker")


def accepted(broker, data):
    """Send data (a CONNECT the broker must accept): returns the CONNACK body,
    then disconnects normally."""
    with raw.RawClient(broker.host, broker.port) as c:
        c.send(data)
        ack = c.expect(raw.CONNACK)
        assert ack.body[1] == 0, ack
        c.send(raw.DISCONNECT_BYTES)
        c.wait_closed()
    return ack.body


def end_session(c):
    """DISCONNECT with Session Expiry Interval 0: the session ends now."""
    c.send(raw.packet(0xE0, b"\x00" + block(b"\x11" + u32(0))))
    c.wait_closed()
    c.close()


# -- strings (§1.5) ---------------------------------------------------------------------

def test_bom_is_kept_in_topics_and_properties(b5):
    # [MQTT-1.5.4-3] EF BB BF is U+FEFF wherever it is: never skipped or stripped.
    # A filter and a topic that start with it are not the ones without it, and
    # a User Property that holds it is forwarded with it.
    base = "bom/" + unique_id("bom")
    with_bom = "\ufeff" + base
    marked = subscriber(b5, with_bom, 0)
    plain = subscriber(b5, base, 0)
    pub = publisher(b5)
    with marked, plain, pub:
        pub.send(raw.publish(with_bom, b"one", 0, props=block(user_prop("\ufeffk", "v\ufeff"))))
        pub.send(raw.publish(base, b"two", 0, props=b"\x00"))
        pub.send(raw.publish(with_bom, b"three", 0, props=b"\x00"))
        p = next_pub(marked)
        assert p.topic == b"\xef\xbb\xbf" + base.encode() and p.payload == b"one", p
        assert p.props == [(0x26, (b"\xef\xbb\xbfk", b"v\xef\xbb\xbf"))], p
        p = next_pub(marked)
        assert p.payload == b"three", p  # "two" (no BOM) did not match the BOM filter
        p = next_pub(plain)
        assert p.topic == base.encode() and p.payload == b"two", p  # nor "one" this one
    still_serving(b5)


@pytest.mark.parametrize("pair", [
    pytest.param((b"k\xc3", b"v"), id="name-truncated-sequence"),
    pytest.param((b"k", b"\xed\xa0\x80"), id="value-surrogate"),
])
def test_user_property_pair_not_utf8_is_malformed(b5, pair):
    # [MQTT-1.5.7-1] both strings of a pair are UTF-8 strings: ill-formed
    # UTF-8 in either is a Malformed Packet, in a PUBLISH (DISCONNECT 0x81)
    # and in a CONNECT (CONNACK 0x81)
    c, _ = raw5(b5)
    with c:
        c.send(raw.publish("up/x", b"p", 0, props=block(user_prop(*pair))))
        assert disconnect_reason(c) == 0x81
    assert refused(b5, raw.connect(unique_id("up"), level=5, props=block(user_prop(*pair)))) \
        == REFUSED_0x81
    still_serving(b5)


# -- packet identifiers (§2.2.1) ----------------------------------------------------------

def test_qos0_publish_has_no_packet_id(b5):
    # [MQTT-2.2.1-2] a QoS 0 PUBLISH from the server has no Packet Identifier:
    # one published at QoS 0, and one published at QoS 1 to a QoS 0 subscription
    t = "q0/" + unique_id("q0")
    sub = subscriber(b5, t, 0)
    pub = publisher(b5)
    with sub, pub:
        pub.send(raw.publish(t, b"zero", 0, props=b"\x00"))
        publish_qos1(pub, t, b"one")
        for payload in (b"zero", b"one"):
            p = sub.read_packet()
            # topic, property length 0, payload: nothing in between
            assert p.first_byte == 0x30 and p.body == raw.ustr(t) + b"\x00" + payload, p


def test_suback_and_unsuback_carry_the_request_packet_id(b5):
    # [MQTT-2.2.1-6] [MQTT-3.8.4-2] SUBACK and UNSUBACK carry the Packet
    # Identifier of the SUBSCRIBE / UNSUBSCRIBE they answer
    t = "pid/" + unique_id("pid")
    c, _ = raw5(b5)
    with c:
        for pid in (1, 0x1234, 0xFFFF):
            c.send(raw.subscribe(pid, [(t, 1)], props=b"\x00"))
            ack = c.expect(raw.SUBACK)
            assert ack.first_byte == 0x90 and ack.body == u16(pid) + b"\x00\x01", ack
            c.send(unsubscribe5(pid, [t]))
            ack = c.expect(raw.UNSUBACK)
            assert ack.first_byte == 0xB0 and ack.body == u16(pid) + b"\x00\x00", ack
        # several requests in one write: each answer with its own request's id
        c.send(raw.subscribe(7, [(t, 2)], props=b"\x00") + unsubscribe5(0x0800, [t, t + "/none"])
               + raw.subscribe(0x9000, [(t, 0)], props=b"\x00"))
        assert c.expect(raw.SUBACK).body == u16(7) + b"\x00\x02"
        assert c.expect(raw.UNSUBACK).body == u16(0x0800) + b"\x00\x00\x11"
        assert c.expect(raw.SUBACK).body == u16(0x9000) + b"\x00\x00"


# -- CONNECT (§3.1) ---------------------------------------------------------------------------

def test_second_connect_is_a_protocol_error(b5):
    # [MQTT-3.1.0-2] a second CONNECT is a Protocol Error: DISCONNECT 0x82
    # and close; [MQTT-3.2.0-2] it gets no second CONNACK
    cid = unique_id("again")
    c, _ = raw5(b5, cid)
    with c:
        c.send(raw.connect(cid, level=5, props=b"\x00"))
        p = c.read_packet()
        assert p.type == raw.DISCONNECT and p.body[0] == 0x82, p
        assert c.wait_closed() == b""
    still_serving(b5)


def test_reserved_connect_flag_gets_connack_0x81(b5):
    # [MQTT-3.1.2-3] the reserved flag must be 0, else a Malformed Packet:
    # CONNACK 0x81, then close
    assert refused(b5, raw.connect(unique_id("rsv"), level=5, reserved_flag=True)) == REFUSED_0x81
    assert refused(b5, connect5(0x03, raw.ustr(unique_id("rsv")))) == REFUSED_0x81
    still_serving(b5)


def test_clean_start_1_discards_the_session(b5):
    # [MQTT-3.1.2-4] [MQTT-3.1.4-4] Clean Start 1 discards the existing
    # session, its subscription and the message held for it, and
    # [MQTT-3.2.2-2] the CONNACK says Session Present 0 ([MQTT-3.2.2-1]:
    # byte 1 is exactly 0x00, bits 7-1 reserved)
    cid = unique_id("cs1")
    t = "cs1/" + cid
    c, ack = raw5(b5, cid, block(EXPIRY_60), clean=False)
    with c:
        c.send(raw.subscribe(1, [(t, 1)], props=b"\x00"))
        c.expect(raw.SUBACK)
        c.send(raw.DISCONNECT_BYTES)
        c.wait_closed()
    closed_by_broker(b5, cid)
    pub = publisher(b5)
    with pub:
        assert publish_qos1(pub, t, b"held") == 0x00  # matched: the session exists and holds it
        c, ack = raw5(b5, cid, block(EXPIRY_60), clean=True)
        with c:
            assert ack[0] == 0x00, ack
            # nothing of the old session: its held message would come right
            # after CONNACK, before this SUBACK
            c.send(raw.subscribe(2, [("cs1/other/" + cid, 0)], props=b"\x00"))
            p = c.read_packet()
            assert p.type == raw.SUBACK, p
            assert publish_qos1(pub, t, b"after") == 0x10  # no subscription matches t now
            end_session(c)


def test_clean_start_0_without_a_session_creates_one(b5):
    # [MQTT-3.1.2-6] Clean Start 0 and no session: a new one, kept after the
    # connection (Session Present 0, then 1; [MQTT-3.2.2-1] bits 7-1 are 0)
    cid = unique_id("cs0")
    t = "cs0/" + cid
    c, ack = raw5(b5, cid, block(EXPIRY_60), clean=False)
    with c:
        assert ack[0] == 0x00, ack
        c.send(raw.subscribe(1, [(t, 1)], props=b"\x00"))
        c.expect(raw.SUBACK)
        c.send(raw.DISCONNECT_BYTES)
        c.wait_closed()
    closed_by_broker(b5, cid)
    pub = publisher(b5)
    with pub:
        assert publish_qos1(pub, t, b"kept") == 0x00
    c, ack = raw5(b5, cid, block(EXPIRY_60), clean=False)
    with c:
        assert ack[0] == 0x01, ack
        p = next_pub(c)
        assert p.payload == b"kept", p
        c.send(raw.puback(p.pid))
        end_session(c)


@pytest.mark.parametrize("rest", [
    pytest.param(b"", id="nothing"),
    pytest.param(b"\x00", id="properties-only"),
    pytest.param(b"\x00" + raw.ustr("w/t"), id="no-will-payload"),
])
def test_will_flag_without_the_will_fields_is_malformed(b5, rest):
    # [MQTT-3.1.2-9] Will Flag 1: will properties, topic and payload must be
    # in the payload; without them, CONNACK 0x81 and close
    cid = raw.ustr(unique_id("wf"))
    assert refused(b5, connect5(0x06, cid + rest)) == REFUSED_0x81
    # all three present: accepted
    accepted(b5, connect5(0x06, cid + b"\x00" + raw.ustr("w/t") + raw.ustr(b"bye")))
    still_serving(b5)


def test_will_leaves_the_session_once_published_or_on_disconnect_0x00(b5):
    # [MQTT-3.1.2-10] the will leaves the session state once published or on
    # DISCONNECT 0x00, so the end of the session publishes nothing:
    #   a: Will Delay 30 s, session ends after 2 s, DISCONNECT 0x00 (without
    #      it the session end would publish the will)
    #   b: Will Delay 1 s, session ends after 3 s, the connection drops: the
    #      will goes after 1 s, and not again when the session ends
    base = "wl/" + unique_id("wl")
    watcher = subscriber(b5, base + "/#", 1)
    with watcher:
        ids = {}
        for name, expiry, delay in (("a", 2, 30), ("b", 3, 1)):
            cid = ids[name] = unique_id("wl" + name)
            c, _ = raw5(b5, cid, block(b"\x11" + u32(expiry)), clean=False,
                        will=(base + "/" + name, name, 1, False), will_props=block(b"\x18" + u32(delay)))
            if name == "a":
                c.send(b"\xe0\x01\x00")  # DISCONNECT, reason 0x00
                c.wait_closed()
                c.close()
            else:
                c.abort()
        p = next_pub(watcher, timeout=10)
        assert (p.topic, p.payload) == ((base + "/b").encode(), b"b"), p
        watcher.send(raw.puback(p.pid))
        for cid in ids.values():
            wait_log(b5, "session %s expired" % cid)
        pub = publisher(b5)
        with pub:
            publish_qos1(pub, base + "/end", b"sentinel")
        p = next_pub(watcher)
        assert p.payload == b"sentinel", p  # neither will came (again) at its session's end
        watcher.send(raw.puback(p.pid))


def test_will_qos_without_the_will_flag_is_malformed(b5):
    # [MQTT-3.1.2-11] Will Flag 0: Will QoS must be 0 (QoS 1, 2 bits set: 0x81)
    cid = raw.ustr(unique_id("wq"))
    assert refused(b5, connect5(0x02 | 0x08, cid)) == REFUSED_0x81
    assert refused(b5, connect5(0x02 | 0x10, cid)) == REFUSED_0x81
    still_serving(b5)


def test_will_qos_3_is_malformed(b5):
    # [MQTT-3.1.2-12] Will QoS is 0, 1 or 2: 3 is a Malformed Packet
    will = b"\x00" + raw.ustr("w/t") + raw.ustr(b"bye")
    cid = raw.ustr(unique_id("wq3"))
    assert refused(b5, connect5(0x02 | 0x04 | 0x18, cid + will)) == REFUSED_0x81
    for qos in (0, 1, 2):
        accepted(b5, connect5(0x02 | 0x04 | qos << 3, cid + will))
    still_serving(b5)


def test_will_retain_without_the_will_flag_is_malformed(b5):
    # [MQTT-3.1.2-13] Will Flag 0: Will Retain must be 0
    assert refused(b5, connect5(0x02 | 0x20, raw.ustr(unique_id("wr")))) == REFUSED_0x81
    still_serving(b5)


def _will_fires(b5, topic, retain):
    # a connection with a will on topic (QoS 1) drops without DISCONNECT
    c, _ = raw5(b5, unique_id("wr"), will=(topic, b"will", 1, retain))
    c.abort()


def test_will_retain_0_is_published_not_retained(b5):
    # [MQTT-3.1.2-14] Will Retain 0: published as a non-retained message, so
    # the topic's retained message stays what it was. The watcher subscribed
    # with Retain As Published, so RETAIN shows how it was published.
    t = "wr0/" + unique_id("wr0")
    pub = publisher(b5)
    with pub:
        publish_qos1(pub, t, b"old", retain=True)
    watcher = subscriber(b5, t, 1 | 0x08 | 0x20)  # QoS 1, RAP, Retain Handling 2 (none now)
    with watcher:
        _will_fires(b5, t, False)
        p = next_pub(watcher)
        assert p.payload == b"will" and not p.retain, p
        watcher.send(raw.puback(p.pid))
    late = subscriber(b5, t, 1)
    with late:
        p = next_pub(late)
        assert p.payload == b"old" and p.retain, p


def test_will_retain_1_is_published_retained(b5):
    # [MQTT-3.1.2-15] Will Retain 1: published as a retained message
    t = "wr1/" + unique_id("wr1")
    watcher = subscriber(b5, t, 1 | 0x08)  # QoS 1, Retain As Published
    with watcher:
        _will_fires(b5, t, True)
        p = next_pub(watcher)
        assert p.payload == b"will" and p.retain, p
        watcher.send(raw.puback(p.pid))
    late = subscriber(b5, t, 1)
    with late:
        p = next_pub(late)
        assert p.payload == b"will" and p.retain, p  # it is the retained message now
        late.send(raw.puback(p.pid))
    pub = publisher(b5)
    with pub:
        publish_qos1(pub, t, b"", retain=True)  # clear it


def test_user_name_flag_and_user_name(b5):
    # [MQTT-3.1.2-16] User Name Flag 0: no User Name in the payload;
    # [MQTT-3.1.2-17] flag 1: a User Name. Either way round: 0x81
    cid = raw.ustr(unique_id("un"))
    accepted(b5, connect5(0x02, cid))
    accepted(b5, connect5(0x82, cid + raw.ustr("user")))
    assert refused(b5, connect5(0x02, cid + raw.ustr("user"))) == REFUSED_0x81
    assert refused(b5, connect5(0x82, cid)) == REFUSED_0x81
    still_serving(b5)


def test_password_flag_and_password(b5):
    # [MQTT-3.1.2-18] Password Flag 0: no Password in the payload;
    # [MQTT-3.1.2-19] flag 1: a Password (5.0 allows one without a User Name)
    cid = raw.ustr(unique_id("pw"))
    pw = raw.ustr(b"\x00secret\xff")  # binary data, not a string
    accepted(b5, connect5(0x42, cid + pw))
    accepted(b5, connect5(0xC2, cid + raw.ustr("user") + pw))
    assert refused(b5, connect5(0x02, cid + pw)) == REFUSED_0x81
    assert refused(b5, connect5(0x82, cid + raw.ustr("user") + pw)) == REFUSED_0x81
    assert refused(b5, connect5(0x42, cid)) == REFUSED_0x81
    assert refused(b5, connect5(0xC2, cid + raw.ustr("user"))) == REFUSED_0x81
    still_serving(b5)


def test_connect_payload_fields_in_order(b5):
    # [MQTT-3.1.3-1] Client Identifier, Will Properties, Will Topic, Will
    # Payload, User Name, Password, in that order: all present, each is read
    # from its place (the id names the session a second connection takes
    # over, and the will published then has its own topic, payload and
    # property)
    cid = unique_id("order")
    t = "order/" + cid
    watcher = subscriber(b5, t, 1)
    payload = (raw.ustr(cid) + block(user_prop("wp", "1")) + raw.ustr(t) + raw.ustr(b"will payload")
               + raw.ustr("user name") + raw.ustr(b"password"))
    with watcher, raw.RawClient(b5.host, b5.port) as first:
        first.send(connect5(0xC2 | 0x04 | 0x08, payload))  # user, password, will QoS 1, clean
        assert first.expect(raw.CONNACK).body[1] == 0
        second, _ = raw5(b5, cid)
        with second:
            assert disconnect_reason(first) == 0x8E  # taken over: the same client id
            p = next_pub(watcher)  # a clean takeover publishes the old connection's will
            assert (p.topic, p.payload, p.props) == (t.encode(), b"will payload",
                                                    [(0x26, (b"wp", b"1"))]), p
            watcher.send(raw.puback(p.pid))


def test_client_id_missing_is_malformed(b5):
    # [MQTT-3.1.3-3] the Client Identifier is present, the first payload field
    assert refused(b5, connect5(0x02, b"")) == REFUSED_0x81
    assert refused(b5, connect5(0x02, b"\x00")) == REFUSED_0x81  # half a length
    still_serving(b5)


@pytest.mark.parametrize("cid", [
    pytest.param(b"id\xc3\x28", id="bad-continuation"),
    pytest.param(b"id\xed\xa0\x80", id="surrogate"),
    pytest.param(b"id\x00", id="u0000"),
])
def test_client_id_not_utf8_is_malformed(b5, cid):
    # [MQTT-3.1.3-4] the Client Identifier is a UTF-8 string ([MQTT-1.5.4-1/2])
    assert refused(b5, raw.connect(cid, level=5)) == REFUSED_0x81
    still_serving(b5)


def test_client_ids_of_1_to_23_alphanumerics_are_accepted(b5):
    # [MQTT-3.1.3-5] 1 to 23 bytes of 0-9a-zA-Z are always allowed, and kept
    # as given (no Assigned Client Identifier comes back)
    chars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for cid in (chars[:23], chars[23:46], chars[46:], "a", "Z", "7"):
        c, ack = raw5(b5, cid)
        with c:
            n, i = read_varint(ack, 2)
            assert 0x12 not in [k for k, v in parse_props(ack[i:i + n])], ack
            c.send(raw.PINGREQ_BYTES)
            c.expect(raw.PINGRESP)
            c.send(raw.DISCONNECT_BYTES)
            c.wait_closed()
        closed_by_broker(b5, cid)


def test_will_user_properties_keep_their_order(b5):
    # [MQTT-3.1.3-10] the will's User Properties are published in their order
    t = "wup/" + unique_id("wup")
    pairs = [(b"z", b"1"), (b"a", b"2"), (b"z", b"0"), (b"m", b"")]
    watcher = subscriber(b5, t, 1)
    with watcher:
        c, _ = raw5(b5, unique_id("wup"), will=(t, b"bye", 1, False),
                    will_props=block(*[user_prop(k, v) for k, v in pairs]))
        c.abort()
        p = next_pub(watcher)
        assert [v for k, v in p.props if k == 0x26] == pairs, p
        watcher.send(raw.puback(p.pid))


def test_will_topic_not_utf8_is_malformed(b5):
    # [MQTT-3.1.3-11] the Will Topic is a UTF-8 string
    for topic in (b"w/\xff", b"w/\xc0\xaf"):  # an invalid byte, an overlong "/"
        assert refused(b5, raw.connect(unique_id("wt"), level=5, will=(topic, b"x", 0, False))) \
            == REFUSED_0x81
    still_serving(b5)


def test_user_name_not_utf8_is_malformed(b5):
    # [MQTT-3.1.3-12] the User Name is a UTF-8 string
    for name in (b"u\xff", b"u\xed\xbf\xbf"):  # an invalid byte, a surrogate
        assert refused(b5, raw.connect(unique_id("un"), level=5, username=name)) == REFUSED_0x81
    still_serving(b5)


def test_connect_refused_for_the_memory_budget_closes(broker_factory):
    # [MQTT-3.1.4-2] a further check of ours that fails closes the connection:
    # with the memory budget nearly full, a CONNECT that would start a new
    # persistent session gets CONNACK 0x88 Server unavailable, then close. One
    # retained message takes 830 of the 1024 budget bytes (topic + payload +
    # 208, and 192 for each of its 3 new tree nodes: edge/mqtt/session.py),
    # a clean subscription to it 128 more; a new session needs 832 free
    # (session.py _HEADROOM).
    b = broker_factory(memory_budget_bytes=1024)
    t = "t12/budget/" + unique_id("b")
    pub = publisher(b)
    with pub:
        publish_qos1(pub, t, b"x" * (830 - 208 - 3 * 192 - len(t)), retain=True)
    s = subscriber(b, t, 0)
    with s:
        assert next_pub(s).retain  # stored: the budget holds it
    cid = unique_id("away")
    assert refused(b, raw.connect(cid, clean=False, level=5, props=block(EXPIRY_60))) \
        == b"\x00\x88\x00"
    c, ack = raw5(b, cid)  # a clean one holds nothing offline: accepted
    c.close()
    b.assert_alive()


def test_nothing_processed_after_a_refused_connect(b5):
    # [MQTT-3.1.4-6] after refusing a CONNECT (here: an authentication method
    # we do not support, 0x8C) the server processes nothing that followed it:
    # the PUBLISH, SUBSCRIBE and PINGREQ sent right behind it get no answer
    # and the message is neither delivered nor retained
    t = "rf/" + unique_id("rf")
    watcher = subscriber(b5, t, 1)
    method = b"SCRAM-SHA-256"
    data = (raw.connect(unique_id("rf"), level=5, props=block(b"\x15" + u16(len(method)) + method))
            + raw.publish(t, b"after refusal", 1, retain=True, pid=1, props=b"\x00")
            + raw.subscribe(2, [(t, 1)], props=b"\x00") + raw.PINGREQ_BYTES)
    with watcher:
        with raw.RawClient(b5.host, b5.port) as c:
            c.send(data)
            assert c.expect(raw.CONNACK).body == b"\x00\x8c\x00"
            assert c.wait_closed() == b""  # no PUBACK, SUBACK, PINGRESP
        pub = publisher(b5)
        with pub:
            publish_qos1(pub, t, b"sentinel")
            p = next_pub(watcher)
            assert p.payload == b"sentinel", p
            watcher.send(raw.puback(p.pid))
            late = subscriber(b5, t, 1)  # nothing retained on t
            with late:
                publish_qos1(pub, t, b"sentinel 2", pid=2)
                p = next_pub(late)
                assert p.payload == b"sentinel 2" and not p.retain, p


# -- CONNACK (§3.2) ---------------------------------------------------------------------------

def test_refused_connack_has_session_present_0(b5):
    # [MQTT-3.2.2-6] a CONNACK with a non-zero reason code has Session
    # Present 0, also for a client id whose session exists
    cid = unique_id("sp0")
    c, _ = raw5(b5, cid, block(EXPIRY_60), clean=False)
    with c:
        c.send(raw.DISCONNECT_BYTES)
        c.wait_closed()
    closed_by_broker(b5, cid)
    method = b"SCRAM-SHA-256"
    auth = b"\x15" + u16(len(method)) + method
    assert refused(b5, raw.connect(cid, clean=False, level=5, props=block(EXPIRY_60, auth))) \
        == b"\x00\x8c\x00"
    assert refused(b5, raw.connect(cid, clean=False, level=5, props=block(EXPIRY_60),
                                   reserved_flag=True)) == REFUSED_0x81
    c, ack = raw5(b5, cid, block(EXPIRY_60), clean=False)
    with c:
        assert ack[0] == 0x01, ack  # the session was there all along
        end_session(c)


def test_refused_connack_fits_a_tiny_maximum_packet_size(b5):
    # [MQTT-3.2.2-19] no Reason String that would make the CONNACK larger
    # than the client's Maximum Packet Size: a client that allows 8 bytes is
    # refused (authentication method) with the 5 bytes 20 03 00 8C 00
    method = b"SCRAM-SHA-256"
    props = block(b"\x27" + u32(8), b"\x15" + u16(len(method)) + method)
    with raw.RawClient(b5.host, b5.port) as c:
        c.send(raw.connect(unique_id("tiny"), level=5, props=props))
        assert c.wait_closed() == b"\x20\x03\x00\x8c\x00"
    still_serving(b5)
