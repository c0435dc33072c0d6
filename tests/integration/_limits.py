# Helpers of test_27_floods.py and test_28_limits.py: raw clients from a
# chosen loopback source address (Linux routes all of 127/8 to lo, so
# 127.0.0.2 is another client address to a broker's per-address quota), and
# $SYS/broker/limits/ values read by a raw subscriber.
import socket
import time

from . import mqttraw as raw


def raw_from(broker, src="127.0.0.1", timeout=5.0):
    """A mqttraw.RawClient whose socket comes from address src."""
    c = raw.RawClient.__new__(raw.RawClient)
    c.sock = socket.create_connection((broker.host, broker.port), timeout=timeout,
                                      source_address=(src, 0))
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.buf = b""
    c.eof = False
    return c


def sys_watcher(broker, client_id, src="127.0.0.2"):
    """A connected raw client subscribed to $SYS/broker/limits/#."""
    c = raw_from(broker, src)
    c.connect(client_id)
    c.send(raw.subscribe(1, [("$SYS/broker/limits/#", 0)]))
    return c


def wait_sys(c, name, at_least=1, timeout=10.0):
    """Read c's $SYS messages until $SYS/broker/limits/<name> >= at_least;
    returns its value."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "$SYS/broker/limits/%s stayed at %s, expected >= %d" % (name, last, at_least)
        try:
            p = c.read_packet(left)
        except socket.timeout:
            continue
        if p.type != raw.PUBLISH:
            continue
        topic, payload = p.publish_fields()[:2]
        if topic == "$SYS/broker/limits/" + name:
            last = int(payload)
            if last >= at_least:
                return last


def refused_at_accept(c, timeout=5.0):
    """The broker closed c without a byte (a socket refused at accept)."""
    try:
        c.send(raw.connect("refused"))
    except OSError:
        return True  # reset before the CONNECT went out
    return c.wait_closed(timeout) == b""


def round_trip_qos1(broker, client_id, src="127.0.0.2", timeout=5.0):
    """Connect, subscribe and publish QoS 1 to itself: PUBACK and the message
    back. Returns the seconds it took, CONNECT included."""
    t0 = time.monotonic()
    c = raw_from(broker, src, timeout)
    try:
        c.connect(client_id, timeout=timeout)
        topic = "rt/" + client_id
        c.send(raw.subscribe(1, [(topic, 1)]))
        c.expect(raw.SUBACK, timeout)
        c.send(raw.publish(topic, b"ping", qos=1, pid=2))
        got_ack = got_msg = False
        deadline = time.monotonic() + timeout
        while not (got_ack and got_msg):
            p = c.read_packet(max(0.01, deadline - time.monotonic()))
            if p.type == raw.PUBACK:
                got_ack = True
            elif p.type == raw.PUBLISH:
                t, payload, qos, _, _, pid = p.publish_fields()
                if t == topic and payload == b"ping":
                    got_msg = True
                    c.send(raw.puback(pid))
        c.send(raw.DISCONNECT_BYTES)
    finally:
        c.close()
    return time.monotonic() - t0
