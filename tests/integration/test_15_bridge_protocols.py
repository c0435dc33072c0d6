# The uplink's sans-IO protocol clients (edge/bridge/amqp.py, stomp.py,
# routing.py) against a real RabbitMQ node (tests/integration/rabbit.py),
# driven over a plain blocking socket by the tiny Driver below (CPython only:
# the runtime shell that will drive them on both runtimes is not part of
# this). pika and stomp.py are the independent peers that check what
# arrives and send the commands (issue #18).
import socket
import time
import uuid

import pika
import pytest
import stomp as stomppy

from edge.bridge import routing
from edge.bridge.amqp import CLOSED, READY, Amqp
from edge.bridge.stomp import Stomp


pytestmark = pytest.mark.timeout(120)  # the first test also waits for the node (~10-15 s)

EDGE = "edge-t15"


class Driver:
    """Runs a sans-IO client over a blocking socket: sends what it queued,
    feeds what arrives, ticks it with a monotonic clock, and keeps the events
    until a test takes them."""

    def __init__(self, client, port):
        self.c = client
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(0.05)
        self.events = []
        self.eof = False

    @staticmethod
    def now():
        return int(time.monotonic() * 1000)

    def step(self):
        out = self.c.take()
        if out:
            self.sock.sendall(out)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            data = None
        if data == b"":
            self.eof = True
        elif data:
            self.events.extend(self.c.feed(data, self.now()))
        self.events.extend(self.c.tick(self.now()))
        out = self.c.take()
        if out:
            self.sock.sendall(out)

    def wait(self, kind, timeout=10.0, pred=None):
        """The first event of this kind (and pred), removed from the backlog."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e[0] == kind and (pred is None or pred(e)):
                    return self.events.pop(i)
            if self.eof or time.monotonic() > deadline:
                raise AssertionError("no %r event within %ss (eof %s); events: %r"
                                     % (kind, timeout, self.eof, self.events))
            self.step()

    def run(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.eof:
            self.step()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def amqp_link(rabbit):  # noqa: F811
    d = Driver(Amqp(rabbit.user, rabbit.password, rabbit.vhost, now=Driver.now()), rabbit.amqp_port)
    d.wait("ready")
    yield d
    d.close()


@pytest.fixture
def pika_channel(rabbit):  # noqa: F811
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", rabbit.amqp_port, credentials=pika.PlainCredentials(rabbit.user, rabbit.password),
        blocked_connection_timeout=30, socket_timeout=10))
    ch = conn.channel()
    yield ch
    try:
        conn.close()
    except Exception:  # already closed by a failed test: nothing to release
        pass


def _pika_queue(ch, binding):
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", binding)
    return q


def _pika_get(ch, q, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(q, auto_ack=True)
        if method is not None:
            return method, props, body
        time.sleep(0.05)
    raise AssertionError("nothing in %s within %ss" % (q, timeout))


def test_amqp_handshake_negotiates_heartbeat_and_frame_max(rabbit, amqp_link):  # noqa: F811
    c = amqp_link.c
    assert c.state == READY
    assert c.heartbeat == 15  # ours (RabbitMQ offers 60): the smaller wins
    assert c.frame_max == 131072  # RabbitMQ's default, and ours
    assert c.server_properties["product"] == "RabbitMQ"
    assert c.server_properties["capabilities"]["publisher_confirms"] is True


def test_amqp_publish_confirmed_and_as_the_mqtt_plugin_maps_it(rabbit, amqp_link, pika_channel):  # noqa: F811
    q = _pika_queue(pika_channel, routing.binding_key("sensors/+/temp"))
    d = amqp_link
    topic = "sensors/s1/temp"
    tag = d.c.publish(routing.routing_key(topic), b"21.5", qos=1,
                      message_id=routing.message_id(EDGE, 7), content_type="text/plain")
    assert tag == 1
    assert d.wait("confirm") == ("confirm", 1, False)
    method, props, body = _pika_get(pika_channel, q)
    assert body == b"21.5"
    assert method.exchange == "amq.topic"
    assert method.routing_key == "sensors.s1.temp"
    assert props.message_id == EDGE + ":7"
    assert props.delivery_mode == 2
    assert props.content_type == "text/plain"
    assert props.headers["x-mqtt-publish-qos"] == 1
    # QoS 0: transient, and the header says 0
    tag = d.c.publish(routing.routing_key(topic), b"x", qos=0, message_id=routing.message_id(EDGE, 8))
    assert d.wait("confirm")[1] == tag == 2
    method, props, body = _pika_get(pika_channel, q)
    assert props.delivery_mode == 1 and props.headers["x-mqtt-publish-qos"] == 0


def test_amqp_body_split_at_frame_max(rabbit, pika_channel):  # noqa: F811
    # frame_max 4096 (a board's): a 20 kB body goes in 5 body frames
    d = Driver(Amqp(rabbit.user, rabbit.password, frame_max=4096, now=Driver.now()), rabbit.amqp_port)
    try:
        d.wait("ready")
        assert d.c.frame_max == 4096
        q = _pika_queue(pika_channel, "big.#")
        body = bytes(range(256)) * 80
        tag = d.c.publish("big.one", body, message_id="m1")
        assert d.wait("confirm")[1] == tag
        assert _pika_get(pika_channel, q)[2] == body
    finally:
        d.close()


def test_amqp_unroutable_mandatory_message_returned(rabbit, amqp_link):  # noqa: F811
    d = amqp_link
    tag = d.c.publish("nobody.listens.%s" % uuid.uuid4().hex, b"lost", message_id=EDGE + ":9")
    ev = d.wait("return")
    assert ev[:4] == ("return", 312, "NO_ROUTE", ev[3]) and ev[3].startswith("nobody.listens.")
    assert ev[4]["message_id"] == EDGE + ":9"
    assert d.c.returned == 1
    # RabbitMQ still confirms it (the return comes first)
    assert d.wait("confirm")[1] == tag


def test_amqp_commands_consumed_and_acked(rabbit, amqp_link, pika_channel):  # noqa: F811
    d = amqp_link
    qname = routing.cmd_queue(EDGE)
    d.c.declare_queue(qname, durable=True, arguments={"x-queue-type": "quorum"})
    assert d.wait("declare_ok")[1] == qname
    d.c.bind(qname, "amq.topic", routing.cmd_binding(EDGE))
    d.wait("bind_ok")
    d.c.qos(4)
    d.wait("qos_ok")
    d.c.consume(qname)
    ctag = d.wait("consume_ok")[1]
    assert ctag
    pika_channel.basic_publish("amq.topic", "cmd.%s.valve.open" % EDGE, b"50%",
                               pika.BasicProperties(message_id="c1", headers={"k": "v"}))
    ev = d.wait("deliver")
    tag, key, props, body = ev[1:]
    assert key == "cmd.%s.valve.open" % EDGE and body == b"50%"
    assert props["message_id"] == "c1" and props["headers"] == {"k": "v"}
    assert routing.cmd_topic(EDGE, key) == "cmd/%s/valve/open" % EDGE
    # a second command, not acked: closing the link gives it back
    pika_channel.basic_publish("amq.topic", "cmd.%s.valve.close" % EDGE, b"0")
    tag2 = d.wait("deliver")[1]
    assert tag2 == tag + 1
    d.c.ack(tag)
    d.c.close()
    d.wait("close_ok")
    d.close()
    # acked means gone: only the unacked one is back in the queue (pika)
    method, props, body = _pika_get(pika_channel, qname)
    assert method.routing_key == "cmd.%s.valve.close" % EDGE and method.redelivered
    assert pika_channel.basic_get(qname, auto_ack=True) == (None, None, None)
    pika_channel.queue_delete(qname)


def test_amqp_looks_like_the_mqtt_plugin_side_by_side(rabbit, amqp_link, pika_channel):  # noqa: F811
    # The same message published by paho through RabbitMQ's MQTT plugin and
    # by our client: an AMQP consumer sees the same routing key, delivery
    # mode and headers (docs/design.md "Upstream"). A "." inside a topic
    # level is not escaped by the plugin: "site.1/temp" -> "site.1.temp".
    from .clients import Client

    q = _pika_queue(pika_channel, "site.#")
    mq = Client("127.0.0.1", rabbit.mqtt_port)
    mq.connect()
    try:
        for topic, qos in (("site/a/temp", 1), ("site.1/temp", 1), ("site/b", 0)):
            mq.publish(topic, b"p", qos=qos)
            m1, p1, _ = _pika_get(pika_channel, q)
            tag = amqp_link.c.publish(routing.routing_key(topic), b"p", qos=qos, message_id="m")
            assert amqp_link.wait("confirm")[1] == tag
            m2, p2, _ = _pika_get(pika_channel, q)
            assert m2.routing_key == m1.routing_key == routing.routing_key(topic), topic
            assert p2.delivery_mode == p1.delivery_mode, topic
            assert p2.headers == p1.headers, (topic, p1.headers, p2.headers)
    finally:
        mq.disconnect()


def test_amqp_publish_reaches_an_mqtt_subscriber_of_the_plugin(rabbit, amqp_link):  # noqa: F811
    # x-mqtt-publish-qos must be a signed byte ('b'): the plugin reads it to
    # pick the delivery QoS for its MQTT subscribers
    from .clients import Client

    sub = Client("127.0.0.1", rabbit.mqtt_port)
    sub.connect()
    try:
        assert sub.subscribe("plant/+/level", qos=1) == [1]
        tag = amqp_link.c.publish(routing.routing_key("plant/p1/level"), b"7", qos=1, message_id="x:1")
        assert amqp_link.wait("confirm")[1] == tag
        m = sub.wait_messages(1)[0]
        assert (m.topic, m.payload, m.qos) == ("plant/p1/level", b"7", 1)
    finally:
        sub.disconnect()


def test_amqp_heartbeats_keep_an_idle_link_up(rabbit):  # noqa: F811
    # heartbeat 1 s: RabbitMQ closes a connection that sends nothing for two
    # intervals; ours ticks heartbeats out, and hears RabbitMQ's
    d = Driver(Amqp(rabbit.user, rabbit.password, heartbeat=1, now=Driver.now()), rabbit.amqp_port)
    try:
        d.wait("ready")
        assert d.c.heartbeat == 1
        rc, out = rabbit.ctl("list_connections", "timeout", "client_properties")
        assert rc == 0 and any(line.startswith("1\t") and "edgebroker" in line
                               for line in out.splitlines()), out
        d.run(4.0)
        assert not d.eof and d.c.state == READY, d.events
        assert not [e for e in d.events if e[0] in ("dead", "closed")], d.events
        assert Driver.now() - d.c.last_rx < 1500  # RabbitMQ's heartbeats arrived
        tag = d.c.publish("hb.after.idle", b"", message_id="hb")
        assert d.wait("confirm")[1] == tag
    finally:
        d.close()


def test_amqp_channel_close_from_the_server(rabbit, amqp_link):  # noqa: F811
    d = amqp_link
    d.c.publish("x", b"", exchange="no-such-exchange-%s" % uuid.uuid4().hex)
    ev = d.wait("channel_closed")
    assert ev[1] == 404 and ev[2].startswith("NOT_FOUND"), ev
    assert d.c.state != READY
    d.c.close()
    assert d.wait("close_ok") == ("close_ok",)


def test_amqp_connection_close_from_the_server(rabbit):  # noqa: F811
    d = Driver(Amqp(rabbit.user, rabbit.password, now=Driver.now()), rabbit.amqp_port)
    try:
        d.wait("ready")
        rc, out = rabbit.ctl("close_all_connections", "maintenance test")
        assert rc == 0, out
        ev = d.wait("closed")
        assert ev[1] == 320 and "maintenance test" in ev[2], ev
    finally:
        d.close()


def test_amqp_blocked_and_unblocked(rabbit):  # noqa: F811
    d = Driver(Amqp(rabbit.user, rabbit.password, now=Driver.now()), rabbit.amqp_port)
    try:
        d.wait("ready")
        rc, out = rabbit.ctl("set_vm_memory_high_watermark", "0.0000001")
        assert rc == 0, out
        try:
            # RabbitMQ blocks a connection once it publishes during the alarm
            d.c.publish("blocked.test", b"x")
            ev = d.wait("blocked", timeout=15)
            assert "memory" in ev[1].lower(), ev
            assert d.c.blocked
        finally:
            rc, out = rabbit.ctl("set_vm_memory_high_watermark", "0.4")
            assert rc == 0, out
        d.wait("unblocked", timeout=15)
        assert not d.c.blocked
    finally:
        d.close()


def test_amqp_clean_close(rabbit, amqp_link):  # noqa: F811
    c = amqp_link.c
    c.close(200, "bye")
    assert amqp_link.wait("close_ok") == ("close_ok",)
    # AMQP 0-9-1 connection.close-ok: the close's initiator closes the socket;
    # the client is finished and sends nothing more, heartbeats included
    assert c.state == CLOSED
    assert c.tick(Driver.now() + 60000) == () and not c.take()


# ---- STOMP 1.2 --------------------------------------------------------------
@pytest.fixture
def stomp_link(rabbit):  # noqa: F811
    d = Driver(Stomp(rabbit.user, rabbit.password, rabbit.vhost, now=Driver.now()), rabbit.stomp_port)
    d.wait("connected")
    yield d
    d.close()


class _StompListener(stomppy.ConnectionListener):
    def __init__(self):
        self.messages = []  # stomp.py Frames (its receiver thread appends)
        self.receipts = []

    def on_message(self, frame):
        self.messages.append(frame)

    def on_receipt(self, frame):
        self.receipts.append(frame.headers.get("receipt-id"))


def _until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met within %ss" % timeout
        time.sleep(0.02)


@pytest.fixture
def stomppy_conn(rabbit):  # noqa: F811
    conn = stomppy.Connection12([("127.0.0.1", rabbit.stomp_port)], vhost=rabbit.vhost)
    listener = _StompListener()
    conn.set_listener("t", listener)
    conn.connect(rabbit.user, rabbit.password, wait=True)
    conn.listener = listener
    yield conn
    try:
        conn.disconnect()
    except Exception:  # already gone after a failed test
        pass


def test_stomp_connect_negotiates_heart_beats(rabbit, stomp_link):  # noqa: F811
    c = stomp_link.c
    assert c.server.startswith("RabbitMQ/")
    assert c.session
    # we offered 15000,15000; RabbitMQ answers with what it will do
    assert c.hb_out == 15000 and c.hb_in == 15000


def test_stomp_send_with_receipt_arrives_with_message_id(rabbit, stomp_link, pika_channel, stomppy_conn):  # noqa: F811
    q = _pika_queue(pika_channel, "meters.#")
    stomppy_conn.subscribe("/topic/meters.*.kwh", id="s1", ack="auto", headers={"receipt": "sub"})
    _until(lambda: "sub" in stomppy_conn.listener.receipts)  # bound before we send
    d = stomp_link
    topic = "meters/m1/kwh"
    n = d.c.send(routing.destination(topic), b"3.2", content_type="text/plain",
                 headers={"amqp-message-id": routing.message_id(EDGE, 11)})
    assert d.wait("confirm") == ("confirm", n, False)
    method, props, body = _pika_get(pika_channel, q)
    assert body == b"3.2" and method.routing_key == "meters.m1.kwh"
    assert props.message_id == EDGE + ":11"
    assert props.delivery_mode == 2  # persistent:true
    assert props.content_type == "text/plain"
    _until(lambda: stomppy_conn.listener.messages)
    frame = stomppy_conn.listener.messages[0]
    assert frame.body == "3.2" and frame.headers["destination"] == "/topic/meters.m1.kwh"
    assert frame.headers["amqp-message-id"] == EDGE + ":11"


def test_stomp_command_consumed_and_acked(rabbit, stomp_link, stomppy_conn, pika_channel):  # noqa: F811
    # the edge's command queue (declared and bound by pika), consumed over
    # STOMP with ack:client-individual; stomp.py sends the commands
    qname = routing.cmd_queue(EDGE) + ".stomp"
    pika_channel.queue_declare(qname, durable=True)
    pika_channel.queue_bind(qname, "amq.topic", routing.cmd_binding(EDGE))
    d = stomp_link
    d.c.subscribe("/amq/queue/" + qname, "cmd", headers={"prefetch-count": "4", "receipt": "99"})
    d.wait("confirm", pred=lambda e: e[1] == 99)
    stomppy_conn.send("/topic/cmd.%s.fan.speed" % EDGE, "3", headers={"note": "a:b\\c"})
    ev = d.wait("message")
    ack_id, dest, headers, body = ev[1:]
    assert body == b"3" and headers["note"] == "a:b\\c"  # escaped on the wire, not here
    # RabbitMQ names the exchange and routing key it came by
    assert headers["destination"] == "/topic/cmd.%s.fan.speed" % EDGE
    assert routing.cmd_topic(EDGE, dest) == "cmd/%s/fan/speed" % EDGE
    stomppy_conn.send("/topic/cmd.%s.fan.stop" % EDGE, "")
    assert d.wait("message")[3]["destination"].endswith(".fan.stop")  # not acked
    d.c.ack(ack_id)
    d.c.close()
    d.wait("close_ok")  # the DISCONNECT's receipt: the ACK before it was taken
    assert not [e for e in d.events if e[0] == "error"]
    d.close()
    method, props, body = _pika_get(pika_channel, qname)
    assert method.routing_key == "cmd.%s.fan.stop" % EDGE and method.redelivered
    assert pika_channel.basic_get(qname, auto_ack=True) == (None, None, None)
    pika_channel.queue_delete(qname)


def test_stomp_error_frame(rabbit, stomp_link):  # noqa: F811
    d = stomp_link
    d.c.send("/no-such-kind/x", b"x")
    ev = d.wait("error")
    assert ev[1], ev


def test_stomp_heart_beats_keep_an_idle_link_up(rabbit):  # noqa: F811
    d = Driver(Stomp(rabbit.user, rabbit.password, heartbeat=1000, now=Driver.now()), rabbit.stomp_port)
    try:
        d.wait("connected")
        assert d.c.hb_out == 1000 and d.c.hb_in == 1000
        d.run(4.0)
        assert not d.eof and not [e for e in d.events if e[0] in ("dead", "error")], d.events
        assert Driver.now() - d.c.last_rx < 1500
        n = d.c.send("/topic/hb.after.idle", b"x")
        assert d.wait("confirm")[1] == n
    finally:
        d.close()


def test_stomp_clean_close(rabbit, stomp_link):  # noqa: F811
    stomp_link.c.close()
    assert stomp_link.wait("close_ok") == ("close_ok",)
