"""The flash persistence benchmark (issue #4).

    python -m tools.bench.store [--duration 5] [--rate 2000] [--runs 3] [--kills 100]

On the CPython broker, a fan-in of 4 QoS 1 publishers into 1 subscriber
with a persistent session (clean session 0, so every message is written to
the store, its PUBACK waits for the sync, and its delivery is deleted once
the subscriber acks it):
  1. at a sustained paced rate (--rate msg/s in all): flash bytes written
     per message and syncs per second, from the broker's own counters
     ($SYS/broker/store/bytes written, store/syncs);
  2. flat out (closed loop): throughput with persistence off and on (sync
     "batch", the default), and the ratio (goal: >= 50%);
  3. the same flat-out fan-in with a clean-session subscriber (the standard
     fanin_q1 scenario: nothing to persist), off and on: the hot path;
  4. with --kills N: tools/crash.py, N SIGKILLs, the totals.
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tools.bench.brokers import HOST, EdgeCPython
from tools.bench.scenarios import run_flow


class EdgeStore(EdgeCPython):
    """The CPython broker with [store] settings (persistence, sync)."""

    # The stdlib event loop, as tools/bench runs edgebroker by default: the
    # same figures whether or not the optional uvloop is installed
    env = {"EDGEBROKER_LOOP": "asyncio"}

    def __init__(self, store):
        self.store = store
        self.name = "edgebroker-store-%s" % ("off" if not store.get("persistence", True) else store.get("sync", "batch"))

    def command(self, port, workdir):
        cmd = EdgeCPython.command(self, port, workdir)
        cfg = cmd[cmd.index("--config") + 1]
        with open(cfg, "a") as f:
            f.write("sys_interval = 1\n[store]\n")
            f.write("".join("%s = %s\n" % (k, json.dumps(v)) for k, v in self.store.items()))
        return cmd


def _sys_store(port, timeout=3.0):
    """{name: int} of $SYS/broker/store/# (retained-like, at once)."""
    got = {}
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sys", protocol=paho.MQTTv311)

    def on_message(cl, u, m):
        if not m.payload.isdigit():
            return  # store/state ("ok", "best-effort", "failing"): not a counter
        got[m.topic[len("$SYS/broker/store/"):]] = int(m.payload)
        if len(got) >= 6:
            done.set()

    c.on_message = on_message
    c.connect(HOST, port)
    c.loop_start()
    c.subscribe("$SYS/broker/store/#")
    done.wait(timeout)
    c.disconnect()
    c.loop_stop()
    return got


def _flow(launcher, params):
    with tempfile.TemporaryDirectory(prefix="edge-bench-store-") as wd:
        b = launcher.start(wd)
        try:
            before = _sys_store(b.port)
            res = asyncio.run(run_flow(b, params))
            time.sleep(1.2)  # one $SYS interval: the counters after the flow
            after = _sys_store(b.port)
        finally:
            b.stop()
    res["store_before"] = before
    res["store_after"] = after
    return res


def _cpu_us(r):
    # The broker's CPU a delivered message, in us (its share of a core over
    # the flow, from /proc): what the ratio is made of when it is CPU bound
    return (r.get("cpu_broker_pct") or 0) / 100.0 * r["elapsed_s"] / max(r["good"], 1) * 1e6


def _fanin(duration, clean, rate=0):
    return {"npubs": 4, "nsubs": 1, "qos": 1, "duration": duration, "clean": clean, "rate": rate}


def run(duration=5.0, rate=2000, runs=3, out=print, breakdown=False):
    on, off = EdgeStore({}), EdgeStore({"persistence": False})
    res = {}
    # 1. a sustained rate: bytes and syncs per message
    r = _flow(on, _fanin(duration, False, rate / 4.0))
    a, b = r["store_before"], r["store_after"]
    n = max(r["good"], 1)
    res["paced"] = {
        "msg_per_s": r["msgs_per_s"], "messages": r["good"], "lost": r.get("lost", 0),
        "bytes_per_msg": round((b.get("bytes written", 0) - a.get("bytes written", 0)) / n, 1),
        "syncs_per_s": round((b.get("syncs", 0) - a.get("syncs", 0)) / max(r["elapsed_s"], 1e-6), 1),
        "syncs_per_msg": round((b.get("syncs", 0) - a.get("syncs", 0)) / n, 3),
    }
    out("sustained QoS 1 fan-in, persistent subscriber, %d msg/s asked: %.0f msg/s, "
        "%.1f flash bytes/message, %.1f syncs/s (%.3f per message)" % (
            rate, r["msgs_per_s"], res["paced"]["bytes_per_msg"], res["paced"]["syncs_per_s"],
            res["paced"]["syncs_per_msg"]))
    # 2./3. flat out, alternating on and off
    for label, clean in (("persistent subscriber", False), ("clean subscriber (fanin_q1)", True)):
        rates = {"off": [], "on": []}
        cpu = {"off": [], "on": []}  # the broker's CPU a message, us (from /proc)
        for i in range(runs):
            order = (("off", off), ("on", on)) if i % 2 == 0 else (("on", on), ("off", off))
            for name, launcher in order:
                r = _flow(launcher, _fanin(duration, clean))
                rates[name].append(r["msgs_per_s"])
                cpu[name].append(_cpu_us(r))
        m_off, m_on = statistics.median(rates["off"]), statistics.median(rates["on"])
        # The ratio as tools/bench reports its ratios: the median of those
        # measured within each run (an on and an off flow back to back), so
        # a machine that is faster for a while moves both sides of one
        ratios = [b / a for a, b in zip(rates["off"], rates["on"]) if a]
        ratio = statistics.median(ratios) if ratios else 0.0
        key = "flat_persistent" if not clean else "flat_clean"
        c_off, c_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
        res[key] = {"off": m_off, "on": m_on, "ratio": round(ratio, 3),
                    "runs_off": rates["off"], "runs_on": rates["on"],
                    "run_ratios": [round(x, 3) for x in ratios],
                    "cpu_us_per_msg_off": round(c_off, 1), "cpu_us_per_msg_on": round(c_on, 1)}
        out("QoS 1 fan-in 4 -> 1, %s, median of %d: persistence off %.0f msg/s, on (batch) %.0f msg/s, "
            "ratio %.0f%% (median of the in-run ratios %s); the broker's CPU a message: "
            "off %.1f us, on %.1f us" % (
                label, runs, m_off, m_on, 100.0 * ratio, " ".join("%.0f%%" % (100 * x) for x in ratios),
                c_off, c_on))
    if breakdown:
        # where the cost is: the same persistent flow, written but never
        # synced (the store's CPU cost alone), and synced per record
        for mode in ("never", "always"):
            r = _flow(EdgeStore({"sync": mode}), _fanin(duration, False))
            res["flat_persistent"]["sync_" + mode] = r["msgs_per_s"]
            out("  the same, sync %s: %.0f msg/s" % (mode, r["msgs_per_s"]))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench.store", description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per flow")
    ap.add_argument("--rate", type=float, default=2000.0, help="sustained rate, msg/s in all")
    ap.add_argument("--runs", type=int, default=3, help="flat-out runs per setting (medians)")
    ap.add_argument("--kills", type=int, default=0, help="then tools/crash.py with this many kills")
    ap.add_argument("--breakdown", action="store_true",
                    help="also the persistent flow with sync never / always")
    ap.add_argument("--out", default="build/bench/store.json")
    a = ap.parse_args(argv)
    res = run(a.duration, a.rate, a.runs, breakdown=a.breakdown)
    ok = True
    if a.kills:
        from tools import crash

        res["crash"] = crash.run("cpython", a.kills)
        ok = res["crash"]["ok"]
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print("results: %s" % a.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
