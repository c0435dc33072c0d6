"""Fuzz a running broker through its sockets: mutated MQTT sessions (3.1.1
and 5.0) on TCP and mutated CoAP datagrams on UDP, while a canary client
checks that well-behaved clients keep being served.

    python -m tools.fuzz --host H --port P --seconds N [--coap-port U]
                         [--workers W] [--seed S] [--json FILE]

Each case is one connection: a valid session (CONNECT, SUBSCRIBE, PUBLISH at
QoS 0/1/2, acks, UNSUBSCRIBE, DISCONNECT) with a few random edits (bytes
flipped, inserted, deleted, repeated, cut), sent in random pieces, then
closed, cleanly or not. The canary, connected throughout, publishes QoS 1 to
itself every 0.5 s and must get its PUBACK and its message back within 5 s;
at the end a new connection must be served too. It also follows
a few $SYS topics and reports the live heap ($SYS/broker/heap/current, a
MicroPython broker's) at the start, when the fuzzing stops and once settled. Exit status 1 when the canary was not served or the
broker went away (docs/fuzzing.md).
"""
import argparse
import asyncio
import json
import random
import socket
import sys
import time

from edge.coap import codec as coap
from edge.mqtt import codec
from edge.mqtt.packets import (
    Connect, Disconnect, Publish, Puback, Pubcomp, Pubrec, Pubrel, Subscribe, Unsubscribe,
)

EDGE_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF)
CANARY_EVERY = 0.5
CANARY_TIMEOUT = 5.0
BASELINE_WAIT = 2.5  # for the first $SYS heap figure (sys_interval 1 s or less)
HEAP_TOPIC = "$SYS/broker/heap/current"
# what the canary follows: few topics, a 64 KiB board's heap is small
SYS_TOPICS = (HEAP_TOPIC, "$SYS/broker/clients/connected", "$SYS/broker/clients/total",
              "$SYS/broker/subscriptions/count", "$SYS/broker/retained messages/count",
              "$SYS/broker/budget/bytes", "$SYS/broker/clients/out of memory")


def mutate(data, rint):
    """data with 1-4 random edits; rint(a, b) draws an int in [a, b] (a
    random.Random's randint, or hypothesis's draw in tests/fuzz)."""
    data = bytearray(data)
    for _ in range(rint(1, 4)):
        op = rint(0, 5)
        n = len(data)
        at = rint(0, max(n - 1, 0))
        if op == 0 and n:
            data[at] ^= 1 << rint(0, 7)
        elif op == 1 and n:
            data[at] = EDGE_BYTES[rint(0, len(EDGE_BYTES) - 1)]
        elif op == 2:
            data[at:at] = bytes(rint(0, 255) for _ in range(rint(1, 8)))
        elif op == 3 and n:
            del data[at:at + rint(1, 8)]
        elif op == 4 and n:
            data[at:at] = data[at:at + rint(1, 16)]
        elif n:
            del data[at:]
    return bytes(data)


def session(v5, client_id="fz"):
    """A valid client session, as bytes."""
    p = {0x26: [("k", "v")]} if v5 else None  # a User Property
    pkts = [
        Connect(client_id, True, 30, "user", b"pw", "will/" + client_id, b"gone", 1, False,
                level=5 if v5 else 4),
        Subscribe(1, [("a/+", 1), ("b/#", 2)], p),
        Publish("a/x", b"zero", 0, False, False, 0, p),
        Publish("a/y", b"one", 1, True, False, 2, p),
        Publish("b/z", b"two", 2, False, False, 3, p),
        Pubrel(3),
        Puback(1), Pubrec(2), Pubcomp(2),
        Unsubscribe(4, ["a/+"], p),
        Disconnect(),
    ]
    return b"".join(codec.encode(k, v5) for k in pkts)


def _path(path):
    opts = []
    for seg in path.split("/"):
        opts += [11, seg.encode()]  # Uri-Path (RFC 7252 §5.10.1)
    return opts


def datagrams():
    """Valid CoAP requests (RFC 7252): publish, observe, retained read,
    discovery, a Block1 piece."""
    return [
        coap.encode(0, 2, 1, b"t1", _path("ps/fz/c") + [15, b"qos=1"], b"21.5"),
        coap.encode(0, 1, 2, b"t2", [6, b""] + _path("ps/fz/#"), b""),
        coap.encode(1, 1, 3, b"", _path("r/fz/c"), b""),
        coap.encode(0, 1, 4, b"t4", _path(".well-known/core") + [15, b"rt=core*"], b""),
        coap.encode(0, 3, 5, b"t5", _path("ps/fz/big") + [27, b"\x0a", 60, b"\x01\x00"], b"x" * 64),
    ]


class Stats:
    def __init__(self):
        self.cases = 0
        self.datagrams = 0
        self.canary_ok = 0
        self.canary_failed = 0
        self.heap = []  # (seconds since start, bytes)
        self.sys = {}   # $SYS topic -> its last value, as the canary saw it
        self.final_ok = False
        self.errors = []
        self.heap_at_start = None
        self.heap_at_stop = None


async def _read_packets(reader, buf, v5=False):
    data = await reader.read(65536)
    if not data:
        raise ConnectionError("closed by the broker")
    buf += data
    out = []
    i = 0
    while True:
        pkt, used = codec.decode(bytes(buf), i, len(buf), v5)
        if pkt is None:
            break
        out.append(pkt)
        i += used
    del buf[:i]
    return out


async def _mqtt(host, port, client_id, subs=()):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(codec.encode(Connect(client_id, True, 0)))
    if subs:
        writer.write(codec.encode(Subscribe(1, list(subs))))
    await writer.drain()
    return reader, writer


async def canary(host, port, stats, done, t0):
    """Publishes to itself; counts round trips made and missed."""
    buf = bytearray()
    pid = 0
    waiting = {}  # payload -> deadline
    next_send = time.monotonic()
    writer = None
    try:
        reader, writer = await _mqtt(host, port, "fuzz-canary", [("fuzz/canary", 1)] + [(t, 0) for t in SYS_TOPICS])
        while not done.is_set() or waiting:
            now = time.monotonic()
            if not done.is_set() and now >= next_send:
                pid = pid % 65535 + 1
                body = b"ping %d" % pid
                waiting[body] = now + CANARY_TIMEOUT
                writer.write(codec.encode(Publish("fuzz/canary", body, 1, False, False, pid)))
                next_send = now + CANARY_EVERY
            for body, deadline in list(waiting.items()):
                if now > deadline:
                    del waiting[body]
                    stats.canary_failed += 1
            try:
                pkts = await asyncio.wait_for(_read_packets(reader, buf), 0.1)
            except asyncio.TimeoutError:
                continue
            for p in pkts:
                if p.kind == 3 and p.topic.startswith("$SYS/"):
                    value = bytes(p.payload).decode("utf-8", "replace")
                    stats.sys[p.topic] = value
                    if p.topic == HEAP_TOPIC:
                        stats.heap.append((round(time.monotonic() - t0, 1), int(value)))
                elif p.kind == 3 and waiting.pop(bytes(p.payload), None) is not None:
                    stats.canary_ok += 1
                if p.kind == 3 and p.qos == 1:
                    writer.write(codec.encode(Puback(p.pid)))
    except (ConnectionError, OSError) as e:
        stats.errors.append("canary: %s" % e)
        stats.canary_failed += 1 + len(waiting)
    finally:
        if writer is not None:
            writer.close()


async def fuzz_tcp(host, port, rng, stats, stop, seeds):
    while not stop.is_set():
        data = mutate(rng.choice(seeds), rng.randint)
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            stats.errors.append("connect: %s" % e)
            await asyncio.sleep(0.1)
            continue
        try:
            i = 0
            while i < len(data):
                j = i + rng.randint(1, max(1, len(data) // 2))
                writer.write(data[i:j])
                i = j
                await writer.drain()
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.random() * 0.005)
            try:
                await asyncio.wait_for(reader.read(65536), 0.05)
            except asyncio.TimeoutError:
                pass
        except (ConnectionError, OSError):
            pass  # the broker closed it: what a bad session gets
        finally:
            if rng.random() < 0.5:
                writer.transport.abort()  # a dropped link, no FIN
            else:
                writer.close()
        stats.cases += 1


async def fuzz_udp(host, port, rng, stats, stop):
    seeds = datagrams()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        while not stop.is_set():
            s.sendto(mutate(rng.choice(seeds), rng.randint), (host, port))
            stats.datagrams += 1
            try:
                while True:
                    s.recvfrom(2048)
            except BlockingIOError:
                pass
            await asyncio.sleep(0.002)
    finally:
        s.close()


async def final_check(host, port):
    """A new client is served: publish QoS 1 to itself, get it back."""
    reader, writer = await _mqtt(host, port, "fuzz-final", [("fuzz/final", 1)])
    buf = bytearray()
    writer.write(codec.encode(Publish("fuzz/final", b"still here", 1, False, False, 7)))
    deadline = time.monotonic() + CANARY_TIMEOUT
    try:
        while time.monotonic() < deadline:
            try:
                pkts = await asyncio.wait_for(_read_packets(reader, buf), 0.2)
            except asyncio.TimeoutError:
                continue
            if any(p.kind == 3 and bytes(p.payload) == b"still here" for p in pkts):
                return True
        return False
    finally:
        writer.close()


async def _wait_listening(host, port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)  # polling for the port, not waiting blindly


async def run(host, port, seconds, coap_port=None, workers=3, seed=None, settle=3.0):
    seed = random.randrange(1 << 30) if seed is None else seed
    await _wait_listening(host, port)
    stats = Stats()
    stats.seed = seed
    rng = random.Random(seed)
    seeds = [session(False), session(True)]
    stop = asyncio.Event()  # the fuzzing ends
    done = asyncio.Event()  # the canary ends, `settle` s later
    t0 = time.monotonic()
    watch = asyncio.create_task(canary(host, port, stats, done, t0))
    tasks = []
    # the baseline: the canary subscribed, and (MicroPython) a first live
    # heap figure in, before the noise starts
    deadline = time.monotonic() + BASELINE_WAIT
    while not stats.heap and time.monotonic() < deadline and not watch.done():
        await asyncio.sleep(0.05)
    stats.heap_at_start = stats.heap[-1][1] if stats.heap else None
    tasks += [asyncio.create_task(fuzz_tcp(host, port, random.Random(rng.random()), stats, stop, seeds))
              for _ in range(workers)]
    if coap_port:
        tasks.append(asyncio.create_task(fuzz_udp(host, coap_port, random.Random(rng.random()), stats, stop)))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    stats.heap_at_stop = stats.heap[-1][1] if stats.heap else None
    await asyncio.sleep(settle)  # the broker cleans up; $SYS says what is left
    done.set()
    await watch
    try:
        stats.final_ok = await final_check(host, port)
    except (ConnectionError, OSError) as e:
        stats.errors.append("final: %s" % e)
    return stats


def report(stats):
    heap = ""
    if stats.heap:
        heap = "; live heap %s before, %s at the end of the fuzzing, %d settled" % (
            stats.heap_at_start, stats.heap_at_stop, stats.heap[-1][1])
    return ("fuzz (seed %d): %d sessions, %d datagrams; canary %d served, %d missed; "
            "new client after: %s%s" % (stats.seed, stats.cases, stats.datagrams, stats.canary_ok,
                                        stats.canary_failed, "served" if stats.final_ok else "NOT SERVED",
                                        heap))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--coap-port", type=int, default=0, help="also fuzz CoAP on this UDP port")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--workers", type=int, default=3, help="concurrent fuzzing connections")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to watch $SYS after the fuzzing")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    stats = asyncio.run(run(a.host, a.port, a.seconds, a.coap_port, a.workers, a.seed, a.settle))
    print(report(stats))
    for e in stats.errors[:10]:
        print("  " + e)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({k: v for k, v in vars(stats).items()}, f, indent=1)
    return 0 if stats.final_ok and not stats.canary_failed else 1


if __name__ == "__main__":
    sys.exit(main())
