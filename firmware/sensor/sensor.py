# Sample sensor firmware: publishes a reading every interval at QoS 0, 1 or 2
# through a small offline buffer, with a last will and a reconnect with
# jittered back-off (docs/fleet.md "The sensor firmware").
#
#   micropython sensor.py config.json [key=value ...]
#
# On a board, main.py calls main() with config.json from the filesystem.
# With "report": true each step is one line on stdout (the fleet simulator
# reads them: that ledger is how it knows what the sensor was promised):
#   G seq qos   a reading generated         A seq   acknowledged (QoS 1 PUBACK,
#   D seq       dropped: offline buffer full         QoS 2 PUBCOMP, QoS 0 written)
#   C n sp      connected (attempt n)        X msg   connection lost
#   U seq       unconfirmed at the end       E       ended with DISCONNECT
import json
import random
import sys
import time

from mqtt import PUBACK, PUBCOMP, PUBREC, PINGRESP, Client

DEFAULTS = {
    "id": "sensor1",
    "broker": "127.0.0.1:1883",
    "qos": 1,
    "mqtt": "3.1.1",            # or "5.0"
    "interval_ms": 1000,
    "keepalive": 10,            # seconds
    "ack_timeout_ms": 4000,     # no ack/PINGRESP for this long: the link is dead
    "buffer": 8,                # readings kept until acknowledged (oldest dropped)
    "inflight": 2,              # QoS 1/2 messages sent and not acknowledged
    "topic": "sensors",         # readings go to <topic>/<id>
    "will_topic": "",           # default <topic>/<id>/will
    "backoff_ms": 250,          # decorrelated jitter: base ...
    "backoff_cap_ms": 8000,     # ... and cap
    "seconds": 0,               # 0: forever; else stop generating after this
    "drain_s": 10,              # then wait this long for the buffer to empty
    "report": False,
    "seed": 0,
}


def load(argv):
    cfg = dict(DEFAULTS)
    for a in argv:
        if "=" in a:
            k, v = a.split("=", 1)
            cfg[k] = int(v) if v.isdigit() else v
        else:
            with open(a) as f:
                cfg.update(json.load(f))
    for k in cfg:
        if k not in DEFAULTS:
            raise ValueError("unknown config key %r" % k)
    if cfg["qos"] not in (0, 1, 2) or cfg["mqtt"] not in ("3.1.1", "5.0"):
        raise ValueError("qos must be 0/1/2 and mqtt 3.1.1 or 5.0")
    return cfg


def now_ms():
    return time.time_ns() // 1000000 if hasattr(time, "time_ns") else int(time.time() * 1000)


class Sensor:
    def __init__(self, cfg):
        self.cfg = cfg
        self.report = cfg["report"]
        host, port = cfg["broker"].rsplit(":", 1)
        sid = cfg["id"]
        self.topic = "%s/%s" % (cfg["topic"], sid)
        self.will_topic = cfg["will_topic"] or self.topic + "/will"
        q = cfg["qos"]
        # QoS 1/2 need the session kept across reconnects, else a resent
        # QoS 2 message is a new one ([MQTT-4.3.3], 3.1.2.4)
        self.c = Client(sid, host, int(port), cfg["mqtt"] == "5.0", cfg["keepalive"],
                        clean=(q == 0), expiry=0 if q == 0 else 3600)
        self.buf = []  # [seq, payload, pid, stage]: stage 0 unsent, 1 sent, 2 PUBREL sent
        self.seq = 0
        self.pid = 0
        self.attempt = 0
        self.up = False
        self.sleep = cfg["backoff_ms"]
        self.next_try = 0
        self.waiting = 0  # since when an ack or PINGRESP is awaited (0: none)
        self.last_rx = 0  # a QoS 0 sensor hears nothing back: it pings to find a dead link
        if cfg["seed"]:
            random.seed(cfg["seed"])

    def log(self, line):
        if self.report:
            print(line)

    # ---- the link ----------------------------------------------------------
    def connect(self, now):
        cfg = self.cfg
        self.attempt += 1
        c = self.c
        c.will = (self.will_topic, "%s|%d" % (cfg["id"], self.attempt), 1)
        try:
            present = c.connect(max(1, cfg["ack_timeout_ms"] // 1000))
        except OSError as e:
            c.close()
            self.backoff(now, e)
            return
        self.up = True
        self.sleep = cfg["backoff_ms"]
        self.waiting = 0
        self.last_rx = now
        self.log("C %d %d" % (self.attempt, present))
        keep = []
        for e in self.buf:
            if e[3] == 2 and not present:
                self.log("U %d" % e[0])  # PUBREL for a session the broker lost
                continue
            if e[3] == 1 and not present:
                e[3] = 0  # a new session: sent again as new
            keep.append(e)
        self.buf = keep
        try:
            for e in self.buf:  # [MQTT-4.4.0-1] resend unacknowledged, DUP set
                if e[3]:
                    self.send(e, now)
        except OSError as e:
            self.lost(now, e)

    def backoff(self, now, why):
        # decorrelated jitter: min(cap, random(base, 3 * last sleep))
        base = self.cfg["backoff_ms"]
        self.sleep = min(self.cfg["backoff_cap_ms"], base + random.getrandbits(20) % max(1, self.sleep * 3 - base))
        self.next_try = now + self.sleep
        self.log("X %s" % why)

    def lost(self, now, why):
        self.up = False
        self.c.close()
        self.backoff(now, why)

    # ---- publishing ----------------------------------------------------------
    def generate(self, now):
        cfg = self.cfg
        self.seq += 1
        q = cfg["qos"]
        payload = ("%s|%d|%d|%d" % (cfg["id"], q, self.seq, now)).encode()
        self.log("G %d %d" % (self.seq, q))
        if len(self.buf) >= cfg["buffer"]:
            # full: the oldest reading not yet sent goes. One in flight
            # stays, its packet id is still the broker's ([MQTT-2.3.1-2]):
            # with every entry in flight the new reading goes instead.
            for e in self.buf:
                if e[3] == 0:
                    self.buf.remove(e)
                    self.log("D %d" % e[0])
                    break
            else:
                self.log("D %d" % self.seq)
                return
        self.buf.append([self.seq, payload, 0, 0])

    def next_pid(self):
        used = [e[2] for e in self.buf]
        while True:
            self.pid = self.pid % 65535 + 1
            if self.pid not in used:
                return self.pid

    def send(self, e, now):
        q = self.cfg["qos"]
        if e[3] == 2:
            self.c.pubrel(e[2])
        else:
            dup = e[3] == 1
            if not e[2] and q:
                e[2] = self.next_pid()
            self.c.publish(self.topic, e[1], q, e[2], dup)
            e[3] = 1
        if q and not self.waiting:
            self.waiting = now

    def pump(self, now):
        """Send what the window allows; a QoS 0 reading is done once written."""
        q = self.cfg["qos"]
        sent = sum(1 for e in self.buf if e[3])
        for e in list(self.buf):
            if e[3]:
                continue
            if q and sent >= self.cfg["inflight"]:
                break
            self.send(e, now)
            sent += 1
            if not q:
                self.buf.remove(e)
                self.log("A %d" % e[0])

    def acked(self, kind, pid, rc, now):
        for e in self.buf:
            if e[2] == pid and e[3]:
                break
        else:
            return
        if kind == PUBREC and rc < 0x80:
            e[3] = 2
            self.c.pubrel(pid)  # [MQTT-4.3.3-4]
            return
        self.buf.remove(e)
        # 5.0 reason >= 0x80 on PUBACK/PUBREC: refused, not a promise
        self.log(("A %d" if rc < 0x80 else "U %d") % e[0])
        self.waiting = now if any(x[3] for x in self.buf) else 0

    def step(self, now, stopping):
        c = self.c
        if not self.up:
            if now >= self.next_try and not (stopping and not self.buf):
                self.connect(now)
            return
        try:
            self.pump(now)
            if not self.waiting and now - self.last_rx > self.cfg["keepalive"] * 500:
                # nothing heard for half the keepalive: is the link alive?
                # (also keeps it alive when idle [MQTT-3.1.2-23])
                c.ping()
                self.waiting = now
            if self.waiting and now - self.waiting > self.cfg["ack_timeout_ms"]:
                raise OSError("no answer in %d ms" % self.cfg["ack_timeout_ms"])
            p = c.poll(20)
            while p is not None:
                self.last_rx = now
                if p[0] in (PUBACK, PUBREC, PUBCOMP):
                    self.acked(p[0], p[1], p[2], now)
                elif p[0] == PINGRESP:
                    self.waiting = now if any(x[3] for x in self.buf) else 0
                p = c.poll(0)
        except OSError as e:
            self.lost(now, e)

    def run(self):
        cfg = self.cfg
        start = now_ms()
        next_pub = start
        end = start + cfg["seconds"] * 1000 if cfg["seconds"] else 0
        while True:
            now = now_ms()
            stopping = end and now >= end
            if not stopping and now >= next_pub:
                self.generate(now)
                next_pub += cfg["interval_ms"]
                if next_pub < now:
                    next_pub = now + cfg["interval_ms"]  # no burst after a stall
            self.step(now, stopping)
            if stopping and (not self.buf or now >= end + cfg["drain_s"] * 1000):
                break
            if not self.up:
                time.sleep(0.02)
        for e in self.buf:
            self.log("U %d" % e[0])
        if self.up:
            self.c.disconnect()
            self.log("E")


def main(argv=None):
    cfg = load(sys.argv[1:] if argv is None else argv)
    Sensor(cfg).run()


if __name__ == "__main__":
    main()
