# The CoAP resources (edge/coap/resources.py) on a real in-memory Broker:
# /ps publishes reach MQTT subscribers, /r and GET /ps read the retained
# store, /.well-known/core, and every refusal's code.
from tests.core._coap import DELETE, GET, NON, POST, PUT, feed, make, opt, request, uopt
from tests.core._pair import Client, make_broker, publish, publishes


def _sub(b, f, qos=2, v5=False):
    s = Client(b, v5=v5)
    s.connect("s")
    s.subscribe((f, qos))
    return s


def _code(ep, data):
    return feed(ep, data)[0][1]


def test_coap_publish_reaches_mqtt_subscriber():
    b, ep = make()
    s = _sub(b, "home/#")
    got = feed(ep, request(POST, "ps/home/temp", payload=b"21.5"))
    assert got[0][1] == 0x44 and got[0][5] == b""
    got = feed(ep, request(PUT, "ps/home/hum", mid=2, query=("qos=1",), payload=b"40"))
    assert got[0][1] == 0x44
    msgs = publishes(s.recv())
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [
        ("home/temp", b"21.5", 0, False), ("home/hum", b"40", 1, False)]
    assert ep.stats.publishes == 2


def test_emqx_query_names():
    b, ep = make()
    s = _sub(b, "q/#")
    q = ("c=dev1", "u=user", "p=secret", "t=tok", "q=2", "r=1")
    assert _code(ep, request(POST, "ps/q/a", query=q, payload=b"x")) == 0x44
    assert _code(ep, request(POST, "ps/q/b", mid=2, query=("qos=1", "retain=true"), payload=b"y")) == 0x44
    assert _code(ep, request(POST, "ps/q/c", mid=3, query=("retain=false", "other=1"), payload=b"z")) == 0x44
    got = [(m.topic, m.qos) for m in publishes(s.recv())]
    assert got == [("q/a", 2), ("q/b", 1), ("q/c", 0)]
    assert b.retained.get("q/a").payload == b"x" and b.retained.get("q/b").payload == b"y"
    assert b.retained.get("q/c") is None


def test_bad_query_values_are_400():
    b, ep = make()
    for i, q in enumerate(("qos=3", "q=", "qos=x", "r=maybe", "retain=2", "q=11")):
        assert _code(ep, request(POST, "ps/t", mid=10 + i, query=(q,), payload=b"x")) == 0x80, q
    assert ep.stats.publishes == 0


def test_publish_refusals():
    b, ep = make()
    s = _sub(b, "#")
    assert _code(ep, request(POST, "ps/a/+", mid=1, payload=b"x")) == 0x80
    assert _code(ep, request(POST, "ps/a/#", mid=2, payload=b"x")) == 0x80
    assert _code(ep, request(POST, "ps/$SYS/broker/x", mid=3, payload=b"x")) == 0x83
    assert _code(ep, request(POST, "ps/$share/g/t", mid=4, payload=b"x")) == 0x83
    assert _code(ep, request(POST, "ps", mid=5, payload=b"x")) == 0x80  # no topic
    assert _code(ep, request(DELETE, "ps/a", mid=6)) == 0x85
    assert _code(ep, request(7, "ps/a", mid=7)) == 0x85  # iPATCH: not ours (RFC 7252 §5.8)
    assert publishes(s.recv()) == [] and ep.stats.publishes == 0


def test_publish_topic_over_the_broker_depth_is_400():
    b, ep = make(make_broker(max_topic_levels=4))
    assert _code(ep, request(POST, "ps/a/b/c/d/e", payload=b"x")) == 0x80
    assert _code(ep, request(POST, "ps/a/b/c/d", mid=2, payload=b"x")) == 0x44


def test_payload_over_max_payload_is_413_with_size1():
    b, ep = make(max_payload=16)
    got = feed(ep, request(POST, "ps/big", payload=b"x" * 17))
    assert got[0][1] == 0x8D and uopt(got[0], 60) == 16
    assert ep.stats.refusals == 1
    assert _code(ep, request(POST, "ps/big", mid=2, payload=b"x" * 16)) == 0x44


def test_get_r_reads_the_retained_message():
    b, ep = make()
    assert _code(ep, request(GET, "r/a/b")) == 0x84
    publish(_pub(b), "a/b", b"kept", 1, True, pid=1)
    got = feed(ep, request(GET, "r/a/b"))
    assert got[0][1] == 0x45 and got[0][5] == b"kept"
    got = feed(ep, request(GET, "ps/a/b"))  # without Observe: as /r
    assert got[0][1] == 0x45 and got[0][5] == b"kept"
    publish(_pub(b, "p2"), "a/b", b"", 0, True)  # cleared
    assert _code(ep, request(GET, "r/a/b")) == 0x84
    assert _code(ep, request(GET, "ps/a/b")) == 0x84


def _pub(b, cid="p"):
    p = Client(b)
    p.connect(cid)
    return p


def test_r_refusals():
    b, ep = make()
    assert _code(ep, request(GET, "r/a/+")) == 0x80  # a filter reads nothing
    assert _code(ep, request(GET, "r/a/#", observe=0, mid=99)) == 0x80 and not ep.obs
    assert _code(ep, request(GET, "ps/a/#")) == 0x80
    assert _code(ep, request(POST, "r/a", payload=b"x")) == 0x85
    assert _code(ep, request(PUT, "r/a", payload=b"x")) == 0x85
    assert _code(ep, request(GET, "r")) == 0x80


def test_coap_retained_publish_is_read_back_by_coap_and_mqtt():
    b, ep = make()
    assert _code(ep, request(PUT, "ps/dev/state", query=("r=1",), payload=b"on")) == 0x44
    got = feed(ep, request(GET, "r/dev/state", mtype=NON, mid=2))
    assert got[0][0] == NON and got[0][5] == b"on"
    s = Client(b)
    s.connect("late")
    msgs = publishes(s.subscribe(("dev/+", 0)))
    assert [(m.topic, m.payload, m.retain) for m in msgs] == [("dev/state", b"on", True)]


def test_expired_retained_5_0_message_is_not_read():
    b, ep = make()
    p = Client(b, v5=True)
    p.connect("p5")
    publish(p, "x/e", b"old", 0, True, props={0x02: 1})  # Message Expiry Interval 1 s
    assert feed(ep, request(GET, "r/x/e"))[0][5] == b"old"
    b.now = 5000  # the broker's clock: past the interval
    assert b.retained.get("x/e").expired()
    assert _code(ep, request(GET, "r/x/e", mid=2)) == 0x84


def test_well_known_core():
    b, ep = make()
    got = feed(ep, request(GET, ".well-known/core"))
    assert got[0][1] == 0x45 and uopt(got[0], 12) == 40
    assert b"</ps>" in got[0][5] and b"</r>" in got[0][5] and b"obs" in got[0][5]
    assert _code(ep, request(GET, ".well-known/core", opts=((17, b"\x28"),))) == 0x45
    assert _code(ep, request(GET, ".well-known/core", opts=((17, b""),))) == 0x86
    assert _code(ep, request(POST, ".well-known/core")) == 0x85


def test_well_known_core_query_filters():
    # RFC 6690 §4.1: name=value, a trailing * matches a prefix
    b, ep = make()

    def doc(*query):
        got = feed(ep, request(GET, ".well-known/core", query=query, mid=len(ep.cache) + 10))
        assert got[0][1] == 0x45
        return got[0][5]

    both = b'</ps>;rt="core.ps";obs,</r>;obs'
    assert doc() == both
    assert doc("rt=core.ps") == b'</ps>;rt="core.ps";obs'
    assert doc("rt=core*") == b'</ps>;rt="core.ps";obs'
    assert doc("rt=core") == b""
    assert doc("href=/r") == b"</r>;obs"
    assert doc("href=/*") == both
    assert doc("href=/p*", "rt=core.ps") == b'</ps>;rt="core.ps";obs'
    assert doc("href=/r", "rt=core.ps") == b""
    assert doc("title=x") == b""
    assert doc("obs") == both  # no =: not a filter


def test_unknown_paths_are_404():
    b, ep = make()
    assert _code(ep, request(GET, "")) == 0x84
    assert _code(ep, request(GET, "mqtt/connection")) == 0x84
    assert _code(ep, request(GET, ".well-known")) == 0x84
    assert _code(ep, request(POST, "x/ps/a", payload=b"1")) == 0x84


def test_path_not_utf8_is_400():
    b, ep = make()
    assert _code(ep, request(POST, "ps", opts=((11, b"\xff\xfe"),), payload=b"x")) == 0x80
    assert _code(ep, request(GET, "r", mid=2, opts=((11, b"\xc3\x28"),))) == 0x80
    assert ep.stats.publishes == 0


def test_response_has_no_content_format_for_messages():
    b, ep = make()
    publish(_pub(b), "cf", b"x", 0, True)
    got = feed(ep, request(GET, "r/cf"))
    assert opt(got[0], 12) is None
