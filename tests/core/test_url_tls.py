# The [upstream] URL's TLS schemes (edge/bridge/url.py, docs/uplink.md "TLS",
# issue #21 point 3): amqps:// and stomp+ssl:// speak AMQP and STOMP, on
# RabbitMQ's TLS ports by default. Runs under MicroPython too.
from edge import config
from edge.bridge import url
from edge.errors import ConfigError
from tests.core._util import raises


def test_tls_schemes_parse_to_their_protocol_and_port():
    assert url.parse("amqps://u:p@h/v") == ("amqp", "u", "p", "h", 5671, "v")
    assert url.parse("stomp+ssl://u:p@h") == ("stomp", "u", "p", "h", 61614, "/")
    assert url.parse("AMQPS://h:5999/")[4] == 5999
    assert url.tls("amqps://u:p@h/") and url.tls("stomp+ssl://h") and url.tls("AMQPS://h")
    assert not url.tls("amqp://h") and not url.tls("stomp://h") and not url.tls("h:5671")
    assert url.redact("amqps://u:secret@h:5671/") == "amqps://u:***@h:5671/"
    # a cluster's list may mix them
    assert [p[0] for p in url.parse_list("amqps://h1, amqp://h2")] == ["amqp", "amqp"]
    e = raises(ValueError, url.parse, "https://u:secret@h/")
    assert "amqps" in str(e) and "secret" not in str(e)


def test_tls_keys_in_the_config():
    c = config.load({"upstream": {"url": "amqps://u:p@h/", "cafile": "/etc/ca.pem",
                                  "certfile": "c.pem", "keyfile": "k.pem"}})
    assert (c["upstream"]["cafile"], c["upstream"]["certfile"], c["upstream"]["keyfile"]) == (
        "/etc/ca.pem", "c.pem", "k.pem")
    assert config.load({})["upstream"]["cafile"] == ""
    raises(ConfigError, config.load, {"upstream": {"cafile": 3}})
