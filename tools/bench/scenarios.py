# The benchmark scenarios. Each one is a coroutine run(broker, params) ->
# dict of figures, against a started broker (or, for "direct", against no
# broker at all: publishers wired to subscribers by loopback TCP pairs, which
# measures the load generator's own ceiling on the same code paths).
import asyncio
import time

from tools.bench import wire
from tools.bench.flow import Flow
from tools.bench.link import HandshakeError, open_link, tcp_pair
from tools.bench.procstat import CpuMeter, rss_bytes

_HANDSHAKE_CONCURRENCY = 32


class Scenario:
    def __init__(self, name, kind, title, metrics, params, quick, edge_mpy_only=False):
        self.name = name
        self.kind = kind            # "flow", "idle", "storm", "heap"
        self.title = title
        self.metrics = metrics      # [(key, unit, higher_is_better)]
        self.params = params
        self.quick = quick          # overrides for --quick
        self.edge_mpy_only = edge_mpy_only

    def settings(self, quick):
        p = dict(self.params)
        if quick:
            p.update(self.quick)
        return p


_RATE = [("msgs_per_s", "msg/s", True)]
_FLOW_QUICK = {"duration": 1.0}

SCENARIOS = [
    Scenario("fanin_q0", "flow", "fan-in 4 pub -> 1 wildcard sub, QoS 0", _RATE,
             {"npubs": 4, "nsubs": 1, "qos": 0, "duration": 5.0}, _FLOW_QUICK),
    Scenario("fanin_q1", "flow", "fan-in 4 pub -> 1 wildcard sub, QoS 1", _RATE,
             {"npubs": 4, "nsubs": 1, "qos": 1, "duration": 5.0}, _FLOW_QUICK),
    Scenario("fanin_q2", "flow", "fan-in 4 pub -> 1 wildcard sub, QoS 2", _RATE,
             {"npubs": 4, "nsubs": 1, "qos": 2, "duration": 5.0}, _FLOW_QUICK),
    Scenario("fanout_q0", "flow", "fan-out 1 pub -> 50 subs, QoS 0 (deliveries)", _RATE,
             {"npubs": 1, "nsubs": 50, "qos": 0, "duration": 5.0}, _FLOW_QUICK),
    Scenario("fanout_q1", "flow", "fan-out 1 pub -> 50 subs, QoS 1 (deliveries)", _RATE,
             {"npubs": 1, "nsubs": 50, "qos": 1, "duration": 5.0}, _FLOW_QUICK),
    Scenario("latency_q1", "flow", "publish->delivery latency at 1,000 msg/s, QoS 1",
             [("p50_ms", "ms", False), ("p99_ms", "ms", False)],
             {"npubs": 1, "nsubs": 1, "qos": 1, "duration": 10.0, "rate": 1000},
             {"duration": 2.0}),
    Scenario("idle_1000", "idle", "1,000 idle connections, 1 subscription each",
             [("kib_per_conn", "KiB/conn", False)], {"n": 1000}, {"n": 200}),
    Scenario("connect_storm", "storm", "connect+subscribe+disconnect cycles",
             [("cycles_per_s", "cycles/s", True)], {"duration": 5.0, "concurrency": 16},
             {"duration": 1.0}),
    Scenario("mpy_heap_per_client", "heap", "MicroPython heap per connected client",
             [("heap_per_client", "B/client", False)], {"n": 16}, {"n": 8},
             edge_mpy_only=True),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def _topics(p):
    if p["nsubs"] == 1 and p["npubs"] > 1:  # fan-in: one wildcard subscriber
        return ["bench/in/%d" % i for i in range(p["npubs"])], "bench/in/+"
    return ["bench/out/t"] * p["npubs"], "bench/out/t"


async def _gather_bounded(coros, limit=_HANDSHAKE_CONCURRENCY):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


def _pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


async def run_flow(broker, p, direct=False):
    flow = Flow(p["npubs"], p["nsubs"], p["qos"], p.get("payload", 64), p.get("window", 20),
                broker.launcher.e2e_window if broker else p.get("e2e_window", 1000),
                rate=p.get("rate", 0))
    ptopics, sfilter = _topics(p)
    links = []
    try:
        if direct:
            pubs = [flow.add_publisher(t) for t in ptopics]
            for s in range(p["nsubs"]):
                sub = flow.add_subscriber()
                for pub in pubs:
                    a, b = await tcp_pair()
                    links += [a, b]
                    pub.links.append(a)
                    a.go_fast(pub)
                    b.go_fast(sub)
        else:
            h, port, q = broker.host, broker.port, p["qos"]
            subl = await _gather_bounded(
                open_link(h, port, "bench-s%d" % i, [(sfilter, q)], clean=p.get("clean", True))
                for i in range(p["nsubs"]))
            links += subl
            publ = await _gather_bounded(
                open_link(h, port, "bench-p%d" % i) for i in range(p["npubs"]))
            links += publ
            for ln in subl:
                ln.go_fast(flow.add_subscriber())
            for ln, t in zip(publ, ptopics):
                pub = flow.add_publisher(t)
                pub.links.append(ln)
                ln.go_fast(pub)
        meter = CpuMeter({"broker": broker.pid if broker else None, "loadgen": "self"})
        t0, t_stop, t_last = await flow.run(p["duration"])
        cpu = meter.stop()
        tally = flow.tally()
    finally:
        for ln in links:
            if not ln.lost and not direct:
                ln.transport.write(wire.DISCONNECT_BYTES)
            ln.close()
    elapsed = max(t_last - t0, 1e-6)
    lat = flow.latencies
    res = dict(tally)
    res.update({
        "elapsed_s": round(elapsed, 3),
        "send_s": round(t_stop - t0, 3),
        "msgs_per_s": round(tally["good"] / elapsed, 1),
        "lat_samples": len(lat),
        "p50_ms": _ms(_pct(lat, 0.50)),
        "p99_ms": _ms(_pct(lat, 0.99)),
        "cpu_broker_pct": cpu.get("broker"),
        "cpu_loadgen_pct": cpu.get("loadgen"),
        "links_lost": flow.lost_links,
    })
    return res


def _ms(ns):
    return None if ns is None else round(ns / 1e6, 3)


async def run_idle(broker, p):
    n = p["n"]
    await asyncio.sleep(0.5)
    rss0 = rss_bytes(broker.pid)
    t0 = time.monotonic()

    async def one(i):
        try:
            return await open_link(broker.host, broker.port, "idle-%d" % i,
                                   [("bench/idle/%d" % i, 1)])
        except (OSError, HandshakeError, asyncio.TimeoutError):
            return None

    links = [ln for ln in await _gather_bounded(one(i) for i in range(n)) if ln is not None]
    connect_s = time.monotonic() - t0
    try:
        await asyncio.sleep(1.0)  # let the broker settle
        rss1 = rss_bytes(broker.pid)
        alive = sum(1 for ln in links if not ln.lost)
    finally:
        for ln in links:
            if not ln.lost:
                ln.transport.write(wire.DISCONNECT_BYTES)
            ln.close()
    ok = rss0 is not None and rss1 is not None and alive
    return {
        "connections": alive, "failed": n - alive,
        "rss_before_mib": _mib(rss0), "rss_after_mib": _mib(rss1),
        "kib_per_conn": round((rss1 - rss0) / 1024 / alive, 2) if ok else None,
        "connect_s": round(connect_s, 3),
        "lost": n - alive,
    }


def _mib(b):
    return None if b is None else round(b / 1048576, 2)


async def run_storm(broker, p):
    duration, conc = p["duration"], p["concurrency"]
    cap = p.get("cap", 100000)
    done = [0, 0]  # cycles, errors
    stop_at = time.monotonic() + duration

    async def worker(w):
        i = 0
        while time.monotonic() < stop_at and done[0] < cap and done[1] < cap:
            i += 1
            try:
                ln = await open_link(broker.host, broker.port, "storm-%d-%d" % (w, i),
                                     [("bench/storm/%d" % w, 1)], timeout=5.0)
            except (OSError, HandshakeError, asyncio.TimeoutError):
                done[1] += 1
                await asyncio.sleep(0.01)  # back off after a refused cycle
                continue
            ln.transport.write(wire.DISCONNECT_BYTES)
            ln.close()
            done[0] += 1

    meter = CpuMeter({"broker": broker.pid, "loadgen": "self"})
    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(conc)))
    elapsed = time.monotonic() - t0
    cpu = meter.stop()
    return {"cycles": done[0], "errors": done[1], "elapsed_s": round(elapsed, 3),
            "cycles_per_s": round(done[0] / elapsed, 1), "lost": done[1],
            "cpu_broker_pct": cpu["broker"], "cpu_loadgen_pct": cpu["loadgen"]}


async def sys_value(broker, topic, timeout=5.0):
    """The value a fresh subscriber to a $SYS topic gets at once."""
    ln = await open_link(broker.host, broker.port, "bench-probe")
    try:
        fut = asyncio.get_running_loop().create_future()
        ln.waiters[wire.PUBLISH] = fut
        async with asyncio.timeout(timeout):
            await ln.request(wire.subscribe(1, [(topic, 0)]), wire.SUBACK)
            fb, body = await fut
        tl = (body[0] << 8) | body[1]
        return int(body[2 + tl:].decode())
    finally:
        ln.transport.write(wire.DISCONNECT_BYTES)
        ln.close()


async def run_heap(broker, p):
    """Live heap ($SYS/broker/heap/current, after gc.collect) with no client
    and with n clients holding a subscription each; sys_interval is 1 s."""
    n = p["n"]
    await asyncio.sleep(1.5)
    h0 = await sys_value(broker, "$SYS/broker/heap/current")
    links = await _gather_bounded(
        (open_link(broker.host, broker.port, "heap-%d" % i, [("bench/heap/%d" % i, 1)])
         for i in range(n)), 4)
    try:
        await asyncio.sleep(2.5)  # two $SYS ticks with every client connected
        h1 = await sys_value(broker, "$SYS/broker/heap/current")
        hmax = await sys_value(broker, "$SYS/broker/heap/maximum")
        alive = sum(1 for ln in links if not ln.lost)
    finally:
        for ln in links:
            if not ln.lost:
                ln.transport.write(wire.DISCONNECT_BYTES)
            ln.close()
    return {"clients": alive, "heap_before": h0, "heap_after": h1, "heap_maximum": hmax,
            "heap_per_client": round((h1 - h0) / alive) if alive else None,
            "lost": n - alive}


async def run(scenario, broker, params):
    """Run one scenario; broker is a brokers.Running, or None for "direct"."""
    if scenario.kind == "flow":
        return await run_flow(broker, params, direct=broker is None)
    if scenario.kind == "idle":
        return await run_idle(broker, params)
    if scenario.kind == "storm":
        return await run_storm(broker, params)
    if scenario.kind == "heap":
        return await run_heap(broker, params)
    raise ValueError(scenario.kind)
