# `micropython -m edge [--config FILE.json] [--bind ADDR] [--port N]
#  [--data DIR] [--log-level L]`: the same broker on a board or the unix
# port (tools/board.py runs it the way a board does). argv is parsed by hand:
# MicroPython has no argparse.
import sys

from edge.errors import ConfigError

_FLAGS = {
    "--bind": ("broker", "bind", str),
    "--port": ("broker", "port", int),
    "--data": ("store", "dir", str),
    "--log-level": ("log", "level", str),
}


def load_config(argv):
    import json
    from edge import config

    raw = {}
    overrides = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if i + 1 >= len(argv):
            raise ConfigError(a, "missing value")
        v = argv[i + 1]
        i += 2
        if a == "--config":
            try:
                with open(v) as f:
                    raw = json.loads(f.read())
            except (OSError, ValueError) as e:
                raise ConfigError(v, "cannot read JSON config: %s" % e)
        elif a in _FLAGS:
            sec, key, conv = _FLAGS[a]
            try:
                overrides.append((sec, key, conv(v)))
            except ValueError:
                raise ConfigError(a, "bad value %r" % v)
        else:
            raise ConfigError(a, "unknown option (use --config, --bind, --port, --data, --log-level)")
    cfg = config.load(raw, "board")
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
