# 17: the uplink under chaos (docs/uplink.md "What is promised", issue #18):
# RabbitMQ SIGKILLed mid-stream and restarted; two independent nodes as a
# cluster's list, one killed for good; the link silently black-holed by a
# TCP proxy the test controls (tools/chaosproxy.py); the edge SIGKILLed holding a
# backlog. Each runs an AMQP edge and a STOMP edge side by side (one node
# crash serves both), paho publishers and pika as the independent consumer.
# In each: every message the edge acknowledged (PUBACK) arrives in
# RabbitMQ, a duplicate only ever with the same message_id, and the backlog
# drains with no new traffic. CPython runtime (the uplink's only shell).
import threading
import time

import pika
import pytest

from .rabbit import SERVER, RabbitNode
from .test_16_uplink import _until
from tools.chaosproxy import TcpProxy

pytestmark = [pytest.mark.edge_only("the uplink is edgebroker's own")]

PROTOS = ("amqp", "stomp")


@pytest.fixture(scope="module")
def runtime():
    return "cpython"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Two private RabbitMQ nodes of this module's own (the tests kill
    them), started side by side."""
    import os

    if not os.access(SERVER, os.X_OK):
        pytest.skip("no %s: `make deps` installs rabbitmq-server" % SERVER)
    ns = [RabbitNode(str(tmp_path_factory.mktemp("rabbit17"))) for _ in range(2)]
    errs = []

    def start(n):
        try:
            n.start()
        except BaseException as e:  # noqa: BLE001  reported below
            errs.append(e)

    ts = [threading.Thread(target=start, args=(n,)) for n in ns]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    try:
        if errs:
            raise errs[0]
        yield ns
    finally:
        for n in ns:
            n.stop()


def _url(node, proto, port=None):
    if port is None:
        port = node.amqp_port if proto == "amqp" else node.stomp_port
    return "%s://%s:%s@127.0.0.1:%d/" % (proto, node.user, node.password, port)


def _channel(node):
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, credentials=pika.PlainCredentials(node.user, node.password),
        heartbeat=0, blocked_connection_timeout=30, connection_attempts=3, retry_delay=1))
    return conn, conn.channel()


def _queue(node, binding, name):
    """A durable queue bound to binding: what the edge confirmed survives a
    node's crash in it."""
    conn, ch = _channel(node)
    try:
        ch.queue_declare(name, durable=True)
        ch.queue_bind(name, "amq.topic", binding)
    finally:
        conn.close()
    return name


def _count(node, q):
    conn, ch = _channel(node)
    try:
        return ch.queue_declare(q, passive=True).method.message_count
    finally:
        conn.close()


def _drain(node, q):
    """Everything in q, taken: [(body, message_id)]."""
    conn, ch = _channel(node)
    got = []
    try:
        while True:
            method, props, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                return got
            got.append((body, props.message_id))
    finally:
        conn.close()


def _collect(node, q, want, broker, timeout):
    """Drain q until every body in want arrived (the backlog drains by
    itself: nothing is published meanwhile); [(body, message_id)]."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        got += _drain(node, q)
        if want <= {b for b, _ in got}:
            return got
        broker.assert_alive()
        assert time.monotonic() < deadline, "missing after %ss: %d of %d, e.g. %r\n%s" % (
            timeout, len(want - {b for b, _ in got}), len(want), sorted(want - {b for b, _ in got})[:5],
            broker.log_tail(40))
        time.sleep(0.2)  # polling the queue


def _check(got, acked, edge_id):
    """Every acknowledged body arrived; a duplicate only with the same
    message_id (one id per body, one body per id)."""
    ids = {}
    bodies = {}
    for body, mid in got:
        assert mid and mid.startswith(edge_id + ":"), (body, mid)
        ids.setdefault(mid, set()).add(body)
        bodies.setdefault(body, set()).add(mid)
    assert all(len(v) == 1 for v in ids.values()), [kv for kv in ids.items() if len(kv[1]) > 1][:5]
    assert all(len(v) == 1 for v in bodies.values()), [kv for kv in bodies.items() if len(kv[1]) > 1][:5]
    assert set(acked) <= set(bodies)
    return len(got) - len(bodies)  # duplicates


class Edge:
    """One edge and its paho publisher, on topic <tag>/..."""

    def __init__(self, factory, mqtt_client, url, tag, **extra):
        self.proto = url[:url.find(":")]
        self.tag = tag
        self.edge_id = "e17" + tag
        cfg = {"upstream.url": url, "upstream.edge_id": self.edge_id, "upstream.publish": tag + "/#"}
        cfg.update(extra)
        self.b = factory(**cfg)
        self.mqtt_client = mqtt_client
        self.pub = mqtt_client(self.b)
        self.acked = []

    def publish(self, lo, hi, wait=True):
        """Bodies <tag>-lo .. <tag>-(hi-1) at QoS 1, pipelined; with wait,
        returns once every PUBACK came (then acked lists them)."""
        infos = [(self.body(i), self.pub.publish(self.tag + "/x", self.body(i), qos=1, wait=False))
                 for i in range(lo, hi)]
        if wait:
            self.wait(infos)
        return infos

    def wait(self, infos):
        for body, info in infos:
            info.wait_for_publish(30)
            assert info.is_published(), body
            self.acked.append(body)

    def body(self, i):
        return b"%s-%d" % (self.tag.encode(), i)

    def up_at(self, port, timeout=30):
        """Until the uplink is connected to port."""
        _until(lambda: "uplink: connected to %s://guest:***@127.0.0.1:%d/" % (self.proto, port)
               in self.b.log_text(), timeout, "the uplink up at %d" % port, self.b)

    def sys(self, name, pred, after=0.0, timeout=20):
        if not hasattr(self, "sysq"):
            self.sysq = self.mqtt_client(self.b)
            self.sysq.subscribe("$SYS/broker/uplink/#")
        return self.sysq.wait_message(lambda m: m.topic == "$SYS/broker/uplink/" + name and m.t > after
                                      and pred(m.payload), timeout, name)


@pytest.mark.timeout(240)  # a node restart (~10-20 s), the back-off after it (<= 27 s)
def test_rabbitmq_sigkilled_mid_stream_and_restarted(nodes, broker_factory, mqtt_client, report):
    node = nodes[0]
    edges = []
    for proto in PROTOS:
        tag = "k" + proto[0]
        q = _queue(node, tag + ".#", "q17" + tag)
        edges.append((Edge(broker_factory, mqtt_client, _url(node, proto), tag), q))
    for e, q in edges:
        e.up_at(node.amqp_port if e.proto == "amqp" else node.stomp_port)
    pending = [(e, q, e.publish(0, 1000, wait=False)) for e, q in edges]
    # mid-stream: some of it in the queues, the rest on its way
    _until(lambda: all(_count(node, q) >= 100 for _, q, _ in pending), 30, "100 in each queue")
    node.kill()
    t_kill = time.monotonic()
    for e, q, infos in pending:
        e.wait(infos)  # the edge acknowledges on: its outbox is on flash
        e.publish(1000, 1200)  # and while the node is down
    node.start()
    t_up = time.monotonic()
    for e, q in edges:
        got = _collect(node, q, set(e.acked), e.b, 120)
        dups = _check(got, e.acked, e.edge_id)
        report("chaos, RabbitMQ SIGKILLed mid-stream, %s: %d acknowledged, all arrived, %d duplicates "
               "(same message_id); down %.0f s, drained %.0f s after the restart"
               % (e.proto, len(e.acked), dups, t_up - t_kill, time.monotonic() - t_up))


@pytest.mark.timeout(180)
def test_a_cluster_list_one_node_killed_for_good(nodes, broker_factory, mqtt_client, report):
    a, b = nodes
    if a.proc is None or a.proc.poll() is not None:
        a.start()  # (the test before left it down: it failed)
    edges = []
    for proto in PROTOS:
        tag = "c" + proto[0]
        qa = _queue(a, tag + ".#", "q17" + tag)
        qb = _queue(b, tag + ".#", "q17" + tag)
        url = "%s, %s" % (_url(a, proto), _url(b, proto))
        e = Edge(broker_factory, mqtt_client, url, tag)
        edges.append((e, qa, qb))
    port = {"amqp": (a.amqp_port, b.amqp_port), "stomp": (a.stomp_port, b.stomp_port)}
    for e, qa, qb in edges:
        e.up_at(port[e.proto][0])
    # 1. confirmed by the first node: all there, and never sent again
    first = {}
    for e, qa, qb in edges:
        e.publish(0, 200)
        _until(lambda: _count(a, qa) >= 200, 30, "200 in the first node", e.b)
        mark = time.monotonic()
        e.sys("backlog", lambda v: v == b"0", after=mark)  # every confirm back at the edge
        first[e.tag] = _drain(a, qa)
        assert {x for x, _ in first[e.tag]} == {e.body(i) for i in range(200)}
    # 2. sent to the first node, not confirmed: it is frozen, then killed
    a.freeze()
    for e, qa, qb in edges:
        e.publish(200, 300)  # acknowledged by the edge (its outbox)
    time.sleep(0.5)  # sent into the frozen node (the window holds them all)
    a.kill()
    # 3. the uplink moves to the second node and sends what was not confirmed
    for e, qa, qb in edges:
        e.publish(300, 400)
        got = _collect(b, qb, {e.body(i) for i in range(200, 400)}, e.b, 60)
        dups = _check(first[e.tag] + got, e.acked, e.edge_id)
        assert not {x for x, _ in got} & {e.body(i) for i in range(200)}, "a confirmed one sent again"
        e.up_at(port[e.proto][1])
        assert "retry in" in e.b.log_text() and "at %s://guest:***@127.0.0.1:%d/" % (
            e.proto, port[e.proto][1]) in e.b.log_text()
        report("chaos, a cluster's list, the first node killed for good, %s: 200 confirmed by it not sent "
               "again, 200 more on the second, %d duplicates" % (e.proto, dups))


@pytest.mark.timeout(120)
def test_silent_black_hole_detected_within_two_heartbeats(rabbit, broker_factory, mqtt_client, report):
    hb = 2
    edges = []
    try:
        for proto in PROTOS:
            tag = "h" + proto[0]
            q = _queue(rabbit, tag + ".#", "q17" + tag)
            px = TcpProxy(rabbit.amqp_port if proto == "amqp" else rabbit.stomp_port)
            edges.append((Edge(broker_factory, mqtt_client, _url(rabbit, proto, px.port), tag,
                               **{"upstream.heartbeat": hb}), q, px))
        for e, q, px in edges:
            e.up_at(px.port)
            e.publish(0, 100)
        for e, q, px in edges:
            _until(lambda: _count(rabbit, q) >= 100, 30, "the first 100", e.b)
        n = [e.b.log_text().count("retry in") for e, q, px in edges]
        t0 = time.monotonic()
        for e, q, px in edges:
            px.black_hole()
        for e, q, px in edges:
            e.publish(100, 200)  # acknowledged by the edge, swallowed on the way
        took = []
        for i, (e, q, px) in enumerate(edges):
            _until(lambda: e.b.log_text().count("retry in") > n[i], 3 * hb + 2, "the black hole detected", e.b)
            took.append(time.monotonic() - t0)
        for (e, q, px), took in zip(edges, took):
            # two heartbeat intervals of silence, plus a tick (250 ms) and this polling
            assert took <= 2 * hb + 1.0, took
            got = _collect(rabbit, q, {e.body(i) for i in range(200)}, e.b, 60)
            dups = _check(got, e.acked, e.edge_id)
            report("chaos, silent black hole, %s, heartbeat %d s: detected %.1f s after it began, "
                   "%d acknowledged all arrived, %d duplicates" % (e.proto, hb, took,
                                                                 len(e.acked), dups))
    finally:
        for e, q, px in edges:
            px.stop()


@pytest.mark.timeout(120)
def test_edge_sigkilled_holding_a_backlog(rabbit, broker_factory, mqtt_client, report):
    edges = []
    try:
        for proto in PROTOS:
            tag = "s" + proto[0]
            q = _queue(rabbit, tag + ".#", "q17" + tag)
            px = TcpProxy(rabbit.amqp_port if proto == "amqp" else rabbit.stomp_port)
            px.refuse()  # RabbitMQ out of reach: everything waits in the outbox
            edges.append((Edge(broker_factory, mqtt_client, _url(rabbit, proto, px.port), tag), q, px))
        for e, q, px in edges:
            e.publish(0, 500)
            e.b.proc.kill()  # SIGKILL right after the last PUBACK
            e.b.proc.wait(10)
            e.b.stop()
            px.restore()
            e.b.start()  # the same data directory: the outbox reopened
            _until(lambda: "uplink: outbox in" in e.b.log_text().split("=== start #2")[-1], 15,
                   "the outbox reopened", e.b)
        for e, q, px in edges:
            # no new traffic: the backlog drains by itself
            got = _collect(rabbit, q, set(e.acked), e.b, 60)
            dups = _check(got, e.acked, e.edge_id)
            assert len(got) == 500 + dups
            report("chaos, edge SIGKILLed holding a backlog, %s: %d acknowledged, all arrived after the "
                   "restart, %d duplicates" % (e.proto, len(e.acked), dups))
    finally:
        for e, q, px in edges:
            px.stop()
