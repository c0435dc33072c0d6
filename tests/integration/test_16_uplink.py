# 16: the uplink to RabbitMQ end to end (docs/uplink.md, issue #18): the
# broker run with [upstream] against the private node (rabbit.py, shared with
# test_15 through conftest.py), checked with pika on the RabbitMQ side and
# paho on the MQTT side. CPython runtime here: the board's shell is
# test_26_uplink_board.py's, TLS test_27_uplink_tls.py's.
import time

import pika
import pytest

from .rabbit import bound_queue, channel, get_one, until

pytestmark = [pytest.mark.timeout(120), pytest.mark.edge_only("the uplink is edgebroker's own")]


@pytest.fixture(scope="module")
def runtime():
    return "cpython"


@pytest.fixture
def pika_channel(rabbit):
    yield from channel(rabbit)


def _queue(ch, binding, durable=False):
    return bound_queue(ch, binding, "q16", durable)


def _get(ch, q, timeout=15.0):
    return get_one(ch, q, timeout)


_until = until


def _consuming(rabbit, queue, broker):
    # the edge consumes its command queue: then a command cannot miss it
    def check():
        rc, out = rabbit.ctl("list_consumers", "queue_name", "-q")
        return rc == 0 and queue in out.split()
    _until(check, 20, "consumer on %s" % queue, broker)


def _url(rabbit, scheme="amqp"):
    port = rabbit.amqp_port if scheme == "amqp" else rabbit.stomp_port
    return "%s://%s:%s@127.0.0.1:%d/" % (scheme, rabbit.user, rabbit.password, port)


def test_publish_up_commands_down_state(rabbit, broker_factory, mqtt_client, pika_channel):
    ch = pika_channel
    data_q = _queue(ch, "t16.#")
    state_q = _queue(ch, "edge.e1.state")
    b = broker_factory(**{"upstream.url": _url(rabbit), "upstream.edge_id": "e1"})
    # online on connect
    assert _get(ch, state_q)[2] == b"online"
    pub = mqtt_client(b)
    pub.publish("t16/m1/kwh", b"3.2", qos=1)
    method, props, body = _get(ch, data_q)
    assert body == b"3.2" and method.routing_key == "t16.m1.kwh"
    assert props.headers["x-mqtt-publish-qos"] == 1
    assert props.message_id == "e1:1"
    assert props.delivery_mode == 2
    # commands down: cmd.e1.reboot -> cmd/e1/reboot
    _consuming(rabbit, "edge.e1.cmd", b)
    sub = mqtt_client(b)
    sub.subscribe("cmd/e1/#", qos=1)
    ch.basic_publish("amq.topic", "cmd.e1.reboot", b"now")
    m = sub.wait_message(lambda m: m.topic == "cmd/e1/reboot")
    assert m.payload == b"now"
    # acked upstream, and not sent back up as data
    _until(lambda: ch.queue_declare("edge.e1.cmd", passive=True).method.message_count == 0, 10,
           "command acked", b)
    assert ch.basic_get(data_q, auto_ack=True) == (None, None, None)
    sysq = mqtt_client(b)
    sysq.subscribe("$SYS/broker/uplink/#")
    v = sysq.wait_message(lambda m: m.topic == "$SYS/broker/uplink/confirmed")
    assert int(v.payload) >= 1
    # offline at a clean stop
    assert b.stop() == 0
    assert _get(ch, state_q)[2] == b"offline"
    assert "guest:guest" not in b.log_text()


@pytest.mark.timeout(200)  # the back-off may have grown to 60 s while RabbitMQ was away
def test_unreachable_at_start_backlog_kept_across_a_restart_delivered_later(rabbit, broker_factory, mqtt_client, pika_channel):
    ch = pika_channel
    data_q = _queue(ch, "t16b.#", durable=True)  # survives stop_app
    rc, out = rabbit.ctl("stop_app")
    assert rc == 0, out
    try:
        b = broker_factory(**{"upstream.url": _url(rabbit), "upstream.edge_id": "e2"})
        _until(lambda: "cannot connect" in b.log_text(), 15, "log line for the refused connection", b)
        log = b.log_text()
        assert "guest:***@127.0.0.1:%d" % rabbit.amqp_port in log
        assert "guest:guest" not in log
        # MQTT is served meanwhile
        sub = mqtt_client(b)
        sub.subscribe("t16b/#", qos=1)
        pub = mqtt_client(b)
        for i in range(5):
            pub.publish("t16b/x", b"%d" % i, qos=1)
        sub.wait_messages(5)
        sysq = mqtt_client(b)
        sysq.subscribe("$SYS/broker/uplink/backlog")
        sysq.wait_message(lambda m: m.payload == b"5")
        # the outbox is on flash: a restart keeps the backlog (and its ids)
        assert b.stop() == 0
        assert "uplink: stopped, 5 waiting in the outbox" in b.log_text()
        b.start()
        _until(lambda: "uplink: outbox in %s/uplink, 5 waiting" % (b.workdir / "data") in b.log_text(),
               10, "the outbox reopened", b)
    finally:
        rc, out = rabbit.ctl("start_app", timeout=60)
        assert rc == 0, out
    # a fresh channel: the node restarted its listeners under pika
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", rabbit.amqp_port, credentials=pika.PlainCredentials(rabbit.user, rabbit.password)))
    try:
        ch2 = conn.channel()
        got = []
        for _ in range(5):
            # the back-off may have grown while the node was away (<= 60 s)
            method, props, body = _get(ch2, data_q, timeout=75)
            got.append((body, props.message_id))
        assert got == [(b"%d" % i, "e2:%d" % (i + 1)) for i in range(5)]
        ch2.queue_delete(data_q)
    finally:
        conn.close()
    assert "uplink: connected to amqp://guest:***@" in b.log_text()


def test_stomp_publish_up_and_commands_down(rabbit, broker_factory, mqtt_client, pika_channel):
    ch = pika_channel
    data_q = _queue(ch, "t16s.#")
    state_q = _queue(ch, "edge.e3.state")
    b = broker_factory(**{"upstream.url": _url(rabbit, "stomp"), "upstream.edge_id": "e3"})
    assert _get(ch, state_q)[2] == b"online"
    pub = mqtt_client(b)
    pub.publish("t16s/a/b", b"hello", qos=1)
    method, props, body = _get(ch, data_q)
    assert body == b"hello" and method.routing_key == "t16s.a.b"
    assert props.message_id == "e3:1"
    assert props.delivery_mode == 2
    assert props.headers["x-mqtt-publish-qos"] in ("1", 1)
    _consuming(rabbit, "edge.e3.cmd", b)
    sub = mqtt_client(b)
    sub.subscribe("cmd/e3/#", qos=1)
    ch.basic_publish("amq.topic", "cmd.e3.fan.speed", b"3")
    m = sub.wait_message(lambda m: m.topic == "cmd/e3/fan/speed")
    assert m.payload == b"3"
    assert b.stop() == 0
    assert _get(ch, state_q)[2] == b"offline"
    assert "guest:guest" not in b.log_text()


def test_connection_closed_by_rabbitmq_reconnects_and_resends(rabbit, broker_factory, mqtt_client, pika_channel):
    ch = pika_channel
    data_q = _queue(ch, "t16r.#")
    state_q = _queue(ch, "edge.e4.state")
    b = broker_factory(**{"upstream.url": _url(rabbit), "upstream.edge_id": "e4"})
    assert _get(ch, state_q)[2] == b"online"
    pub = mqtt_client(b)
    pub.publish("t16r/x", b"0", qos=1)
    assert _get(ch, data_q)[1].message_id == "e4:1"
    rc, out = rabbit.ctl("close_all_connections", "test 16")  # pika's too
    assert rc == 0, out
    _until(lambda: "uplink: amqp://guest:***@127.0.0.1:%d/: closed" % rabbit.amqp_port in b.log_text()
           or "connection lost" in b.log_text(), 10, "the lost connection logged", b)
    for i in range(1, 4):
        pub.publish("t16r/x", b"%d" % i, qos=1)  # while the uplink reconnects
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", rabbit.amqp_port, credentials=pika.PlainCredentials(rabbit.user, rabbit.password)))
    try:
        ch2 = conn.channel()
        # (the back-off after a link that was up: 1-3 s)
        assert _get(ch2, state_q, timeout=30)[2] == b"online"
        got = [(body, props.message_id) for _, props, body in (_get(ch2, data_q, timeout=30) for _ in range(3))]
        # in order; a resend would repeat an id, never skip one
        assert [g for i, g in enumerate(got) if g not in got[:i]] == [
            (b"%d" % i, "e4:%d" % (i + 1)) for i in range(1, 4)], got
    finally:
        conn.close()
    sysq = mqtt_client(b)
    sysq.subscribe("$SYS/broker/uplink/reconnects")
    sysq.wait_message(lambda m: int(m.payload) >= 1)


def test_throughput_figure(rabbit, broker_factory, mqtt_client, pika_channel, report):
    # Not a benchmark (one run, a shared test machine): a figure for the
    # order of magnitude, and a check that 5000 messages all arrive, in order.
    n = 5000
    ch = pika_channel
    data_q = _queue(ch, "t16t.#")
    state_q = _queue(ch, "edge.e5.state")
    b = broker_factory(**{"upstream.url": _url(rabbit), "upstream.edge_id": "e5"})
    assert _get(ch, state_q)[2] == b"online"
    pub = mqtt_client(b)
    t0 = time.monotonic()
    infos = [pub.publish("t16t/x", b"%d" % i, qos=1, wait=False) for i in range(n)]
    for info in infos:
        info.wait_for_publish(30)
    t1 = time.monotonic()
    _until(lambda: ch.queue_declare(data_q, passive=True).method.message_count >= n, 60,
           "%d messages in %s" % (n, data_q), b)
    t2 = time.monotonic()
    ids = []
    while len(ids) < n:
        method, props, body = _get(ch, data_q)
        ids.append(props.message_id)
    assert ids == ["e5:%d" % (i + 1) for i in range(n)]
    report("uplink, AMQP to a local RabbitMQ, %d QoS 1 messages of ~4 B: MQTT PUBACKs in %.2f s, "
           "all in the queue after %.2f s (%.0f msg/s end to end)" % (n, t1 - t0, t2 - t0, n / (t2 - t0)))


@pytest.mark.parametrize("scheme", ["amqp", "stomp"])
def test_a_command_sent_again_with_its_message_id_is_not_published_twice(
        rabbit, broker_factory, mqtt_client, pika_channel, scheme):
    # As RabbitMQ redelivers a command whose ack was lost (the edge crashed
    # between persisting it and acking it: tests/core/test_uplink.py): the
    # same message_id again is acked and not published again
    ch = pika_channel
    eid = "e6" + scheme[0]
    b = broker_factory(**{"upstream.url": _url(rabbit, scheme), "upstream.edge_id": eid})
    _consuming(rabbit, "edge.%s.cmd" % eid, b)
    sub = mqtt_client(b)
    sub.subscribe("cmd/%s/#" % eid, qos=1)
    for mid, body in (("c1", b"on"), ("c1", b"on"), ("c2", b"off")):
        ch.basic_publish("amq.topic", "cmd.%s.fan" % eid, body, pika.BasicProperties(message_id=mid))
    sub.wait_message(lambda m: m.payload == b"off")
    _until(lambda: ch.queue_declare("edge.%s.cmd" % eid, passive=True).method.message_count == 0, 10,
           "commands acked", b)
    time.sleep(0.3)  # (a second copy would have come in order, before "off")
    assert [m.payload for m in sub.messages if m.topic.startswith("cmd/")] == [b"on", b"off"]
    sysq = mqtt_client(b)
    sysq.subscribe("$SYS/broker/uplink/commands/duplicates")
    sysq.wait_message(lambda m: m.payload == b"1")


def _queue_type(rabbit, name):
    rc, out = rabbit.ctl("list_queues", "name", "type", "-q")
    assert rc == 0, out
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == name:
            return f[1]
    return None


@pytest.mark.parametrize("scheme", ["amqp", "stomp"])
def test_the_command_queue_is_a_quorum_queue(rabbit, broker_factory, mqtt_client, pika_channel, scheme):
    # issue #18: "the command queue declared as a quorum queue (x-queue-type:
    # quorum) where the server supports it, so commands survive a node's
    # loss" (RabbitMQ >= 3.8; Debian's is 3.10)
    ch = pika_channel
    eid = "eq" + scheme[0]
    q = "edge.%s.cmd" % eid
    b = broker_factory(**{"upstream.url": _url(rabbit, scheme), "upstream.edge_id": eid})
    _consuming(rabbit, q, b)
    assert _queue_type(rabbit, q) == "quorum"
    assert "command queue %s (quorum)" % q in b.log_text()
    sub = mqtt_client(b)
    sub.subscribe("cmd/%s/#" % eid, qos=1)
    ch.basic_publish("amq.topic", "cmd.%s.valve" % eid, b"open", pika.BasicProperties(message_id="q1"))
    assert sub.wait_message(lambda m: m.topic == "cmd/%s/valve" % eid).payload == b"open"
    ch.queue_delete(q)


@pytest.mark.parametrize("scheme", ["amqp", "stomp"])
def test_a_command_queue_declared_otherwise_is_used_as_it_is(
        rabbit, broker_factory, mqtt_client, pika_channel, scheme):
    # An existing classic queue (an older edge, or an operator's, here with
    # a length limit): the quorum declare is refused (AMQP: a channel close,
    # 406 PRECONDITION_FAILED; STOMP: an ERROR frame), logged; the edge
    # reconnects at once and consumes the queue as it is; nothing published
    # up is lost or doubled
    ch = pika_channel
    eid = "ec" + scheme[0]
    q = "edge.%s.cmd" % eid
    ch.queue_declare(q, durable=True, arguments={"x-max-length": 1000})
    if scheme == "stomp":  # (/amq/queue/<name> takes the queue as it is, bindings too)
        ch.queue_bind(q, "amq.topic", "cmd.%s.#" % eid)
    data_q = _queue(ch, "t16%s.#" % eid)
    b = broker_factory(**{"upstream.url": _url(rabbit, scheme), "upstream.edge_id": eid})
    pub = mqtt_client(b)
    for i in range(20):
        pub.publish("t16%s/x" % eid, b"%d" % i, qos=1)
    _consuming(rabbit, q, b)
    assert _queue_type(rabbit, q) == "classic"
    log = b.log_text()
    assert "queue %s not declared as a quorum queue (" % q in log, log
    if scheme == "amqp":
        assert "not declared as a quorum queue (406 PRECONDITION_FAILED" in log, log
    assert "command queue %s (passive)" % q in log
    sub = mqtt_client(b)
    sub.subscribe("cmd/%s/#" % eid, qos=1)
    ch.basic_publish("amq.topic", "cmd.%s.valve" % eid, b"shut", pika.BasicProperties(message_id="k1"))
    assert sub.wait_message(lambda m: m.topic == "cmd/%s/valve" % eid).payload == b"shut"
    got = [_get(ch, data_q)[2] for _ in range(20)]
    assert got == [b"%d" % i for i in range(20)]
    assert ch.basic_get(data_q, auto_ack=True) == (None, None, None)
    ch.queue_delete(q)


@pytest.mark.parametrize("scheme", ["amqp", "stomp"])
def test_the_same_message_through_the_mqtt_plugin_and_through_the_edge(
        rabbit, broker_factory, mqtt_client, pika_channel, scheme):
    # issue #18: "the same message through RabbitMQ's own MQTT plugin and
    # through the edge arrives with the same routing key and headers". One
    # pika consumer bound to amq.topic gets both: a paho-like client
    # publishes to the plugin, another to the edge (whose uplink sends it
    # up), for QoS 0 and 1 and a topic of several levels. (test_15 checks
    # the AMQP client alone; this is the whole path: MQTT in, outbox,
    # uplink.) STOMP cannot send a typed header: x-mqtt-publish-qos arrives
    # as the string of the same number, and x-mqtt-dup is not sent.
    from .clients import Client

    ch = pika_channel
    eid = "sbs" + scheme[0]
    q = _queue(ch, "%s.#" % eid)
    b = broker_factory(**{"upstream.url": _url(rabbit, scheme), "upstream.edge_id": eid})
    _consuming(rabbit, "edge.%s.cmd" % eid, b)  # up (and publishing: after the queue's answer)
    plugin = Client("127.0.0.1", rabbit.mqtt_port)
    plugin.connect()
    edge = mqtt_client(b)
    try:
        for topic, qos in (("%s/plant/line-2/m7/kwh" % eid, 1), ("%s/plant/line-2/m7/kwh" % eid, 0),
                           ("%s/a" % eid, 1)):
            plugin.publish(topic, b"21.5", qos=qos)
            m1, p1, body1 = _get(ch, q)
            edge.publish(topic, b"21.5", qos=qos)
            m2, p2, body2 = _get(ch, q)
            assert body1 == body2 == b"21.5"
            assert (m2.exchange, m2.routing_key) == (m1.exchange, m1.routing_key) == (
                "amq.topic", topic.replace("/", ".")), topic
            assert p1.delivery_mode == (2 if qos else 1) and p1.headers["x-mqtt-publish-qos"] == qos
            if scheme == "amqp":
                assert p2.delivery_mode == p1.delivery_mode, (topic, qos)
                assert p2.headers == p1.headers, (topic, qos, p1.headers, p2.headers)
            else:
                # RabbitMQ's STOMP: persistent:true -> 2; without it no
                # delivery_mode at all (transient, as 1); the frame's own
                # headers (content-length, receipt) come along
                assert p2.delivery_mode == (2 if qos else None), (topic, qos)
                assert p2.headers["x-mqtt-publish-qos"] == str(qos)
            assert p2.message_id.startswith(eid + ":")  # the edge's idempotency key (the plugin sets none)
    finally:
        plugin.disconnect()


def test_commands_are_delivered_under_the_acl(rabbit, broker_factory, pika_channel, tmp_path):
    # issue #21: "ACLs ... on commands coming down the uplink". A command is
    # published locally like any message and each delivery is checked
    # against the subscriber's read grants (docs/security.md "Commands down
    # the uplink"); the uplink itself needs no write grant: it writes only
    # cmd/<edge_id>/... by construction, as RabbitMQ's user lets it.
    from .test_21_auth import client, passwd

    pw = tmp_path / "passwd"
    for user in ("op", "tech", "ro"):
        passwd(pw, user, user + "-pw")
    acl = tmp_path / "acl"
    acl.write_text("user op\ntopic read cmd/e4/#\ntopic read $SYS/#\n"
                   "user tech\ntopic read cmd/e4/#\ntopic deny cmd/e4/valve/#\n"
                   "user ro\ntopic read sensors/#\n")
    ch = pika_channel
    b = broker_factory(**{"upstream.url": _url(rabbit), "upstream.edge_id": "e4", "sys_interval": 1,
                          "auth.password_file": str(pw), "auth.acl_file": str(acl)})
    _consuming(rabbit, "edge.e4.cmd", b)
    op = client(b, "op", "op-pw")
    tech = client(b, "tech", "tech-pw")
    ro = client(b, "ro", "ro-pw")
    assert op.subscribe("cmd/e4/#", qos=1) == [1]
    assert tech.subscribe("cmd/e4/#", qos=1) == [1]  # (the deny is narrower: checked message by message)
    assert ro.subscribe("cmd/e4/#", qos=1) == [0x80]
    for key, body, mid in (("cmd.e4.valve.open", b"v", "a1"), ("cmd.e4.light.on", b"l", "a2")):
        ch.basic_publish("amq.topic", key, body, pika.BasicProperties(message_id=mid))
    op.wait_messages(2)
    tech.wait_message(lambda m: m.topic == "cmd/e4/light/on")
    time.sleep(0.3)  # the valve command would have come first, in order
    assert [(m.topic, m.payload) for m in op.messages] == [("cmd/e4/valve/open", b"v"), ("cmd/e4/light/on", b"l")]
    assert [(m.topic, m.payload) for m in tech.messages] == [("cmd/e4/light/on", b"l")]
    assert ro.messages == []
    sysq = client(b, "op", "op-pw")
    sysq.subscribe("$SYS/broker/acl/denied/read")
    assert int(sysq.wait_message(lambda m: m.payload != b"0").payload) >= 1
