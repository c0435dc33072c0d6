# 06: soak under `micropython -X heapsize=64k`: 8 concurrent paho clients, each
# publishing numbered messages to its own topic (client i at QoS i % 3) and subscribed
# to the wildcard at QoS 2, for EDGE_SOAK_SECONDS (default 30, `make test`'s; `make soak`
# runs 600) at EDGE_SOAK_RATE
# messages/s per client (default 10: 80 in, 640 out per second).
# Checks: no loss at QoS 1/2, no duplicates at QoS 2 (nor at QoS 0), per-publisher
# order kept, the broker never logs MemoryError and stays up.
# Reports $SYS/broker/heap/current and /maximum via record_property (junit XML) and
# in the pytest terminal summary ("edgebroker integration figures"), with or without -s.
#
# Skipped on the CPython runtime; runs against mosquitto in reference mode to
# validate the test itself.
import os
import time

import pytest

from .clients import Client, round_trip, unique_id

SOAK_SECONDS = float(os.environ.get("EDGE_SOAK_SECONDS", "30"))
RATE = float(os.environ.get("EDGE_SOAK_RATE", "10"))
N_CLIENTS = 8
DRAIN_SECONDS = 30

pytestmark = [
    pytest.mark.timeout(SOAK_SECONDS + DRAIN_SECONDS + 60),
    pytest.mark.micropython_only("64 KiB heap soak: MicroPython runtime only"),
]
# 8 clients: the board's default max_connections is 6, sized for the worst
# case of a full memory budget as well (docs/heap.md); this soak's clients stay
# online, so nothing accumulates and 8 fit, as they did before that default
BROKER_CONFIG = {"max_packet_size": 1024, "sys_interval": 2, "max_connections": 8}


def _check_alive(broker):
    if not broker.alive():
        broker.assert_alive()


def test_soak_8_clients_qos012(broker, record_property, report):
    run = unique_id("soak")
    base = "load/" + run
    clients = []
    for i in range(N_CLIENTS):
        c = Client(broker.host, broker.port, client_id="%s-%d" % (run, i), keepalive=30)
        clients.append(c)
    try:
        for c in clients:
            c.connect()
            assert c.subscribe(base + "/#", 2) == [2]

        sent = [0] * N_CLIENTS
        period = 1.0 / RATE
        t_start = time.monotonic()
        next_tick = t_start
        while time.monotonic() - t_start < SOAK_SECONDS:
            for i, c in enumerate(clients):
                payload = b"%d:%d:" % (i, sent[i]) + b"." * 24
                c.publish("%s/%d" % (base, i), payload, qos=i % 3, wait=False)
                sent[i] += 1
            next_tick += period
            if sent[0] % int(RATE) == 0:
                _check_alive(broker)
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)       # pacing the publishers, not waiting for a result

        # Drain: every QoS 1/2 message reaches every subscriber.
        def drained(c):
            per = [set() for _ in range(N_CLIENTS)]
            for m in c.messages:
                p, s = m.payload.split(b":")[:2]
                per[int(p)].add(int(s))
            return all(len(per[p]) == sent[p] for p in range(N_CLIENTS) if p % 3)

        deadline = time.monotonic() + DRAIN_SECONDS
        for c in clients:
            c.wait_for(lambda c=c: drained(c), max(0.1, deadline - time.monotonic()),
                       "all QoS 1/2 messages (sent %r)" % (sent,))

        _check_alive(broker)
        lost0 = 0
        for r, c in enumerate(clients):
            seqs = [[] for _ in range(N_CLIENTS)]
            with c.cond:
                msgs = list(c.messages)
            for m in msgs:
                p, s = m.payload.split(b":")[:2]
                p, s = int(p), int(s)
                assert m.topic == "%s/%d" % (base, p)
                assert m.qos == p % 3, "receiver %d got %r at qos %d" % (r, m.payload, m.qos)
                seqs[p].append(s)
            for p in range(N_CLIENTS):
                got = seqs[p]
                q = p % 3
                if q == 2:
                    assert got == list(range(sent[p])), \
                        "receiver %d from QoS 2 publisher %d: %d of %d, dups/order: %r" % (
                            r, p, len(got), sent[p], _summary(got, sent[p]))
                elif q == 1:
                    assert set(got) == set(range(sent[p])), \
                        "receiver %d lost QoS 1 messages from %d: %r" % (r, p, _summary(got, sent[p]))
                    first = list(dict.fromkeys(got))       # first arrivals, in order
                    assert first == sorted(first), "QoS 1 order broken from %d" % p
                else:
                    assert len(set(got)) == len(got), "QoS 0 duplicated from %d" % p
                    assert got == sorted(got), "QoS 0 order broken from %d" % p
                    assert set(got) <= set(range(sent[p]))
                    lost0 += sent[p] - len(got)
        total = sum(sent)
        report("soak %s: %.0fs, %d published, %d deliveries expected, QoS 0 lost %d"
               % (broker.runtime, SOAK_SECONDS, total, total * N_CLIENTS, lost0))
        record_property("soak_published", total)
        record_property("soak_qos0_lost", lost0)

        # Heap figures, retained by the broker under $SYS.
        h = clients[0]          # no 9th connection: the board default allows 8
        h.subscribe("$SYS/broker/heap/#", 0)
        wait = 2 * BROKER_CONFIG["sys_interval"] + 5
        cur = h.wait_message(lambda m: m.topic == "$SYS/broker/heap/current", wait)
        mx = h.wait_message(lambda m: m.topic == "$SYS/broker/heap/maximum", wait)
        cur_b, max_b = int(cur.payload), int(mx.payload)
        record_property("heap_current_bytes", cur_b)
        record_property("heap_maximum_bytes", max_b)
        report("soak %s: $SYS/broker/heap/current = %d bytes, $SYS/broker/heap/maximum = %d "
               "bytes" % (broker.runtime, cur_b, max_b))
        assert 0 < cur_b <= max_b
        if broker.runtime == "micropython":
            assert max_b <= 64 * 1024
    finally:
        for c in clients:
            try:
                c.disconnect(3)
            except Exception:
                c.stop()

    _check_alive(broker)
    round_trip(broker.host, broker.port)
    log = broker.log_text()
    assert "MemoryError" not in log, "broker logged MemoryError:\n" + broker.log_tail()
    assert "Task exception" not in log, broker.log_tail()


def _summary(got, n):
    seen, dups = set(), []
    for s in got:
        if s in seen:
            dups.append(s)
        seen.add(s)
    missing = sorted(set(range(n)) - seen)
    return {"missing": missing[:20], "n_missing": len(missing), "dups": dups[:20]}
