"""Does a board heap hold the profile's clients? A live check on the board runtime.

    python -m tools.boardload --heap 84k [--persistence] [--coap-observers 3]

Starts `python -m tools.board --heap HEAP` (the board profile's defaults,
sys_interval 1), connects a $SYS client reading $SYS/broker/heap/current
(gc.mem_alloc() after a collection), then 5 more MQTT clients (6 in all, the
profile's max_connections): each subscribes to its own topic at QoS 1 or 2 and
publishes --messages messages to it, alternately at QoS 1 and 2, each round
waiting for every acknowledgement (a sensor's pace, not a flood). With
--coap-observers N, CoAP is on and N observers register on a topic over UDP,
then get one notification each. It prints the live heap at idle, with the
clients, and with the observers, and exits 0 when every message was
acknowledged and delivered, every observer registered and notified, and the
broker is still running (its log's errors are printed otherwise).
docs/heap.md ("Persistence at 64 KiB: the floor", "Fragmented at boot") has
the figures.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

CLIENTS = 5  # besides the $SYS client: the board profile's 6 connections


def _observe(port, mid, token):
    # RFC 7252 §3: CON GET, token of 1 byte; RFC 7641 Observe 0 (register),
    # Uri-Path "ps" / "load" / "obs" (docs/coap.md)
    opts = bytes([0x60, 0x52]) + b"ps" + bytes([0x04]) + b"load" + bytes([0x03]) + b"obs"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(bytes([0x41, 0x01, mid >> 8, mid & 255, token]) + opts, ("127.0.0.1", port))
    return s


def _code(s):
    try:
        data = s.recv(1500)
    except OSError:
        return None
    return "%d.%02d" % (data[1] >> 5, data[1] & 31)


def run(heap, persistence, messages, observers, keep=False):
    d = tempfile.mkdtemp(prefix="edge-boardload-")
    cfg = {"broker": {"sys_interval": 1}, "coap": {"enabled": observers > 0}}
    with open(os.path.join(d, "c.json"), "w") as f:
        json.dump(cfg, f)
    log_path = os.path.join(d, "broker.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tools.board", "--heap", heap, "--", "--config",
                             os.path.join(d, "c.json"), "--bind", "127.0.0.1", "--port", "0", "--coap-port", "0",
                             "--data", os.path.join(d, "data"), "--persistence", "true" if persistence else "false"],
                            stdout=log, stderr=subprocess.STDOUT)
    heaps, clients, ok = {}, [], False
    try:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline and proc.poll() is None:
            with open(log_path) as f:
                text = f.read()
            if re.search(r":(\d+) \(MQTT\)", text) and (not observers or "/udp (CoAP)" in text):
                break
            time.sleep(0.1)  # polling the log for the start line
        m = re.search(r":(\d+) \(MQTT\)", text)
        if m is None:
            print("the broker did not start")
            return False
        port = int(m.group(1))
        live = {}
        mon = paho.Client(CallbackAPIVersion.VERSION2, client_id="load-sys")
        mon.on_message = lambda c, u, msg: live.__setitem__("now", int(msg.payload))
        mon.connect("127.0.0.1", port)
        mon.subscribe("$SYS/broker/heap/current")
        mon.loop_start()
        clients.append(mon)

        def settle(label):
            live.pop("now", None)
            t = time.monotonic() + 5
            while "now" not in live and time.monotonic() < t:
                time.sleep(0.05)  # the next $SYS round (sys_interval 1)
            heaps[label] = live.get("now")

        settle("idle")
        got = {}
        for i in range(CLIENTS):
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id="load-%d" % i)
            c.user_data_set(i)
            c.on_message = lambda c, u, msg: got.setdefault(u, []).append(msg.payload)
            c.connect("127.0.0.1", port)
            c.subscribe("load/%d" % i, qos=2 if i % 2 else 1)
            c.loop_start()
            clients.append(c)
        time.sleep(1)  # the SUBACKs
        sent = acked = 0
        for k in range(messages):
            infos = [c.publish("load/%d" % i, b"%d-%d" % (i, k) + b"x" * 60, qos=1 + k % 2)
                     for i, c in enumerate(clients[1:])]
            for inf in infos:
                sent += 1
                try:
                    inf.wait_for_publish(10)
                except (RuntimeError, ValueError):
                    continue  # not connected: counted as not acknowledged
                acked += inf.is_published()
        time.sleep(2)  # the last deliveries
        settle("clients")
        delivered = [len(got.get(i, ())) for i in range(CLIENTS)]
        print("MQTT: %d published, %d acknowledged, delivered per client %s (want %d each)"
              % (sent, acked, delivered, messages))
        ok = acked == sent and delivered == [messages] * CLIENTS
        if observers:
            u = int(re.search(r":(\d+)/udp \(CoAP\)", open(log_path).read()).group(1))
            socks = [_observe(u, 100 + i, 0x30 + i) for i in range(observers)]
            codes = [_code(s) for s in socks]
            clients[1].publish("load/obs", b"notify", qos=0)
            notes = [_code(s) for s in socks]
            for s in socks:
                s.close()
            settle("observers")
            print("CoAP: registrations %s, notifications %s" % (codes, notes))
            ok = ok and codes == ["2.05"] * observers and notes == ["2.05"] * observers
        ok = ok and proc.poll() is None
        print("live heap (bytes): %s" % ", ".join("%s %s" % kv for kv in heaps.items()))
        return ok
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        proc.terminate()
        proc.wait(10)
        log.close()
        if not ok:
            with open(log_path) as f:
                errors = [ln for ln in f.read().splitlines() if not ln.startswith("INFO client")]
            print("\n".join(errors[-15:]))
        if not keep:
            shutil.rmtree(d, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.boardload", description=__doc__.splitlines()[0])
    ap.add_argument("--heap", default="64k", help="MicroPython heap (tools.board --heap)")
    ap.add_argument("--persistence", action="store_true", help="the store on (the board's default is off)")
    ap.add_argument("--messages", type=int, default=40, help="messages per client")
    ap.add_argument("--coap-observers", type=int, default=0, help="CoAP on, with this many observers")
    ap.add_argument("--keep", action="store_true", help="keep the data directory and the broker's log")
    a = ap.parse_args(argv)
    ok = run(a.heap, a.persistence, a.messages, a.coap_observers, a.keep)
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
