# `edgebroker` command line (console script gateway.cli:main).
# Config order: schema defaults < --config file < flags.

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time

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
    ("--persistence", "store", "persistence", "MODE", 'true, false or "best-effort"'),
    ("--log-level", "log", "level", "LEVEL", "/".join(_LEVELS)),
)


def _parser():
    p = argparse.ArgumentParser(prog=PROG, description="A memory-frugal MQTT broker.")
    p.add_argument("--version", action="version", version="%s %s" % (PROG, VERSION))
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run the broker in the foreground")
    run.add_argument("-c", "--config", metavar="FILE", help="TOML config file")
    for flag, section, key, metavar, text in RUN_FLAGS:
        run.add_argument(flag, metavar=metavar, help="%s [%s.%s]" % (text, section, key))
    # A flag only, not a config key: how this process writes its log
    # (a systemd unit's ExecStart line says it), nothing a board has
    run.add_argument("--log-format", choices=("text", "json"), default="text",
                     help="text lines, or one JSON object a line (for journald or a log shipper)")
    run.set_defaults(func=_cmd_run)
    check = sub.add_parser("check", help="validate a config file and exit (0: valid, 2: the error)")
    check.add_argument("-c", "--config", metavar="FILE", required=True, help="TOML config file")
    check.set_defaults(func=_cmd_check)
    deploy = importlib.import_module("gateway.deploy")
    deploy.add_parser(sub)
    importlib.import_module("gateway.bundle").add_parser(sub)
    # Everything after `bench` goes to tools.bench's own parser (--help too).
    bench = sub.add_parser("bench", add_help=False, prefix_chars="\0",
                           help="benchmark against mosquitto and amqtt (python -m tools.bench)")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    fleet = sub.add_parser("fleet", help="simulate a sensor fleet against a broker through "
                           "flaky links; report delivery (docs/fleet.md)")
    importlib.import_module("gateway.fleet.options").add_arguments(fleet)
    fleet.set_defaults(func=_cmd_fleet)
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


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, message."""

    def format(self, record):
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return json.dumps({"time": "%s.%03dZ" % (t, record.msecs), "level": record.levelname.lower(),
                           "logger": record.name, "msg": record.getMessage()})


def _setup_logging(level_name, fmt="text"):
    """A stderr logger for the run; returns log(level_int, msg) for the runtime."""
    logger = logging.getLogger(PROG)
    for h in list(logger.handlers):  # main() may run more than once (tests)
        if getattr(h, "_edgebroker", False):
            logger.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h._edgebroker = True
    h.setFormatter(_JsonFormatter() if fmt == "json" else
                   logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
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


def _cmd_check(args):
    cfg = load_file(args.config)  # ConfigError: main() prints it, exit 2
    if cfg["websocket"]["enabled"] or cfg["http"]["enabled"]:
        from gateway.serve import check

        check(cfg)  # what the schema cannot see: the path's form, wsproto
    from edge.runtime.tls_cpython import start

    start(cfg, None)  # [tls]: its files readable and usable (docs/security.md "TLS")
    print("%s: OK" % args.config)
    return 0


def _on_sighup(log):
    # systemd's ExecReload (gateway/edgebroker.service) sends SIGHUP; its
    # default action would end the broker. With [auth] files set the
    # runtime replaces this handler with its reload of the password and ACL
    # files (edge/runtime/auth_cpython.py); the rest needs a restart.
    def handler(signum, frame):
        log(logging.WARNING, "SIGHUP: nothing to reload (no auth.password_file or auth.acl_file set); "
                             "restart to apply config changes")

    return handler


def _cmd_run(args):
    cfg = build_config(args)
    # Imported here: `edgebroker --help` must not need the runtime.
    runtime = importlib.import_module("edge.runtime.main")
    if cfg["websocket"]["enabled"] or cfg["http"]["enabled"]:
        runtime = importlib.import_module("gateway.serve")  # the runtime and the web listeners
    log = _setup_logging(cfg["log"]["level"], getattr(args, "log_format", "text"))
    b = cfg["broker"]
    log(logging.INFO, "%s %s starting on %s:%d (config: %s)"
        % (PROG, VERSION, b["bind"], b["port"], args.config or "defaults"))
    old = old_hup = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _on_sigterm)
        old_hup = signal.signal(signal.SIGHUP, _on_sighup(log))
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
            signal.signal(signal.SIGHUP, old_hup)
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


def _cmd_fleet(args):
    return importlib.import_module("gateway.fleet.run").main(args)


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
