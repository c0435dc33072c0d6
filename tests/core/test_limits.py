# Limits that hold under attack (docs/security.md "Limits"): each refuses
# with its reason, is counted in $SYS/broker/limits/<key>, and is logged once
# an interval, never a line per packet. Runs under MicroPython too.
from edge.mqtt.consts import CONNACK, DISCONNECT, PINGRESP, SUBACK
from edge.mqtt.packets import Connect, Pingreq
from edge.mqtt.systree import keys, values
from tests.core._pair import Client, make_broker, publish


# Stats.refusals's indexes (broker.py's private _L_*), in systree.keys' order
L_ADDRESS, L_RATE, L_LENGTH, L_LEVELS, L_WILL, L_SUBS, L_CONNS, L_TIMEOUT, L_PACKET = range(9)


def test_limits_names_in_the_order_of_the_indexes():
    assert keys == ("max_connections_per_address", "max_packet_rate", "max_topic_length",
                    "max_topic_levels", "max_will_bytes", "max_subscriptions", "max_connections",
                    "connect_timeout", "max_packet_size")


def _sys(b, name):
    for k, v in values(b):
        if k == name:
            return v
    raise AssertionError("no $SYS/broker/" + name)


def _logged(b):
    lines = []
    b.log = lambda level, msg: lines.append(msg)
    return lines


def test_connections_per_address_refused_at_accept_and_freed_on_close():
    b = make_broker(max_connections_per_address=2)
    assert b.open(1, 0, "10.0.0.1") and b.open(2, 0, "10.0.0.1")
    assert not b.open(3, 0, "10.0.0.1")  # the third from that address
    assert 3 not in b.conns
    assert b.open(4, 0, "10.0.0.2")  # another address is not held back
    assert b.open(5, 0)  # an unknown address (a runtime that cannot tell) is not counted
    b.connection_lost(1, 10)
    assert b.open(6, 10, "10.0.0.1")  # its slot again
    assert not b.open(7, 10, "10.0.0.1")
    assert b.stats.refusals[L_ADDRESS] == 2
    assert _sys(b, "limits/max_connections_per_address") == 2
    for cid in (2, 4, 5, 6):
        b.connection_lost(cid, 20)
    assert not b.peers  # nothing left behind for addresses gone


def test_connections_per_address_zero_is_no_quota():
    b = make_broker(max_connections_per_address=0)
    for cid in range(1, 20):
        assert b.open(cid, 0, "10.0.0.1")
    assert not b.peers


def test_max_connections_counted_as_a_limit():
    b = make_broker(max_connections=1)
    assert b.open(1, 0) and not b.open(2, 0)
    assert b.stats.refusals[L_CONNS] == 1 and b.stats.conns_refused == 1


def test_packet_rate_holds_the_connection_back_and_handles_what_it_read():
    b = make_broker(max_packet_rate=10)
    c = Client(b)
    c.connect("r")  # 1 packet of the 10 a second
    ping = Pingreq()
    for _ in range(9):
        c.send(ping, 0)
    assert b.data_received(c.cid, b"\xc0\x00", 0) > 0  # the 11th within the second
    # what was read is handled (the client's packets are not dropped)
    assert [p.kind for p in c.recv()] == [PINGRESP] * 10
    assert b.stats.refusals[L_RATE] == 1
    # 10 a second: the deficit of one packet is made up 100 ms later
    assert b.data_received(c.cid, b"\xc0\x00", 200) == 0
    assert not c.closed


def test_packet_rate_wait_is_the_deficit_over_the_rate():
    b = make_broker(max_packet_rate=100)
    c = Client(b)
    c.connect("r")
    # one feed of 300 PINGREQs at t=0: a full bucket holds 100, so 201
    # packets too many at 100 a second: about 2 s
    wait = b.data_received(c.cid, b"\xc0\x00" * 300, 0)
    assert 2000 <= wait <= 2020, wait
    assert len(c.recv()) == 300
    # read again when the runtime waited, the bucket is back at 0: the
    # next packet is the rate's (10 ms at 100 a second)
    assert b.data_received(c.cid, b"\xc0\x00", wait) == 10
    assert b.data_received(c.cid, b"\xc0\x00", wait + 20) == 0


def test_packet_rate_off_by_default_on_the_gateway():
    b = make_broker()
    c = Client(b)
    c.connect("r")
    assert not b.data_received(c.cid, b"\xc0\x00" * 500, 0)
    assert not b.stats.refusals


def test_topic_length_closes_a_publisher_and_refuses_a_filter():
    b = make_broker(max_topic_length=8)
    sub = Client(b)
    sub.connect("s")
    ack = sub.subscribe(("a/123456", 0), ("a/1234567", 0))[0]
    assert ack.kind == SUBACK and ack.codes == [0, 0x80]  # refused, not closed
    assert not sub.closed
    pub = Client(b)
    pub.connect("p")
    publish(pub, "a/123456", b"ok")
    assert not pub.closed
    publish(pub, "a/1234567", b"no")
    assert pub.closed  # 3.1.1: a topic name we refuse closes the connection
    assert b.stats.refusals[L_LENGTH] == 2
    assert _sys(b, "limits/max_topic_length") == 2


def test_topic_length_v5_disconnect_topic_name_invalid():
    b = make_broker(max_topic_length=8)
    c = Client(b, v5=True)
    assert c.connect("p").reason == 0
    got = publish(c, "a/1234567", b"no")
    assert got[-1].kind == DISCONNECT and got[-1].reason == 0x90
    ack = Client(b, v5=True)
    ack.connect("s")
    assert ack.subscribe(("a/1234567", 0))[0].codes == [0x97]  # Quota exceeded


def test_topic_levels_counted():
    b = make_broker(max_topic_levels=3)
    c = Client(b)
    c.connect("p")
    assert c.subscribe(("a/b/c/d", 0))[0].codes == [0x80]
    publish(c, "a/b/c/d", b"x")
    assert c.closed
    assert b.stats.refusals[L_LEVELS] == 2


def test_will_too_large_v311_closed_without_connack():
    b = make_broker(max_will_bytes=16)
    c = Client(b)
    c.send(Connect("w", will_topic="will", will_payload=b"x" * 13))
    assert c.recv() == [] and c.closed
    assert b.stats.refusals[L_WILL] == 1
    ok = Client(b)
    assert ok.connect("w2", will_topic="will", will_payload=b"x" * 12).reason == 0


def test_will_too_large_v5_connack_packet_too_large():
    b = make_broker(max_will_bytes=16)
    c = Client(b, v5=True)
    ack = c.connect("w", will_topic="will", will_payload=b"x" * 13)
    assert ack.kind == CONNACK and ack.reason == 0x95
    assert c.closed and _sys(b, "limits/max_will_bytes") == 1


def test_refusals_logged_once_an_interval_with_the_counts():
    b = make_broker(max_subscriptions=1, sys_interval=10)
    lines = _logged(b)
    c = Client(b)
    c.connect("s")
    c.subscribe(("a", 0))
    for i in range(50):
        assert c.subscribe(("b/%d" % i, 0))[0].codes == [0x80]
    assert b.stats.refusals[L_SUBS] == 50
    assert not [m for m in lines if "max_subscriptions" in m]  # not a line per refusal
    b.tick(1000)  # within the first sys_interval: not yet
    assert not [m for m in lines if "limits refused" in m]
    b.tick(10000)
    said = [m for m in lines if "limits refused" in m]
    assert len(said) == 1 and "max_subscriptions 50" in said[0], said
    for i in range(5):
        c.subscribe(("c/%d" % i, 0))
    b.tick(11000)
    b.tick(19000)  # within the interval: nothing more
    assert len([m for m in lines if "limits refused" in m]) == 1
    b.tick(20000)
    said = [m for m in lines if "limits refused" in m]
    assert len(said) == 2 and "max_subscriptions 5" in said[1], said
    b.tick(30000)  # nothing new: no line
    assert len([m for m in lines if "limits refused" in m]) == 2


def test_connect_timeout_counted():
    b = make_broker(connect_timeout=1)
    assert b.open(1, 0)
    b.tick(1500)
    assert b.conns[1].closing and b.stats.refusals[L_TIMEOUT] == 1



def test_need_is_the_rest_of_a_packet_begun():
    # a board reads no more than the rest of a packet it holds the start of
    # (edge/runtime/tcp.py), so the packet's buffer never outgrows it
    b = make_broker()
    c = Client(b)
    c.connect("n")
    pkt = b"\x30\x67\x00\x01t" + b"x" * 100  # PUBLISH "t", 100 bytes: 105 in all
    assert c.conn.need() == 0  # nothing held
    c.send_raw(pkt[:1])
    assert c.conn.need() == 0  # its length not known yet
    c.send_raw(pkt[1:10])
    assert c.conn.need() == 95
    c.send_raw(pkt[10:])
    assert c.conn.need() == 0 and not c.closed
