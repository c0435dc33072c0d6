# 27: the uplink over TLS (issue #21 point 3, docs/uplink.md "TLS"):
# amqps:// and stomp+ssl:// against a private RabbitMQ node of this module's
# with TLS listeners (tools/rabbitnode.py tls=) that require a client
# certificate (mutual TLS), with certificates made at test time
# (tlscerts.py). Messages arrive over both; a server certificate from
# another CA, one for another name, or no client certificate: refused with a
# log line that says why, retried, the broker serving MQTT meanwhile; the
# credentials never in the log.
import os

import pika
import pytest

from . import tlscerts
from .conftest import Broker
from .rabbit import SERVER, RabbitNode, bound_queue, channel, get_one, until

pytestmark = [pytest.mark.timeout(150), pytest.mark.edge_only("the uplink is edgebroker's own")]

# The board's heap for an uplink over TLS, persistence off (docs/heap.md
# "The uplink on a board": AMQP over TLS with a $SYS subscriber ran out of
# heap at 96 KiB, not at 112 KiB; 128 KiB leaves this suite a margin)
BOARD_TLS_HEAP = "128k"


@pytest.fixture(scope="module")
def runtime():
    return "cpython"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return tlscerts.make(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def tls_rabbit(tmp_path_factory, certs):
    if not os.access(SERVER, os.X_OK):
        pytest.skip("no %s: `make deps` installs rabbitmq-server" % SERVER)
    c = certs
    node = RabbitNode(str(tmp_path_factory.mktemp("rabbitmq-tls")), tls={
        "cacertfile": os.path.join(c, "ca.pem"), "certfile": os.path.join(c, "server.pem"),
        "keyfile": os.path.join(c, "server.key"), "peer": True})
    try:
        node.start()
    except BaseException:
        node.stop()
        raise
    yield node
    node.stop()


@pytest.fixture
def pika_channel(tls_rabbit):
    yield from channel(tls_rabbit)


def _queue(ch, binding):
    return bound_queue(ch, binding, "q27")


def _get(ch, q, timeout=20.0):
    return get_one(ch, q, timeout)


_until = until


def _url(node, scheme, host="127.0.0.1"):
    port = node.amqps_port if scheme == "amqps" else node.stomps_port
    return "%s://%s:%s@%s:%d/" % (scheme, node.user, node.password, host, port)


def _tls(certs, ca="ca.pem", client=True):
    c = {"upstream.cafile": os.path.join(certs, ca)}
    if client:
        c["upstream.certfile"] = os.path.join(certs, "client.pem")
        c["upstream.keyfile"] = os.path.join(certs, "client.key")
    return c


def _log(b):
    # the broker's own lines (the fixture's "=== start" lines quote its command)
    return "\n".join(x for x in b.log_text().splitlines() if not x.startswith("==="))


@pytest.mark.parametrize("scheme", ["amqps", "stomp+ssl"])
def test_messages_arrive_over_tls(tls_rabbit, certs, broker_factory, mqtt_client, pika_channel, scheme):
    ch = pika_channel
    edge = "t" + scheme[0]
    data_q = _queue(ch, "t27%s.#" % edge)
    b = broker_factory(**{"upstream.url": _url(tls_rabbit, scheme), "upstream.edge_id": edge}, **_tls(certs))
    _until(lambda: "uplink: connected to %s://guest:***@" % scheme in b.log_text(), 20, "TLS connection", b)
    pub = mqtt_client(b)
    for i in range(5):
        pub.publish("t27%s/x/%d" % (edge, i), b"%d" % i, qos=1)
    for i in range(5):
        method, props, body = _get(ch, data_q)
        assert (method.routing_key, body) == ("t27%s.x.%d" % (edge, i), b"%d" % i)
        assert props.message_id.startswith(edge + ":")
    # commands down over the same TLS connection
    sub = mqtt_client(b)
    sub.subscribe("cmd/%s/#" % edge, qos=1)
    q = "edge.%s.cmd" % edge
    _until(lambda: q in tls_rabbit.ctl("list_consumers", "queue_name", "-q")[1].split(), 30,
           "consumer on %s" % q, b)
    ch.basic_publish("amq.topic", "cmd.%s.go" % edge, b"go", pika.BasicProperties(message_id="c27" + edge))
    assert sub.wait_message(lambda m: m.topic == "cmd/%s/go" % edge).payload == b"go"
    # RabbitMQ says the connection is TLS, with the edge's client certificate
    if scheme == "amqps":
        rc, out = tls_rabbit.ctl("list_connections", "ssl", "peer_cert_subject", "-q")
        assert rc == 0 and "true" in out and "CN=client" in out, out
    else:
        rc, out = tls_rabbit.ctl("list_stomp_connections", "ssl", "-q")
        assert rc == 0 and "true" in out.split(), out
    assert b.stop() == 0
    assert "guest:guest" not in _log(b)
    ch.queue_delete(q)


@pytest.mark.parametrize("case,expect", [
    ("other-ca", "CERTIFICATE_VERIFY_FAILED"),   # a server cert from the wrong CA
    ("name", "mismatch"),                        # the right CA, another name: hostname checked
    # mutual TLS: RabbitMQ refuses us (TLS 1.3: its alert after our side
    # of the handshake, so the connection is "lost" rather than refused)
    ("no-client-cert", "CERTIFICATE_REQUIRED"),
])
def test_refused_logged_and_retried_never_a_crash(tls_rabbit, certs, broker_factory, mqtt_client, case, expect):
    if case == "other-ca":
        cfg = dict({"upstream.url": _url(tls_rabbit, "amqps")}, **_tls(certs, ca="other-ca.pem"))
    elif case == "name":
        # the certificate names IP 127.0.0.1 only; "localhost" reaches the
        # same listener but is not its name
        cfg = dict({"upstream.url": _url(tls_rabbit, "amqps", "localhost")}, **_tls(certs))
    else:
        cfg = dict({"upstream.url": _url(tls_rabbit, "stomp+ssl")}, **_tls(certs, client=False))
    b = broker_factory(**cfg)
    # refused twice: logged with the reason, and retried after the back-off
    _until(lambda: b.log_text().count("retry in") >= 2, 30, "two refused attempts", b)
    lines = [x for x in _log(b).splitlines() if "retry in" in x]
    assert all(expect in x for x in lines), lines
    assert "uplink: connected" not in b.log_text()
    # MQTT is served meanwhile, and the messages wait in the outbox
    pub = mqtt_client(b)
    pub.publish("t27r/x", b"1", qos=1)
    b.assert_alive()
    assert "Traceback" not in b.log_text()
    assert "guest:guest" not in _log(b)
    assert b.stop() == 0


def _start_fails(broker_factory, cfg):
    # The broker stops with exit code 2 (it may have listened for a moment:
    # the uplink starts after the MQTT listener); what it said
    try:
        b = broker_factory(**cfg)
    except RuntimeError as e:
        assert "exited with 2" in str(e), e
        return str(e)
    assert b.proc.wait(15) == 2, b.log_tail()
    return b.log_text()


def test_tls_files_checked_at_start(tls_rabbit, certs, broker_factory):
    # a CA file that cannot be read stops the start, naming the key
    out = _start_fails(broker_factory, {"upstream.url": _url(tls_rabbit, "amqps"),
                                        "upstream.cafile": os.path.join(certs, "missing.pem")})
    assert "upstream.cafile" in out
    out = _start_fails(broker_factory, {"upstream.url": _url(tls_rabbit, "amqps"),
                                        "upstream.keyfile": os.path.join(certs, "client.key")})
    assert "upstream.keyfile" in out


# ---- the board runtime (MicroPython's ssl, mbedTLS): the same PEM files
@pytest.mark.parametrize("scheme", ["amqps", "stomp+ssl"])
def test_board_over_tls(tls_rabbit, certs, micropython_exe, mqtt_client, pika_channel, tmp_path, scheme):
    ch = pika_channel
    edge = "tb" + scheme[0]
    data_q = _queue(ch, "t27%s.#" % edge)
    b = Broker("micropython", tmp_path / edge, dict(
        {"board_heap": BOARD_TLS_HEAP, "sys_interval": 1, "store.persistence": False,
         "upstream.url": _url(tls_rabbit, scheme), "upstream.edge_id": edge}, **_tls(certs)))
    b.start()
    try:
        _until(lambda: "uplink: connected to %s://guest:***@" % scheme in b.log_text(), 20, "TLS connection", b)
        pub = mqtt_client(b)
        for i in range(5):
            pub.publish("t27%s/x/%d" % (edge, i), b"%d" % i, qos=1)
        for i in range(5):
            method, props, body = _get(ch, data_q)
            assert (method.routing_key, body) == ("t27%s.x.%d" % (edge, i), b"%d" % i)
            assert props.message_id.startswith(edge + ":")
        b.assert_alive()
        assert "MemoryError" not in b.log_text() and "out of memory" not in b.log_text()
        assert "guest:guest" not in _log(b)
    finally:
        b.stop()


def test_board_refuses_a_server_from_another_ca(tls_rabbit, certs, micropython_exe, mqtt_client, tmp_path):
    b = Broker("micropython", tmp_path / "bad", dict(
        {"board_heap": BOARD_TLS_HEAP, "sys_interval": 1, "store.persistence": False,
         "upstream.url": _url(tls_rabbit, "amqps")}, **_tls(certs, ca="other-ca.pem")))
    b.start()
    try:
        _until(lambda: b.log_text().count("retry in") >= 2, 30, "two refused attempts", b)
        lines = [x for x in _log(b).splitlines() if "retry in" in x]
        assert all("not correctly signed by the trusted CA" in x for x in lines), lines
        mqtt_client(b).publish("t27r/x", b"1", qos=1)  # MQTT served meanwhile
        b.assert_alive()
        assert "Traceback" not in b.log_text() and "guest:guest" not in _log(b)
    finally:
        b.stop()
