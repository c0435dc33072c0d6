# Sample CoAP device firmware (docs/fleet.md "The CoAP device"): POSTs a
# reading every interval to edgebroker's CoAP endpoint as a confirmable
# request, and observes cmd/<id>/# for commands (docs/coap.md URIs).
#
#   micropython coap_sensor.py config.json [key=value ...]
#
# With "report": true it prints one line per step: G seq (generated),
# A seq (2.04), R seq code (refused or given up), D seq (dropped from the
# full buffer, never sent), O (observing), M payload (a command),
# U seq (unconfirmed at the end), E (stopped).
# RFC 7252: CON with ACK_TIMEOUT 2 s x ACK_RANDOM_FACTOR 1.5, doubling,
# MAX_RETRANSMIT 4 (§4.2), one CON outstanding (NSTART 1, §4.7).
import json
import random
import select
import socket
import struct
import sys
import time

DEFAULTS = {"id": "dev1", "broker": "127.0.0.1:5683", "qos": 1, "interval_ms": 5000,
            "topic": "sensors", "buffer": 8, "seconds": 0, "drain_s": 0, "report": False}
_CON, _NON, _ACK, _RST = 0, 1, 2, 3
_GET, _POST = 1, 2
_OBSERVE, _URI_PATH, _URI_QUERY = 6, 11, 15


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
    return cfg


def ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


def wall_ms():
    return time.time_ns() // 1000000 if hasattr(time, "time_ns") else int(time.time() * 1000)


def _opt(out, last, num, val):
    # option delta/length nibbles, 13: one extra byte (RFC 7252 §3.1)
    if type(val) is str:
        val = val.encode()
    d, n = num - last, len(val)
    head = bytearray(1)
    for shift, x in ((4, d), (0, n)):
        if x < 13:
            head[0] |= x << shift
        else:
            head[0] |= 13 << shift
            head.append(x - 13)
    out += head
    out += val
    return num


def encode(typ, code, mid, token, options=(), payload=b""):
    """options: (number, value) in ascending number order."""
    out = bytearray(struct.pack("!BBH", 0x40 | typ << 4 | len(token), code, mid))
    out += token
    last = 0
    for num, val in options:
        last = _opt(out, last, num, val)
    if payload:
        out.append(0xFF)
        out += payload
    return out


def decode(b):
    """(type, code, mid, token, observe or None, payload) or None."""
    if len(b) < 4 or b[0] >> 6 != 1:
        return None
    typ, tkl = b[0] >> 4 & 3, b[0] & 15
    code, mid = b[1], b[2] << 8 | b[3]
    i = 4 + tkl
    token = bytes(b[4:i])
    num, obs = 0, None
    while i < len(b) and b[i] != 0xFF:
        d, n = b[i] >> 4, b[i] & 15
        i += 1
        if d == 13:
            d = b[i] + 13
            i += 1
        elif d == 14:
            d = (b[i] << 8 | b[i + 1]) + 269
            i += 2
        if n == 13:
            n = b[i] + 13
            i += 1
        elif n == 14:
            n = (b[i] << 8 | b[i + 1]) + 269
            i += 2
        num += d
        if num == _OBSERVE:
            obs = 0
            for x in b[i:i + n]:
                obs = obs << 8 | x
        i += n
    return typ, code, mid, token, obs, bytes(b[i + 1:]) if i < len(b) else b""


class Device:
    def __init__(self, cfg):
        self.cfg = cfg
        host, port = cfg["broker"].rsplit(":", 1)
        self.addr = socket.getaddrinfo(host, int(port))[0][-1]
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.setblocking(False)
        self.poll = select.poll()
        self.poll.register(self.s, select.POLLIN)
        self.mid = random.getrandbits(16)
        self.queue = []  # readings waiting: (seq, payload)
        self.out = None  # [mid, token, data, seq or None, deadline, timeout, tries]
        self.seq = 0
        self.obs_token = b"ob"
        self.observing = False
        self.seen = []  # MIDs of CON notifications already taken (§4.5)
        self.report = cfg["report"]

    def log(self, line):
        if self.report:
            print(line)

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def send_con(self, code, options, payload, seq, token):
        mid = self.next_mid()
        data = encode(_CON, code, mid, token, options, payload)
        timeout = 2000 + random.getrandbits(10) % 1000  # 2-3 s
        self.out = [mid, token, data, seq, ms() + timeout, timeout, 0]
        self.s.sendto(data, self.addr)

    def pump(self, now):
        o = self.out
        if o is not None:
            if now < o[4]:
                return
            if o[6] == 4:  # MAX_RETRANSMIT: give up on it
                self.log("R %d timeout" % o[3] if o[3] is not None else "R observe timeout")
                self.out = None
            else:
                o[6] += 1
                o[5] *= 2
                o[4] = now + o[5]
                self.s.sendto(o[2], self.addr)
                return
        cfg = self.cfg
        if not self.observing:
            # GET /ps/cmd/<id>/# with Observe 0 (RFC 7641 §3.1), at QoS 1:
            # commands come as CON notifications (docs/coap.md)
            self.send_con(_GET, ((_OBSERVE, b""), (_URI_PATH, "ps"), (_URI_PATH, "cmd"),
                                 (_URI_PATH, cfg["id"]), (_URI_PATH, "#"), (_URI_QUERY, "qos=1")),
                          b"", None, self.obs_token)
        elif self.queue:
            seq, payload = self.queue.pop(0)
            path = [(_URI_PATH, x) for x in ("ps/%s/%s" % (cfg["topic"], cfg["id"])).split("/")]
            self.send_con(_POST, path + [(_URI_QUERY, "qos=%d" % cfg["qos"])], payload, seq,
                          b"p%d" % (seq & 0xFF))

    def received(self, m):
        typ, code, mid, token, obs, payload = m
        o = self.out
        if token == self.obs_token and typ in (_CON, _NON) and code == 69:  # 2.05 notification
            if typ == _CON:
                self.s.sendto(encode(_ACK, 0, mid, b""), self.addr)  # §4.2: ACK, even a duplicate
                if mid in self.seen:
                    return
                self.seen = self.seen[-7:] + [mid]
            self.log("M %s" % payload.decode())
            return
        if o is None or typ != _ACK or mid != o[0]:
            if typ == _CON:  # a separate response we do not wait for: acknowledge it
                self.s.sendto(encode(_ACK, 0, mid, b""), self.addr)
            return
        self.out = None
        if o[3] is None:  # our registration
            self.observing = code == 69 and obs is not None
            self.log("O" if self.observing else "R observe %d.%02d" % (code >> 5, code & 31))
        elif code == 68:  # 2.04 Changed
            self.log("A %d" % o[3])
        else:
            self.log("R %d %d.%02d" % (o[3], code >> 5, code & 31))

    def run(self):
        cfg = self.cfg
        start = ms()
        next_pub = start
        while True:
            now = ms()
            if cfg["seconds"] and now - start >= cfg["seconds"] * 1000:
                # then up to drain_s for the buffer and the reading in flight
                busy = self.queue or (self.out is not None and self.out[3] is not None)
                if not busy or now - start >= (cfg["seconds"] + cfg["drain_s"]) * 1000:
                    break
            elif now >= next_pub:
                self.seq += 1
                pl = ("%s|%d|%d|%d" % (cfg["id"], cfg["qos"], self.seq, wall_ms())).encode()
                if len(self.queue) >= cfg["buffer"]:
                    self.log("D %d" % self.queue.pop(0)[0])  # the oldest unsent goes
                self.queue.append((self.seq, pl))
                self.log("G %d" % self.seq)
                next_pub += cfg["interval_ms"]
            self.pump(now)
            for _ in self.poll.poll(20):
                try:
                    data = self.s.recv(1152)  # RFC 7252 §4.6: 1152 bytes fit any message
                except OSError:
                    continue
                m = decode(data)
                if m is not None:
                    self.received(m)
        for seq, _ in self.queue:
            self.log("U %d" % seq)
        if self.out is not None and self.out[3] is not None:
            self.log("U %d" % self.out[3])
        self.log("E")


def main(argv=None):
    Device(load(sys.argv[1:] if argv is None else argv)).run()


if __name__ == "__main__":
    main()
