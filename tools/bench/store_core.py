"""The store's CPU cost in the core alone (issue #4): no sockets, no event loop.

    python -m tools.bench.store_core [--rounds 3000] [--reps 5]

The flat-out persistent fan-in of tools/bench/store.py, in the regime it
runs in on the wire: every delivery is written before its PUBACK comes back
(a batch is written at the end of the loop pass that brought it; with a
max_inflight of 20 the subscriber's queue is long as well). Here the
subscriber starts behind a queue, so none of its acks can elide a record.
Per round one publisher feeds 20 QoS 1 PUBLISHes (queued), the subscriber
acks its 20 in flight and gets 20 from
the queue, and the store's batch is written (into real files, never
synced: the sync is not the core's cost). Timed: the broker's feeds and the
write, per message in and out. Printed with persistence on and off, best
and median of --reps; the difference is what the store costs a message in
Python. Repetitions alternate on and off in one process, so a machine that
is slower for a while moves both.
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


def run(on, rounds):
    """us per message (in and out) and flash bytes per message."""
    cfg = config.load({"broker": {"max_inflight": WINDOW}, "store": {"sync": "never"}}, "gateway")
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

        for k in range(PREFILL // WINDOW):
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
            acks = _acks(pending)
            t0 = time.perf_counter()
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
    res = {True: [], False: []}
    nbytes = 0.0
    for _ in range(a.reps):
        for on in (False, True):
            us, per = run(on, a.rounds)
            res[on].append(us)
            if on:
                nbytes = per
    for on in (False, True):
        print("persistence %-3s: best %.1f us/message, median %.1f" % (
            "on" if on else "off", min(res[on]), statistics.median(res[on])))
    diffs = [b - a for a, b in zip(res[False], res[True])]
    print("the store: %.1f us/message (median of the paired differences), %.1f flash bytes/message"
          % (statistics.median(diffs), nbytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
