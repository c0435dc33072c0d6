# Broker fixtures for the loopback integration tests.
#
# Contract with the broker (see the lead's brief):
#   CPython:     <sys.executable> -m gateway run --config CFG.toml --bind 127.0.0.1
#                    --port P --data DIR --log-level debug          (cwd = repo root)
#   MicroPython: <sys.executable> -m tools.board --heap 64k -- --config CFG.json
#                    --bind 127.0.0.1 --port P --data DIR           (cwd = repo root)
#                (tools/board.py runs `micropython -m edge` the way a board does:
#                bytecode in a ROMFS image outside the GC heap). EDGE_TEST_HEAPSIZE
#                changes the heap (e.g. 128k to debug functional failures).
#   Reference:   EDGE_TEST_BROKER=mosquitto runs /usr/sbin/mosquitto -c CONF instead,
#                to validate the tests themselves; the runtime id is then "mosquitto".
#
# Fixtures:
#   runtime        module-scoped parameter: "cpython", "micropython" (or "mosquitto")
#   broker         a fresh broker for one test
#   shared_broker  one broker per module and runtime (restarted if a test killed it)
#   broker_factory start extra brokers with their own config inside a test
#   mqtt_client    factory of connected paho clients, all torn down after the test
# Config: a module-level dict BROKER_CONFIG, overridden per test by
# @pytest.mark.broker_config(key=value, ...).
#
# Markers:
#   edge_only(reason)        edgebroker promise that mosquitto does not keep: skipped
#                            in reference mode
#   micropython_only(reason) runs under the MicroPython runtime only (and in reference
#                            mode, to validate the test logic)
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.ports import free_port, free_udp_port  # noqa: F401  (the tests import them from here)

from .clients import Client
from .rabbit import rabbit  # noqa: F401  (session fixture: one RabbitMQ node for test_15 and test_16)

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = os.environ.get("EDGE_TEST_BROKER", "").strip().lower() == "mosquitto"
RUNTIMES = ["mosquitto"] if REFERENCE else ["cpython", "micropython"]
MOSQUITTO = os.environ.get("EDGE_TEST_MOSQUITTO", "/usr/sbin/mosquitto")
HEAPSIZE = os.environ.get("EDGE_TEST_HEAPSIZE", "64k")
# The smallest MicroPython heap the store opens in (edge/runtime/main.py
# _STORE_HEAP free at start; docs/persistence.md "On a board")
STORE_HEAP_KIB = 96
START_DEADLINE = 15.0
STOP_GRACE = 5.0

# Config for every broker the suite starts, unless a module or test overrides it.
# Everything else is the broker's own default for its runtime (the "board" profile
# under MicroPython: e.g. 8 connections, 2 KB packets, 32 queued messages).
DEFAULT_CONFIG = {
    "sys_interval": 1,
}

# Latest acceptable close / will after a keepalive of 1 s (1.5 s by the spec, plus a
# broker that checks once a second). mosquitto 2.0.11 takes ~5.4 s: it only checks
# keepalives every few seconds, so reference mode is looser.
KEEPALIVE_1S_LATEST = 8.0 if REFERENCE else 4.0

# Figures collected by tests (test_06 heap figures), printed in the terminal summary.
REPORT = []


def heap_kib(heap):
    """A tools.board --heap value ("64k", "1m", "65536") in KiB."""
    h = str(heap).strip().lower()
    if h.endswith("k"):
        return int(h[:-1])
    if h.endswith("m"):
        return int(h[:-1]) * 1024
    return int(h) // 1024


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


class Broker:
    host = "127.0.0.1"

    def __init__(self, runtime, workdir, config):
        self.runtime = runtime
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = dict(config)
        self.port = None
        self.coap_port = None
        self.proc = None
        self.log_path = self.workdir / "broker.log"
        self._logf = None
        self.starts = 0

    # -- command lines --
    def _command(self):
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        common = ["--bind", self.host, "--port", str(self.port), "--data", str(data),
                  "--coap-port", str(self.coap_port)]
        sections = self._sections()
        if self.runtime == "cpython":
            cfg = self.workdir / "broker.toml"
            lines = []
            for name, values in sections.items():
                lines += ["[%s]" % name] + ["%s = %s" % (k, _toml_value(v)) for k, v in values.items()]
            cfg.write_text("\n".join(lines) + "\n")
            return [sys.executable, "-m", "gateway", "run", "--config", str(cfg)] + common + \
                ["--log-level", "debug"]
        if self.runtime == "micropython":
            heap = self.config.get("board_heap", HEAPSIZE)
            if "store.persistence" not in self.config and heap_kib(heap) < STORE_HEAP_KIB:
                # The store does not fit this heap, and with persistence on
                # the broker would refuse to start (docs/persistence.md
                # "When the store cannot keep it"): these suites test the
                # rest without it, as a board configured so does.
                sections.setdefault("store", {})["persistence"] = False
            cfg = self.workdir / "broker.json"
            cfg.write_text(json.dumps(sections))
            # As a board runs it: bytecode in a ROMFS image outside the GC
            # heap (tools/board.py), the heap limited to HEAPSIZE.
            return [sys.executable, "-m", "tools.board", "--heap", heap, "--",
                    "--config", str(cfg)] + common
        if self.runtime == "mosquitto":
            if not os.path.exists(MOSQUITTO):
                pytest.skip("reference broker %s not installed" % MOSQUITTO)
            cfg = self.workdir / "mosquitto.conf"
            lines = [
                "listener %d %s" % (self.port, self.host),
                "allow_anonymous true",
                "persistence false",
                "sys_interval %d" % self.config.get("sys_interval", 10),
                # mosquitto 2.0.11 drops QoS 1 under fan-in at its default of 1000:
                # raise it unless the test asked for a specific bound
                "max_queued_messages %d" % self.config.get("max_queued_messages", 100000),
                "max_inflight_messages %d" % self.config.get("max_inflight", 20),
                "log_type all",
                # its stdout is block-buffered when redirected: log to our file instead
                "log_dest file %s" % self.log_path,
            ]
            if self.config.get("max_packet_size"):
                lines.append("max_packet_size %d" % self.config["max_packet_size"])
            if self.config.get("max_connections"):
                lines.append("max_connections %d" % self.config["max_connections"])
            cfg.write_text("\n".join(lines) + "\n")
            return [MOSQUITTO, "-c", str(cfg)]
        raise ValueError(self.runtime)

    def _sections(self):
        # config keys are the [broker] section's; "coap.port" names another
        out = {"broker": {}}
        for k, v in self.config.items():
            if k == "board_heap":
                continue  # the MicroPython heap (tools/board.py --heap), not a broker key
            sec, _, key = k.rpartition(".")
            out.setdefault(sec or "broker", {})[key] = v
        return out

    # -- lifecycle --
    def start(self):
        self.port = free_port()
        self.coap_port = free_udp_port()  # when [coap] is enabled (test_14_coap.py)
        cmd = self._command()
        self._logf = open(self.log_path, "ab")
        self._logf.write(("\n=== start #%d: %s\n" % (self.starts + 1, " ".join(cmd))).encode())
        self._logf.flush()
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT)
        self.starts += 1
        self.started_at = time.monotonic()
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("broker exited with %s before listening on %d:\n%s"
                                   % (self.proc.returncode, self.port, self.log_tail()))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("broker not listening on %d after %.0fs:\n%s"
                                       % (self.port, START_DEADLINE, self.log_tail()))
                time.sleep(0.02)    # polling for the port, not waiting for an event
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM, wait STOP_GRACE, SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                rc = self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait(STOP_GRACE)
        if self._logf:
            self._logf.close()
            self._logf = None
        return rc

    def log_text(self):
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_coap(self, timeout=START_DEADLINE):
        """Wait until the broker logged its CoAP listener (it starts right
        after the MQTT one the start waited for); returns the UDP port."""
        deadline = time.monotonic() + timeout
        while "/udp (CoAP)" not in self.log_text():
            self.assert_alive()
            assert time.monotonic() < deadline, "no CoAP listener after %.0fs:\n%s" % (
                timeout, self.log_tail())
            time.sleep(0.01)  # polling the log, not waiting blindly
        return self.coap_port

    def closes(self, client_id):
        """How many times the broker logged closing client_id's connection:
        edgebroker's "client ID closed: why", mosquitto's "Client ID
        disconnected"."""
        text = self.log_text()
        return (text.count("client %s closed:" % client_id)
                + text.count("Client %s disconnected" % client_id))

    def log_tail(self, lines=150):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def assert_alive(self):
        assert self.alive(), "broker (%s) died with exit code %s:\n%s" % (
            self.runtime, self.proc.returncode, self.log_tail())

    def __repr__(self):
        return "Broker(%s, port=%s)" % (self.runtime, self.port)


def _config_for(request, extra=None):
    cfg = dict(DEFAULT_CONFIG)
    cfg.update(getattr(request.module, "BROKER_CONFIG", {}))
    if request.scope == "function":
        m = request.node.get_closest_marker("broker_config")
        if m:
            cfg.update(m.kwargs)
    if extra:
        cfg.update(extra)
    return cfg


# -- pytest plumbing --------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "edge_only(reason): edgebroker-specific; skipped "
                            "against the mosquitto reference broker")
    config.addinivalue_line("markers", "micropython_only(reason): run under the "
                            "MicroPython runtime (and the reference broker) only")
    config.addinivalue_line("markers", "broker_config(**kw): [broker] config for this test")


def pytest_runtest_setup(item):
    m = item.get_closest_marker("edge_only")
    if m and REFERENCE:
        pytest.skip("reference mode: " + (m.args[0] if m.args else "edgebroker-specific"))
    m = item.get_closest_marker("micropython_only")
    if m:
        rt = getattr(item, "callspec", None) and item.callspec.params.get("runtime")
        if rt == "cpython":
            pytest.skip(m.args[0] if m.args else "MicroPython runtime only")


def pytest_collection_modifyitems(items):
    # tests that run the broker under the unix port carry the project's `micropython`
    # marker, so `-m "not micropython"` deselects them
    for item in items:
        cs = getattr(item, "callspec", None)
        if cs is not None and cs.params.get("runtime") == "micropython":
            item.add_marker(pytest.mark.micropython)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        brokers = []
        for v in getattr(item, "funcargs", {}).values():
            if isinstance(v, Broker):
                brokers.append(v)
            elif isinstance(v, BrokerFactory):
                brokers.extend(v.brokers)
        seen = set()
        for b in brokers:
            if id(b) in seen:
                continue
            seen.add(id(b))
            state = "running" if b.alive() else "exited %s" % (b.proc and b.proc.returncode)
            rep.sections.append(("broker %s port %s (%s) log: %s" % (
                b.runtime, b.port, state, b.log_path), b.log_tail()))


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("edgebroker integration figures")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module", params=RUNTIMES)
def runtime(request):
    if request.param == "micropython":
        request.getfixturevalue("micropython_exe")  # skips where there is none
    return request.param


@pytest.fixture
def broker(runtime, request, tmp_path):
    b = Broker(runtime, tmp_path / "broker", _config_for(request))
    b.start()
    yield b
    b.stop()


class _Holder:
    def __init__(self, broker):
        self.broker = broker

    def ensure(self):
        if not self.broker.alive():
            self.broker.stop()
            self.broker.start()
        return self.broker


@pytest.fixture(scope="module")
def _module_broker(runtime, request, tmp_path_factory):
    b = Broker(runtime, tmp_path_factory.mktemp("shared-" + runtime), _config_for(request))
    b.start()
    yield _Holder(b)
    b.stop()


@pytest.fixture
def shared_broker(_module_broker):
    """One broker per module and runtime; if an earlier test killed it, it is restarted
    (that earlier test has failed on its own liveness check)."""
    return _module_broker.ensure()


class BrokerFactory:
    def __init__(self, runtime, tmp_path, request):
        self.runtime, self.tmp_path, self.request = runtime, tmp_path, request
        self.brokers = []

    def __call__(self, **config):
        b = Broker(self.runtime, self.tmp_path / ("broker%d" % len(self.brokers)),
                   _config_for(self.request, config))
        self.brokers.append(b)
        return b.start()

    def stop_all(self):
        for b in self.brokers:
            b.stop()


@pytest.fixture
def broker_factory(runtime, request, tmp_path):
    f = BrokerFactory(runtime, tmp_path, request)
    yield f
    f.stop_all()


@pytest.fixture
def mqtt_client():
    """mqtt_client(broker, client_id=None, clean_session=True, keepalive=30, will=None,
    connect=True) -> clients.Client; every client is disconnected at teardown."""
    made = []

    def make(broker, connect=True, **kw):
        c = Client(broker.host, broker.port, **kw)
        c.broker = broker
        made.append(c)
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        try:
            if c._loop and c.c.is_connected():
                c.disconnect(3)
            else:
                c.stop()
        except Exception:
            c.stop()


@pytest.fixture
def report():
    """report(line): a figure printed in the terminal summary (independent of -s)."""
    return REPORT.append
