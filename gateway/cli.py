# `edgebroker` command line (console script gateway.cli:main).
# Config order: schema defaults < --config file < flags.

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from edge import VERSION
from edge import config as schema
from edge.errors import ConfigError
from gateway.config import load_file

PROG = "edgebroker"

# log.level (schema enum) -> logging level; the runtime logs with these ints.
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO,
           "warning": logging.WARNING, "error": logging.ERROR}

# flag -> (section, key, metavar, help). Flags override the file
# (docs/design.md "Configuration"); adding one (--upstream) is a row here.
RUN_FLAGS = (
    ("--bind", "broker", "bind", "ADDR", "address to listen on"),
    ("--port", "broker", "port", "PORT", "MQTT port (0 = any free port)"),
    ("--coap-port", "coap", "port", "PORT", "CoAP port, UDP (0 = any free port)"),
    ("--upstream", "upstream", "url", "URL", "uplink to RabbitMQ: amqp://user:pass@host:5672/vhost or stomp://..."),
    ("--edge-id", "upstream", "edge_id", "ID", "this edge's id upstream"),
    ("--data", "store", "dir", "DIR", "data directory"),
    ("--log-level", "log", "level", "LEVEL", "/".join(_LEVELS)),
)


def _parser():
    p = argparse.ArgumentParser(prog=PROG, description="A memory-frugal MQTT broker.")
    p.add_argument("--version", action="version", version="%s %s" % (PROG, VERSION))
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Later: deploy, fleet (each a subparser + a _cmd_<name> function).
    run = sub.add_parser("run", help="run the broker in the foreground")
    run.add_argument("-c", "--config", metavar="FILE", help="TOML config file")
    for flag, section, key, metavar, text in RUN_FLAGS:
        run.add_argument(flag, metavar=metavar, help="%s [%s.%s]" % (text, section, key))
    run.set_defaults(func=_cmd_run)
    # Everything after `bench` goes to tools.bench's own parser (--help too).
    bench = sub.add_parser("bench", add_help=False, prefix_chars="\0",
                           help="benchmark against mosquitto and amqtt (python -m tools.bench)")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    from gateway import passwd

    passwd.add_parser(sub, _cmd_passwd)
    return p


def build_config(args):
    """defaults < file < flags; raises ConfigError."""
    cfg = load_file(args.config) if args.config else schema.load({})
    for flag, section, key, _, _ in RUN_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            try:
                schema.override(cfg, section, key, value)
            except ConfigError as e:
                raise ConfigError(flag, str(e)) from None
    return cfg


def _setup_logging(level_name):
    """A stderr logger for the run; returns log(level_int, msg) for the runtime."""
    logger = logging.getLogger(PROG)
    for h in list(logger.handlers):  # main() may run more than once (tests)
        if getattr(h, "_edgebroker", False):
            logger.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h._edgebroker = True
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(h)
    logger.setLevel(_LEVELS[level_name])
    logger.propagate = False

    def log(level, msg):
        # The runtime passes finished strings: no %-args, so a "%" in msg is safe.
        logger.log(level, "%s", msg)

    return log


def _on_sigterm(signum, frame):
    # Same path as Ctrl-C: unwinds run() (asyncio.run cancels its tasks).
    raise KeyboardInterrupt


def _cmd_run(args):
    cfg = build_config(args)
    # Imported here: `edgebroker --help` must not need the runtime.
    runtime = importlib.import_module("edge.runtime.main")
    log = _setup_logging(cfg["log"]["level"])
    b = cfg["broker"]
    log(logging.INFO, "%s %s starting on %s:%d (config: %s)"
        % (PROG, VERSION, b["bind"], b["port"], args.config or "defaults"))
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        runtime.run(cfg, log)  # blocks until stopped
    except KeyboardInterrupt:
        pass
    except OSError as e:  # e.g. address in use: a message, not a traceback
        log(logging.ERROR, "%s" % e)
        return 1
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    log(logging.INFO, "stopped")
    return 0


def _cmd_passwd(args):
    from gateway import passwd

    return passwd.run(args, PROG)


def _cmd_bench(args):
    # The harness is a tool of the source checkout, not installed with the
    # broker (pyproject.toml): found next to gateway/ when this runs from one
    # (an editable install, `python -m gateway`), else a message.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, "tools", "bench", "__main__.py")):
        print("%s: bench runs from a source checkout (python -m tools.bench there); "
              "this install has no tools/" % PROG, file=sys.stderr)
        return 1
    if root not in sys.path:
        sys.path.insert(0, root)
    bench = importlib.import_module("tools.bench.__main__")
    return bench.main(args.args)


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
        return args.func(args)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except ConfigError as e:
        print("%s: config error: %s" % (PROG, e), file=sys.stderr)
        return 2
