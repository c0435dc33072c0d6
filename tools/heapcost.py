"""Heap cost of each thing the broker holds, on the board runtime.

    python -m tools.heapcost [--heap 256k] [--n 16] [--json]

Runs the portable core inside `python -m tools.board --exec` (the core's
bytecode in a ROMFS image, only objects in MicroPython's GC heap, as on a
board) and feeds a Broker built from the board profile's defaults (limits
raised so nothing is refused while measuring) real MQTT packets through
`data_received`, as the runtime does. Each figure is the growth of
gc.mem_alloc() after gc.collect() over N items, divided by N, after one item
of the same kind was made first (so one-time costs, such as an interned
string or a lazily imported module, are not charged per item; they are
reported apart, e.g. the first 5.0 client). The runtime's own share of a
connection (socket, stream, task) is not in these figures: docs/heap.md gives
it from `python -m tools.heapcheck` (heap per client, live sockets).

The unix port is 64-bit: pointer-sized fields are twice an ESP32's, so these
figures are an upper bound for a 32-bit board. docs/heap.md has the table.
"""
import argparse
import json
import sys

# Runs inside MicroPython (after tools.board's mount). Prints one JSON line.
_PROBE = r"""
import gc, json
from edge import config
from edge.mqtt.broker import Broker

N = %(n)d
cfg = config.defaults("board")
bc = cfg["broker"]
for k in ("max_connections", "max_subscriptions", "max_retained_messages",
          "max_queued_messages"):
    bc[k] = 100000
for k in ("max_retained_bytes", "max_queued_bytes", "memory_budget_bytes"):
    bc[k] = 1 << 30
bc["sys_interval"] = 0
b = Broker(cfg, 0)


def used():
    gc.collect()
    gc.collect()
    return gc.mem_alloc()


def rl(n):
    out = bytearray()
    while True:
        d = n & 127
        n >>= 7
        out.append(d | 128 if n else d)
        if not n:
            return bytes(out)


def pkt(first, body):
    return bytes([first]) + rl(len(body)) + body


def s(x):
    if isinstance(x, str):
        x = x.encode()
    return bytes([len(x) >> 8, len(x) & 255]) + x


def connect(cid, clean=True, v5=False):
    flags = 2 if clean else 0
    body = s("MQTT") + bytes([5 if v5 else 4, flags, 0, 60])
    if v5:
        body += b"\x00"  # no properties
    return pkt(0x10, body + s(cid))


def subscribe(f, qos=1, v5=False):
    return pkt(0x82, b"\x00\x01" + (b"\x00" if v5 else b"") + s(f) + bytes([qos]))


def publish(topic, payload, qos=0, retain=False, pid=1, v5=False):
    body = s(topic) + (b"\x00" + bytes([pid]) if qos else b"") + (b"\x00" if v5 else b"")
    return pkt(0x30 | qos << 1 | (1 if retain else 0), body + payload)


DISCONNECT = b"\xe0\x00"
nid = [0]


def feed(cid, data):
    b.data_received(cid, data, 0)
    for c in b.dirty:
        c.take()
    b.dirty.clear()


def client(name, clean=True, v5=False):
    nid[0] += 1
    cid = nid[0]
    b.open(cid, 0)
    feed(cid, connect(name, clean, v5))
    return cid


def gone(cid, disconnect=True):
    if disconnect:
        feed(cid, DISCONNECT)
    b.connection_lost(cid, 0)
    for c in b.dirty:
        c.take()
    b.dirty.clear()


res = {}


def per(name, make):
    # one first (one-time costs), then N measured
    make("w" + name)
    a = used()
    for i in range(N):
        make("%%s%%d" %% (name, i))
    res[name] = (used() - a) // N


per("conn311_clean", lambda n: client(n))
per("conn311_persistent", lambda n: client(n, False))


def offline(n):
    gone(client(n, False))


per("session_offline", offline)


def offline_sub(n):
    c = client(n, False)
    feed(c, subscribe("sub/" + n + "/x"))
    gone(c)


per("session_offline_1sub", offline_sub)
res["subscription_own_filter"] = res["session_offline_1sub"] - res["session_offline"]


def offline_same_sub(n):
    c = client(n, False)
    feed(c, subscribe("same/filter/x"))
    gone(c)


per("session_offline_1sub_shared", offline_same_sub)
res["subscription_shared_filter"] = res["session_offline_1sub_shared"] - res["session_offline"]

pub = client("publisher")
for levels in (1, 3, 6):
    for size in (8, 64, 256):
        payload = b"p" * size
        def ret(n, levels=levels, payload=payload):
            t = "/".join([n] + ["l%%d" %% k for k in range(levels - 1)])
            feed(pub, publish(t, payload, 0, True))
        per("retained_L%%d_P%%d" %% (levels, size), ret)
        res["retained_L%%d_P%%d_topic" %% (levels, size)] = len("r0/" * levels)


# retained, delivered at QoS 0 to a 3.1.1 subscriber (which encodes the
# PUBLISH once for all: Message.enc0)
s311 = client("sub311")
feed(s311, subscribe("live/#", 0))


def ret_live(n):
    feed(pub, publish("live/" + n, b"p" * 64, 0, True))


per("retained_live_P64", ret_live)


def ret_sibling(n):
    feed(pub, publish("site/line/" + n, b"p" * 8, 0, True))


per("retained_sibling_P8", ret_sibling)

# queued QoS 1 messages for one offline session (16-byte payload)
q = client("queued", False)
feed(q, subscribe("q/#"))
gone(q)
pid = [0]


def queued(n, payload=b"x" * 16):
    pid[0] = pid[0] %% 65535 + 1
    feed(pub, publish("q/t", payload, 1, False, pid[0]))


per("queued_msg_P16", queued)
q2 = client("queued2", False)
feed(q2, subscribe("q/#"))
gone(q2)
per("queued_msg_P16_2sessions", queued)

# 5.0: the first client loads v5.py, props.py (and v5subs.py at its first
# SUBSCRIBE): one-time
a = used()
c5 = client("v5first", True, True)
feed(c5, subscribe("v5/first", 1, True))
res["v5_first_client_once"] = used() - a
per("conn5_clean", lambda n: client(n, True, True))
per("conn5_persistent", lambda n: client(n, False, True))
res["heap_free_end"] = gc.mem_free()
print("HEAPCOST " + json.dumps(res))
"""

# Rows of the table: (key, what it is)
ROWS = (
    ("conn311_clean", "3.1.1 connection, clean session (core: Connection + Session)"),
    ("conn311_persistent", "3.1.1 connection, persistent session"),
    ("conn5_clean", "5.0 connection, clean session (after the first)"),
    ("conn5_persistent", "5.0 connection, persistent session"),
    ("v5_first_client_once", "first 5.0 client: v5.py, props.py, v5subs.py loaded (once)"),
    ("session_offline", "offline persistent session, no subscription"),
    ("subscription_own_filter", "subscription, a filter of its own (3 levels)"),
    ("subscription_shared_filter", "subscription, a filter another session has"),
    ("retained_sibling_P8", "retained message, 3 levels, 2 shared, 8 B payload"),
    ("retained_live_P64", "retained message, 2 levels, 1 shared, 64 B payload, sent at QoS 0 to a 3.1.1 subscriber"),
    ("queued_msg_P16", "QoS 1 message queued for 1 offline session (16 B payload)"),
    ("queued_msg_P16_2sessions", "the same, queued for 2 offline sessions (both)"),
)


def measure(heap="1m", n=16):
    """The figures, as a dict, from one run of the probe on the board runtime."""
    import subprocess

    code = _PROBE % {"n": n}
    out = subprocess.run(
        [sys.executable, "-m", "tools.board", "--heap", heap, "--exec", code],
        capture_output=True, text=True, timeout=300,
    )
    for line in out.stdout.splitlines():
        if line.startswith("HEAPCOST "):
            return json.loads(line[9:])
    raise SystemExit("probe failed:\n" + out.stdout + out.stderr)


def table(res):
    lines = ["| what | heap bytes |", "|---|---:|"]
    for key, what in ROWS:
        lines.append("| %s | %d |" % (what, res[key]))
    for levels in (1, 3, 6):
        for size in (8, 64, 256):
            k = "retained_L%d_P%d" % (levels, size)
            lines.append("| retained message, %d level(s) all new, %d B payload | %d |" % (levels, size, res[k]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.heapcost", description=__doc__.splitlines()[0])
    ap.add_argument("--heap", default="1m", help="MicroPython heap for the probe (default 1m: compiling the probe takes ~300 KB)")
    ap.add_argument("--n", type=int, default=16, help="items per figure (default 16)")
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = ap.parse_args(argv)
    res = measure(args.heap, args.n)
    print(json.dumps(res, indent=1, sort_keys=True) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
