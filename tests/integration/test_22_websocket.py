# MQTT over WebSockets (docs/gateway.md; MQTT 3.1.1 §6, RFC 6455): paho-mqtt's
# websockets transport against a real broker process, the same broker and
# sessions as TCP; and raw frames written by hand for the framing rules
# ([MQTT-6.0.0-1..4]): a packet split across frames, several packets in one
# frame, a fragmented message, a text frame, a missing subprotocol.
import subprocess
import sys

import pytest

from . import mqttraw as raw
from .clients import Client, unique_id
from .conftest import ROOT
from .web import (BINARY, CLOSE, CONT, PING, PONG, TEXT, close_clients, frame, handshake, read_frame, read_mqtt,
                  web_broker)

# the gateway (CPython) itself, whatever EDGE_TEST_BROKER says: skipped in
# reference mode, which checks the tests against mosquitto
pytestmark = [pytest.mark.timeout(60), pytest.mark.edge_only("the gateway's web listeners (docs/gateway.md)")]

CONNACK = b"\x20\x02\x00\x00"


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    b = web_broker(tmp_path_factory.mktemp("ws"))
    yield b
    b.stop()


def _ws(b, **kw):
    return Client(b.host, b.web_port, ws_path="/mqtt", **kw)


def test_paho_websocket_pubsub_both_ways(wb):
    """A browser-style client over WebSockets and a TCP client see each
    other's messages: one broker, one topic space."""
    topic = "ws/" + unique_id()
    ws = _ws(wb)
    tcp = Client(wb.host, wb.port)
    try:
        ws.connect()
        tcp.connect()
        assert ws.subscribe(topic + "/#", 1) == [1]
        assert tcp.subscribe(topic + "/#", 1) == [1]
        tcp.publish(topic + "/from-tcp", b"t" * 3000, qos=1)  # > one small frame
        ws.publish(topic + "/from-ws", b"w", qos=1)
        got = ws.wait_messages(2)
        assert {(m.topic, m.payload) for m in got} == {(topic + "/from-tcp", b"t" * 3000),
                                                       (topic + "/from-ws", b"w")}
        got = tcp.wait_messages(2)
        assert {m.topic for m in got} == {topic + "/from-tcp", topic + "/from-ws"}
    finally:
        close_clients(ws, tcp)


def test_session_moves_between_websocket_and_tcp(wb):
    """A persistent session made over WebSockets is resumed over TCP with
    what was queued for it while away (the same sessions)."""
    cid = unique_id("ws-sess")
    topic = "ws/" + unique_id()
    ws = _ws(wb, client_id=cid, clean_session=False)
    ws.connect()
    ws.subscribe(topic, 1)
    close_clients(ws)
    pub = Client(wb.host, wb.port)
    pub.connect()
    pub.publish(topic, b"queued", qos=1)
    close_clients(pub)
    tcp = Client(wb.host, wb.port, client_id=cid, clean_session=False)
    try:
        assert tcp.connect() == 1  # session present
        assert tcp.wait_messages(1)[0].payload == b"queued"
    finally:
        close_clients(tcp)


def test_v5_over_websocket(wb):
    ws = _ws(wb, v5=True)
    try:
        ws.connect()
        topic = "ws5/" + unique_id()
        ws.subscribe(topic, 1)
        ws.publish(topic, b"five", qos=1)
        assert ws.wait_messages(1)[0].payload == b"five"
    finally:
        close_clients(ws)


def test_packet_split_across_frames_and_packets_joined_in_one(wb):
    """[MQTT-6.0.0-2]: packets are not aligned on frame boundaries."""
    s, status, head = handshake(wb.web_port)
    try:
        assert status == 101 and "sec-websocket-protocol: mqtt" in head.lower(), head
        conn = raw.connect(unique_id("raw"))
        # CONNECT in three frames: 1 byte, 5 bytes, the rest
        s.sendall(frame(BINARY, conn[:1]) + frame(BINARY, conn[1:6]) + frame(BINARY, conn[6:]))
        assert read_mqtt(s, 4) == CONNACK
        topic = "raw/" + unique_id()
        # SUBSCRIBE and two PUBLISHes in one frame, the second one's end in the next
        sub = raw.subscribe(1, [(topic, 0)])
        p1 = raw.publish(topic, b"one")
        p2 = raw.publish(topic, b"two")
        both = sub + p1 + p2
        s.sendall(frame(BINARY, both[:-2]) + frame(BINARY, both[-2:]))
        want = b"\x90\x03\x00\x01\x00" + p1 + p2
        assert read_mqtt(s, len(want)) == want
        # a fragmented message (FIN clear, then a continuation frame, RFC 6455 §5.4)
        p3 = raw.publish(topic, b"three")
        s.sendall(frame(BINARY, p3[:4], fin=False) + frame(PING, b"hi") + frame(CONT, p3[4:]))
        fin, op, data = read_frame(s)
        assert (op, data) == (PONG, b"hi")  # a control frame between fragments, answered (§5.5.2)
        assert read_mqtt(s, len(p3)) == p3
        s.sendall(frame(BINARY, raw.DISCONNECT_BYTES))
        fin, op, data = read_frame(s)
        assert op == CLOSE  # the broker closes after DISCONNECT
    finally:
        s.close()


def test_text_frame_closes_with_1003(wb):
    """[MQTT-6.0.0-1] a non-binary data frame closes the connection."""
    s, status, _ = handshake(wb.web_port)
    try:
        assert status == 101
        s.sendall(frame(BINARY, raw.connect(unique_id("txt"))))
        assert read_mqtt(s, 4) == CONNACK
        s.sendall(frame(TEXT, b"hello"))
        fin, op, data = read_frame(s)
        assert op == CLOSE and data[:2] == b"\x03\xeb", data  # 1003 Unsupported Data
    finally:
        s.close()


def test_no_mqtt_subprotocol_refused(wb):
    s, status, head = handshake(wb.web_port, protocol=None)
    try:
        assert status == 400, head
        assert b"mqtt" in s.recv(4096)
    finally:
        s.close()
    s, status, head = handshake(wb.web_port, path="/other")
    s.close()
    assert status == 404, head


def test_websocket_counted_and_broker_alive(wb):
    from .web import http

    status, _, body = http(wb.web_port, "GET", "/metrics")
    assert status == 200
    line = [x for x in body.decode().splitlines() if x.startswith("edgebroker_websocket_connections_total ")]
    assert line and int(float(line[0].split()[1])) >= 4, body.decode()
    wb.assert_alive()


@pytest.mark.timeout(30)
def test_without_wsproto_says_what_it_needs(tmp_path):
    """wsproto is optional (pip install 'edgebroker[gateway]'): a broker
    asked for the listener without it stops with the reason, exit 2."""
    cfg = tmp_path / "ws.toml"
    cfg.write_text("[websocket]\nenabled = true\nport = 0\n")
    code = ("import sys; sys.modules['wsproto'] = None; from gateway.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    for args in (["run", "-c", str(cfg), "--port", "0", "--coap-port", "0", "--data", str(tmp_path / "d")],
                 ["check", "-c", str(cfg)]):
        p = subprocess.run([sys.executable, "-c", code] + args, cwd=str(ROOT), capture_output=True,
                           text=True, timeout=20)
        assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
        assert "websocket.enabled: the web listeners need the wsproto package" in p.stderr, p.stderr
        assert "pip install 'edgebroker[gateway]'" in p.stderr
