"""Heap check: the broker on the board profile under a small heap, with load.

    python -m tools.heapcheck [--heap 64k] [--clients 8] [--seconds 60]
                              [--rate 5] [--port P] [--keep-log FILE]

Starts `python -m tools.board --heap H` (the core from a ROMFS image, only
objects in MicroPython's GC heap, as on a board) with sys_interval 1 and
max_connections clients + 1, connects one monitor client to
$SYS/broker/heap/# (the live heap after gc.collect(), sampled every second),
then N paho-mqtt clients (MQTT 3.1.1). Each subscribes to `heapcheck/#` at
QoS 2. Once the idle figures are read, client 0 takes over $SYS/broker/heap/#
and the monitor disconnects, so the load runs with exactly N connections:
each client publishes to its own topic `heapcheck/<i>`, cycling QoS 0, 1, 2,
`rate` messages a second for S seconds, each payload carrying its sequence
number. Every client receives every message, so each one published should
arrive N times. Prints:

  - heap with 0 clients (the monitor only) and with N idle subscribed clients
    (plus the monitor), and per client ((heap N - heap 0) / N);
  - heap current/maximum as $SYS reports them at the end of the run;
  - messages sent (acknowledged for QoS 1/2), expected deliveries, received,
    lost and duplicated, per QoS;
  - whether "MemoryError" appeared in the broker's output.

Bounded in time (connects, the run and the drain all have deadlines); the
broker is killed by its PID at the end. Exit status 0 only if nothing was
lost or duplicated at QoS 1/2, no MemoryError appeared and the broker stayed
up.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

from tools import board, mpy_build
from tools.ports import free_port

_TOPIC = "heapcheck/"


class Broker:
    """tools.board in a child process; output collected by a thread."""

    def __init__(self, heap, port, workdir, max_connections, persistence="best-effort"):
        # store.persistence: true stops the start where the store does not
        # fit the heap (docs/persistence.md "When the store cannot keep it")
        cfg = {"broker": {"sys_interval": 1, "max_connections": max_connections},
               "store": {"persistence": persistence}}
        path = os.path.join(workdir, "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        board.build_image()  # before the clock starts: mpy-cross takes a while
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tools.board", "--heap", heap, "--",
             "--config", path, "--port", str(port), "--data", os.path.join(workdir, "data")],
            cwd=mpy_build.REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self):
        return "\n".join(self.lines)

    def alive(self):
        return self.proc.poll() is None

    def wait_listening(self, port, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                return False
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)  # SIGTERM, then SIGKILL if it lingers
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait(3)
        self.reader.join(2)


def _client(name, port, on_message=None):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(20)
    if on_message is not None:
        c.on_message = on_message
    ready = threading.Event()
    c.on_connect = lambda cl, ud, flags, rc, props: ready.set() if not rc.is_failure else None
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c, ready


class Monitor:
    """Collects $SYS/broker/heap/{current,maximum} samples, over a client of
    its own or (client given) over one that also does other things."""

    def __init__(self, port, client=None):
        self.samples = []  # (time, current)
        self.maximum = None
        self.cv = threading.Condition()
        self.own = client is None
        if self.own:
            client, ready = _client("heapcheck-monitor", port, self.on_message)
            if not ready.wait(10):
                raise RuntimeError("monitor could not connect")
        self.c = client
        self.c.subscribe("$SYS/broker/heap/#", 0)

    def on_message(self, client, userdata, msg):
        v = int(msg.payload)
        with self.cv:
            if msg.topic.endswith("/current"):
                self.samples.append((time.monotonic(), v))
                self.cv.notify_all()
            else:
                self.maximum = v

    def settle(self, n=3, timeout=15):
        """The smallest of the next n samples (allocations in flight settle)."""
        with self.cv:
            start = len(self.samples)
            self.cv.wait_for(lambda: len(self.samples) >= start + n, timeout)
            got = [v for _, v in self.samples[start:]]
        return min(got) if got else None

    def last(self):
        with self.cv:
            return (self.samples[-1][1] if self.samples else None), self.maximum

    def stop(self):
        if self.own:
            self.c.disconnect()
            self.c.loop_stop()


class Worker:
    """One load client: publishes to its own topic, receives everyone's."""

    def __init__(self, i, port):
        self.i = i
        self.lock = threading.RLock()  # paho may call back from inside publish()
        self.got = {}       # (sender, seq) -> times received
        self.sent = {}      # seq -> qos, once acknowledged (QoS 0: once sent)
        self.pending = {}   # paho mid -> (seq, qos)
        self.seq = 0
        self.sys = None     # a Monitor fed by this client's $SYS messages
        self.c, self.ready = _client("heapcheck-%d" % i, port, self._on_message)
        self.c.on_publish = self._on_publish
        self.subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        if msg.topic.startswith("$SYS/"):
            if self.sys is not None:
                self.sys.on_message(client, userdata, msg)
            return
        sender, seq = msg.payload.split(b":", 2)[:2]
        with self.lock:
            k = (int(sender), int(seq))
            self.got[k] = self.got.get(k, 0) + 1

    def _on_publish(self, client, userdata, mid, rc, props):
        with self.lock:
            e = self.pending.pop(mid, None)
            if e is not None:
                self.sent[e[0]] = e[1]

    def publish(self):
        self.seq += 1
        qos = self.seq % 3
        payload = b"%d:%d:%s" % (self.i, self.seq, b"x" * 16)
        with self.lock:
            info = self.c.publish(_TOPIC + str(self.i), payload, qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.pending[info.mid] = (self.seq, qos)
            # (a refused publish, e.g. over paho's queue, is not counted as sent)

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def _run_load(workers, seconds, rate, broker):
    period = 1.0 / rate
    end = time.monotonic() + seconds
    nxt = time.monotonic()
    while time.monotonic() < end and broker.alive():
        for w in workers:
            w.publish()
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))


def _tally(workers):
    """Per QoS: [sent, expected deliveries, received, lost, duplicated]."""
    t = {0: [0, 0, 0, 0, 0], 1: [0, 0, 0, 0, 0], 2: [0, 0, 0, 0, 0]}
    n = len(workers)
    for s in workers:
        for seq, qos in s.sent.items():
            row = t[qos]
            row[0] += 1
            row[1] += n
            for r in workers:
                k = r.got.get((s.i, seq), 0)
                row[2] += k
                if k == 0:
                    row[3] += 1
                elif k > 1:
                    row[4] += k - 1
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.heapcheck", description=__doc__.splitlines()[0])
    ap.add_argument("--heap", default="64k", help="MicroPython heap (default 64k)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rate", type=float, default=5, help="messages a second per client (default 5)")
    ap.add_argument("--drain", type=float, default=5, help="seconds to wait for the last deliveries")
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--keep-log", help="write the broker's output to this file")
    ap.add_argument("--persistence", default="best-effort", choices=("true", "false", "best-effort"),
                    help="store.persistence (default best-effort: the store if the heap has room for it)")
    args = ap.parse_args(argv)

    port = args.port or free_port()
    workdir = tempfile.mkdtemp(prefix="heapcheck-")
    broker = monitor = None
    workers = []
    ok = False
    try:
        persistence = {"true": True, "false": False}.get(args.persistence, args.persistence)
        broker = Broker(args.heap, port, workdir, args.clients + 1, persistence)
        if not broker.wait_listening(port, 30):
            print("broker did not start listening:\n" + broker.output())
            return 1
        store = [ln for ln in broker.output().splitlines() if "store:" in ln]
        print("store:                              %s" % (store[0] if store else "persistence off"))
        monitor = Monitor(port)
        heap0 = monitor.settle()
        print("heap, 0 clients (monitor only):     %s" % heap0)

        workers = [Worker(i, port) for i in range(args.clients)]
        for w in workers:
            if not w.ready.wait(10):
                raise RuntimeError("client %d could not connect" % w.i)
            w.c.subscribe(_TOPIC + "#", 2)
        for w in workers:
            if not w.subscribed.wait(10):
                raise RuntimeError("client %d: no SUBACK" % w.i)
        heapn = monitor.settle()
        print("heap, %d idle subscribed clients:    %s (+ the monitor)" % (args.clients, heapn))
        if heap0 is not None and heapn is not None and args.clients:
            print("heap per client:                    %d" % ((heapn - heap0) // args.clients))
        if workers:  # the load runs with exactly N connections
            w0 = workers[0]
            w0.sys = Monitor(port, w0.c)
            monitor.stop()
            monitor = w0.sys
            monitor.settle(1)

        t0 = time.monotonic()
        _run_load(workers, args.seconds, args.rate, broker)
        ran = time.monotonic() - t0
        time.sleep(args.drain)
        cur, mx = monitor.last()
        print("heap after %.0f s of load:          current %s, maximum %s ($SYS, %d clients)"
              % (ran, cur, mx, len(workers)))

        for w in workers:
            w.lock.acquire()
        try:
            t = _tally(workers)
        finally:
            for w in workers:
                w.lock.release()
        print("messages (each delivered to %d clients):" % args.clients)
        print("  qos  %8s %9s %9s %7s %7s" % ("sent", "expected", "received", "lost", "dup"))
        for q in (0, 1, 2):
            print("  %3d  %8d %9d %9d %7d %7d" % ((q,) + tuple(t[q])))
        tot = [sum(t[q][k] for q in t) for k in range(5)]
        print("  all  %8d %9d %9d %7d %7d" % tuple(tot))
        alive = broker.alive()
        ok = alive and not (t[1][3] or t[2][3] or t[2][4])
    except RuntimeError as e:
        print("heapcheck: %s" % e)
    finally:
        for w in workers:
            try:
                w.stop()
            except Exception:  # noqa: BLE001 - best effort during teardown
                pass
        if monitor is not None:
            monitor.stop()
        if broker is not None:
            alive = broker.alive()
            broker.kill()
            out = broker.output()
            if args.keep_log:
                with open(args.keep_log, "w") as f:
                    f.write(out + "\n")
            memerr = "MemoryError" in out
            ok = ok and alive and not memerr
        shutil.rmtree(workdir, ignore_errors=True)
        if broker is not None:  # printed last: the broker is gone whatever happens to stdout
            print("broker: %s; MemoryError in its output: %s" % ("running until killed" if alive else "EXITED", "YES" if memerr else "no"))
            if memerr:
                lines = broker.lines
                i = next(k for k, ln in enumerate(lines) if "MemoryError" in ln)
                print("  ...\n  " + "\n  ".join(lines[max(0, i - 8):i + 2]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
