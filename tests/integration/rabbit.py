# A private RabbitMQ node for the uplink's integration tests (issue #18):
# tools/rabbitnode.py's RabbitNode as a pytest fixture.
#
# `rabbit` is a session-scoped fixture: starting a node takes ~10 s, so one
# node serves every test that asks for it. Import it into the test module
# (`from .rabbit import rabbit`, with a noqa for F401), or into conftest.py to share
# one node across modules. Teardown is a finalizer: it runs when tests fail
# or time out too; nothing outlives the session.
import os
import time

import pytest

from tools.rabbitnode import SERVER, RabbitNode  # noqa: F401  (test_17 starts its own)


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory):
    """A running RabbitMQ node (RabbitNode): amqp_port, stomp_port,
    mqtt_port, user/password guest, vhost "/", ctl(*args)."""
    if not os.access(SERVER, os.X_OK):
        pytest.skip("no %s: `make deps` installs rabbitmq-server" % SERVER)
    node = RabbitNode(str(tmp_path_factory.mktemp("rabbitmq")))
    try:
        node.start()
    except BaseException:
        node.stop()
        raise
    print("RabbitMQ node %s up in %.1f s" % (node.node, node.started_in))
    yield node
    node.stop()


# ---- pika on the node's side (test_16, test_26_uplink_board, test_27_uplink_tls)
def channel(node):
    """A pika channel to node as the yield of a fixture: `yield from
    channel(node)`; its connection closed afterwards."""
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, credentials=pika.PlainCredentials(node.user, node.password),
        heartbeat=0, blocked_connection_timeout=30))
    yield conn.channel()
    try:
        conn.close()
    except Exception:
        pass


def bound_queue(ch, binding, prefix, durable=False):
    """A new queue bound to amq.topic with binding (auto-deleted unless durable)."""
    from .clients import unique_id

    name = unique_id(prefix)
    ch.queue_declare(name, durable=durable, auto_delete=not durable)
    ch.queue_bind(name, "amq.topic", binding)
    return name


def get_one(ch, q, timeout):
    """The next message in q: (method, properties, body); fails after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(q, auto_ack=True)
        if method is not None:
            return method, props, body
        assert time.monotonic() < deadline, "nothing in %s after %ss" % (q, timeout)
        ch.connection.sleep(0.05)  # polling the queue, pika's I/O runs meanwhile


def until(cond, timeout, what, broker=None):
    """cond()'s first true value within timeout s, the broker (if given)
    alive meanwhile; fails with its log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if broker is not None:
            broker.assert_alive()
        assert time.monotonic() < deadline, "no %s within %ss%s" % (
            what, timeout, "\n" + broker.log_tail() if broker is not None else "")
        time.sleep(0.05)  # polling for a condition, not waiting blindly
