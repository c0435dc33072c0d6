# edge/config.py: schema defaults, every error kind, line numbers, overrides.
# Plain asserts, no pytest: runs under CPython and the MicroPython unix port.

from edge import config
from edge.errors import ConfigError
from tests.core._util import raises


def _err(raw, profile="gateway", lines=None):
    return str(raises(ConfigError, config.load, raw, profile, lines))


def test_defaults_gateway():
    cfg = config.load({})
    assert sorted(cfg) == sorted(config.SCHEMA)
    for section, keys in config.SCHEMA.items():
        assert sorted(cfg[section]) == sorted(keys)
    b = cfg["broker"]
    assert b["bind"] == "127.0.0.1" and b["port"] == 1883
    assert b["max_connections"] == 1000 and b["max_packet_size"] == 1048576
    assert b["max_inflight"] == 256 and b["max_queued_messages"] == 1000
    assert b["max_retained_bytes"] == 10485760
    assert b["allow_zero_length_clientid"] is True
    assert cfg["store"] == {"persistence": True, "dir": "./data", "sync": "batch",
                            "sync_max_delay_ms": 50, "sync_wait_us": 5000, "budget_bytes": 67108864,
                            "session_budget": 8388608, "segment_bytes": 1048576}
    assert cfg["log"] == {"level": "info"}


def test_defaults_board_only_change_defaults():
    g = config.load(None, "gateway")
    b = config.load(None, "board")
    assert b["broker"]["max_connections"] == 6
    assert b["broker"]["max_packet_size"] == 1024  # docs/design.md "Budgets": 1 KB on an ESP32
    assert b["broker"]["max_inflight"] == 4
    assert b["broker"]["max_queued_messages"] == 32
    assert b["broker"]["max_subscriptions"] == 16
    assert b["store"]["budget_bytes"] == 262144
    assert b["store"]["sync_wait_us"] == 0  # (the MicroPython runtime syncs after each feed)
    assert b["broker"]["port"] == g["broker"]["port"] == 1883
    # same keys in both profiles
    for s in g:
        assert sorted(g[s]) == sorted(b[s])


def test_every_default_is_valid():
    for profile in config.PROFILES:
        cfg = config.defaults(profile)
        assert config.load(cfg, profile) == cfg


def test_values_kept_and_defaults_filled():
    cfg = config.load({"broker": {"port": 8883, "allow_zero_length_clientid": False},
                       "store": {"sync": "always"}}, "board")
    assert cfg["broker"]["port"] == 8883
    assert cfg["broker"]["allow_zero_length_clientid"] is False
    assert cfg["broker"]["max_connections"] == 6
    assert cfg["store"]["sync"] == "always"
    assert cfg["log"]["level"] == "info"


def test_load_does_not_share_state():
    a = config.load({})
    a["broker"]["port"] = 1
    assert config.load({})["broker"]["port"] == 1883


def test_unknown_section():
    msg = _err({"brokr": {}})
    assert msg.startswith("brokr: unknown section"), msg
    assert '"broker"' in msg


def test_unknown_key_suggests_closest():
    msg = _err({"broker": {"prot": 1}})
    assert msg.startswith("broker.prot: unknown key"), msg
    assert 'did you mean "port"' in msg


def test_unknown_key_in_wrong_section():
    msg = _err({"broker": {"dir": "/tmp"}})
    assert msg.startswith("broker.dir: unknown key"), msg
    assert '"store.dir"' in msg


def test_unknown_key_no_suggestion_lists_known():
    msg = _err({"log": {"zzzzzzzz": 1}})
    assert "log.zzzzzzzz" in msg and "level" in msg, msg


def test_wrong_type_int():
    msg = _err({"broker": {"port": "abc"}})
    assert msg == 'broker.port: must be an integer 0..65535, got "abc"', msg


def test_bool_is_not_an_int():
    msg = _err({"broker": {"port": True}})
    assert msg == "broker.port: must be an integer 0..65535, got true", msg


def test_float_is_not_an_int():
    assert "got 1.5" in _err({"broker": {"max_inflight": 1.5}})


def test_wrong_type_bool():
    msg = _err({"broker": {"allow_zero_length_clientid": 1}})
    assert msg == "broker.allow_zero_length_clientid: must be true or false, got 1", msg


def test_wrong_type_str():
    msg = _err({"store": {"dir": 5}})
    assert msg == "store.dir: must be a string, got 5", msg
    assert "non-empty" in _err({"store": {"dir": ""}})


def test_topic_root():
    cfg = config.load({"broker": {"response_information": "resp/"}})
    assert cfg["broker"]["response_information"] == "resp/"
    assert config.defaults()["broker"]["response_information"] == ""  # not sent
    for bad in ("resp/+/", "r/#", "a\0b"):
        msg = _err({"broker": {"response_information": bad}})
        assert msg.startswith("broker.response_information: must be a topic name root without wildcards"), msg
    assert "must be a string" in _err({"broker": {"response_information": 1}})
    assert "at most 256" in _err({"broker": {"response_information": "x" * 257}})


def test_out_of_range():
    msg = _err({"broker": {"port": 65536}})
    assert msg == "broker.port: must be an integer 0..65535, got 65536", msg
    msg = _err({"broker": {"max_connections": 0}})
    assert msg == "broker.max_connections: must be an integer >= 1, got 0", msg
    assert "16..268435455" in _err({"broker": {"max_packet_size": 15}})
    assert _err({"store": {"sync_max_delay_ms": -1}}).startswith("store.sync_max_delay_ms:")
    msg = _err({"store": {"sync_wait_us": 1000001}})
    assert msg == "store.sync_wait_us: must be an integer 0..1000000, got 1000001", msg
    assert config.load({"store": {"sync_wait_us": 0}})["store"]["sync_wait_us"] == 0  # at once
    # edges are inclusive
    cfg = config.load({"broker": {"port": 0, "max_packet_size": 268435455}})
    assert cfg["broker"]["port"] == 0


def test_store_keys():
    # issue #4: the persistence switch and the store's budgets
    msg = _err({"store": {"persistence": "yes"}})
    assert msg == 'store.persistence: must be true, false or "best-effort", got "yes"', msg
    msg = _err({"store": {"session_budget": 100}})
    assert msg == "store.session_budget: must be an integer >= 1024, got 100", msg
    assert _err({"store": {"budget_bytes": 0}}).startswith("store.budget_bytes: must be an integer >= 4096")
    assert _err({"store": {"segment_bytes": 10}}).startswith("store.segment_bytes:")
    b = config.load({"store": {"persistence": False}}, "board")["store"]
    assert b["persistence"] is False and b["session_budget"] == 32768 and b["segment_bytes"] == 16384
    cfg = config.override(config.load({}), "store", "persistence", "off")
    assert cfg["store"]["persistence"] is False


def test_bad_enum():
    msg = _err({"store": {"sync": "sometimes"}})
    assert msg == 'store.sync: must be one of "always", "batch", "never", got "sometimes"', msg
    assert _err({"log": {"level": 3}}).startswith("log.level: must be one of")


def test_enum_case_insensitive():
    assert config.load({"log": {"level": "DEBUG"}})["log"]["level"] == "debug"


def test_section_not_a_table():
    msg = _err({"broker": 1883})
    assert msg.startswith("broker: must be a table"), msg
    assert _err([1]).startswith("config:")


def test_bad_profile():
    assert str(raises(ConfigError, config.load, {}, "esp32")).startswith("profile:")


def test_lines_in_errors():
    lines = {"broker": 1, "broker.port": 3, "store": 5, "bogus": 9}
    msg = _err({"broker": {"port": "abc"}}, lines=lines)
    assert msg == 'broker.port (line 3): must be an integer 0..65535, got "abc"', msg
    e = raises(ConfigError, config.load, {"bogus": {}}, "gateway", lines)
    assert e.key == "bogus" and e.line == 9
    e = raises(ConfigError, config.load, {"broker": {"prot": 1}}, "gateway",
               {"broker.prot": 4})
    assert e.key == "broker.prot" and e.line == 4
    assert str(e).startswith("broker.prot (line 4): unknown key")


def test_override():
    cfg = config.load({})
    assert config.override(cfg, "broker", "port", 8883) is cfg
    assert cfg["broker"]["port"] == 8883
    config.override(cfg, "broker", "port", "1884")  # command-line text
    assert cfg["broker"]["port"] == 1884
    config.override(cfg, "broker", "allow_zero_length_clientid", "false")
    assert cfg["broker"]["allow_zero_length_clientid"] is False
    config.override(cfg, "log", "level", "WARNING")
    assert cfg["log"]["level"] == "warning"
    config.override(cfg, "store", "dir", "/var/lib/edge")
    assert cfg["store"]["dir"] == "/var/lib/edge"


def test_override_validates():
    cfg = config.load({})
    e = raises(ConfigError, config.override, cfg, "broker", "port", "abc")
    assert str(e) == 'broker.port: must be an integer 0..65535, got "abc"', str(e)
    assert cfg["broker"]["port"] == 1883  # unchanged
    assert "0..65535" in str(raises(ConfigError, config.override, cfg, "broker", "port", 70000))
    assert "must be true or false" in str(
        raises(ConfigError, config.override, cfg, "broker", "allow_zero_length_clientid", "maybe"))
    assert raises(ConfigError, config.override, cfg, "broker", "nope", 1).key == "broker.nope"
    assert raises(ConfigError, config.override, cfg, "nope", "x", 1).key == "nope"


def test_loads_json_board():
    cfg = config.loads_json('{"broker": {"port": 1884}, "store": {"dir": "/flash/data"}}')
    assert cfg["broker"]["port"] == 1884
    assert cfg["broker"]["max_connections"] == 6  # board default
    assert cfg["store"]["dir"] == "/flash/data"
    assert config.loads_json("{}", "gateway")["broker"]["max_connections"] == 1000


def test_loads_json_errors():
    e = raises(ConfigError, config.loads_json, '{"broker": ')
    assert str(e).startswith("config.json: invalid JSON"), str(e)
    msg = str(raises(ConfigError, config.loads_json, '{"broker": {"port": null}}'))
    assert msg == "broker.port: must be an integer 0..65535, got null", msg


def test_coap_section():
    # docs/coap.md: the endpoint's limits, sized for a board's heap there
    gw, board = config.defaults("gateway")["coap"], config.defaults("board")["coap"]
    assert gw["port"] == board["port"] == 5683 and gw["bind"] == "127.0.0.1"
    assert board["max_observers"] < gw["max_observers"]
    assert board["max_payload"] <= 1024 and board["block_size"] <= 1024
    assert config.load({"coap": {"block_size": 64}})["coap"]["block_size"] == 64
    # Block1/Block2 sizes are 2^(SZX+4) (RFC 7959 §2.2)
    msg = _err({"coap": {"block_size": 100}})
    assert msg == "coap.block_size: must be a power of two 16..1024, got 100", msg
    msg = _err({"coap": {"block_size": 2048}})
    assert msg == "coap.block_size: must be an integer 16..1024, got 2048", msg
    assert _err({"coap": {"enabled": "yes"}}).startswith("coap.enabled: must be true or false")


def test_board_upstream_when_named():
    # A board's [upstream] (issue #18 point 6): its table is imported only
    # when the config or the command line names it (edge/config.py _extra);
    # then it is checked and its board defaults filled as any section's
    c = config.load({"upstream": {"url": "amqp://u:p@h/", "edge_id": "b1"}}, "board")
    assert c["upstream"]["url"] == "amqp://u:p@h/" and c["upstream"]["window"] == 8
    assert c["upstream"]["outbox_budget_bytes"] == 16384 and c["upstream"]["cafile"] == ""
    e = raises(ConfigError, config.load, {"upstream": {"url": "http://h"}}, "board")
    assert "upstream.url" in str(e)
    raises(ConfigError, config.load, {"upstream": {"windows": 3}}, "board")
    # the command line's --upstream / --edge-id over a config without it
    c = config.load({}, "board")
    c.pop("upstream", None)  # (as a board's boot has it: never named)
    config.override(c, "upstream", "url", "stomp://h:61613/", "board")
    config.override(c, "upstream", "edge_id", "b2", "board")
    assert c["upstream"]["url"] == "stomp://h:61613/" and c["upstream"]["edge_id"] == "b2"
    assert c["upstream"]["heartbeat"] == 15  # the rest: defaults
    # other gateway sections stay unknown on a board
    if "websocket" not in config.SCHEMA:
        raises(ConfigError, config.load, {"websocket": {"enabled": True}}, "board")
