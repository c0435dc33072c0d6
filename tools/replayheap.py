"""Replay heap vs queued messages, on the board runtime.

    python -m tools.replayheap [--n 0,100,200,400] [--payload 64] [--ram] [--min-heap] [--json]

For each N, writes a store (the broker core on CPython, over in-memory files
copied to a directory: the format is the same on both runtimes) holding one
persistent session whose client is away with N QoS 1 messages queued (topic
"q/t", --payload bytes each) on flash as a board queues them (FMSG records,
edge/store/fqueue.py), or with --ram in RAM (QMSG records, a gateway's
queues: what a board replayed before issue #19), then opens it inside `python -m tools.board
--exec` (the core's bytecode in a ROMFS image, only objects in the GC heap,
as on a board) with edge/runtime/persist.py's open_store, as a board starts.
Reports the heap the replayed state holds afterwards (gc.mem_alloc() growth
after gc.collect()) and, with --min-heap, the smallest heap (in 4 KiB steps)
in which the replay completes: the figure that decides whether a board with
that queue on flash starts at all (docs/persistence.md "On a board").
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

_PROBE = r"""
import gc, json
from edge import config
from edge.mqtt.broker import Broker
from edge.runtime import persist
cfg = config.defaults("board")
bc = cfg["broker"]
for k in ("max_queued_messages",):
    bc[k] = 100000
for k in ("max_queued_bytes", "memory_budget_bytes"):
    bc[k] = 1 << 30
bc["sys_interval"] = 0
cfg["store"]["dir"] = %(dir)r
cfg["store"]["budget_bytes"] = 1 << 30
cfg["store"]["session_budget"] = 1 << 30
b = Broker(cfg, 0)
gc.collect()
a = gc.mem_alloc()
ok = 1
held = -1
try:
    persist.open_store(cfg, b, lambda lv, m: None)
    gc.collect()
    held = gc.mem_alloc() - a
    s = b.sessions["away"]
    n = 0
    for e in s.queue or ():
        n += s.store._sess[s][10][0] if e is None else 1  # (None: FLASH, fqueue.py)
except MemoryError:
    ok = 0
    n = -1
print(json.dumps({"ok": ok, "held": held, "queued": n}))
"""


# --live: an empty store opened, an away session, then N QoS 1 messages
# published into it through data_received (as the runtime feeds them): the
# heap each queued message holds while the broker runs
_LIVE = r"""
import gc, json
from edge import config
from edge.mqtt.broker import Broker
from edge.runtime import persist
cfg = config.defaults("board")
bc = cfg["broker"]
bc["max_queued_messages"] = 100000
for k in ("max_queued_bytes", "memory_budget_bytes"):
    bc[k] = 1 << 30
bc["sys_interval"] = 0
cfg["store"]["dir"] = %(dir)r
cfg["store"]["budget_bytes"] = 1 << 30
cfg["store"]["session_budget"] = 1 << 30
b = Broker(cfg, 0)
wal = persist.open_store(cfg, b, lambda lv, m: None)
def s(x):
    return bytes([len(x) >> 8, len(x) & 255]) + x
def pkt(first, body):
    return bytes([first, len(body)]) + body
def feed(cid, data):
    b.data_received(cid, data, 0)
    for c in b.dirty:
        c.take()
    b.dirty.clear()
    wal.flush()
b.open(1, 0)
feed(1, pkt(0x10, s(b"MQTT") + bytes([4, 0, 0, 60]) + s(b"away")))
feed(1, pkt(0x82, b"\x00\x01" + s(b"q/#") + b"\x01"))
b.connection_lost(1, 0)
b.open(2, 0)
feed(2, pkt(0x10, s(b"MQTT") + bytes([4, 2, 0, 60]) + s(b"pub")))
def pub(i):
    feed(2, pkt(0x32, s(b"q/t") + bytes([(i %% 250) + 1 >> 8, (i %% 250) + 1 & 255]) + bytes(%(payload)d)))
pub(0)
gc.collect(); gc.collect()
a = gc.mem_alloc()
for i in range(%(n)d):
    pub(i + 1)
gc.collect(); gc.collect()
print(json.dumps({"per_message": (gc.mem_alloc() - a) / %(n)d}))
"""


def live(heap, n, payload, flash):
    """Heap per queued message in a running broker (the board runtime;
    flash False: FLASH_QUEUE off, the RAM queue)."""
    with tempfile.TemporaryDirectory(prefix="replayheap-live-") as d:
        code = _LIVE % {"dir": d, "n": n, "payload": payload}
        if not flash:
            code = code.replace("wal = persist", "persist.FLASH_QUEUE = False\nwal = persist")
        out = subprocess.run([sys.executable, "-m", "tools.board", "--heap", heap, "--exec", code],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                return json.loads(line)["per_message"]
        raise RuntimeError(out.stdout[-500:])


def build(path, n, payload, flash=True):
    """A store in directory path: session "away" with n QoS 1 messages
    queued, on flash (FMSG records, as a board queues them) or, flash
    False, in RAM (QMSG records: a gateway's, or a board's before issue
    #19)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from edge.store.layout import FMSG
    from tests.core._memfiles import MemFiles
    from tests.core._pair import Client, make_broker, publish
    from tests.core._store import new_store

    m = MemFiles()
    m, log, st = new_store(m, prefix="state", budget_bytes=1 << 30, segment_bytes=16384,
                           session_budget=1 << 30, owned=FMSG)
    if flash:
        st.queue = st.fq  # as edge/runtime/persist.py on a board
    b = make_broker(0, max_queued_messages=100000, max_queued_bytes=1 << 30,
                    memory_budget_bytes=1 << 30)
    b.restore(st)
    sub = Client(b)
    sub.connect("away", clean=False)
    sub.subscribe(("q/#", 1))
    sub.lose()
    pub = Client(b)
    pub.connect("pub")
    for i in range(n):
        publish(pub, "q/t", bytes(payload), 1, pid=i % 65535 + 1)
    log.flush()
    os.makedirs(path, exist_ok=True)
    for name, data in m.data.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(bytes(data))


def probe(path, heap):
    code = _PROBE % {"dir": path}
    out = subprocess.run([sys.executable, "-m", "tools.board", "--heap", heap, "--exec", code],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return {"ok": 0, "held": -1, "queued": -1, "out": out.stdout[-300:]}


def min_heap(path, lo=32, hi=1024):
    """Smallest heap (KiB, a multiple of 4) in which the replay completes."""
    if not probe(path, "%dk" % hi)["ok"]:
        return None
    while hi - lo > 4:
        mid = (lo + hi) // 2 // 4 * 4
        if probe(path, "%dk" % mid)["ok"]:
            hi = mid
        else:
            lo = mid
    return hi


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.replayheap", description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="0,100,200,400", help="queue lengths, comma separated")
    ap.add_argument("--payload", type=int, default=64)
    ap.add_argument("--heap", default="1024k", help="heap for the held figure")
    ap.add_argument("--min-heap", action="store_true", help="also search the smallest heap that replays")
    ap.add_argument("--ram", action="store_true", help="queue in RAM (QMSG records), not on flash")
    ap.add_argument("--live", type=int, metavar="N",
                    help="instead: heap per message while N are queued in a running broker")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.live:
        per = live(args.heap, args.live, args.payload, not args.ram)
        print("%d QoS 1 messages (%d B payload) queued %s for an away session: %.0f heap bytes each"
              % (args.live, args.payload, "in RAM" if args.ram else "on flash", per))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="replayheap-") as tmp:
        for n in [int(x) for x in args.n.split(",")]:
            path = os.path.join(tmp, "n%d" % n)
            build(path, n, args.payload, not args.ram)
            r = probe(path, args.heap)
            row = {"queued": n, "flash_bytes": sum(os.path.getsize(os.path.join(path, f))
                                                   for f in os.listdir(path)),
                   "held": r["held"], "replayed": r["queued"]}
            if args.min_heap:
                row["min_heap_kib"] = min_heap(path)
            rows.append(row)
            print("%6d queued (%d B payload): %7d flash bytes, replay holds %7d heap bytes%s" % (
                n, args.payload, row["flash_bytes"], row["held"],
                ", starts from %s KiB" % row["min_heap_kib"] if args.min_heap else ""))
    if len(rows) > 1 and rows[-1]["queued"] > rows[0]["queued"]:
        per = (rows[-1]["held"] - rows[0]["held"]) / (rows[-1]["queued"] - rows[0]["queued"])
        print("heap held per queued message: %.0f bytes" % per)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
