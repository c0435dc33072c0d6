# MQTT topics <-> RabbitMQ names (edge/bridge/routing.py), as RabbitMQ's MQTT
# plugin maps them: "/" <-> "." and "+" <-> "*", "#" as is, a "." inside a
# level left alone (tests/integration/test_15_bridge_protocols.py checks the
# same against the plugin itself). Plain assert functions (tests/mpy_runner.py).
from edge.bridge import routing


def test_routing_key():
    for t, k in (("a/b/c", "a.b.c"), ("a", "a"), ("/a/", ".a."), ("a//b", "a..b"),
                 ("site.1/temp", "site.1.temp"), ("", "")):
        assert routing.routing_key(t) == k, t


def test_binding_key():
    for f, k in (("a/+/c", "a.*.c"), ("a/#", "a.#"), ("#", "#"), ("+", "*"), ("+/+/#", "*.*.#"),
                 ("a/b", "a.b")):
        assert routing.binding_key(f) == k, f


def test_topic_from_routing_key():
    for k, t in (("a.b.c", "a/b/c"), ("a.*.c", "a/+/c"), ("a.#", "a/#"), ("x", "x")):
        assert routing.topic(k) == t, k
    # the plugin's mapping loses a dot inside a level: it comes back a level
    assert routing.topic(routing.routing_key("site.1/temp")) == "site/1/temp"


def test_stomp_destination_and_message_id():
    assert routing.destination("sensors/s1/temp") == "/topic/sensors.s1.temp"
    assert routing.message_id("edge-7", 0) == "edge-7:0"
    assert routing.message_id("edge-7", 123456789012) == "edge-7:123456789012"


def test_command_names():
    assert routing.cmd_queue("e1") == "edge.e1.cmd"
    assert routing.cmd_binding("e1") == "cmd.e1.#"
    assert routing.state_topic("e1") == "edge/e1/state"


def test_command_topic():
    for key, t in (("cmd.e1.valve.open", "cmd/e1/valve/open"), ("cmd.e1.x", "cmd/e1/x"),
                   ("cmd.e1", "cmd/e1"),                       # cmd.e1.# matches it too
                   ("/topic/cmd.e1.a.b", "cmd/e1/a/b"),        # a STOMP destination
                   ("cmd.e10.x", None), ("cmd.e", None), ("cmd.e1.", None), ("cmd.e2.x", None),
                   ("edge.e1.x", None), ("cmd.e1.*", None), ("cmd.e1.a.#", None), ("", None)):
        assert routing.cmd_topic("e1", key) == t, key


def test_valid_edge_id():
    for ok in ("e1", "gateway-7", "Pi_4", "x" * 64):
        assert routing.valid_edge_id(ok), ok
    for bad in ("", "a.b", "a/b", "a+", "a#", "a*", "a\x00", "x" * 65):
        assert not routing.valid_edge_id(bad), bad
