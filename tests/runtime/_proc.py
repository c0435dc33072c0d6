# Broker processes for the runtime tests: started with --port 0 on either
# runtime, the port read from the "listening on" line they log, stopped by
# PID. (tests/integration/conftest.py picks a free port instead: its tests
# need the port before the start.)
import os
import re
import signal
import socket
import subprocess
import sys
import time

from tests.conftest import REPO_ROOT

_LISTENING = re.compile(r"listening on \S+:(\d+) ")
# MQTT 3.1.1 CONNECT, clean session, keepalive 60, client id "t"; its CONNACK
_CONNECT = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01t"
_CONNACK = b"\x20\x02\x00\x00"


def command(runtime, *args, heap=None):
    """The command line of a broker on this runtime, edge arguments after.
    A broker on any free MQTT port takes any free CoAP port too: a test never
    holds the well-known 5683. heap: the board's (tools/board.py --heap),
    64k unless given."""
    if "--port" in args and "--coap-port" not in args:
        args = args + ("--coap-port", "0")
    if runtime == "cpython":
        return [sys.executable, "-m", "gateway", "run"] + list(args)
    # as a board runs it (tools/board.py), the heap a board has: the store
    # does not fit it, and with persistence on the start would stop there
    # (docs/persistence.md "When the store cannot keep it"), so these tests
    # of the rest run without it unless they ask
    if "--persistence" not in args:
        args = args + ("--persistence", "false")
    return [sys.executable, "-m", "tools.board"] + (["--heap", heap] if heap else []) + ["--"] + list(args)


class Proc:
    """One process, its stdout and stderr in log_path."""

    def __init__(self, cmd, log_path, cwd=REPO_ROOT, env=None):
        self.log_path = str(log_path)
        with open(self.log_path, "wb") as f:
            self.p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                      stdout=f, stderr=subprocess.STDOUT)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_port(self, timeout=30):
        """The port of the "listening on" line, once logged."""
        deadline = time.monotonic() + timeout
        while True:
            m = _LISTENING.search(self.log())
            if m:
                return int(m.group(1))
            if self.p.poll() is not None:
                raise AssertionError("exited %s before listening:\n%s" % (self.p.returncode, self.log()))
            if time.monotonic() > deadline:
                raise AssertionError("not listening after %ss:\n%s" % (timeout, self.log()))
            time.sleep(0.05)  # polling the log, not waiting for an event

    def wait_exit(self, timeout=30):
        """The exit code, the log."""
        try:
            return self.p.wait(timeout), self.log()
        except subprocess.TimeoutExpired:
            raise AssertionError("still running after %ss:\n%s" % (timeout, self.log()))

    def stop(self, sig=signal.SIGTERM):
        """Signal the process by its PID; its exit code."""
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(10)
        return self.p.returncode


def mqtt_connect(port, host="127.0.0.1"):
    """An MQTT CONNECT on host:port; True if the broker accepted it."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(_CONNECT)
        got = b""
        while len(got) < len(_CONNACK):
            chunk = s.recv(16)
            if not chunk:
                break
            got += chunk
    return got == _CONNACK
