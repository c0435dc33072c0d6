"""The store's CPU cost in the core alone (issue #4): no sockets, no event loop.

    python -m tools.bench.store_core [--rounds 3000] [--reps 5]

The flat-out persistent fan-in of tools/bench/store.py, in its two
regimes. Per round one publisher feeds 20 QoS 1 PUBLISHes and the store's
batch is written (into real files, never synced: the sync is not the
core's cost):
  written: every delivery is written before its PUBACK comes back (a
    subscriber behind a queue, or slower than store.sync_wait_us): it
    starts behind 1,000 queued messages with a window of 20, acks its 20
    in flight and gets 20 from the queue each round;
  acked first: the subscriber acks each round's 20 before the batch is
    written, so its records are void and never written (a subscriber that
    keeps up, as on the wire: tools/bench/store.py writes about a tenth of
    them).
Timed: the broker's feeds and the write, per message in and out. Printed
with persistence on and off, best and median of --reps; the difference is
what the store costs a message in Python. Repetitions alternate on and off
in one process, so a machine that is slower for a while moves both.
"""
import argparse
import shutil
import statistics
import sys
import tempfile
import time

from edge import config
from edge.mqtt import codec
from edge.mqtt.broker import Broker
from edge.mqtt.packets import Connect, Publish, Subscribe
from edge.runtime import speedups_cpython
from edge.runtime.flash import Flash
from edge.runtime.persist import open_store

WINDOW = 20      # the subscriber's (max_inflight) and each feed's messages
PREFILL = 1000   # the queue the subscriber starts behind
PAYLOAD = b"x" * 64


def _acks(data):
    # PUBACKs for the 3.1.1 QoS 1 PUBLISHes in data (one-byte lengths)
    out = []
    i = 0
    while i + 2 <= len(data):
        n = data[i + 1]
        t = data[i + 2] << 8 | data[i + 3]
        out.append(bytes((0x40, 2, data[i + 4 + t], data[i + 5 + t])))
        i += 2 + n
    return b"".join(out)


def run(on, rounds, acked_first=False):
    """us per message (in and out) and flash bytes per message."""
    window = 256 if acked_first else WINDOW  # (acked first: a window the round never fills)
    cfg = config.load({"broker": {"max_inflight": window}, "store": {"sync": "never"}}, "gateway")
    b = Broker(cfg, 0)
    speedups_cpython.install(b)
    log = None
    wd = tempfile.mkdtemp(prefix="edge-store-core-")
    try:
        if on:  # as the broker opens its store at start (gateway defaults)
            log = open_store(cfg, b, lambda level, msg: None, Flash(wd))
        ids = []

        def client(pkt):
            cid = len(ids) + 1
            ids.append(cid)
            b.open(cid, 0)
            b.data_received(cid, codec.encode(pkt, False), 0)
            return cid

        sub = client(Connect("sub", False, 60))
        b.data_received(sub, codec.encode(Subscribe(1, [("bench/#", 1)], None), False), 0)
        pubs = [client(Connect("pub%d" % i, True, 60)) for i in range(4)]
        pid = [0] * 4

        def feed(i):
            out = []
            for _ in range(WINDOW):
                pid[i] = pid[i] % 65535 + 1
                out.append(codec.encode(Publish("bench/%d" % i, PAYLOAD, 1, False, False, pid[i]), False))
            return b"".join(out)

        for k in range(0 if acked_first else PREFILL // WINDOW):
            b.data_received(pubs[k % 4], feed(k % 4), 0)
        if log is not None:
            log.write()
            log.sync_done(log.top)
        conn = b.conns[sub]
        pending = conn.take()
        for c in b.dirty:
            b.take(c)
        b.dirty.clear()
        feeds = [feed(r % 4) for r in range(rounds)]
        written = log.written if log is not None else 0
        spent = 0.0
        for r in range(rounds):
            t0 = time.perf_counter()
            if acked_first:
                b.data_received(pubs[r % 4], feeds[r], 0)
                b.data_received(sub, _acks(conn.take()), 0)
            else:
                acks = _acks(pending)
                b.data_received(pubs[r % 4], feeds[r], 0)
                b.data_received(sub, acks, 0)
            if log is not None:
                log.write()
                log.sync_done(log.top)
            for c in b.dirty:
                if c is not conn:
                    b.take(c)
            pending = conn.take()
            b.dirty.clear()
            spent += time.perf_counter() - t0
        n = rounds * WINDOW
        assert b.stats.msgs_dropped == 0, "dropped %d" % b.stats.msgs_dropped
        return spent * 1e6 / n, ((log.written - written) / n if log is not None else 0.0)
    finally:
        shutil.rmtree(wd, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench.store_core", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    for acked_first in (False, True):
        res = {True: [], False: []}
        nbytes = 0.0
        for _ in range(a.reps):
            for on in (False, True):
                us, per = run(on, a.rounds, acked_first)
                res[on].append(us)
                if on:
                    nbytes = per
        print("%s:" % ("acked first (records void, never written)" if acked_first
                       else "written (the subscriber behind a queue)"))
        for on in (False, True):
            print("  persistence %-3s: best %.1f us/message, median %.1f" % (
                "on" if on else "off", min(res[on]), statistics.median(res[on])))
        diffs = [b - a for a, b in zip(res[False], res[True])]
        print("  the store: %.1f us/message (median of the paired differences), %.1f flash bytes/message"
              % (statistics.median(diffs), nbytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
