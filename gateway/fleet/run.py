# `edgebroker fleet`: a fleet of sensors against a broker through a chaos
# proxy, a checker that records every delivery, and the report
# (docs/fleet.md). Exit status 0: every guarantee held; 1: a QoS 1/2 message
# was lost, a QoS 2 one duplicated, or a will broken; 2: the run could not start.
import asyncio
import json
import os
import random
import sys
import tempfile

from gateway.fleet import plot, report
from gateway.fleet.chaos import Chaos
from gateway.fleet.coap import CoapSensor
from gateway.fleet.coap import ping as coap_ping
from gateway.fleet.checker import Checker, CheckerError
from gateway.fleet.ledger import Ledger
from gateway.fleet.mpy import FirmwareError, MpyCoapSensor, MpySensor, build, find_micropython
from gateway.fleet.sim import SimSensor

COMMAND_EVERY_S = 2.0  # a command to each observing CoAP device
COMMAND_QUIET_S = 6.0  # RFC 7252 §4.8: a CON's first two retransmissions come within 2 + 4 s x 1.5


class SensorOpts:
    def __init__(self, a, prefix):
        self.prefix = prefix
        self.interval_ms = a.interval_ms
        self.keepalive = a.keepalive
        self.ack_timeout = max(1.0, a.keepalive * 0.6)  # detects a black hole before the broker does
        self.buffer = a.buffer
        self.inflight = min(a.inflight, a.buffer - 1) or 1
        self.backoff_ms = 500  # > report.TAKEOVER_MARGIN_S: a reset's will is then always due
        self.backoff_cap_ms = 3000
        self.clock = None  # the run clock (Chaos.clock), once the links exist


def _broker_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("--broker must be HOST:PORT, got %r" % text)
    return host or "127.0.0.1", int(port)


def _fleet(n, k, runid, mqtt, coap=0, coap_mpy=0):
    """[Ledger]: QoS by index mod 3; with --mqtt mix, 3.1.1/5.0 alternating
    every 3, so any 6 consecutive sensors (the K firmware ones first, the
    CoAP devices last) cover all six pairs."""
    def v5(i):
        return mqtt == "5.0" or (mqtt == "mix" and (i // 3) % 2 == 1)

    def kind(i):
        if i >= n - coap:
            return "coap-mpy" if i < n - coap + coap_mpy else "coap"
        return "mpy" if i < k else "sim"
    return [Ledger("%s-%03d" % (runid, i), i % 3, v5(i) and not kind(i).startswith("coap"), kind(i))
            for i in range(n)]


async def _commands(checker, ledgers, clock, seconds, sent):
    """Every COMMAND_EVERY_S, a command published to cmd/<id>/set of each CoAP
    device observing it; counted only when published after the device's
    observation began (a registration in flight sees nothing before it), and
    not for a device killed later (report.py)."""
    n = 0
    # none in the last COMMAND_QUIET_S: a device stops when its readings are
    # sent, and a notification lost then has no time for its retransmission
    while clock() < seconds - COMMAND_QUIET_S - COMMAND_EVERY_S:
        await asyncio.sleep(COMMAND_EVERY_S)
        n += 1
        for led in ledgers:
            if led.t_observing is not None and not led.killed:
                payload = "c%d" % n
                if checker.command("cmd/%s/set" % led.sid, payload.encode()):
                    sent.setdefault(led.sid, set()).add(payload)


async def _run(a, workdir):
    host, port = _broker_addr(a.broker)
    if a.coap and not await coap_ping((host, a.coap_port)):
        raise CheckerError("no CoAP endpoint answers at %s:%d (UDP): --coap-port, or [coap] enabled "
                           "in the broker's config" % (host, a.coap_port))
    rng = random.Random(a.seed)
    runid = "%06x" % rng.getrandbits(24)
    prefix = "fleet/" + runid
    opts = SensorOpts(a, prefix)
    loop = asyncio.get_running_loop()
    chaos = Chaos(a.chaos, a.seed, (host, port))
    # one run clock for the checker, the proxy and the plan: reset to 0
    # when the sensors start (building the firmware and the links takes a while)
    checker = Checker(host, port, prefix, chaos.clock)
    await checker.start("%s-checker" % runid)
    rss_task = asyncio.ensure_future(checker.sample_rss(a.broker_pid)) if a.broker_pid else None
    opts.clock = chaos.clock
    ledgers = _fleet(a.sensors, a.mpy, runid, a.mqtt, a.coap, a.coap_mpy)
    coap = [led for led in ledgers if led.kind.startswith("coap")]
    sensors = {}
    if a.mpy or a.coap_mpy:
        fwdir, heap = build(workdir)
        exe = find_micropython()
    for i, led in enumerate(ledgers):
        if led.kind.startswith("coap"):
            link = await chaos.coap_link(led, (host, a.coap_port))
            if led.kind == "coap-mpy":
                sensors[led.sid] = MpyCoapSensor(led, link.port, opts, a.seed + i, fwdir, heap, exe)
            else:
                sensors[led.sid] = CoapSensor(led, link.port, opts, random.Random(a.seed * 7919 + i))
            continue
        link = await chaos.link(led)
        if led.kind == "mpy":
            sensors[led.sid] = MpySensor(led, link.port, opts, a.seed + i, fwdir, heap, exe)
        else:
            sensors[led.sid] = SimSensor(led, link.port, opts, random.Random(a.seed * 7919 + i))
    plan = chaos.plan(a.seconds)
    chaos.t0 = loop.time()
    for series in (checker.heap, checker.rss):  # the idle figure before the fleet, at 0
        series[:] = [(0.0, v) for _, v in series[-1:]]
    chaos.start(plan, sensors)
    stagger = min(2.0, 0.01 * len(ledgers))

    async def one(i, s):
        await asyncio.sleep(stagger * i / max(1, len(ledgers)))
        await s.run(a.seconds, a.drain)

    tasks = [asyncio.ensure_future(one(i, sensors[led.sid])) for i, led in enumerate(ledgers)]
    sent = {}
    cmd_task = asyncio.ensure_future(_commands(checker, coap, chaos.clock, a.seconds, sent)) if coap else None
    await asyncio.sleep(a.seconds)
    chaos.heal()
    await asyncio.wait(tasks, timeout=a.drain + stagger + 10)
    for led, t in zip(ledgers, tasks):
        if not t.done():
            t.cancel()  # a hang: the firmware process is killed (mpy.py)
            led.exit_note = "still running %d s after --seconds + --drain: stopped" % 10
        elif t.exception() is not None:
            led.exit_note = "crashed: %r" % t.exception()
    # deliveries and wills still on their way: until every acknowledged
    # reading and every due will is in, at most a keepalive timeout (1.5x)
    # and --settle seconds more
    settle_end = loop.time() + a.keepalive * 1.5 + a.settle
    # the last DISCONNECTs are still in the proxy's latency queue: closing
    # the links under them would make wills of clean ends
    await asyncio.sleep(1.0)
    while loop.time() < settle_end and report.outstanding(ledgers, checker):
        await asyncio.sleep(0.25)
    if cmd_task is not None:
        cmd_task.cancel()
    r_links = dict(chaos.links)
    chaos.close()
    await checker.snapshot()
    await checker.stop()
    if rss_task is not None:
        rss_task.cancel()
    meta = {"broker": "%s:%d" % (host, port), "sensors": a.sensors, "mpy": a.mpy, "coap": a.coap, "coap_mpy": a.coap_mpy,
            "seconds": a.seconds, "chaos": a.chaos, "mqtt": a.mqtt, "seed": a.seed, "run_id": runid,
            "interval_ms": a.interval_ms, "keepalive": a.keepalive, "buffer": opts.buffer,
            "inflight": opts.inflight, "drain": a.drain}
    r = report.compute(ledgers, checker, chaos.events, meta, sent, r_links)
    memory = ("broker heap", checker.heap) if checker.heap else ("broker RSS", checker.rss)
    return r, checker.readings, memory


def main(args):
    """args: the parsed namespace (gateway/cli.py `fleet`)."""
    a = args
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 1 << 31)
    if (a.sensors < 1 or not 0 <= a.mpy <= a.sensors or not 0 <= a.coap <= a.sensors - a.mpy
            or not 0 <= a.coap_mpy <= a.coap or a.seconds < 1):
        print("edgebroker fleet: need --sensors >= 1, 0 <= --mpy, 0 <= --coap, --mpy + --coap <= --sensors, "
              "0 <= --coap-mpy <= --coap, --seconds >= 1",
              file=sys.stderr)
        return 2
    try:
        _broker_addr(a.broker)
        with tempfile.TemporaryDirectory(prefix="edgebroker-fleet-") as workdir:
            r, readings, memory = asyncio.run(_run(a, workdir))
    except (ValueError, CheckerError, FirmwareError) as e:
        print("edgebroker fleet: %s" % e, file=sys.stderr)
        return 2
    plot_path = a.plot or (os.path.splitext(a.json)[0] + ".png" if a.json else None)
    if plot_path:
        title = "edgebroker fleet: %d sensors, chaos %s, seed %d" % (a.sensors, a.chaos, a.seed)
        r["plot"] = plot.write(plot_path, readings, r["events"], memory, title)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    if not a.quiet:
        print(report.text(r))
        if r.get("plot"):
            print("plot: %s" % r["plot"])
    return 0 if r["ok"] else 1
