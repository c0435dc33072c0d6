# Observe (RFC 7641) through edge/coap/observe.py on a real in-memory
# Broker: an MQTT publish reaches a CoAP observer, NON for QoS 0 and CON for
# QoS 1/2, wildcards, retained messages, /r, deregistration, the limits.
from edge.coap import observe
from tests.core._coap import ACK, CON, GET, NON, OTHER, PEER, POST, feed, make, request, take, uopt
from tests.core._pair import Client, make_broker, publish


def _register(ep, f, qos=0, token=b"ob", peer=PEER, now=0, mid=900, path="ps/"):
    return feed(ep, request(GET, path + f, token=token, observe=0, query=("qos=%d" % qos,), mid=mid), peer, now)


def _mqtt(b, cid="p"):
    p = Client(b)
    p.connect(cid)
    return p


def test_mqtt_publish_reaches_coap_observer():
    b, ep = make()
    got = _register(ep, "room/temp")
    assert got[0][:4] == (ACK, 0x45, 900, b"ob") and uopt(got[0], 6) is not None
    assert got[0][5] == b""  # nothing retained yet
    p = _mqtt(b)
    publish(p, "room/temp", b"20")
    publish(p, "room/other", b"no")
    publish(p, "room/temp", b"21")
    got = take(ep)
    assert [(m[0], m[1], m[3], m[5]) for m in got] == [(NON, 0x45, b"ob", b"20"), (NON, 0x45, b"ob", b"21")]
    seqs = [uopt(m, 6) for m in got]
    assert seqs[0] < seqs[1]
    assert ep.stats.notifications == 2


def test_coap_publish_notification_follows_the_reply():
    b, ep = make()
    _register(ep, "c/u", peer=OTHER)
    ep.datagram(request(POST, "ps/c/u", payload=b"hi", mid=5), PEER, 0)
    got = take(ep, peers=True)
    assert [(m[1], p) for m, p in got] == [(0x44, PEER), (0x45, OTHER)]
    assert got[1][0][5] == b"hi"


def test_notification_type_follows_qos():
    b, ep = make()
    _register(ep, "q/t", qos=1)
    p = _mqtt(b)
    publish(p, "q/t", b"zero", 0)
    publish(p, "q/t", b"one", 1, pid=1)
    got = take(ep)
    assert [(m[0], m[5]) for m in got] == [(NON, b"zero"), (CON, b"one")]
    b2, ep2 = make()
    _register(ep2, "q/t", qos=0)
    b2.publish("q/t", b"one", 1)
    assert [m[0] for m in take(ep2)] == [NON]  # min(message QoS, observer's)


def test_con_notification_at_least_every_24_hours():
    b, ep = make()
    _register(ep, "d/t", qos=0, now=0)
    ep.tick(1000)
    b.publish("d/t", b"a")
    assert take(ep)[0][0] == NON
    ep.tick(86400000)
    b.publish("d/t", b"b")
    m = take(ep)[0]
    assert m[0] == CON  # RFC 7641 §4.5
    ep.datagram(bytes([0x60, 0, m[2] >> 8, m[2] & 255]), PEER, 86400100)
    b.publish("d/t", b"c")
    assert take(ep)[0][0] == NON


def test_a_con_probe_after_100_nons_in_a_row():
    # RFC 7252 §4.7 PROBING_RATE: NONs get no answer; a CON now and then
    # tells whether the peer is still there
    b, ep = make()
    _register(ep, "n/t", qos=0)
    for i in range(101):
        b.publish("n/t", b"%d" % i)
    got = take(ep)
    assert [m[0] for m in got] == [NON] * 100 + [CON]
    ep.datagram(bytes([0x60, 0, got[-1][2] >> 8, got[-1][2] & 255]), PEER, 10)
    b.publish("n/t", b"after")
    assert [m[0] for m in take(ep)] == [NON]


def test_nons_go_on_past_100_while_the_probe_is_fresh():
    # A busy observer can take 100 more NONs before its probe's ACK comes
    # back: they go out, as those of one ACK_TIMEOUT, not queued behind the
    # probe (whose bounded queue dropped them under load)
    b, ep = make()
    _register(ep, "f/t", qos=0)
    kinds = []
    for i in range(101):
        b.publish("f/t", b"x")
        kinds += [m[0] for m in take(ep)]  # (one at a time: a board's heap)
    assert kinds[-1] == CON and len(kinds) == 101
    dropped = ep.stats.dropped
    kinds = []
    for i in range(150):
        b.publish("f/t", b"%d" % i)
        kinds += [m[0] for m in take(ep)]
    assert kinds == [NON] * 150
    assert ep.stats.dropped == dropped


def test_a_silent_peer_gets_no_nons_once_its_probe_times_out():
    b, ep = make()
    _register(ep, "s/t", qos=0)
    for i in range(101):
        b.publish("s/t", b"x")
    probe = take(ep)[-1]
    assert probe[0] == CON
    b.publish("s/t", b"before the timeout")
    assert [m[0] for m in take(ep)] == [NON]
    ep.tick(3001)  # past ACK_TIMEOUT * ACK_RANDOM_FACTOR: retransmitted
    assert [(m[0], m[2]) for m in take(ep)] == [(CON, probe[2])]
    dropped = ep.stats.dropped
    for i in range(50):
        b.publish("s/t", b"skipped")
    assert take(ep) == []
    assert ep.stats.dropped == dropped + 50
    # the peer answers the probe: notifications flow again
    ep.datagram(bytes([0x60, 0, probe[2] >> 8, probe[2] & 255]), PEER, 3500)
    b.publish("s/t", b"back")
    got = take(ep)
    assert [(m[0], m[5]) for m in got] == [(NON, b"back")]


def test_wildcards():
    b, ep = make()
    _register(ep, "w/+/x", token=b"1")
    _register(ep, "w/#", token=b"2", mid=901)
    _register(ep, "#", token=b"3", mid=902)
    b.publish("w/a/x", b"1")
    got = take(ep)
    assert sorted(m[3] for m in got) == [b"1", b"2", b"3"]
    b.publish("w", b"2")
    assert sorted(m[3] for m in take(ep)) == [b"2", b"3"]  # "w/#" matches its parent
    b.publish("$SYS/broker/x", b"3")
    assert take(ep) == []  # [MQTT-4.7.2-1]


def test_matches():
    yes = (("a/b", "a/b"), ("a/+", "a/b"), ("+/b", "a/b"), ("#", "a/b"), ("a/#", "a"), ("a/#", "a/b/c"),
           ("+/+", "a/b"), ("a//c", "a//c"), ("a/+/c", "a//c"), ("+", "a"), ("$SYS/#", "$SYS/x"),
           ("a/", "a/"), ("a/+", "a/"))
    no = (("a/b", "a/c"), ("a/+", "a/b/c"), ("a/+", "a"), ("+", "a/b"), ("#", "$SYS/x"), ("+/x", "$a/x"),
          ("a/b/#", "a"), ("a", "a/b"), ("a/b", "a"), ("ab", "a"))
    for f, t in yes:
        assert observe.matches(f, t), (f, t)
    for f, t in no:
        assert not observe.matches(f, t), (f, t)


def test_registration_answers_the_retained_message():
    b, ep = make()
    publish(_mqtt(b), "s/t", b"state", 0, True)
    got = _register(ep, "s/t")
    assert len(got) == 1 and got[0][1] == 0x45 and got[0][5] == b"state"


def test_wildcard_registration_gets_retained_messages_after_the_response():
    b, ep = make()
    p = _mqtt(b)
    publish(p, "s/a", b"A", 0, True)
    publish(p, "s/b", b"B", 1, True, pid=1)
    got = _register(ep, "s/+", qos=1)
    assert got[0][:2] == (ACK, 0x45) and got[0][5] == b""
    rest = got[1:]
    assert sorted(m[5] for m in rest) == [b"A", b"B"]
    assert all(uopt(m, 6) > uopt(got[0], 6) for m in rest)
    # a second observer of the same filter gets them too, and the first
    # gets nothing new
    got = _register(ep, "s/+", token=b"o2", peer=OTHER, mid=901)
    assert sorted(m[5] for m in got[1:]) == [b"A", b"B"]


def test_deregistration_with_observe_1_unsubscribes():
    b, ep = make()
    _register(ep, "u/t")
    assert b.subs.match_subs("u/t")
    got = feed(ep, request(GET, "ps/u/t", token=b"ob", observe=1, mid=2))
    assert got[0][1] == 0x84  # answered as a plain GET: nothing retained
    assert not ep.obs and not b.subs.match_subs("u/t")
    b.publish("u/t", b"x")
    assert take(ep) == []


def test_shared_filter_stays_subscribed_while_an_observer_has_it():
    b, ep = make()
    _register(ep, "sh/t", token=b"a")
    _register(ep, "sh/t", token=b"b", peer=OTHER, mid=901)
    assert len(ep.client.subs) == 1
    feed(ep, request(GET, "ps/sh/t", token=b"a", observe=1, mid=3))
    b.publish("sh/t", b"x")
    got = take(ep, peers=True)
    assert [(m[3], p) for m, p in got] == [(b"b", OTHER)]
    assert b.subs.match_subs("sh/t")


def test_reregistration_replaces():
    b, ep = make()
    _register(ep, "rr/a", mid=1)
    _register(ep, "rr/a", qos=1, mid=2)
    assert len(ep.obs) == 1
    b.publish("rr/a", b"x", 1)
    assert take(ep)[0][0] == CON  # the new QoS
    _register(ep, "rr/b", mid=3)  # same token, another resource: the old one ends
    assert len(ep.obs) == 1 and not b.subs.match_subs("rr/a")


def test_max_observers_is_503_and_counted():
    b, ep = make(max_observers=2)
    _register(ep, "m/1", token=b"1", mid=1)
    _register(ep, "m/2", token=b"2", mid=2)
    got = _register(ep, "m/3", token=b"3", mid=3)
    assert got[0][1] == 0xA3 and uopt(got[0], 6) is None
    assert ep.stats.refusals == 1 and len(ep.obs) == 2
    assert dict(ep.sys_values())["coap/observers"] == 2
    assert not b.subs.match_subs("m/3")


def test_broker_refusing_the_filter_is_503():
    b, ep = make(make_broker(max_subscriptions=1))
    _register(ep, "f/1", token=b"1", mid=1)
    got = _register(ep, "f/2", token=b"2", mid=2)
    assert got[0][1] == 0xA3 and ep.stats.refusals == 1 and len(ep.obs) == 1


def test_malformed_filter_is_400():
    b, ep = make()
    assert _register(ep, "a/b#")[0][1] == 0x80
    assert _register(ep, "a/+b", mid=2)[0][1] == 0x80
    assert not ep.obs


def test_observe_r():
    b, ep = make()
    got = _register(ep, "rv/t", path="r/")
    assert got[0][1] == 0x84 and not ep.obs  # nothing retained: no observation
    p = _mqtt(b)
    publish(p, "rv/t", b"v1", 0, True)
    got = _register(ep, "rv/t", path="r/", mid=2)
    assert got[0][1] == 0x45 and got[0][5] == b"v1" and len(ep.obs) == 1
    publish(p, "rv/t", b"live", 0)  # not retained: the resource did not change
    assert take(ep) == []
    publish(p, "rv/t", b"v2", 0, True)
    got = take(ep)
    assert [(m[1], m[5]) for m in got] == [(0x45, b"v2")]
    publish(p, "rv/t", b"", 0, True)  # deleted: 4.04 ends the observation
    got = take(ep)
    assert [(m[1], uopt(m, 6)) for m in got] == [(0x84, None)]
    assert not ep.obs and not b.subs.match_subs("rv/t")


def test_observe_sequence_is_24_bits():
    b, ep = make()
    _register(ep, "sq")
    ep.seq = 0xFFFFFE
    b.publish("sq", b"a")
    b.publish("sq", b"b")
    assert [uopt(m, 6) for m in take(ep)] == [0xFFFFFF, 0]


def test_close_unsubscribes_every_observer():
    b, ep = make()
    _register(ep, "c/1", token=b"1", mid=1)
    _register(ep, "c/+", token=b"2", mid=2, qos=1)
    b.publish("c/1", b"x", 1)
    take(ep)
    ep.close()
    assert not ep.obs and not ep.pend and not ep.client.subs
    assert not b.subs.match_subs("c/1")
    b.publish("c/1", b"y")
    assert take(ep) == [] and ep.next_deadline() is None


def test_duplicate_registration_is_answered_from_the_cache():
    b, ep = make()
    p = _mqtt(b)
    publish(p, "dr/a", b"A", 0, True)
    req = request(GET, "ps/dr/+", token=b"t", observe=0, mid=77)
    first = feed(ep, req)
    again = feed(ep, req, now=100)
    assert again == first[:1]  # the response only, no second round of retained messages
    assert ep.stats.duplicates == 1 and len(ep.obs) == 1


def test_heap_per_observer_under_micropython():
    # The CoAP side of an observer (its list, key, token, dict slot; the
    # filter shared with others observing it) measured with gc.mem_alloc(),
    # which only MicroPython has: on CPython this checks nothing. 238 B
    # measured on the 64-bit unix port; a distinct filter adds the broker's
    # subscription (~460 B for 3 levels there, as for any client's).
    import gc

    if not hasattr(gc, "mem_alloc"):
        return
    n = 16
    b, ep = make(max_observers=n + 1)
    _register(ep, "heap/t", token=b"warm", peer=b"warm-peer-address")
    reqs = [request(GET, "ps/heap/t", token=b"tk%02d" % i, observe=0, mid=100 + i) for i in range(n)]
    peers = [b"peer-address-%03d" % i for i in range(n)]
    ep.obs = dict(ep.obs)
    ep.cache = {}
    gc.collect()
    before = gc.mem_alloc()
    for i in range(n):
        ep.datagram(reqs[i], peers[i], 0)
        del ep.out[:]
    ep.cache = {}  # the registrations' reply cache entries: not the observer's
    gc.collect()
    per = (gc.mem_alloc() - before) // n
    print("heap per observer: %d B" % per)
    assert len(ep.obs) == n + 1 and per < 400, per
