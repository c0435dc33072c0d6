# A private RabbitMQ node for the uplink's integration tests (issue #18):
# tools/rabbitnode.py's RabbitNode as a pytest fixture.
#
# `rabbit` is a session-scoped fixture: starting a node takes ~10 s, so one
# node serves every test that asks for it. Import it into the test module
# (`from .rabbit import rabbit`, with a noqa for F401), or into conftest.py to share
# one node across modules. Teardown is a finalizer: it runs when tests fail
# or time out too; nothing outlives the session.
import os

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
