# One configuration schema for both runtimes (docs/design.md "Configuration").
# The Pi reads it from TOML (gateway/config.py), a board from config.json
# (read_json). The schema is data: adding a section or key is a table edit.
# Portable: no typing/dataclasses/enum/re (MicroPython has none of them).

import sys

from edge.errors import ConfigError

PROFILES = ("gateway", "board")

# section -> key -> (kind, default_gateway, default_board, check)
#   "int":  check (lo, hi), hi None = unbounded
#   "pow2": an "int" that is also a power of two
#   "str":  check None, or (min_len, max_len) with max_len None = unbounded
#   "topic": a "str" that is part of a topic name: no wildcard (+ #), no NUL
#   "enum": check is the tuple of allowed strings
#   "bool": check None, or a tuple of words allowed besides true and false
#   "id":   a "str" that can stand in RabbitMQ names: no . / + # * NUL
#   "url":  a "str" that is "" or an upstream URL (edge/bridge/url.py)
# A default of None means "unset": the key then also accepts null (JSON).
_U = None  # unbounded
SCHEMA = {
    "broker": {
        "bind": ("str", "127.0.0.1", "127.0.0.1", (1, _U)),
        "port": ("int", 1883, 1883, (0, 65535)),  # 0 = any free port
        "max_connections": ("int", 1000, 6, (1, _U)),
        # 268435455 = largest MQTT remaining length (4-byte varint)
        "max_packet_size": ("int", 1048576, 1024, (16, 268435455)),
        # v5 Receive Maximum. Not mosquitto's 20: a window of 20 makes a busy
        # QoS 1 subscriber wait a round trip per 20 messages (fan-in QoS 1
        # on the benchmark: about 48k msg/s at 20, 64k at 256); 5.0's own
        # default is 65535 (§3.1.2.11.3)
        "max_inflight": ("int", 256, 4, (1, 65535)),
        "max_queued_messages": ("int", 1000, 32, (0, _U)),  # per offline session
        "max_queued_bytes": ("int", 1048576, 8192, (0, _U)),
        "max_keepalive": ("int", 65535, 65535, (0, 65535)),  # seconds; v5 Server Keep Alive
        "max_topic_alias": ("int", 10, 4, (0, 65535)),  # v5 Topic Alias Maximum; 0: none
        # v5 Response Information: a topic root, sent as "<root><client id>"
        # to a client that asks for it; "": never sent
        "response_information": ("topic", "", "", (0, 256)),
        "connect_timeout": ("int", 10, 10, (1, 3600)),  # seconds to CONNECT
        # Limits that hold under attack (docs/security.md "Limits"); each
        # refusal is counted ($SYS/broker/limits/<key>) and logged once per
        # sys_interval. Open sockets from one client address (IP); more are
        # closed at accept. 0: none. A board's max_connections (6) is its
        # whole table: a quota below it would only move the refusal
        "max_connections_per_address": ("int", 100, 0, (0, _U)),
        # packets a second one connection may send, burst of one second's;
        # past it the connection is not read until the rate allows
        # (back-pressure). 0: none. The gateway's loop reads each socket
        # in turn and serves ~60k packets a second in all, so none there;
        # a board's ~3k a second are not one client's alone
        "max_packet_rate": ("int", 0, 500, (0, _U)),
        # characters in a topic name or filter (the spec allows 65535)
        "max_topic_length": ("int", 65535, 256, (1, 65535)),
        # a will's topic + payload, held in memory for the connection's life
        "max_will_bytes": ("int", 65536, 256, (0, 268435455)),
        "sys_interval": ("int", 10, 10, (0, 86400)),  # seconds, 0 disables $SYS
        # a board's heap splits a topic into one string per level to match it
        "max_topic_levels": ("int", 65535, 16, (1, 65535)),
        "max_subscriptions": ("int", 1000, 16, (1, _U)),  # per client
        # a board: the memory budget binds first (a retained message costs
        # ~400 bytes of its heap, docs/heap.md)
        "max_retained_messages": ("int", 10000, 16, (0, _U)),
        "max_retained_bytes": ("int", 10485760, 4096, (0, _U)),
        "allow_zero_length_clientid": ("bool", True, True, None),
        # broker-wide: away sessions and their queues, the retained store,
        # the subscriptions, each counted at its measured heap cost
        # (edge/mqtt/session.py Budget, docs/heap.md "Board heap budget").
        # A board at 64 KiB has 17,376 bytes free after start-up
        # (persistence off, tools/board.py): 6,144 budget + 3,072 (clean
        # subscriptions may pass it by half) + 6 connections x 1,136 (3.1.1,
        # one subscription, measured live) = 16,032, leaving 1,344 for
        # packets in flight and the allocator's slack. The first 5.0 client
        # loads 7,744 bytes of code objects once: a board serving 5.0 clients
        # at 64 KiB fits max_connections 2 and a budget of 2048 (docs/heap.md)
        "memory_budget_bytes": ("int", 268435456, 6144, (1024, _U)),
    },
    "store": {
        # mosquitto's name; false: nothing is written, nothing survives a
        # restart. true: a store that cannot open (heap, flash) stops the
        # start, and one that fails while running refuses new QoS 1/2
        # publishes. "best-effort": the store if it opens, else the broker
        # runs without it and says so ($SYS/broker/store/state, 5.0 CONNACK)
        # (docs/persistence.md "When the store cannot keep it")
        "persistence": ("bool", True, True, ("best-effort",)),
        "dir": ("str", "./data", "./data", (1, _U)),
        # "batch": records of one batch of input share one sync, before the
        # acks that promise them go out; a batch with no ack waiting is
        # synced within sync_max_delay_ms. "always": a sync per record.
        # "never": written, never synced (a power cut may lose the tail).
        "sync": ("enum", "batch", "batch", ("always", "batch", "never")),
        "sync_max_delay_ms": ("int", 50, 50, (0, 60000)),
        # Output waiting for records waits this long for the acks that make
        # them void before the batch is written and synced: a subscriber
        # that acknowledges within it costs no flash (0: at the end of the
        # poller's round; a board rounds it down to whole ms: commit.py).
        "sync_wait_us": ("int", 5000, 0, (0, 1000000)),
        # the whole store (live records, bytes on flash); full: new QoS 1/2
        # deliveries, sessions, subscriptions are refused and counted
        "budget_bytes": ("int", 67108864, 262144, (4096, _U)),
        # one persistent session's records + the messages it holds
        "session_budget": ("int", 8388608, 32768, (1024, _U)),
        # segment file size; littlefs rewrites a file's last block per sync
        "segment_bytes": ("int", 1048576, 16384, (1024, _U)),
    },
    "coap": {  # the CoAP endpoint (edge/coap/, docs/coap.md), UDP beside MQTT
        # a board's heap: ~6.1 KB at idle (docs/coap.md "On a board")
        "enabled": ("bool", True, False, None),
        "bind": ("str", "127.0.0.1", "127.0.0.1", (1, _U)),
        "port": ("int", 5683, 5683, (0, 65535)),  # RFC 7252 §6.1; 0 = any free port
        # Observe registrations (RFC 7641) held at once; past it 5.03, counted
        "max_observers": ("int", 1000, 8, (0, _U)),
        # largest request or notification body; a bigger one without
        # Block1 gets 4.13 with Size1 (RFC 7959 §2.9.3)
        "max_payload": ("int", 1048576, 1024, (16, 268435455)),
        # Block1/Block2 size: a power of two 16..1024 (RFC 7959 §2.2)
        "block_size": ("pow2", 1024, 256, (16, 1024)),
        # seconds a reply is kept for a duplicate CON (RFC 7252 §4.8.2)
        "exchange_lifetime": ("int", 247, 247, (1, 86400)),
        # replies kept for duplicates at once (~150 B each on a board); full:
        # new publishes and registrations get 5.03 with Max-Age, counted
        "max_exchanges": ("int", 10000, 64, (1, _U)),
    },
    "auth": {  # passwords and ACLs (edge/auth/, docs/security.md), mosquitto's names
        # the `edgebroker passwd` file (PBKDF2-SHA256); unset: user names unchecked
        "password_file": ("str", None, None, (1, _U)),
        # mosquitto's acl_file syntax; unset: every client reads and writes all
        "acl_file": ("str", None, None, (1, _U)),
        # clients without a user name; unset: true only while broker.bind is loopback
        "allow_anonymous": ("bool", None, None, None),
    },
    "log": {
        "level": ("enum", "info", "info", ("debug", "info", "warning", "error")),
    },
}


# The Pi gateway's own sections ([upstream], [websocket], [http]): in
# edge/config_gateway.py, never imported on a board (its heap)
if sys.implementation.name != "micropython":
    from edge.config_gateway import SECTIONS

    SCHEMA.update(SECTIONS)
# [tls] (edge/config_tls.py): on a board added by load() only when its file
# names the section, so a board without TLS keeps no name of it (its heap)


def _extra(cfg, section, profile):
    # A board's [upstream]: its table (edge/config_upstream.py) is imported
    # only when the config names the section, so a board without an uplink
    # pays no heap for it (docs/heap.md "The uplink on a board"); its
    # defaults join cfg then. Any other unknown section stays unknown.
    if section != "upstream":
        return
    if section not in SCHEMA:
        from edge.config_upstream import SECTION

        SCHEMA[section] = SECTION
        # The module goes now (off sys.modules and off its package, as
        # main.py's forget() does): the table lives as long as SCHEMA,
        # which the boot forgets
        m = sys.modules.pop("edge.config_upstream", None)
        pkg = sys.modules.get("edge")
        for k in [k for k in pkg.__dict__ if pkg.__dict__[k] is m]:
            delattr(pkg, k)
    if section not in cfg:
        col = 1 + PROFILES.index(profile)
        cfg[section] = {k: spec[col] for k, spec in SCHEMA[section].items()}


def _show(v):
    # Values in messages use config-file syntax: "abc", true, 12, null.
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return '"%s"' % (v if len(v) <= 40 else v[:37] + "...")
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, (list, tuple)):
        return "an array"
    return repr(v)


def _int_range(check):
    lo, hi = check
    if hi is None:
        return ">= %d" % lo
    return "%d..%d" % (lo, hi)


def _quoted(names):
    return ", ".join('"%s"' % n for n in names)


def _problem(spec, v, profile, from_text):
    """Return (value, None) if v is valid for spec, else (None, message).

    from_text: v came from a command line, so a str may spell an int or bool.
    """
    kind, check = spec[0], spec[3]
    if v is None and spec[1 + PROFILES.index(profile)] is None:
        return None, None
    if kind == "int" or kind == "pow2":
        if from_text and isinstance(v, str):
            try:
                v = int(v.strip())
            except ValueError:
                pass
        # bool is not an int here (on CPython it subclasses int).
        if type(v) is int and v >= check[0] and (check[1] is None or v <= check[1]):
            if kind == "int" or not v & (v - 1):
                return v, None
            return None, "must be a power of two %s, got %s" % (_int_range(check), _show(v))
        return None, "must be an integer %s, got %s" % (_int_range(check), _show(v))
    if kind == "bool":
        if from_text and isinstance(v, str):
            v = _BOOL_WORDS.get(v.strip().lower(), v)
        if v is True or v is False:
            return v, None
        if check and isinstance(v, str) and v.lower() in check:
            return v.lower(), None
        if check:
            return None, "must be true, false or %s, got %s" % (_quoted(check), _show(v))
        return None, "must be true or false, got %s" % _show(v)
    if kind == "enum":
        if isinstance(v, str) and v.lower() in check:
            return v.lower(), None
        return None, "must be one of %s, got %s" % (_quoted(check), _show(v))
    # "str"
    if not isinstance(v, str):
        return None, "must be a string, got %s" % _show(v)
    if check is not None:
        lo, hi = check
        if len(v) < lo:
            return None, "must be a non-empty string" if lo == 1 else (
                "must be at least %d characters" % lo)
        if hi is not None and len(v) > hi:
            return None, "must be at most %d characters, got %d" % (hi, len(v))
    if kind == "id":
        for c in "./+#*\0":
            if c in v:
                return None, "must not contain any of . / + # * or NUL, got %s" % _show(v)
    if kind == "url" and v:
        from edge.bridge.url import parse  # lazy: only when an uplink is set

        try:
            parse(v)
        except ValueError as e:
            return None, str(e)
    if kind == "topic" and ("+" in v or "#" in v or "\0" in v):
        # [MQTT-4.7.0-1] [MQTT-4.7.3-2] it ends up in topic names
        return None, "must be a topic name root without wildcards (+ #) or NUL, got %s" % _show(v)
    return v, None


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
               "false": False, "no": False, "off": False, "0": False}


def _distance(a, b):
    # Levenshtein distance; names are short, so O(len(a) * len(b)) is fine.
    prev = list(range(len(b) + 1))
    for i in range(len(a)):
        cur = [i + 1]
        for j in range(len(b)):
            cur.append(min(prev[j + 1] + 1, cur[j] + 1, prev[j] + (a[i] != b[j])))
        prev = cur
    return prev[-1]


def _closest(name, known):
    best, best_d = None, 3  # suggest only within 2 edits
    for k in sorted(known):
        d = _distance(name, k)
        if d < best_d:
            best, best_d = k, d
    return best


def _unknown_section(name, line):
    msg = "unknown section"
    near = _closest(name, SCHEMA)
    if near:
        msg += '; did you mean "%s"?' % near
    raise ConfigError(name, msg + " (known: %s)" % ", ".join(sorted(SCHEMA)), line)


def _unknown_key(section, key, line):
    msg = "unknown key"
    for other in sorted(SCHEMA):  # right key, wrong section: [broker] dir = ...
        if other != section and key in SCHEMA[other]:
            msg += '; did you mean "%s.%s"?' % (other, key)
            break
    else:
        near = _closest(key, SCHEMA[section])
        if near:
            msg += '; did you mean "%s"?' % near
        else:
            msg += " in [%s] (known: %s)" % (section, ", ".join(sorted(SCHEMA[section])))
    raise ConfigError(section + "." + key, msg, line)


def _check_profile(profile):
    if profile not in PROFILES:
        raise ConfigError("profile", "must be one of %s, got %s" % (_quoted(PROFILES), _show(profile)))


def defaults(profile="gateway"):
    """A complete config holding the profile's defaults."""
    _check_profile(profile)
    col = 1 + PROFILES.index(profile)
    return {s: {k: spec[col] for k, spec in keys.items()} for s, keys in SCHEMA.items()}


def load(raw, profile="gateway", lines=None):
    """Validate a nested dict; return a complete config with defaults filled.

    lines: optional {"section.key": line, "section": line} for error messages.
    """
    cfg = defaults(profile)
    if raw is None:
        return cfg
    lines = lines or {}
    if not isinstance(raw, dict):
        raise ConfigError("config", "must be a table of sections, got %s" % _show(raw))
    if "tls" in raw and "tls" not in SCHEMA:  # (a board's config.json: above)
        from edge.config_tls import TLS

        SCHEMA["tls"] = TLS
        col = 1 + PROFILES.index(profile)
        cfg["tls"] = {k: spec[col] for k, spec in TLS.items()}
    for section in sorted(raw):  # sorted: the same first error on both runtimes
        values = raw[section]
        _extra(cfg, section, profile)
        if section not in SCHEMA:
            _unknown_section(section, lines.get(section, 0))
        if not isinstance(values, dict):
            raise ConfigError(section, "must be a table ([%s]), got %s" % (section, _show(values)),
                              lines.get(section, 0))
        keys = SCHEMA[section]
        for key in sorted(values):
            name = section + "." + key
            if key not in keys:
                _unknown_key(section, key, lines.get(name, 0))
            v, msg = _problem(keys[key], values[key], profile, False)
            if msg:
                raise ConfigError(name, msg, lines.get(name, 0))
            cfg[section][key] = v
    return cfg


def override(cfg, section, key, value, profile="gateway"):
    """Set cfg[section][key] = value after validating it; return cfg.

    For command-line flags: a str value for an int or bool key is parsed
    ("8883", "false"), so "--port abc" fails like a bad file value does.
    """
    _check_profile(profile)
    _extra(cfg, section, profile)
    if section not in SCHEMA:
        _unknown_section(section, 0)
    if key not in SCHEMA[section]:
        _unknown_key(section, key, 0)
    v, msg = _problem(SCHEMA[section][key], value, profile, True)
    if msg:
        raise ConfigError(section + "." + key, msg)
    cfg.setdefault(section, {})[key] = v
    return cfg


def trailing_comma(text):
    # MicroPython's json takes [1,] and {"a": 1,}, which JSON (RFC 8259)
    # and CPython refuse: the line of the first such comma, else 0
    line, comma, instr, esc = 1, 0, False, False
    for c in text:  # bytes: small ints, nothing allocated
        if instr:
            if esc:
                esc = False
            elif c == 92:  # backslash
                esc = True
            elif c == 34:  # "
                instr = False
        elif c == 34:
            instr, comma = True, 0
        elif c == 44:  # ,
            comma = line
        elif c == 93 or c == 125:  # ] }
            if comma:
                return comma
        elif c not in (32, 9, 13, 10):
            comma = 0
        if c == 10:
            line += 1
    return 0


def loads_json(text, profile="board", name="config.json"):
    """Parse and validate a board's config.json text; errors name the file."""
    return load(parse_json(text, name), profile)


def read_json(path):
    """The JSON config file at path as a dict, not yet checked (load() does
    that); errors name the file."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, "cannot read JSON config: %s" % e)
    return parse_json(text, path)


def parse_json(text, name):
    import json  # lazy: only boards read JSON

    if type(text) is str:
        text = text.encode()
    line = trailing_comma(text)
    if line:
        raise ConfigError(name, "trailing comma, not JSON", line)
    try:
        return json.loads(text)
    except ValueError as e:  # MicroPython raises ValueError("syntax error in JSON")
        raise ConfigError(name, "invalid JSON: %s" % e)


# ---- a board's command line (edge/__main__.py; argv by hand: no argparse)
_FLAGS = {  # `micropython -m edge` flag -> (section, key, type)
    "--bind": ("broker", "bind", str),
    "--port": ("broker", "port", int),
    "--coap-port": ("coap", "port", int),
    "--upstream": ("upstream", "url", str),
    "--edge-id": ("upstream", "edge_id", str),
    "--data": ("store", "dir", str),
    "--persistence": ("store", "persistence", str),
    "--log-level": ("log", "level", str),
}


DEFAULT_CONFIG = "config.json"


def from_argv(argv):
    """The board's config from `micropython -m edge`'s arguments: --config
    FILE (else ./config.json if there is one), then the flags over it."""
    import os

    path = None
    overrides = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if i + 1 >= len(argv):
            raise ConfigError(a, "missing value")
        v = argv[i + 1]
        i += 2
        if a == "--config":
            path = v
        elif a in _FLAGS:
            sec, key, conv = _FLAGS[a]
            try:
                overrides.append((sec, key, conv(v)))
            except ValueError:
                raise ConfigError(a, "bad value %r" % v)
        else:
            raise ConfigError(a, "unknown option (use --config, --bind, --port, --coap-port, --upstream, --edge-id, --data, --persistence, --log-level)")
    if path is None:
        try:
            os.stat(DEFAULT_CONFIG)
            path = DEFAULT_CONFIG
        except OSError:
            pass  # none: the defaults
    raw = read_json(path) if path else {}
    try:
        cfg = load(raw, "board")
    except ConfigError as e:  # (the defaults are valid: a file's value)
        raise ConfigError(path, str(e))  # which file, config.json may be implicit
    for sec, key, v in overrides:
        override(cfg, sec, key, v, "board")
    return cfg
