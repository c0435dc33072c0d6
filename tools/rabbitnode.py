# A private RabbitMQ node on free loopback ports (the uplink's tests,
# tests/integration/rabbit.py, and its benchmark, tools/bench/uplink.py;
# issue #18), and for trying the uplink by hand (the README's tour), until
# Ctrl-C:
#
#     python -m tools.rabbitnode [--amqp-port 5672] [--stomp-port 61613] [--dir DIR]
#
# The node is Debian's rabbitmq-server (`make deps`), run directly from
# /usr/lib/rabbitmq/bin (the /usr/sbin wrapper switches user) with every path
# in a directory of the caller's and its own free ports: AMQP 0-9-1, the STOMP plugin
# and the MQTT plugin (for side-by-side checks against the plugin's own
# mapping, and mosquitto's bridge in the benchmark), Erlang distribution,
# and a private epmd that we start ourselves so that we hold its PID. stop():
# `rabbitmqctl stop`, wait for the server's process, then the process
# group the server started in gets SIGTERM and SIGKILL if anything of it is
# left, then our epmd. Every step has a timeout.
import os
import shutil
import signal
import socket
import subprocess
import time

from tools.ports import free_ports

SERVER = os.environ.get("EDGE_TEST_RABBITMQ", "/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = os.path.join(os.path.dirname(SERVER), "rabbitmqctl")
START_DEADLINE = 90.0
STOP_DEADLINE = 30.0




def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _kill_group(proc, grace):
    """SIGTERM then SIGKILL the process group proc leads (start_new_session),
    waiting for proc itself."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; the group may still hold children
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class RabbitNode:
    user = "guest"   # RabbitMQ's default user, allowed over loopback
    password = "guest"
    vhost = "/"
    host = "127.0.0.1"

    def __init__(self, base, amqp_port=0, stomp_port=0, tls=None):
        self.base = base
        (self.amqp_port, self.stomp_port, self.mqtt_port, self.dist_port,
         self.epmd_port, self.amqps_port, self.stomps_port) = free_ports(7)
        # TLS listeners too (amqps://, stomp+ssl://; docs/uplink.md "TLS"):
        # tls = {"cacertfile", "certfile", "keyfile"} (PEM files the caller
        # made), and "peer": True to require a client certificate signed by
        # that CA (mutual TLS)
        self.tls = tls
        # fixed ports where asked (the README's tour: RabbitMQ's own 5672, 61613)
        self.amqp_port = amqp_port or self.amqp_port
        self.stomp_port = stomp_port or self.stomp_port
        self.node = "edge%d@localhost" % self.amqp_port
        self.log = os.path.join(base, "server.out")
        self.proc = None
        self.epmd = None
        self.started_in = None  # seconds from launch to all listeners up
        os.makedirs(os.path.join(base, "home"), exist_ok=True)
        conf = os.path.join(base, "rabbitmq.conf")
        with open(conf, "w") as f:
            f.write("listeners.tcp.1 = 127.0.0.1:%d\n" % self.amqp_port)
            f.write("stomp.listeners.tcp.1 = 127.0.0.1:%d\n" % self.stomp_port)
            f.write("mqtt.listeners.tcp.1 = 127.0.0.1:%d\n" % self.mqtt_port)
            # a test machine's disk may be fuller than the default 50 MB
            # alarm allows: an alarm would block every publisher
            f.write("disk_free_limit.absolute = 1MB\n")
            if tls:
                f.write("listeners.ssl.1 = 127.0.0.1:%d\n" % self.amqps_port)
                f.write("stomp.listeners.ssl.1 = 127.0.0.1:%d\n" % self.stomps_port)
                for k in ("cacertfile", "certfile", "keyfile"):
                    f.write("ssl_options.%s = %s\n" % (k, tls[k]))
                peer = tls.get("peer")
                f.write("ssl_options.verify = %s\n" % ("verify_peer" if peer else "verify_none"))
                f.write("ssl_options.fail_if_no_peer_cert = %s\n" % ("true" if peer else "false"))
                f.write("ssl_options.versions.1 = tlsv1.3\nssl_options.versions.2 = tlsv1.2\n")
        plugins = os.path.join(base, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[rabbitmq_stomp,rabbitmq_mqtt].\n")
        with open(os.path.join(base, "rabbitmq-env.conf"), "w") as f:
            f.write("# empty: nothing from /etc/rabbitmq/rabbitmq-env.conf\n")
        self.env = dict(
            os.environ,
            HOME=os.path.join(base, "home"),  # the Erlang cookie lives here
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_CONFIG_FILE=conf,
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(base, "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=os.path.join(base, "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
            RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(base, "log"),
            RABBITMQ_PID_FILE=os.path.join(base, "rabbit.pid"),
            RABBITMQ_LOGS="-",  # the log on stdout, into self.log
        )

    def start(self):
        t0 = time.monotonic()
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        if self.epmd is None or self.epmd.poll() is not None:
            # in the foreground (no -daemon): its PID is ours to stop (a
            # restart after kill() finds it still running)
            self.epmd = subprocess.Popen(
                [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [SERVER], env=self.env, cwd=self.base, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + START_DEADLINE
        ports = (self.amqp_port, self.stomp_port, self.mqtt_port)
        if self.tls:
            ports += (self.amqps_port, self.stomps_port)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("rabbitmq-server exited with %s:\n%s" % (self.proc.returncode, self.tail()))
            if all(_port_open(p) for p in ports):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("rabbitmq-server not listening on %s after %.0f s:\n%s"
                                   % (ports, START_DEADLINE, self.tail()))
            time.sleep(0.2)
        rc, out = self.ctl("await_startup", timeout=max(5.0, deadline - time.monotonic()))
        if rc != 0:
            raise RuntimeError("rabbitmqctl await_startup: %s\n%s\n%s" % (rc, out, self.tail()))
        self.started_in = time.monotonic() - t0

    def ctl(self, *args, timeout=30.0):
        """rabbitmqctl -n NODE ARGS -> (returncode, output)."""
        try:
            p = subprocess.run([CTL, "-n", self.node] + list(args), env=self.env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return -1, "timed out after %ss: %s" % (timeout, e.output)
        return p.returncode, p.stdout

    def tail(self, n=4000):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def freeze(self):
        """SIGSTOP the node: its sockets stay open, it answers nothing."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self):
        """SIGCONT the node after freeze(): it reads its sockets again."""
        os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self):
        """SIGKILL the node (a crash: its process group, not our epmd);
        start() brings it back on the same ports and data."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(STOP_DEADLINE)
        _kill_group(self.proc, 1.0)  # (anything of the group left)

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.ctl("stop", timeout=STOP_DEADLINE)
                try:
                    self.proc.wait(timeout=STOP_DEADLINE)
                except subprocess.TimeoutExpired:
                    pass
            # whatever of the node is left (beam, erl_child_setup, inet_gethost)
            _kill_group(self.proc, 5.0)
            self.proc = None
        if self.epmd is not None:
            _kill_group(self.epmd, 5.0)
            self.epmd = None




def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m tools.rabbitnode",
                                 description="a private RabbitMQ node on loopback until Ctrl-C")
    ap.add_argument("--amqp-port", type=int, default=5672)
    ap.add_argument("--stomp-port", type=int, default=61613)
    ap.add_argument("--dir", help="its data and log (default: a new temporary directory)")
    a = ap.parse_args(argv)
    base = a.dir or tempfile.mkdtemp(prefix="rabbitnode-")
    node = RabbitNode(base, a.amqp_port, a.stomp_port)
    try:
        node.start()
        print("RabbitMQ up in %.0f s: amqp://guest:guest@127.0.0.1:%d/  stomp://guest:guest@127.0.0.1:%d/"
              "  (log: %s; Ctrl-C stops it)" % (node.started_in, node.amqp_port, node.stomp_port, node.log),
              flush=True)
        signal.signal(signal.SIGTERM, _interrupt)  # stopped as by Ctrl-C
        while node.proc.poll() is None:
            time.sleep(0.5)  # until Ctrl-C, or the node dies
        print("rabbitmq-server exited with %s:\n%s" % (node.proc.returncode, node.tail()))
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # a second Ctrl-C or SIGTERM must not cut the stop short: the node
        # would outlive us, holding its ports
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        node.stop()


if __name__ == "__main__":
    raise SystemExit(main())
