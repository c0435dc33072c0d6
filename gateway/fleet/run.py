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
from gateway.fleet.checker import Checker, CheckerError
from gateway.fleet.ledger import Ledger
from gateway.fleet.mpy import FirmwareError, MpySensor, build, find_micropython
from gateway.fleet.sim import SimSensor


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


def _broker_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("--broker must be HOST:PORT, got %r" % text)
    return host or "127.0.0.1", int(port)


def _fleet(n, k, runid, mqtt):
    """[Ledger]: QoS by index mod 3; with --mqtt mix, 3.1.1/5.0 alternating
    every 3, so any 6 consecutive sensors (the K firmware ones first) cover
    all six pairs."""
    def v5(i):
        return mqtt == "5.0" or (mqtt == "mix" and (i // 3) % 2 == 1)
    return [Ledger("%s-%03d" % (runid, i), i % 3, v5(i), "mpy" if i < k else "sim")
            for i in range(n)]


async def _run(a, workdir):
    host, port = _broker_addr(a.broker)
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
    ledgers = _fleet(a.sensors, a.mpy, runid, a.mqtt)
    sensors = {}
    if a.mpy:
        fwdir, heap = build(workdir)
        exe = find_micropython()
    for i, led in enumerate(ledgers):
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
    chaos.close()
    await checker.snapshot()
    await checker.stop()
    if rss_task is not None:
        rss_task.cancel()
    meta = {"broker": "%s:%d" % (host, port), "sensors": a.sensors, "mpy": a.mpy,
            "seconds": a.seconds, "chaos": a.chaos, "mqtt": a.mqtt, "seed": a.seed, "run_id": runid,
            "interval_ms": a.interval_ms, "keepalive": a.keepalive, "buffer": opts.buffer,
            "inflight": opts.inflight, "drain": a.drain}
    r = report.compute(ledgers, checker, chaos.events, meta)
    memory = ("broker heap", checker.heap) if checker.heap else ("broker RSS", checker.rss)
    return r, checker.readings, memory


def main(args):
    """args: the parsed namespace (gateway/cli.py `fleet`)."""
    a = args
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 1 << 31)
    if a.sensors < 1 or not 0 <= a.mpy <= a.sensors or a.seconds < 1:
        print("edgebroker fleet: need --sensors >= 1, 0 <= --mpy <= --sensors, --seconds >= 1",
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
