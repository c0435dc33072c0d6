# `micropython -m edge [--config FILE.json] [--bind ADDR] [--port N]
#  [--data DIR] [--log-level L]`: the same broker on a board or the unix
# port (tools/board.py runs it the way a board does). Without --config,
# config.json in the working directory is read if there is one (a board's
# file next to its boot.py). argv is parsed by hand: MicroPython has no
# argparse.
import os
import sys

from edge.errors import ConfigError

_FLAGS = {
    "--bind": ("broker", "bind", str),
    "--port": ("broker", "port", int),
    "--data": ("store", "dir", str),
    "--log-level": ("log", "level", str),
}


DEFAULT_CONFIG = "config.json"


def _trailing_comma(text):
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


def _read_json(path):
    import json

    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, "cannot read JSON config: %s" % e)
    line = _trailing_comma(text)
    if line:
        raise ConfigError(path, "trailing comma, not JSON", line)
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError(path, "not JSON: %s" % e)


def load_config(argv):
    from edge import config

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
            raise ConfigError(a, "unknown option (use --config, --bind, --port, --data, --log-level)")
    if path is None:
        try:
            os.stat(DEFAULT_CONFIG)
            path = DEFAULT_CONFIG
        except OSError:
            pass  # none: the defaults
    raw = _read_json(path) if path else {}
    try:
        cfg = config.load(raw, "board")
    except ConfigError as e:  # (the defaults are valid: a file's value)
        raise ConfigError(path, str(e))  # which file, config.json may be implicit
    for sec, key, v in overrides:
        config.override(cfg, sec, key, v, "board")
    return cfg


def main(argv):
    # The broker's modules (and the runtime's read buffer) live for good,
    # the config module and the JSON text only for the boot: import the
    # permanent ones first so they pack the bottom of the heap, and the boot
    # garbage, once freed, joins the free space above instead of leaving
    # holes between them (a board's heap has no room for fragmentation).
    from edge.runtime.main import run

    cfg = load_config(argv)
    # The schema tables are only needed at boot: give their heap back.
    sys.modules.pop("edge.config", None)
    import edge

    if "config" in edge.__dict__:
        del edge.config
    run(cfg)


def start(argv):
    """Run the broker; a bad setting exits 2 with the key named."""
    try:
        main(argv)
    except ConfigError as e:
        print("edgebroker: config error:", e)
        sys.exit(2)


# Importing this module (a board's boot, tools/board.py, the import checks)
# must not start the broker; `micropython -m edge` runs it as __main__.
if __name__ == "__main__":
    start(sys.argv[1:])
