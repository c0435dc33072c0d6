"""Uplink benchmark: edgebroker's uplink vs mosquitto 2.0's bridge, both to RabbitMQ.

    python -m tools.bench.uplink [--quick] [--messages N] [--backlog N]
                                 [--flap-messages N] [--servers S ...] [--out DIR]

One private RabbitMQ node (tools/rabbitnode.py: AMQP, STOMP and MQTT plugins on
free loopback ports). The same job for both servers: a paho publisher sends QoS 1
messages on bench/x to the local broker, which must get them into RabbitMQ
(amq.topic, routing key bench.x), where a durable queue bound to bench.# takes
them; pika counts and drains it.
  edgebroker  python -m gateway run --upstream amqp://... (its outbox on flash, confirms)
  mosquitto   mosquitto 2.0 bridged (topic bench/# out 1, cleansession false) to
              RabbitMQ's MQTT plugin, persistence on
Scenarios (each server started fresh, stopped by PID):
  throughput  N messages, 100 in flight from the publisher: msg/s from the first
              publish until all N are in the queue (end to end, confirms included)
  drain       a backlog of B built while a TCP proxy (tools/chaosproxy.py) between
              the server and RabbitMQ refuses every connection; then the link is
              back: msg/s from the upstream connection until all B are in the queue,
              no new traffic. edgebroker is restarted (SIGTERM) with the backlog in
              between: it drains from flash. Flash bytes per message: the outbox
              directory's size / B (mosquitto writes its queue only at autosave or
              shutdown: not comparable, not shown)
  flap        F messages at 500 msg/s while the proxy drops every connection each
              1.5 s (refusing for 0.3 s); then the link stays up until every
              acknowledged message arrived or nothing new came for 65 s (longer
              than edgebroker's back-off cap): acknowledged (PUBACK), arrived, lost,
              duplicated, and how long it took to settle after the flapping ended
  bridge      (edgebroker only, on request: --scenarios bridge) the bridge's own CPU
              per message, in process and sans-IO, with no RabbitMQ and no socket:
              local publishes through edge/bridge/uplink.py and amqp.py, the frames
              taken, a multiple confirm fed back every 64 (publish_us_per_msg); and a
              backlog of B in the outbox confirmed as the window lets it
              (drain_us_per_msg). Steadier than msg/s on a shared machine
Results: the table printed, DIR/uplink.json written. One run each: a shared
machine's figures, not a laboratory's.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

from tools.bench.brokers import HOST, EdgeCPython, Mosquitto
from tools.bench.procstat import cpu_seconds
from tools.chaosproxy import TcpProxy

QUEUE = "bench.uplink"
TOPIC = "bench/x"
WINDOW = 100          # publisher's QoS 1 messages in flight
FLAP_RATE = 500       # msg/s during the flap
FLAP_EVERY_S = 1.5
FLAP_DOWN_S = 0.3
_QUEUED = 30000      # publisher's messages queued in paho at most (16-bit ids)
SETTLE_S = 65.0      # the flap: nothing new this long and it is over


class EdgeUp(EdgeCPython):
    log_level = "info"  # its "uplink: connected" line marks the drain's start

    def __init__(self, url):
        self.url = url

    window = 0  # upstream.window; 0: the default

    def command(self, port, workdir):
        cmd = super().command(port, workdir)
        cmd[cmd.index("--log-level") + 1] = self.log_level
        if self.window:
            with open(cmd[cmd.index("--config") + 1], "a") as f:
                f.write("[upstream]\nwindow = %d\n" % self.window)
        return cmd + ["--upstream", self.url, "--edge-id", "bench"]

    @staticmethod
    def up(run):
        with open(run.log_path, "rb") as f:
            return f.read().count(b"uplink: connected to")


class MosquittoBridge(Mosquitto):
    def __init__(self, mqtt_port, workdir):
        self.conf = [
            "allow_anonymous true", "persistence true", "persistence_location %s/" % workdir,
            "max_queued_messages 1000000", "max_inflight_messages 20", "log_type all",
            "connection rabbit", "address %s:%d" % (HOST, mqtt_port),
            "remote_username guest", "remote_password guest", "remote_clientid bench-bridge",
            # RabbitMQ's plugin refuses mosquitto's private bridge protocol bit
            "try_private false", "notifications false", "cleansession false",
            "bridge_protocol_version mqttv311", "restart_timeout 1", "topic bench/# out 1"]


def _rabbit(base):
    from tools.rabbitnode import SERVER, RabbitNode

    if not os.access(SERVER, os.X_OK):
        raise SystemExit("no %s: `make deps` installs rabbitmq-server" % SERVER)
    node = RabbitNode(base)
    try:
        node.start()
    except BaseException:
        node.stop()
        raise
    return node


class Queue:
    """The durable queue bound to bench.#, through pika."""

    def __init__(self, node):
        import pika

        self.conn = pika.BlockingConnection(pika.ConnectionParameters(
            HOST, node.amqp_port, credentials=pika.PlainCredentials("guest", "guest"), heartbeat=0))
        self.ch = self.conn.channel()

    def fresh(self):
        self.ch.queue_delete(QUEUE)
        self.ch.queue_declare(QUEUE, durable=True)
        self.ch.queue_bind(QUEUE, "amq.topic", "bench.#")

    def count(self):
        return self.ch.queue_declare(QUEUE, passive=True).method.message_count

    def wait(self, n, timeout, alive=None):
        """Until n are in the queue (True), or timeout (False)."""
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline or (alive is not None and not alive()):
                return False
            time.sleep(0.02)  # polling the queue
        return True

    def drain(self):
        """Every message in the queue, taken: [(body, message_id)]."""
        self.ch.basic_qos(prefetch_count=2000)
        got = []
        for method, props, body in self.ch.consume(QUEUE, auto_ack=True, inactivity_timeout=1.0):
            if method is None:
                break
            got.append((body, props.message_id))
        self.ch.cancel()
        return got

    def collect(self, acked, alive):
        """Drain until every acknowledged body arrived, or nothing new came
        for SETTLE_S (longer than edgebroker's 60 s back-off cap: a link
        that flapped may leave it waiting that long); [(body, message_id)]."""
        want = set(b"%d" % i for i in acked)
        got = []
        seen = set()
        last = time.monotonic()
        while not want <= seen and time.monotonic() - last < SETTLE_S and alive():
            more = self.drain()
            if more:
                got += more
                seen.update(b for b, _ in more)
                last = time.monotonic()
        return got

    def close(self):
        self.conn.close()


class Publisher:
    """paho, QoS 1, WINDOW in flight; bodies b"0", b"1", ..."""

    def __init__(self, port):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub-%d" % os.getpid())
        self.c.max_inflight_messages_set(WINDOW)
        self.c.max_queued_messages_set(0)
        self.c.connect(HOST, port, 60)
        self.c.loop_start()
        self.infos = []

    def send(self, lo, hi, rate=0):
        t0 = time.monotonic()
        for i in range(lo, hi):
            if rate and i % 50 == 0:
                ahead = t0 + (i - lo) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the flap's steady stream
            if len(self.infos) >= _QUEUED:
                # paho's message ids are 16 bits: never more than this queued
                self.infos[-_QUEUED][1].wait_for_publish(120)
            self.infos.append((i, self.c.publish(TOPIC, b"%d" % i, 1)))

    def acked(self, timeout=120):
        deadline = time.monotonic() + timeout
        for _, info in self.infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        return [i for i, info in self.infos if info.is_published()]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def _tally(acked, got):
    bodies = [b for b, _ in got]
    uniq = set(bodies)
    return {"acknowledged": len(acked), "arrived": len(uniq),
            "lost": len(set(b"%d" % i for i in acked) - uniq), "duplicated": len(bodies) - len(uniq)}


def _group_cpu(pgid):
    """CPU seconds of every process in group pgid (the RabbitMQ node: its
    start script, beam and helpers)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        if int(st[st.rindex(")") + 2:].split()[2]) == pgid:
            total += cpu_seconds(d) or 0.0
    return total


def _cpu(run, c0, n):
    # the server's CPU per message over the measured interval (its own
    # process: edgebroker's sync helper and RabbitMQ not counted), in us;
    # on a shared machine a steadier figure than msg/s
    c1 = cpu_seconds(run.pid)
    return None if c0 is None or c1 is None else round((c1 - c0) * 1e6 / n, 1)


def _du(path):
    n = 0
    for d, _, files in os.walk(path):
        for f in files:
            n += os.path.getsize(os.path.join(d, f))
    return n


def _start(server, node, px, workdir):
    url = "amqp://guest:guest@%s:%d/" % (HOST, px.port)
    launcher = EdgeUp(url) if server == "edgebroker" else MosquittoBridge(px.port, workdir)
    return launcher, launcher.start(workdir)


def throughput(server, node, q, base, n):
    px = TcpProxy(node.amqp_port if server == "edgebroker" else node.mqtt_port)
    q.fresh()
    launcher, run = _start(server, node, px, base)
    try:
        time.sleep(1.0)  # the uplink / bridge connected (edgebroker: at once; mosquitto: its first try)
        pub = Publisher(run.port)
        t0 = time.monotonic()
        c0, r0 = cpu_seconds(run.pid), _group_cpu(node.proc.pid)
        pub.send(0, n)
        ok = q.wait(n, 120, run.alive)
        t1 = time.monotonic()
        row = {"msgs_per_s": round(n / (t1 - t0)) if ok else None, "seconds": round(t1 - t0, 2),
               "cpu_us_per_msg": _cpu(run, c0, n),
               "rabbitmq_cpu_us_per_msg": round((_group_cpu(node.proc.pid) - r0) * 1e6 / n, 1)}
        acked = pub.acked()
        pub.close()
        row.update(_tally(acked, q.drain()))
        return row
    finally:
        run.stop()
        px.stop()


def drain(server, node, q, base, n):
    px = TcpProxy(node.amqp_port if server == "edgebroker" else node.mqtt_port)
    px.refuse()
    q.fresh()
    launcher, run = _start(server, node, px, base)
    row = {}
    try:
        pub = Publisher(run.port)
        pub.send(0, n)
        acked = pub.acked(300)
        pub.close()
        if server == "edgebroker":
            row["flash_bytes_per_msg"] = round(_du(os.path.join(base, "data", "uplink")) / max(1, len(acked)), 1)
            run.stop()  # a restart with the backlog on flash
            ups = EdgeUp.up(run)
            run = launcher.start(base)
            px.restore()
            while EdgeUp.up(run) <= ups and run.alive():
                time.sleep(0.02)  # polling its log for the connection
        else:
            seen = px.accepted
            px.restore()
            while px.accepted <= seen and run.alive():
                time.sleep(0.02)  # its next connection attempt (restart_timeout 1 s)
        t0 = time.monotonic()
        c0, r0 = cpu_seconds(run.pid), _group_cpu(node.proc.pid)
        ok = q.wait(n, 300, run.alive)
        t1 = time.monotonic()
        row.update({"drain_msgs_per_s": round(n / (t1 - t0)) if ok else None, "seconds": round(t1 - t0, 2),
                    "cpu_us_per_msg": _cpu(run, c0, n),
                    "rabbitmq_cpu_us_per_msg": round((_group_cpu(node.proc.pid) - r0) * 1e6 / n, 1)})
        row.update(_tally(acked, q.drain()))
        return row
    finally:
        run.stop()
        px.stop()


def flap(server, node, q, base, n):
    px = TcpProxy(node.amqp_port if server == "edgebroker" else node.mqtt_port)
    q.fresh()
    launcher, run = _start(server, node, px, base)
    stop = threading.Event()

    def flapper():
        while not stop.wait(FLAP_EVERY_S):
            px.refuse()
            time.sleep(FLAP_DOWN_S)
            px.restore()

    t = threading.Thread(target=flapper, daemon=True)
    try:
        time.sleep(1.0)
        pub = Publisher(run.port)
        t.start()
        pub.send(0, n, FLAP_RATE)
        acked = pub.acked()
        stop.set()
        t.join()
        px.restore()
        pub.close()
        t0 = time.monotonic()
        got = q.collect(acked, run.alive)
        row = {"flaps": int(n / FLAP_RATE / FLAP_EVERY_S), "settle_s": round(time.monotonic() - t0, 1)}
        row.update(_tally(acked, got))
        return row
    finally:
        stop.set()
        run.stop()
        px.stop()


def _confirm_frame(tag):
    # basic.ack, multiple (AMQP 0-9-1 §4.2.3 frame, class 60 method 80)
    import struct

    p = struct.pack(">IQB", 0x003C0050, tag, 1)
    return b"\x01\x00\x01" + struct.pack(">I", len(p)) + p + b"\xce"


def _bridge_once(n, publish):
    from edge.bridge.amqp import READY
    from edge.bridge.uplink import Uplink
    from tests.core._pair import make_broker

    b = make_broker()
    c = {"url": "amqp://u:p@127.0.0.1:5672/", "edge_id": "bench", "exchange": "amq.topic", "publish": "#",
         "commands": False, "heartbeat": 15, "outbox_budget_bytes": 1 << 30, "window": 256}
    up = Uplink(b, c, lambda: 0.5, lambda lvl, msg: None, 0)
    if not publish:
        for i in range(n):
            b.publish(TOPIC, b"%d" % i, 1)  # the backlog, before the link is up
    up.connected(0)
    up.c.state = READY  # (the handshake is not what is measured)
    t0 = time.perf_counter()
    up._events([("ready",)], 0)
    up.take()
    if publish:
        for i in range(n):
            b.publish(TOPIC, b"%d" % i, 1)
            if i % 64 == 63:
                up.take()
                up.feed(_confirm_frame(up.c.tag), 0)
    while up.q:
        up.take()
        up.feed(_confirm_frame(up.c.tag), 0)
    up.take()
    return (time.perf_counter() - t0) * 1e6 / n


def bridge(server, node, q, base, n):
    if server != "edgebroker":
        return None
    # the best of 3 (the machine's other load only ever adds)
    return {"publish_us_per_msg": round(min(_bridge_once(n, True) for _ in range(3)), 2),
            "drain_us_per_msg": round(min(_bridge_once(n, False) for _ in range(3)), 2),
            "lost": 0}


SCENARIOS = {"throughput": throughput, "drain": drain, "flap": flap, "bridge": bridge}
DEFAULT = ["throughput", "drain", "flap"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench.uplink", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    ap.add_argument("--messages", type=int, help="throughput messages (20000; quick 2000)")
    ap.add_argument("--backlog", type=int, help="drain backlog (100000; quick 2000)")
    ap.add_argument("--flap-messages", type=int, help="flap messages (5000; quick 1000)")
    ap.add_argument("--servers", nargs="+", default=["edgebroker", "mosquitto"], choices=["edgebroker", "mosquitto"])
    ap.add_argument("--scenarios", nargs="+", default=DEFAULT, choices=list(SCENARIOS))
    ap.add_argument("--window", type=int, default=0, help="edgebroker's upstream.window (default: its default)")
    ap.add_argument("--out", default=os.path.join("build", "bench"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    a = ap.parse_args(argv)
    EdgeUp.window = a.window
    counts = {"throughput": a.messages or (2000 if a.quick else 20000),
              "drain": a.backlog or (2000 if a.quick else 100000),
              "flap": a.flap_messages or (1000 if a.quick else 5000),
              "bridge": a.backlog or (2000 if a.quick else 100000)}
    why = MosquittoBridge(0, "").available()
    if "mosquitto" in a.servers and why:
        print("%s: edgebroker only" % why)
        a.servers = [s for s in a.servers if s != "mosquitto"]
    tmp = tempfile.mkdtemp(prefix="bench-uplink-")
    alone = a.scenarios == ["bridge"]  # in process: no RabbitMQ needed
    node = None if alone else _rabbit(os.path.join(tmp, "rabbit"))
    rows = []
    try:
        q = None if alone else Queue(node)
        for sc in a.scenarios:
            for server in a.servers:
                base = os.path.join(tmp, "%s-%s" % (sc, server))
                os.makedirs(base)
                try:
                    row = SCENARIOS[sc](server, node, q, base, counts[sc])
                    if row is None:
                        continue  # (not for this server)
                    row["error"] = None
                except Exception as e:  # noqa: BLE001  reported in the row, the rest goes on
                    row = {"error": "%s: %s" % (type(e).__name__, e)}
                row.update({"scenario": sc, "server": server, "messages": counts[sc]})
                rows.append(row)
                print(_line(row), flush=True)
        if q is not None:
            q.close()
    finally:
        if node is not None:
            node.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(a.out, exist_ok=True)
    doc = {"meta": {"quick": a.quick, "counts": counts, "python": sys.version.split()[0], "edge_window": a.window,
                    "when": time.strftime("%Y-%m-%d %H:%M:%S"), "window": WINDOW},
           "runs": rows}
    path = os.path.join(a.out, "uplink.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print("written %s" % path)
    return 1 if any(r["error"] for r in rows) else 0


def _line(r):
    keys = ("msgs_per_s", "drain_msgs_per_s", "publish_us_per_msg", "drain_us_per_msg", "cpu_us_per_msg", "rabbitmq_cpu_us_per_msg", "flash_bytes_per_msg", "seconds", "flaps", "settle_s",
            "acknowledged", "arrived", "lost", "duplicated", "error")
    return "%-10s %-10s n=%-6d %s" % (r["scenario"], r["server"], r["messages"],
                                      " ".join("%s=%s" % (k, r[k]) for k in keys if r.get(k) is not None))


if __name__ == "__main__":
    sys.exit(main())
