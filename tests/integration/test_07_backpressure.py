# 07: a subscriber that stops reading. The broker keeps serving, bounds what it
# holds for it (QoS 0 past max_queued_bytes is dropped and counted, never
# reordered) and, once the subscriber reads again, notices that its socket
# drained: what is published next is delivered.
import socket

import pytest

from . import mqttraw as raw

pytestmark = pytest.mark.timeout(60)

BROKER_CONFIG = {"max_queued_bytes": 1048576}
_N = 5000
_PAYLOAD = 2048  # 10 MB in all: more than the socket buffers (4 MB) and max_queued_bytes


def _stalled_subscriber(broker, topic):
    # A tiny receive buffer, set before connecting (the window is agreed then)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5.0)
    s.connect((broker.host, broker.port))
    c = raw.RawClient.__new__(raw.RawClient)
    c.sock, c.buf, c.eof = s, b"", False
    c.connect("stalled")
    c.send(raw.subscribe(1, [(topic, 1)]))
    c.expect(raw.SUBACK)
    return c


def test_stalled_subscriber_drops_qos0_then_gets_what_follows(broker, runtime):
    if runtime != "cpython":
        pytest.skip("a board's heap holds no 10 MB flood; this is about CPython's transport buffers")
    t = "t07/stall"
    sub = _stalled_subscriber(broker, t)
    pub = raw.RawClient(broker.host, broker.port)
    pub.connect("flood")
    body = b"x" * (_PAYLOAD - 4)
    for i in range(0, _N, 10):  # 20 KB a write: under max_queued_bytes per feed
        pub.send(b"".join(raw.publish(t, b"%04d" % k + body, qos=0) for k in range(i, i + 10)))
    pub.send(raw.PINGREQ_BYTES)
    pub.expect(raw.PINGRESP, 10)  # the broker has routed the whole flood
    # The subscriber reads again, until nothing more comes: QoS 0 in order,
    # with a gap where the broker dropped
    seqs = []
    while True:
        try:
            pkt = sub.read_packet(1.0)
        except socket.timeout:
            break
        seqs.append(int(pkt.publish_fields()[1][:4]))
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert 0 < len(seqs) < _N, len(seqs)  # some went through, the rest were dropped
    # Its socket has drained: the next message goes out at once
    pub.send(raw.publish(t, b"marker", qos=1, pid=7))
    pub.expect(raw.PUBACK)
    _, payload, qos, _, _, pid = sub.expect(raw.PUBLISH).publish_fields()
    assert payload == b"marker" and qos == 1
    sub.send(raw.puback(pid))
    broker.assert_alive()
