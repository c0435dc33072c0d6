"""Crash harness: SIGKILL the broker at random moments, restart it, and check
that acknowledged means durable (issue #4, docs/design.md "Delivery guarantees").

    python -m tools.crash [--runtime cpython|micropython] [--kills 100]

The broker runs as a subprocess on one data directory. Two publishers with
persistent sessions (clean session 0, raw sockets, so the harness sees the
exact moment each PUBACK / PUBREC arrives) send numbered QoS 1 and QoS 2
messages, at most WINDOW in flight each; after a restart they resend what
was not acknowledged (PUBLISH with DUP, or PUBREL once PUBREC came), as
MQTT 3.1.1 §4.4 asks. Two persistent paho-mqtt subscribers (clean session
0, one subscription each, made once at the start and never again) receive
them through every restart. A retained message is published once at the
start. At the end the harness checks:
  - every PUBACKed QoS 1 message reached each subscriber at least once,
  - every PUBRECed QoS 2 message reached each subscriber exactly once,
  - the subscriptions survived (the subscribers never subscribed again,
    and a last message after the last restart reaches both),
  - the retained message survived (a new client gets it),
and prints the totals: kills, sent, lost, duplicated. Exit 0 when none was
lost and no QoS 2 message was duplicated.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tools.ports import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
WINDOW = 8          # unacknowledged messages per publisher
TOPIC = "crash/q%d"
RETAINED = "crash/retained"
START_S = 20.0      # a restart must be listening within this
SETTLE_S = 20.0     # after the last restart: everything acked and delivered


# ---- the broker ----------------------------------------------------------------
def _heap_bytes(heap):
    """tools.board's --heap ("256k", "1m", "98304") in bytes."""
    h = heap.lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(h[-1:], 1)
    return int(h.rstrip("km")) * scale


class BrokerProc:
    def __init__(self, runtime, workdir, heap, store=None):
        self.runtime = runtime
        self.store = store or {}  # [store] settings (sync, persistence...)
        self.workdir = workdir
        self.data = os.path.join(workdir, "data")
        self.port = free_port(host=HOST)
        self.heap = heap
        self.proc = None
        self.log_path = os.path.join(workdir, "broker.log")
        self.starts = 0

    def _cmd(self):
        common = ["--bind", HOST, "--port", str(self.port), "--coap-port", "0", "--data", self.data]
        # The queue defaults (32 messages on a board, 1000 on a gateway)
        # would drop while a subscriber reconnects after a few quick kills:
        # a counted drop (the explicit policy), not a lost ack, and not what
        # this harness measures.
        queues = {"max_queued_messages": 100000, "max_queued_bytes": 16777216}
        if self.runtime != "cpython":
            # So would the board profile's memory budget (6 KB, sized for a
            # 64 KiB heap: docs/heap.md) at this harness's heap: a quarter
            # of the heap instead, the same counted policy further out
            queues["memory_budget_bytes"] = _heap_bytes(self.heap) // 4
        if self.runtime == "cpython":
            cfg = os.path.join(self.workdir, "broker.toml")
            with open(cfg, "w") as f:
                for name, sec in (("broker", queues), ("store", self.store)):
                    f.write("[%s]\n" % name + "".join("%s = %s\n" % (k, json.dumps(v)) for k, v in sec.items()))
            return [sys.executable, "-m", "gateway", "run", "--config", cfg] + common + ["--log-level", "info"]
        cfg = os.path.join(self.workdir, "broker.json")
        with open(cfg, "w") as f:
            json.dump({"broker": dict(queues, sys_interval=0), "store": self.store}, f)
        return [sys.executable, "-m", "tools.board", "--heap", self.heap, "--",
                "--config", cfg] + common

    def start(self):
        os.makedirs(self.data, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(b"\n=== start %d\n" % (self.starts + 1))
            log.flush()
            self.proc = subprocess.Popen(self._cmd(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("broker exited %s at start:\n%s" % (self.proc.returncode, self.tail()))
            try:
                socket.create_connection((HOST, self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("broker not listening after %.0f s:\n%s" % (START_S, self.tail()))

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


# ---- a raw 3.1.1 publisher -------------------------------------------------------
def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _packet(first, body):
    return bytes((first,)) + _varint(len(body)) + body


def _str(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


class RawPublisher(threading.Thread):
    """Publishes TOPIC % qos with payloads b"<qos>:<n>", clean session 0.
    acked: the numbers whose PUBACK (QoS 1) or PUBREC (QoS 2) came."""

    def __init__(self, port, qos, rate):
        super().__init__(daemon=True)
        self.port = port
        self.qos = qos
        self.rate = rate
        self.client_id = "crash-pub-q%d" % qos
        self.topic = TOPIC % qos
        self.pending = {}   # pid -> [n, phase]: "pub" (waiting PUBACK/PUBREC) or "rel"
        self.order = []     # pids in send order
        self.acked = set()
        self.sent = 0
        self.next_pid = 1
        self.stopping = threading.Event()
        self.sock = None
        self.buf = b""
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the harness, not lost in a thread
            self.error = e

    def _run(self):
        t0 = time.monotonic()
        while not (self.stopping.is_set() and not self.pending):
            if self.sock is None and not self._connect():
                time.sleep(0.05)
                continue
            try:
                while (not self.stopping.is_set() and len(self.pending) < WINDOW
                       and self.sent < (time.monotonic() - t0) * self.rate):
                    self._publish_new()
                self._read(0.05)
            except OSError:
                self._drop()

    def _connect(self):
        try:
            s = socket.create_connection((HOST, self.port), 1.0)
        except OSError:
            return False
        try:
            s.settimeout(2.0)
            body = _str("MQTT") + b"\x04\x00\x00\x00" + _str(self.client_id)  # clean 0, no keepalive
            s.sendall(_packet(0x10, body))
            self.sock = s
            self.buf = b""
            kind, body = self._next_packet(2.0)
            if kind != 2 or body[1] != 0:
                raise OSError("CONNACK %r" % (body,))
            # [MQTT-4.4.0-1] resend what is not acknowledged, in order
            for pid in list(self.order):
                n, phase = self.pending[pid]
                if phase == "pub":
                    s.sendall(self._publish_bytes(pid, n, True))
                else:
                    s.sendall(_packet(0x62, pid.to_bytes(2, "big")))
            return True
        except (OSError, TypeError):
            self._drop()
            return False

    def _drop(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def _publish_bytes(self, pid, n, dup):
        first = 0x30 | (self.qos << 1) | (0x08 if dup else 0)
        return _packet(first, _str(self.topic) + pid.to_bytes(2, "big") + b"%d:%d" % (self.qos, n))

    def _publish_new(self):
        pid = self.next_pid
        while pid in self.pending:
            pid = pid % 65535 + 1
        self.next_pid = pid % 65535 + 1
        n = self.sent
        self.sent += 1
        self.pending[pid] = [n, "pub"]
        self.order.append(pid)
        self.sock.sendall(self._publish_bytes(pid, n, False))

    def _next_packet(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2 and len(self.buf) >= 2 + self.buf[1]:
                n = 2 + self.buf[1]  # every packet to a publisher is short
                kind, body = self.buf[0] >> 4, self.buf[2:n]
                self.buf = self.buf[n:]
                return kind, body
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None
            self.sock.settimeout(left)
            try:
                got = self.sock.recv(4096)
            except socket.timeout:
                return None, None
            if not got:
                raise OSError("closed")
            self.buf += got

    def _read(self, timeout):
        kind, body = self._next_packet(timeout)
        while kind is not None:
            pid = int.from_bytes(body[:2], "big")
            e = self.pending.get(pid)
            if e is not None:
                if kind == 4 and self.qos == 1:      # PUBACK
                    self.acked.add(e[0])
                    self._done(pid)
                elif kind == 5 and self.qos == 2:    # PUBREC: the broker owns it now
                    self.acked.add(e[0])
                    e[1] = "rel"
                    self.sock.sendall(_packet(0x62, body[:2]))
                elif kind == 7 and e[1] == "rel":    # PUBCOMP
                    self._done(pid)
            kind, body = self._next_packet(0)

    def _done(self, pid):
        del self.pending[pid]
        self.order.remove(pid)


# ---- persistent paho subscribers ---------------------------------------------------
class Subscriber:
    def __init__(self, port, i):
        self.got = {1: {}, 2: {}}  # qos -> {n: times}
        self.retained = []
        self.final = threading.Event()
        self.lock = threading.Lock()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="crash-sub-%d" % i,
                             protocol=paho.MQTTv311, clean_session=False)
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.on_message = self._on_message
        self.subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.port = port

    def _on_message(self, c, u, m):
        if m.topic == RETAINED:
            return
        if m.payload == b"final":
            self.final.set()
            return
        qos, n = (int(x) for x in m.payload.split(b":"))
        with self.lock:
            d = self.got[qos]
            d[n] = d.get(n, 0) + 1

    def start(self):
        self.c.connect(HOST, self.port, keepalive=5)
        self.c.loop_start()
        self.c.subscribe("crash/#", 2)  # once: it must survive every restart
        if not self.subscribed.wait(10):
            raise RuntimeError("no SUBACK")

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def _retained_check(port):
    got = []
    ev = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="crash-check", protocol=paho.MQTTv311)

    def on_message(cl, u, m):
        got.append(m.payload)
        ev.set()

    c.on_message = on_message
    c.connect(HOST, port)
    c.loop_start()
    c.subscribe(RETAINED, 1)
    ev.wait(10)
    c.disconnect()
    c.loop_stop()
    return got


def _publish_once(port, topic, payload, retain):
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="crash-once", protocol=paho.MQTTv311)
    c.connect(HOST, port)
    c.loop_start()
    c.publish(topic, payload, 1, retain).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def _quiet(subs, idle):
    """Wait until no subscriber has received anything for idle seconds."""
    last = None
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        now = [sum(sum(d.values()) for d in s.got.values()) for s in subs]
        if now == last:
            return
        last = now
        time.sleep(idle)


# ---- the run -------------------------------------------------------------------------
def run(runtime="cpython", kills=10, heap="256k", seed=None, rate=200.0, min_s=0.3, max_s=1.5,
        workdir=None, out=print, store=None):
    """Run the harness; returns the totals as a dict (ok: True if nothing
    acknowledged was lost and no QoS 2 message was duplicated)."""
    rnd = random.Random(seed)
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="edge-crash-")
    broker = BrokerProc(runtime, workdir, heap, store)
    subs = [Subscriber(broker.port, i) for i in range(2)]
    pubs = [RawPublisher(broker.port, q, rate) for q in (1, 2)]
    mark = b"keep-%d" % rnd.randrange(1 << 30)
    t0 = time.monotonic()
    done = 0
    try:
        broker.start()
        for s in subs:
            s.start()
        _publish_once(broker.port, RETAINED, mark, True)
        for p in pubs:
            p.start()
        for k in range(kills):
            time.sleep(rnd.uniform(min_s, max_s))
            broker.kill()
            done += 1
            broker.start()
        time.sleep(rnd.uniform(min_s, max_s))
        for p in pubs:
            p.stopping.set()
        for p in pubs:
            p.join(SETTLE_S)
        _publish_once(broker.port, TOPIC % 1, b"final", False)
        for s in subs:
            s.final.wait(SETTLE_S)
        _quiet(subs, 1.0)  # QoS 2 deliveries complete on PUBREL, after it
        retained = _retained_check(broker.port)
    finally:
        for p in pubs:
            p.stopping.set()
        for s in subs:
            try:
                s.stop()
            except Exception:  # the broker may be gone: the figures still count
                pass
        broker.stop()
    res = {"runtime": runtime, "kills": done, "seconds": round(time.monotonic() - t0, 1),
           "retained_ok": retained == [mark], "subscriptions_ok": all(s.final.is_set() for s in subs),
           "errors": [repr(p.error) for p in pubs if p.error is not None]}
    for p in pubs:
        q = p.qos
        lost = dup = 0
        for s in subs:
            got = s.got[q]
            lost += sum(1 for n in p.acked if n not in got)
            dup += sum(c - 1 for c in got.values() if c > 1)
        res["q%d" % q] = {"sent": p.sent, "acked": len(p.acked), "unacked": len(p.pending),
                          "lost": lost, "duplicated": dup,
                          "lost_numbers": [sorted(n for n in p.acked if n not in s.got[q])[:20]
                                           for s in subs]}
    res["ok"] = (res["q1"]["lost"] == 0 and res["q2"]["lost"] == 0 and res["q2"]["duplicated"] == 0
                 and res["retained_ok"] and res["subscriptions_ok"] and not res["errors"])
    out("crash harness (%s): %d kills in %.1f s" % (runtime, done, res["seconds"]))
    for q in (1, 2):
        r = res["q%d" % q]
        out("  QoS %d: sent %d, acked %d, lost %d, duplicated %d%s" % (
            q, r["sent"], r["acked"], r["lost"], r["duplicated"],
            "" if q == 1 else " (must be 0)"))
    out("  subscriptions survived: %s; retained survived: %s%s" % (
        res["subscriptions_ok"], res["retained_ok"],
        "; publisher errors: %s" % res["errors"] if res["errors"] else ""))
    out("  %s" % ("OK" if res["ok"] else "FAILED (broker log: %s)" % broker.log_path))
    if own and res["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.crash", description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython")
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--heap", default="256k", help="MicroPython heap (tools.board --heap)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--rate", type=float, default=200.0, help="messages/s per publisher")
    ap.add_argument("--min", type=float, default=0.3, help="shortest run between kills (s)")
    ap.add_argument("--max", type=float, default=1.5, help="longest run between kills (s)")
    ap.add_argument("--sync", choices=("always", "batch", "never"), help="[store] sync")
    ap.add_argument("--no-persistence", action="store_true",
                    help="persistence off: shows what the harness catches")
    ap.add_argument("--json", action="store_true", help="print the totals as JSON too")
    a = ap.parse_args(argv)
    store = {}
    if a.sync:
        store["sync"] = a.sync
    if a.no_persistence:
        store["persistence"] = False
    res = run(a.runtime, a.kills, a.heap, a.seed, a.rate, a.min, a.max, store=store)
    if a.json:
        print(json.dumps(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
