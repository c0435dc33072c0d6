# The CoAP message layer (edge/coap/endpoint.py, RFC 7252 §4): message
# types, piggybacked and NON replies, rejection of what is malformed,
# Message-ID deduplication with the reply cache and its bound; and our CONs'
# retransmission and NSTART 1 (edge/coap/observe.py). An Endpoint on a real
# in-memory Broker, MQTT clients from tests/core/_pair.py.
from edge.coap import codec
from tests.core._coap import (ACK, CON, GET, NON, OTHER, PEER, POST, PUT, RST, feed, make, request, take,
                              uopt)
from tests.core._pair import Client, publish, publishes


def _mqtt_sub(b, f, qos=0):
    s = Client(b)
    s.connect("s")
    s.subscribe((f, qos))
    return s


def test_con_request_gets_piggybacked_ack():
    b, ep = make()
    publish_retained(b, "a/b", b"v")
    got = feed(ep, request(GET, "ps/a/b", mid=0x1234, token=b"\x01\x02"))
    assert got == [(ACK, 0x45, 0x1234, b"\x01\x02", [], b"v")]
    assert ep.stats.requests == 1


def publish_retained(b, topic, payload, qos=0):
    p = Client(b)
    p.connect("p-" + topic)
    publish(p, topic, payload, qos, True, pid=1 if qos else 0)


def test_non_request_gets_non_reply_with_our_mid():
    b, ep = make()
    got = feed(ep, request(PUT, "ps/x", mtype=NON, mid=77, token=b"n"))
    assert len(got) == 1
    t, code, mid, token, opts, payload = got[0]
    assert (t, code, token) == (NON, 0x44, b"n") and mid == ep.mid


def test_empty_con_is_answered_with_rst_and_empty_non_ignored():
    b, ep = make()
    assert feed(ep, b"\x40\x00\x12\x34") == [(RST, 0, 0x1234, b"", [], b"")]
    assert feed(ep, b"\x50\x00\x12\x35") == []


def test_malformed_con_gets_rst_malformed_non_dropped():
    b, ep = make()
    assert feed(ep, b"\x40\x01\x00\x09\xff") == [(RST, 0, 9, b"", [], b"")]  # marker, no payload
    assert feed(ep, b"\x50\x01\x00\x0a\xff") == []
    assert feed(ep, b"\x40\x01\x00\x0b\xf1") == [(RST, 0, 11, b"", [], b"")]  # delta 15
    assert feed(ep, b"\x80\x01\x00\x0c") == []  # version 2: silently ignored
    assert feed(ep, b"\x40\x01") == []
    assert ep.stats.errors == 5 and ep.stats.requests == 0


def test_response_or_reserved_code_in_con_is_rejected():
    b, ep = make()
    assert feed(ep, b"\x40\x45\x00\x01") == [(RST, 0, 1, b"", [], b"")]
    # a 2.05 in a CON (a response to a request we never sent): RST
    assert feed(ep, bytes(codec.encode(CON, 0x45, 2, b"t", [], b"x"))) == [(RST, 0, 2, b"", [], b"")]
    # class 1 and 7 are reserved (RFC 7252 §12.1)
    assert feed(ep, bytes(codec.encode(CON, 0x21, 3, b"", [], b""))) == [(RST, 0, 3, b"", [], b"")]
    assert feed(ep, bytes(codec.encode(NON, 0xE1, 4, b"", [], b""))) == []


def test_ack_carrying_a_response_is_ignored():
    b, ep = make()
    assert feed(ep, bytes(codec.encode(ACK, 0x45, 5, b"t", [], b"x"))) == []
    assert feed(ep, bytes(codec.encode(RST, 0, 6, b"", [], b""))) == []


def test_duplicate_con_publish_gets_cached_reply_and_publishes_once():
    b, ep = make()
    s = _mqtt_sub(b, "d/#", 1)
    req = request(POST, "ps/d/1", mid=500, token=b"q", query=("qos=1",), payload=b"once")
    ep.datagram(req, PEER, 0)
    first = ep.out[:]
    del ep.out[:]
    again = feed(ep, req, now=5000)
    assert [codec.decode(bytes(d)) for d, _ in first] == again
    assert again[0][:3] == (ACK, 0x44, 500)
    assert [m.payload for m in publishes(s.recv())] == [b"once"]
    assert ep.stats.duplicates == 1 and ep.stats.publishes == 1 and ep.stats.requests == 1


def test_duplicate_non_publish_is_ignored():
    b, ep = make()
    s = _mqtt_sub(b, "d/#")
    req = request(POST, "ps/d/2", mtype=NON, mid=501, payload=b"x")
    assert len(feed(ep, req)) == 1
    assert feed(ep, req, now=1000) == []
    assert len(publishes(s.recv())) == 1 and ep.stats.duplicates == 1


def test_same_mid_from_another_peer_is_not_a_duplicate():
    b, ep = make()
    s = _mqtt_sub(b, "d/#")
    req = request(POST, "ps/d/3", mid=9, payload=b"x")
    feed(ep, req, PEER)
    feed(ep, req, OTHER)
    assert len(publishes(s.recv())) == 2 and ep.stats.duplicates == 0


def test_plain_get_is_not_cached():
    b, ep = make()
    req = request(GET, "r/none", mid=3)
    assert feed(ep, req)[0][1] == 0x84
    assert feed(ep, req)[0][1] == 0x84
    assert not ep.cache and ep.stats.duplicates == 0 and ep.next_deadline() is None


def test_reply_cache_expires_after_exchange_lifetime():
    b, ep = make(exchange_lifetime=10)
    s = _mqtt_sub(b, "d/#")
    req = request(POST, "ps/d/4", mid=10, payload=b"x")
    feed(ep, req, now=1000)
    assert ep.next_deadline() == 11000
    ep.tick(10999)
    assert len(ep.cache) == 1
    ep.tick(11000)
    assert not ep.cache and ep.next_deadline() is None
    feed(ep, req, now=11001)  # the MID may be reused after the lifetime
    assert len(publishes(s.recv())) == 2


def test_full_reply_cache_refuses_with_503_and_max_age():
    # full of other peers' entries: a new peer is refused until one expires
    b, ep = make(max_exchanges=2, exchange_lifetime=100)
    s = _mqtt_sub(b, "d/#")
    third = ("192.0.2.3", 5683)
    feed(ep, request(POST, "ps/d/5", mid=1, payload=b"a"), PEER, now=0)
    feed(ep, request(POST, "ps/d/5", mid=2, payload=b"b"), OTHER, now=30000)
    got = feed(ep, request(POST, "ps/d/5", mid=3, payload=b"c"), third, now=40000)
    assert got[0][1] == 0xA3 and uopt(got[0], 14) == 61  # the oldest leaves at 100 s
    assert ep.stats.refusals == 1
    got = feed(ep, request(POST, "ps/d/5", mid=3, payload=b"c"), third, now=100000)  # expired: room
    assert got[0][1] == 0x44
    assert [m.payload for m in publishes(s.recv())] == [b"a", b"b", b"c"]


def test_one_busy_peer_keeps_its_newest_replies_and_is_never_refused():
    # A client has one CON outstanding (NSTART 1, RFC 7252 §4.7): its
    # duplicates are of its latest requests, so the cache keeps a peer's 8
    # newest; a busy peer no longer fills it for EXCHANGE_LIFETIME
    b, ep = make(max_exchanges=20, exchange_lifetime=100)
    s = _mqtt_sub(b, "d/#")
    for mid in range(1, 101):
        got = feed(ep, request(POST, "ps/d/6", mid=mid, payload=b"%d" % mid), now=mid)
        assert got[0][1] == 0x44, mid
    assert len(ep.cache) == 8 and ep.recent[PEER] == [(PEER, m) for m in range(93, 101)]
    assert ep.stats.refusals == 0 and len(publishes(s.recv())) == 100
    assert feed(ep, request(POST, "ps/d/6", mid=100, payload=b"100"), now=200)[0][1] == 0x44
    assert ep.stats.duplicates == 1 and publishes(s.recv()) == []  # still deduplicated
    feed(ep, request(POST, "ps/d/6", mid=7, payload=b"x"), OTHER, now=300)
    ep.tick(100300)  # every entry past its lifetime: the per-peer index empties too
    assert not ep.cache and not ep.recent


def test_a_full_cache_takes_a_known_peers_oldest_entry_not_a_refusal():
    # max_exchanges entries, all of peers still sending: each new request
    # of theirs replaces their own oldest (the 64 KiB board's 64 entries
    # were full with 8 peers of 8, and every publish after got 5.03)
    b, ep = make(max_exchanges=4, exchange_lifetime=100)
    s = _mqtt_sub(b, "d/#")
    for mid in range(1, 3):
        for peer in (PEER, OTHER):
            assert feed(ep, request(POST, "ps/d/7", mid=mid, payload=b"x"), peer, now=mid)[0][1] == 0x44
    assert len(ep.cache) == 4
    for mid in range(3, 10):
        for peer in (PEER, OTHER):
            assert feed(ep, request(POST, "ps/d/7", mid=mid, payload=b"x"), peer, now=mid)[0][1] == 0x44
    assert len(ep.cache) == 4 and ep.stats.refusals == 0 and len(publishes(s.recv())) == 18
    assert ep.recent[PEER] == [(PEER, 8), (PEER, 9)]
    # a peer with no entry finds the cache full of the others': refused
    third = ("192.0.2.3", 5683)
    assert feed(ep, request(POST, "ps/d/7", mid=1, payload=b"x"), third, now=20)[0][1] == 0xA3
    assert ep.stats.refusals == 1


def test_unknown_critical_option():
    b, ep = make()
    got = feed(ep, request(GET, "r/x", opts=((9, b""),)))
    assert got == [(ACK, 0x82, 1, b"tk", [], b"")]
    assert feed(ep, request(GET, "r/x", mtype=NON, opts=((9, b""),))) == []
    assert feed(ep, request(GET, "r/x", opts=((10, b"e"),)))[0][1] == 0x84  # elective: ignored
    assert feed(ep, request(GET, "r/x", opts=((35, b"coap://h/"),)))[0][1] == 0xA5
    assert ep.stats.errors == 3


def _observer(b, ep, f="o/t", qos=1, token=b"ob", peer=PEER, now=0):
    got = feed(ep, request(GET, "ps/" + f, token=token, observe=0, query=("qos=%d" % qos,), mid=900),
               peer, now)
    assert got[0][1] == 0x45, got
    return got


def test_con_notification_retransmitted_with_backoff_then_observer_dropped():
    b, ep = make(rng=0.5)
    _observer(b, ep)
    p = Client(b)
    p.connect("p")
    publish(p, "o/t", b"m", 1, pid=1)
    got = take(ep)
    assert len(got) == 1 and got[0][0] == CON and got[0][5] == b"m"
    first = got[0]
    assert ep.next_deadline() == 2500  # ACK_TIMEOUT * (1 + 0.5 * 0.5)
    ep.tick(2499)
    assert take(ep) == []
    t = 2500
    for timeout in (5000, 10000, 20000, 40000):
        ep.tick(t)
        assert take(ep) == [first]  # the same message, same MID
        t += timeout
        assert ep.next_deadline() == t
    assert ep.stats.retransmissions == 4
    ep.tick(t)  # MAX_RETRANSMIT reached: the observer is gone
    assert take(ep) == [] and not ep.obs and ep.stats.timeouts == 1
    assert not b.subs.match_subs("o/t")  # unsubscribed from the broker
    assert ep.next_deadline() is not None  # the registration's cache entry


def test_initial_timeout_comes_from_rng():
    for r, want in ((0.0, 2000), (0.999, 2999)):
        b, ep = make(rng=r)
        _observer(b, ep)
        b.publish("o/t", b"m", 1)
        take(ep)
        assert ep.pend[PEER][2] == want


def test_ack_stops_retransmission_and_nstart_queues_the_next():
    b, ep = make()
    _observer(b, ep)
    b.publish("o/t", b"1", 1)
    b.publish("o/t", b"2", 1)
    got = take(ep)
    assert [m[5] for m in got] == [b"1"]  # NSTART 1: the second waits
    assert ep.datagram(codec.empty(ACK, got[0][2]), PEER, 100) is None
    got2 = take(ep)
    assert [(m[0], m[5]) for m in got2] == [(CON, b"2")]
    assert uopt(got2[0], 6) > uopt(got[0], 6)  # Observe numbers increase
    ep.datagram(codec.empty(ACK, got2[0][2]), PEER, 200)
    assert not ep.pend and take(ep) == []
    ep.tick(100000)
    assert take(ep) == [] and ep.stats.retransmissions == 0


def test_nstart_queue_is_bounded_and_counted():
    b, ep = make(max_queued=2)
    _observer(b, ep)
    for i in range(5):
        b.publish("o/t", b"%d" % i, 1)
    assert len(take(ep)) == 1
    assert ep.stats.dropped == 2 and len(ep.pend[PEER][6]) == 2


def test_nstart_is_per_peer():
    b, ep = make()
    _observer(b, ep, peer=PEER)
    _observer(b, ep, peer=OTHER)
    b.publish("o/t", b"x", 1)
    got = take(ep, peers=True)
    assert sorted(p for _, p in got) == sorted([PEER, OTHER])


def test_rst_to_con_notification_deregisters():
    b, ep = make()
    _observer(b, ep)
    b.publish("o/t", b"x", 1)
    m = take(ep)[0]
    ep.datagram(codec.empty(RST, m[2]), PEER, 10)
    assert not ep.obs and not ep.pend and not b.subs.match_subs("o/t")


def test_rst_to_non_notification_deregisters():
    b, ep = make()
    _observer(b, ep, qos=0)
    b.publish("o/t", b"x", 0)
    m = take(ep)[0]
    assert m[0] == NON
    ep.datagram(codec.empty(RST, (m[2] + 1) & 0xFFFF), PEER, 10)  # another MID: nothing
    assert len(ep.obs) == 1
    ep.datagram(codec.empty(RST, m[2]), PEER, 10)
    assert not ep.obs


def test_sys_values():
    b, ep = make()
    feed(ep, request(POST, "ps/s", payload=b"x"))
    vals = dict(ep.sys_values())
    for name in ("requests", "duplicates", "errors", "refusals", "publishes", "observers",
                 "notifications", "retransmissions", "timeouts", "dropped", "exchanges"):
        assert "coap/" + name in vals, name
    assert vals["coap/requests"] == 1 and vals["coap/publishes"] == 1 and vals["coap/exchanges"] == 1
