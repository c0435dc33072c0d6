# The gateway's HTTP listener (docs/gateway.md): /metrics checked with
# prometheus_client's own text parser, and POST /publish/{topic} with real
# subscribers (paho-mqtt), its 200 for QoS 1 only once the message is durable
# (a SIGKILL right after it loses nothing), and its refusals.
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .clients import Client, unique_id
from .conftest import Broker, free_port
from .web import close_clients, handshake, http, wait_log, web_broker

# the gateway (CPython) itself, whatever EDGE_TEST_BROKER says: skipped in
# reference mode, which checks the tests against mosquitto
pytestmark = [pytest.mark.timeout(60), pytest.mark.edge_only("the gateway's web listeners (docs/gateway.md)")]


@pytest.fixture(scope="module")
def hb(tmp_path_factory):
    b = web_broker(tmp_path_factory.mktemp("http"), **{"max_packet_size": 1024})
    yield b
    b.stop()


def _metrics(port):
    status, headers, body = http(port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[s.name + "".join('{%s="%s"}' % kv for kv in sorted(s.labels.items()))] = (fam.type, s.value)
    return out


def test_metrics_parse_and_follow_the_broker(hb):
    before = _metrics(hb.web_port)
    assert before["edgebroker_messages_received_total"][0] == "counter"
    assert before["edgebroker_clients_connected"][0] == "gauge"
    assert before['edgebroker_build_info{version="0.1.0"}'] == ("gauge", 1.0)
    for name in ("edgebroker_messages_sent_total", "edgebroker_received_bytes_total",
                 "edgebroker_retained_messages", "edgebroker_subscriptions", "edgebroker_store_syncs_total",
                 "edgebroker_coap_requests_total", "edgebroker_process_resident_memory_bytes",
                 "edgebroker_uptime_seconds", "edgebroker_http_requests_total"):
        assert name in before, sorted(before)
    topic = "m/" + unique_id()
    sub, pub = Client(hb.host, hb.port), Client(hb.host, hb.port)
    try:
        sub.connect()
        pub.connect()
        sub.subscribe(topic, 1)
        for i in range(5):
            pub.publish(topic, b"x", qos=1)
        sub.wait_messages(5)
        now = _metrics(hb.web_port)
        assert now["edgebroker_clients_connected"][1] >= before["edgebroker_clients_connected"][1] + 2
        assert now["edgebroker_messages_received_total"][1] >= before["edgebroker_messages_received_total"][1] + 5
        assert now["edgebroker_messages_sent_total"][1] >= before["edgebroker_messages_sent_total"][1] + 5
        assert now["edgebroker_subscriptions"][1] >= 1
    finally:
        close_clients(sub, pub)


def test_publish_qos0_reaches_a_subscriber(hb):
    topic = "h/" + unique_id() + "/t"
    sub = Client(hb.host, hb.port)
    try:
        sub.connect()
        sub.subscribe(topic, 0)
        status, headers, body = http(hb.web_port, "POST", "/publish/%s" % topic, b"21.5")
        assert status == 200, body
        assert b'"qos": 0' in body
        m = sub.wait_messages(1)[0]
        assert (m.topic, m.payload, m.qos) == (topic, b"21.5", 0)
    finally:
        close_clients(sub)


def test_publish_retained_percent_encoded(hb):
    topic = "h/" + unique_id() + "/caf\u00e9 x"
    status, _, body = http(hb.web_port, "POST", "/publish/%s?qos=1&retain=1" % topic.replace(
        " ", "%20").replace("\u00e9", "%C3%A9"), b"kept")
    assert status == 200, body
    sub = Client(hb.host, hb.port)
    try:
        sub.connect()
        sub.subscribe(topic, 1)
        m = sub.wait_messages(1)[0]
        assert (m.topic, m.payload, m.retain) == (topic, b"kept", 1)
    finally:
        close_clients(sub)


@pytest.mark.parametrize("path,body,status,text", [
    ("/publish/a/+/b", b"x", 400, b"bad topic"),
    ("/publish/a/%23", b"x", 400, b"bad topic"),
    ("/publish/", b"x", 400, b"bad topic"),
    ("/publish/a?qos=3", b"x", 400, b"qos"),
    ("/publish/a?qos=x", b"x", 400, b"qos"),
    ("/publish/a?retain=maybe", b"x", 400, b"retain"),
    ("/publish/$SYS/broker/x", b"x", 403, b"not writable"),
    ("/publish/%24SYS/x", b"x", 403, b"not writable"),
    ("/publish/a", b"x" * 1025, 413, b"max_packet_size"),
    ("/publish/a/%ff", b"x", 400, b"UTF-8"),
    ("/nothing", b"", 404, b"not found"),
])
def test_publish_refusals(hb, path, body, status, text):
    got, _, answer = http(hb.web_port, "POST", path, body)
    assert got == status and text in answer, (got, answer)
    hb.assert_alive()


def test_publish_wrong_method(hb):
    status, headers, _ = http(hb.web_port, "GET", "/publish/a")
    assert status == 405 and "POST" in headers["allow"]


def test_publish_keep_alive_pipelined(hb):
    """Two requests on one connection, sent together: both answered, in order."""
    topic = "h/" + unique_id()
    req = ("POST /publish/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1" % topic).encode()
    with socket.create_connection(("127.0.0.1", hb.web_port), timeout=10) as s:
        s.sendall(req + req)
        got = b""
        while got.count(b"HTTP/1.1 200") < 2:
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk


@pytest.mark.timeout(90)
def test_qos1_200_means_durable(tmp_path):
    """A persistent subscriber is away; POST qos=1 answers 200; a SIGKILL
    right after it; the restarted broker still delivers the message."""
    b = web_broker(tmp_path)
    cid = unique_id("durable")
    topic = "d/" + unique_id()
    try:
        sub = Client(b.host, b.port, client_id=cid, clean_session=False)
        sub.connect()
        sub.subscribe(topic, 1)
        close_clients(sub)
        for i in range(20):
            status, _, body = http(b.web_port, "POST", "/publish/%s?qos=1" % topic, b"m%d" % i)
            assert status == 200, body
        b.proc.kill()
        b.proc.wait(10)
        b.start()
        wait_log(b, "serving HTTP at")
        sub = Client(b.host, b.port, client_id=cid, clean_session=False)
        try:
            assert sub.connect() == 1
            got = sub.wait_messages(20)
            assert sorted(m.payload for m in got) == sorted(b"m%d" % i for i in range(20))
        finally:
            close_clients(sub)
    finally:
        b.stop()


def test_separate_ports(tmp_path):
    """[websocket] and [http] on different ports: each serves its own."""
    ws_port, http_port = free_port(), free_port()
    b = Broker("cpython", tmp_path / "sep", {"websocket.enabled": True, "websocket.port": ws_port,
                                             "http.enabled": True, "http.port": http_port})
    b.start()
    try:
        wait_log(b, "serving HTTP at")
        assert http(http_port, "GET", "/metrics")[0] == 200
        assert http(ws_port, "GET", "/metrics")[0] == 404  # only upgrades there
        s, status, _ = handshake(ws_port)
        s.close()
        assert status == 101
        s, status, _ = handshake(http_port)
        s.close()
        assert status == 404  # no MQTT on the HTTP port
    finally:
        b.stop()


def test_http_connection_limit_and_idle_timeout(tmp_path):
    """http.max_connections: a 503 past it, counted; http.idle_timeout:
    a connection with no request closes, and makes room again."""
    b = web_broker(tmp_path, **{"http.max_connections": 2, "http.idle_timeout": 1})
    try:
        idle = [socket.create_connection(("127.0.0.1", b.web_port), timeout=10) for _ in range(2)]
        time.sleep(0.2)  # both accepted (the broker counts them at accept)
        with socket.create_connection(("127.0.0.1", b.web_port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 503 ")
        for s in idle:  # closed by the broker after 1 s without a request
            assert s.recv(1) == b""
            s.close()
        status, _, body = http(b.web_port, "GET", "/metrics")
        assert status == 200
        m = {s.name: s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        assert m["edgebroker_http_refused_total"] == 1 and m["edgebroker_http_idle_closed_total"] == 2
        # an MQTT WebSocket connection does not count against it
        held = [handshake(b.web_port)[0] for _ in range(3)]
        assert http(b.web_port, "GET", "/metrics")[0] == 200
        for s in held:
            s.close()
    finally:
        b.stop()
