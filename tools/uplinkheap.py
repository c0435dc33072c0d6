"""The board's live heap with the uplink up (docs/heap.md "The uplink on a board").

    python -m tools.uplinkheap [--heap 96k] [--persistence] [--messages 20]
                               [--config-json '{"upstream": {...}}'] -- [edge args...]

Starts `python -m tools.board --heap H` (the core from a ROMFS image, as on a
board) with sys_interval 1 and the given edge arguments (--upstream URL
--edge-id ID: a RabbitMQ node must be listening, `python -m
tools.rabbitnode` gives one), connects one paho client to $SYS/broker/#,
waits until $SYS/broker/uplink/state says "up" (if an upstream is set),
publishes N QoS 1 messages and waits for uplink/confirmed to reach N, then
prints the last $SYS/broker/heap/current and maximum (gc.mem_alloc() after
gc.collect(), bytes) and whether "out of memory" appeared in the broker's
output. Without edge arguments: the same broker without an uplink, for the
difference. Every wait is bounded; the broker is stopped by its PID.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    edge_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, edge_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m tools.uplinkheap", description=__doc__.splitlines()[0])
    ap.add_argument("--heap", default="96k")
    ap.add_argument("--persistence", action="store_true", help="the store (and the durable outbox) on")
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--config-json", default="{}", help="sections merged into the board's config.json")
    a = ap.parse_args(argv)
    import paho.mqtt.client as mqtt

    d = tempfile.mkdtemp(prefix="uplinkheap-")
    port = _free_port()
    cfg = {"broker": {"sys_interval": 1}, "store": {"persistence": a.persistence}}
    for k, v in json.loads(a.config_json).items():
        cfg.setdefault(k, {}).update(v)
    with open(os.path.join(d, "c.json"), "w") as f:
        json.dump(cfg, f)
    logf = open(os.path.join(d, "log"), "w")
    p = subprocess.Popen([sys.executable, "-m", "tools.board", "--heap", a.heap, "--", "--config",
                          os.path.join(d, "c.json"), "--bind", "127.0.0.1", "--port", str(port),
                          "--data", os.path.join(d, "data")] + edge_args, stdout=logf, stderr=subprocess.STDOUT)
    got = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the board did not start")
                time.sleep(0.1)  # polling for the port
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "uplinkheap")
        c.on_message = lambda c_, u, m: got.__setitem__(m.topic, m.payload.decode())
        c.connect("127.0.0.1", port)
        c.subscribe("$SYS/broker/#")
        c.loop_start()
        upstream = "--upstream" in edge_args or "upstream" in cfg
        t = time.monotonic()
        while upstream and got.get("$SYS/broker/uplink/state") != "up" and time.monotonic() - t < 20:
            time.sleep(0.05)  # polling the $SYS value
        for i in range(a.messages):
            c.publish("uplinkheap/%d" % i, b"%d" % i, qos=1).wait_for_publish(10)
        t = time.monotonic()
        while upstream and got.get("$SYS/broker/uplink/confirmed") != str(a.messages) and time.monotonic() - t < 20:
            time.sleep(0.05)
        time.sleep(1.5)  # one more $SYS round: the heap after the messages
        c.loop_stop()
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
        logf.close()
    with open(os.path.join(d, "log")) as f:
        log = f.read()
    shutil.rmtree(d, ignore_errors=True)
    print("heap %s: uplink %s, confirmed %s of %d; live heap %s bytes, maximum %s; out of memory: %s" % (
        a.heap, got.get("$SYS/broker/uplink/state", "(none)"), got.get("$SYS/broker/uplink/confirmed", "-"),
        a.messages, got.get("$SYS/broker/heap/current"), got.get("$SYS/broker/heap/maximum"),
        "yes" if ("out of memory" in log or "MemoryError" in log) else "no"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
