# Runs on the QEMU board (tests/firmware/test_qemu.py), not under pytest: a
# broker exchange through the in-memory transport of tests/core/_pair.py
# with the board's defaults and its store on the board's littlefs, and the
# heap it costs (gc.mem_free after the boot, after importing the broker's
# runtime, after opening the store, after the exchange).
import gc


def _free():
    gc.collect()
    return gc.mem_free()


def run(n=60):
    boot = _free()
    from edge.runtime import main  # noqa: F401  (the runtime main.py starts)
    from edge import config
    from edge.mqtt.broker import Broker
    from edge.mqtt.packets import Publish, Pubrel
    from tests.core._pair import Client, publishes

    imported = _free()
    # the store as main.py opens it: on the board's flash (littlefs at /)
    cfg = config.load({"store": {"dir": "/exchange-data"}}, "board")
    b = Broker(cfg, 0)
    main._makedirs(cfg["store"]["dir"])
    wal = main._open_store(cfg, b, lambda level, msg: None)
    cfg = None
    stored = _free()
    sub = Client(b)
    sub.connect("sub", clean=False)
    sub.subscribe(("t/#", 2))
    pub = Client(b)
    pub.connect("pub")
    got = []
    acks = 0
    for i in range(n):
        qos = i % 3
        pub.send(Publish("t/%d" % i, b"m%d" % i, qos, False, False, i + 1 if qos else 0))
        for p in pub.recv():
            if p.kind == 5:  # PUBREC: release it
                pub.send(Pubrel(p.pid))
                acks += sum(1 for q in pub.recv() if q.kind == 7)
            elif p.kind == 4:
                acks += 1
        wal.flush()  # as the runtime does after each feed, before output goes
        for _ in range(3):  # PUBLISH, PUBREL after our PUBREC: up to two turns
            pkts = sub.recv()
            got += publishes(pkts)
            sub.ack_all(pkts)
            wal.flush()
    payloads = [p.payload for p in got]
    ok = payloads == [b"m%d" % i for i in range(n)] and acks == n - (n + 2) // 3
    exchange = _free()
    live = wal.live_bytes
    wal.close()
    print("exchange: %d published, %d delivered in order: %s, %d acks, store %d live bytes"
          % (n, len(got), ok, acks, live))
    print("heap free: boot %d, broker imported %d, store opened %d, after exchange %d"
          % (boot, imported, stored, exchange))
    return ok and wal is not None
