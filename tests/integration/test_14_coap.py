# 14: the CoAP endpoint (docs/coap.md) with independent peers: aiocoap's
# client, libcoap's coap-client-notls, paho-mqtt on the MQTT side, and a raw
# UDP peer (coapraw.py) for what the libraries hide: Message-IDs, duplicates,
# RST, the type of each notification. Both runtimes.
import asyncio
import os
import queue
import shutil
import subprocess
import threading

import pytest

from . import coapraw as raw
from .clients import unique_id

pytestmark = [pytest.mark.timeout(60), pytest.mark.edge_only("CoAP is edgebroker's own")]

# A board's profile has CoAP off: its code and state cost about 6.1 KB of
# heap at idle, which a 64 KiB heap does not have beside the MQTT clients
# yet (docs/coap.md "On a board"). Enabled here, on a 128 KiB heap, where
# the store opens too (persistence needs ~96 KiB; docs/persistence.md).
BROKER_CONFIG = {"coap.enabled": True, "board_heap": "128k"}
COAP_CLIENT = shutil.which("coap-client-notls") or shutil.which("coap-client")


def topic(name):
    return "t14/%s/%s" % (name, unique_id("c"))


def uri(b, path):
    return "coap://127.0.0.1:%d/%s" % (b.wait_coap(), path)


def aio(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _request(method, url, payload=b"", observe=None):
    import aiocoap

    ctx = await aiocoap.Context.create_client_context()
    try:
        msg = aiocoap.Message(code=getattr(aiocoap, method), uri=url, payload=payload)
        if observe is not None:
            msg.opt.observe = observe
        return await ctx.request(msg).response
    finally:
        await ctx.shutdown()


def request(method, url, payload=b""):
    """(code as "2.04", payload) of one aiocoap request."""
    r = aio(_request(method, url, payload))
    return r.code.dotted, r.payload


# -- publish: CoAP -> MQTT --------------------------------------------------------

@pytest.mark.parametrize("qos", [0, 1, 2])
def test_aiocoap_post_reaches_an_mqtt_subscriber(shared_broker, mqtt_client, qos):
    b = shared_broker
    t = topic("post")
    sub = mqtt_client(b)
    sub.subscribe(t, 2)
    assert request("POST", uri(b, "ps/%s?qos=%d" % (t, qos)), b"21.5") == ("2.04", b"")
    (m,) = sub.wait_messages(1, topic=t)
    assert (m.payload, m.qos) == (b"21.5", qos)


def test_put_with_retain_sets_the_retained_message(shared_broker, mqtt_client):
    b = shared_broker
    t = topic("retain")
    assert request("PUT", uri(b, "ps/%s?r=1" % t), b"on")[0] == "2.04"  # EMQX's short name
    late = mqtt_client(b)
    late.subscribe(t, 0)
    late.wait_message(lambda m: m.topic == t and m.retain and m.payload == b"on")
    # and /r reads it back
    assert request("GET", uri(b, "r/" + t)) == ("2.05", b"on")


def test_get_r_of_nothing_is_not_found(shared_broker):
    assert request("GET", uri(shared_broker, "r/" + topic("none")))[0] == "4.04"


# -- subscribe: MQTT -> CoAP (Observe) ----------------------------------------------

async def _observe(url, publish, n):
    """Observe url, call publish() once registered; the first n notifications' payloads."""
    import aiocoap

    ctx = await aiocoap.Context.create_client_context()
    try:
        pr = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=url, observe=0))
        first = await pr.response
        assert first.code.is_successful(), first
        assert first.opt.observe is not None, "not registered: %r" % first
        got = []

        async def collect():
            async for note in pr.observation:
                got.append(note.payload)
                if len(got) == n:
                    return

        # the iteration begins before the publishes: one started after them
        # misses the notifications that came meanwhile
        task = asyncio.ensure_future(collect())
        await asyncio.sleep(0)  # (the task runs up to its first wait: listening)
        await asyncio.get_running_loop().run_in_executor(None, publish)
        await task
        pr.observation.cancel()
        return got
    finally:
        await ctx.shutdown()


@pytest.mark.parametrize("flt", ["cmd/{dev}/#", "cmd/+/reboot"])
def test_an_observer_gets_commands_an_mqtt_client_publishes(shared_broker, mqtt_client, flt):
    b = shared_broker
    dev = unique_id("dev")
    pub = mqtt_client(b)

    def publish():
        pub.publish("cmd/%s/reboot" % dev, b"now", qos=1)
        pub.publish("cmd/%s/reboot" % dev, b"again", qos=0)

    # '#' is a URI's fragment delimiter: percent-encoded in a path (RFC 3986 §2.2)
    path = "ps/" + flt.format(dev=dev).replace("#", "%23")
    got = aio(_observe(uri(b, path), publish, 2))
    assert got == [b"now", b"again"]


def test_qos1_notifications_are_con_and_retransmitted_until_acked(shared_broker, mqtt_client):
    # RFC 7641 §4.5: a CON notification is retransmitted (RFC 7252 §4.2)
    # until ACKed; a NON one (qos 0) is not
    b = shared_broker
    t = topic("con")
    with raw.Peer("127.0.0.1", b.wait_coap()) as p:
        p.send(raw.request(raw.CON, raw.GET, 0x1001, "ps/" + t, ["qos=1"], b"tk",
                           [(raw.OBSERVE, b"")]))
        r = p.recv()
        assert (r.type, r.cls, r.mid, r.token) == (raw.ACK, "2.05", 0x1001, b"tk"), r
        assert r.opt(raw.OBSERVE) is not None, r
        mqtt_client(b).publish(t, b"n1", qos=1)
        n = p.recv()
        assert (n.type, n.token, n.payload) == (raw.CON, b"tk", b"n1"), n
        again = p.recv(timeout=6)  # ACK_TIMEOUT 2-3 s (RFC 7252 §4.8)
        assert (again.type, again.mid, again.payload) == (raw.CON, n.mid, b"n1"), again
        p.send(raw.encode(raw.ACK, 0, n.mid))
        assert p.nothing(timeout=3.5)  # acknowledged: no third copy


def test_observe_1_deregisters(shared_broker, mqtt_client):
    b = shared_broker
    t = topic("dereg")
    pub = mqtt_client(b)
    with raw.Peer("127.0.0.1", b.wait_coap()) as p:
        p.send(raw.request(raw.CON, raw.GET, 0x2001, "ps/" + t, [], b"o1", [(raw.OBSERVE, b"")]))
        assert p.recv().cls == "2.05"
        p.send(raw.request(raw.CON, raw.GET, 0x2002, "ps/" + t, [], b"o1", [(raw.OBSERVE, b"\x01")]))
        assert p.recv().mid == 0x2002
        pub.publish(t, b"nobody", qos=0)
        pub.publish(t, b"nobody", qos=1)
        assert p.nothing(timeout=1.0)


def test_rst_to_a_notification_deregisters(shared_broker, mqtt_client):
    b = shared_broker
    t = topic("rst")
    pub = mqtt_client(b)
    with raw.Peer("127.0.0.1", b.wait_coap()) as p:
        p.send(raw.request(raw.NON, raw.GET, 0x3001, "ps/" + t, [], b"r1", [(raw.OBSERVE, b"")]))
        assert p.recv().cls == "2.05"
        pub.publish(t, b"first", qos=0)
        n = p.recv()
        assert n.payload == b"first"
        p.send(raw.encode(raw.RST, 0, n.mid))  # RFC 7641 §3.6
        pub.publish(t, b"second", qos=0)
        pub.publish(t, b"third", qos=1)
        assert p.nothing(timeout=1.0)


# -- exchanges ----------------------------------------------------------------------

def test_a_duplicate_con_gets_the_cached_reply_and_is_published_once(shared_broker, mqtt_client):
    # RFC 7252 §4.5: the same Message-ID from the same endpoint within
    # EXCHANGE_LIFETIME is the same request
    b = shared_broker
    t = topic("dup")
    sub = mqtt_client(b)
    sub.subscribe(t, 1)
    req = raw.request(raw.CON, raw.POST, 0x4242, "ps/" + t, ["qos=1"], b"d", payload=b"once")
    with raw.Peer("127.0.0.1", b.wait_coap()) as p:
        p.send(req)
        first = p.recv()
        p.send(req)
        second = p.recv()
        assert (first.type, first.cls, first.mid) == (raw.ACK, "2.04", 0x4242)
        assert (second.type, second.cls, second.mid) == (first.type, first.cls, first.mid)
        p.send(raw.request(raw.CON, raw.POST, 0x4243, "ps/" + t, [], b"d", payload=b"marker"))
        assert p.recv().cls == "2.04"
    sub.wait_message(lambda m: m.payload == b"marker")
    assert [m.payload for m in sub.messages] == [b"once", b"marker"]


@pytest.mark.parametrize("path,method,query,want", [
    ("nowhere/x", raw.GET, [], "4.04"),
    ("ps/t14/method", raw.DELETE, [], "4.05"),
    ("ps/t14/+/wild", raw.POST, [], "4.00"),
    ("ps/$SYS/broker/uptime", raw.POST, [], "4.03"),
    ("ps/t14/q", raw.POST, ["qos=3"], "4.00"),
    ("ps/t14/q", raw.POST, ["qos=x"], "4.00"),
])
def test_bad_requests_get_their_4xx(shared_broker, path, method, query, want):
    b = shared_broker
    with raw.Peer("127.0.0.1", b.wait_coap()) as p:
        p.send(raw.request(raw.CON, method, 0x5000, path, query, b"e", payload=b"x"))
        r = p.recv()
        assert (r.type, r.mid, r.cls, r.token) == (raw.ACK, 0x5000, want, b"e"), r
    b.assert_alive()


def test_unknown_critical_option_is_bad_option(shared_broker):
    # RFC 7252 §5.4.1: an unrecognized critical (odd) option in a CON request
    with raw.Peer("127.0.0.1", shared_broker.wait_coap()) as p:
        p.send(raw.request(raw.CON, raw.GET, 0x5001, "r/t14/x", [], b"", [(2049, b"z")]))
        assert p.recv().cls == "4.02"


@pytest.mark.parametrize("data", [
    b"\x40",                                 # shorter than the header
    b"\x48\x01\x00\x01abc",                  # token length 8, 3 bytes of it
    b"\x40\x01\x00\x02\xd1",                 # option delta 13 without its byte
    b"\x40\x01\x00\x03\xff",                 # payload marker, no payload
    b"\x40\x01\x00\x04\xf0",                 # option delta 15: reserved
])
def test_a_malformed_con_gets_rst_and_the_endpoint_goes_on(shared_broker, data):
    # RFC 7252 §4.2: a CON that cannot be processed is rejected with RST
    with raw.Peer("127.0.0.1", shared_broker.wait_coap()) as p:
        p.send(data)
        if len(data) >= 4:
            r = p.recv()
            assert (r.type, r.mid) == (raw.RST, int.from_bytes(data[2:4], "big")), r
        p.send(raw.request(raw.CON, raw.GET, 0x6000, ".well-known/core"))
        assert p.recv().cls == "2.05"
    shared_broker.assert_alive()


def test_well_known_core_lists_the_resources(shared_broker):
    # RFC 6690 link format
    c, body = request("GET", uri(shared_broker, ".well-known/core"))
    assert c == "2.05"
    assert b"</ps>" in body and b"</r>" in body, body


# -- block-wise -------------------------------------------------------------------

def test_block1_post_and_block2_get_of_a_large_message(runtime, shared_broker, mqtt_client):
    # RFC 7959: aiocoap splits a body over the block size into Block1
    # requests, and reassembles a Block2 response
    b = shared_broker
    t = topic("big")
    size = 3000 if runtime == "cpython" else 900
    body = (bytes(range(256)) * 20)[:size]
    sub = mqtt_client(b)
    sub.subscribe(t, 1)
    assert request("POST", uri(b, "ps/%s?qos=1&retain=1" % t), body)[0] == "2.04"
    (m,) = sub.wait_messages(1, topic=t)
    assert m.payload == body
    assert request("GET", uri(b, "r/" + t)) == ("2.05", body)


# -- coap-client-notls (libcoap) ---------------------------------------------------

def coap_client(*args, timeout=20):
    if COAP_CLIENT is None:
        pytest.fail("coap-client-notls missing: `make test` installs libcoap3-bin")
    # its exit status is 0 even on failure: the output says what happened
    p = subprocess.run([COAP_CLIENT] + list(args), capture_output=True, timeout=timeout, text=True)
    return p.stdout + p.stderr


def test_coap_client_put_get_and_observe(shared_broker, mqtt_client):
    b = shared_broker
    t = topic("libcoap")
    sub = mqtt_client(b)
    sub.subscribe(t, 0)
    out = coap_client("-m", "put", "-e", "from libcoap", uri(b, "ps/%s?qos=1&retain=1" % t))
    (m,) = sub.wait_messages(1, topic=t)
    assert m.payload == b"from libcoap", out
    out = coap_client("-m", "get", uri(b, "r/" + t))
    assert "from libcoap" in out, out
    # observe /r for up to 8 s: its first answer (the retained value) says
    # it is registered; then a new retained value from MQTT is notified
    # (it prints each payload as it comes, with no newline after it)
    chunks = queue.Queue()
    proc = subprocess.Popen(["stdbuf", "-o0", COAP_CLIENT, "-m", "get", "-s", "8", uri(b, "r/" + t)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    threading.Thread(target=lambda: [chunks.put(x) for x in iter(
        lambda: os.read(proc.stdout.fileno(), 4096), b"")], daemon=True).start()
    seen = []

    def wait_line(text):
        while text.encode() not in b"".join(seen):
            seen.append(chunks.get(timeout=10))

    try:
        wait_line("from libcoap")
        mqtt_client(b).publish(t, b"observed", qos=1, retain=True)
        wait_line("observed")
    except queue.Empty:
        pytest.fail("coap-client printed %r" % seen)
    finally:
        proc.kill()
        proc.wait(5)


def test_coap_client_filters_well_known_core(shared_broker):
    # RFC 6690 §4.1 query filtering, as libcoap's client sends it
    out = coap_client("-m", "get", uri(shared_broker, ".well-known/core?rt=core.ps"))
    assert '</ps>;rt="core.ps";obs' in out and "</r>" not in out, out
    out = coap_client("-m", "get", uri(shared_broker, ".well-known/core?href=/r*"))
    assert "</r>;obs" in out and "</ps>" not in out, out


def test_coap_client_block_wise_put(runtime, shared_broker, mqtt_client):
    b = shared_broker
    t = topic("libblock")
    body = ("0123456789" * 200)[: 2000 if runtime == "cpython" else 900]
    sub = mqtt_client(b)
    sub.subscribe(t, 0)
    out = coap_client("-m", "put", "-b", "64", "-e", body, uri(b, "ps/" + t))
    (m,) = sub.wait_messages(1, topic=t)
    assert m.payload == body.encode(), out


def test_sys_counts_requests_duplicates_observers_and_refusals(shared_broker, mqtt_client):
    # $SYS/broker/coap/... (docs/sys.md, docs/coap.md)
    b = shared_broker
    t = topic("sys")
    mon = mqtt_client(b)

    def sysv():
        mon.messages.clear()
        mon.subscribe("$SYS/broker/coap/#", 0)
        mon.wait_messages(11)
        vals = {m.topic.rsplit("/", 1)[1]: int(m.payload) for m in mon.messages}
        mon.unsubscribe("$SYS/broker/coap/#")
        return vals

    before = sysv()
    with raw.Peer("127.0.0.1", b.wait_coap()) as p:
        req = raw.request(raw.CON, raw.POST, 0x7000, "ps/" + t, [], b"s", payload=b"1")
        p.send(req)
        p.recv()
        p.send(req)
        p.recv()
        p.send(raw.request(raw.CON, raw.POST, 0x7001, "ps/$SYS/x", [], b"s", payload=b"1"))
        assert p.recv().cls == "4.03"
        p.send(raw.request(raw.CON, raw.GET, 0x7002, "ps/" + t, [], b"o", [(raw.OBSERVE, b"")]))
        assert p.recv().cls == "2.05"
        after = sysv()
        assert after["requests"] - before["requests"] == 3, (before, after)
        assert after["duplicates"] - before["duplicates"] == 1
        assert after["publishes"] - before["publishes"] == 1
        assert after["observers"] - before["observers"] == 1
        p.send(raw.request(raw.CON, raw.GET, 0x7003, "ps/" + t, [], b"o", [(raw.OBSERVE, b"\x01")]))
        p.recv()
    assert sysv()["observers"] == before["observers"]
