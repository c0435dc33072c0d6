# CoAP devices in the fleet (docs/fleet.md "CoAP devices"): a light CoAP
# device in CPython asyncio (hundreds per process), as firmware/coap_sensor/
# behaves, on edge/coap's codec, and the chaos proxy's UDP link in front of
# each one.
#
# The device POSTs each reading to /ps/<prefix>/d/<id>?qos=<q> as a CON
# (RFC 7252 §4.2: retransmitted after ACK_TIMEOUT x 1-1.5, doubling, at most
# MAX_RETRANSMIT 4 times; one outstanding, NSTART 1 §4.7); a 2.04 is its
# acknowledgement, the same promise as a PUBACK: the reading must reach the
# checker. One given up after the last retransmission is unconfirmed, and
# not sent again under a new Message-ID (the endpoint could not tell it
# from a new reading: a QoS 2 duplicate). It observes /ps/cmd/<id>/#
# (RFC 7641) and counts the commands the run publishes there.
#
# The UDP link: each datagram, both ways, is delayed (latency + jitter:
# datagrams may overtake each other, as on a network), lost at the profile's
# rate, or swallowed while the link is in a black hole or down (flap).
import asyncio

from edge.coap import codec
from gateway.fleet.ledger import wall_ms

_CON, _NON, _ACK, _RST = 0, 1, 2, 3
_GET, _POST = 1, 2
_CHANGED, _CONTENT = 0x44, 0x45  # 2.04, 2.05
_OBSERVE, _URI_PATH, _URI_QUERY = 6, 11, 15
ACK_TIMEOUT, ACK_RANDOM_FACTOR, MAX_RETRANSMIT = 2.0, 1.5, 4  # RFC 7252 §4.8


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_datagram):
        self.on = on_datagram
        self.t = None

    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        self.on(data, addr)

    def error_received(self, exc):
        pass  # ICMP port unreachable (the broker gone): a lost datagram


async def ping(addr, timeout=3.0):
    """True when a CoAP endpoint answers at addr: an Empty CON ("CoAP ping")
    is answered with an RST (RFC 7252 §4.3)."""
    loop = asyncio.get_running_loop()
    got = loop.create_future()

    def on(data, _):
        if not got.done() and len(data) >= 4 and data[0] >> 4 & 3 == _RST and data[2:4] == b"\x12\x34":
            got.set_result(True)
    t = (await loop.create_datagram_endpoint(lambda: _Udp(on), remote_addr=addr))[0]
    try:
        for _ in range(3):
            t.sendto(bytes((0x40, 0, 0x12, 0x34)))  # CON, Empty, Message-ID 0x1234
            try:
                return await asyncio.wait_for(asyncio.shield(got), timeout / 3)
            except asyncio.TimeoutError:
                pass
        return False
    finally:
        t.close()


class CoapLink:
    """The chaos proxy in front of one CoAP device: a UDP socket the device
    sends to, one connected to the broker's CoAP endpoint (so the endpoint
    sees one peer per device)."""

    udp = True

    def __init__(self, chaos, ledger, coap_addr):
        self.chaos = chaos
        self.ledger = ledger
        self.clock = chaos.clock
        self.coap_addr = coap_addr
        self.front = self.back = None
        self.device = None  # the device's address, from its first datagram
        self.port = None
        self.hole_until = -1.0
        self.down = False
        self.pairs = ()  # Chaos.heal(): no connections to close
        self.passed = self.lost = 0

    async def start(self):
        loop = asyncio.get_running_loop()
        self.front = (await loop.create_datagram_endpoint(lambda: _Udp(self._from_device),
                                                          local_addr=("127.0.0.1", 0)))[0]
        self.back = (await loop.create_datagram_endpoint(lambda: _Udp(self._from_broker),
                                                         remote_addr=self.coap_addr))[0]
        self.port = self.front.get_extra_info("sockname")[1]

    def _drop(self):
        c = self.chaos
        if self.down or self.clock() < self.hole_until:
            return True
        return c.profile["udp_loss"] and c.rng.random() < c.profile["udp_loss"]

    def _send(self, fn, data):
        if self._drop():
            self.lost += 1
            return
        self.passed += 1
        delay = self.chaos.delay()
        if delay:
            asyncio.get_running_loop().call_later(delay, fn, data)
        else:
            fn(data)

    def _from_device(self, data, addr):
        self.device = addr
        self._send(lambda d: self.back.is_closing() or self.back.sendto(d), data)

    def _from_broker(self, data, addr):
        if self.device is not None:
            dev = self.device
            self._send(lambda d: self.front.is_closing() or self.front.sendto(d, dev), data)

    def reset(self):
        pass  # UDP has no connection to reset: a flap is `down` for a while

    def hole(self, seconds):
        self.hole_until = self.clock() + seconds

    def close(self):
        for t in (self.front, self.back):
            if t is not None:
                t.close()


class CoapSensor:
    def __init__(self, ledger, port, opts, rng):
        self.led = ledger
        self.sid = ledger.sid
        self.qos = ledger.qos
        self.port = port
        self.o = opts  # run.SensorOpts
        self.rng = rng
        self.path = ["ps"] + ("%s/d/%s" % (opts.prefix, self.sid)).split("/")
        self.cmd_path = ["ps", "cmd", self.sid, "#"]
        self.queue = []  # [seq, payload] not sent yet
        self.out = None  # [mid, token, data, seq or None, timeout s, tries, timer]
        self.mid = rng.getrandbits(16)
        self.seq = 0
        self.t = None
        self.observing = False
        self.seen = []  # Message-IDs of CON notifications taken (RFC 7252 §4.5)
        self.dead = False
        self.next_register = 0.0
        self.wake = asyncio.Event()

    def _next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def _opts(self, path, extra=()):
        opts = list(extra)
        for seg in path:
            opts += [_URI_PATH, seg]
        return opts

    def _con(self, code, opts, payload, seq, token):
        mid = self._next_mid()
        data = bytes(codec.encode(_CON, code, mid, token, opts, payload))
        timeout = ACK_TIMEOUT * self.rng.uniform(1.0, ACK_RANDOM_FACTOR)
        self.out = [mid, token, data, seq, timeout, 0, None]
        self._transmit()

    def _transmit(self):
        o = self.out
        self.t.sendto(o[2])
        o[6] = asyncio.get_running_loop().call_later(o[4], self._timeout, o)

    def _timeout(self, o):
        if self.out is not o or self.dead:
            return
        if o[5] == MAX_RETRANSMIT:
            self.out = None  # given up: unconfirmed (the ledger's generated - acked)
            self.wake.set()
            return
        o[5] += 1
        o[4] *= 2
        self._transmit()

    def _pump(self):
        if self.out is not None or self.dead:
            return
        now = asyncio.get_running_loop().time()
        if not self.observing and now >= self.next_register:
            # GET /ps/cmd/<id>/# with Observe 0 (RFC 7641 §3.1), our CON too;
            # refused or unanswered: again in 5 s, readings meanwhile
            self.next_register = now + 5.0
            # at QoS 1: commands come as CON notifications, retransmitted
            # over a lossy link (docs/coap.md "Notifications")
            opts = self._opts(self.cmd_path, (_OBSERVE, 0)) + [_URI_QUERY, "qos=1"]
            self._con(_GET, opts, b"", None, b"ob")
        elif self.queue:
            seq, payload = self.queue.pop(0)
            opts = self._opts(self.path) + [_URI_QUERY, "qos=%d" % self.qos]
            self._con(_POST, opts, payload, seq, b"p" + seq.to_bytes(2, "big"))

    def _datagram(self, data, addr):
        m = codec.decode(data)
        if m is None or self.dead:
            return
        typ, code, mid, token, opts, payload = m
        if token == b"ob" and typ in (_CON, _NON) and code == _CONTENT and self.observing:
            if typ == _CON:
                self.t.sendto(codec.empty(_ACK, mid))  # §4.2: ACK it, a duplicate too
                if mid in self.seen:
                    return
                self.seen = self.seen[-15:] + [mid]
            if payload:
                self.led.commands.add(bytes(payload).decode(errors="replace"))
            return
        o = self.out
        if o is None or typ != _ACK or mid != o[0]:
            if typ == _CON:  # nothing we wait for: acknowledge it all the same
                self.t.sendto(codec.empty(_ACK, mid))
            return
        o[6].cancel()
        self.out = None
        if o[3] is None:
            self.observing = code == _CONTENT and codec.option(opts, _OBSERVE) is not None
            if self.observing and self.led.t_observing is None:
                self.led.t_observing = self.o.clock()
        elif code == _CHANGED:
            self.led.acked.add(o[3])
        else:
            self.led.refused += 1  # 4.xx/5.xx: not a promise, unconfirmed
        self.wake.set()

    def generate(self):
        self.seq += 1
        seq = self.seq
        self.led.generated.add(seq)
        if len(self.queue) >= self.o.buffer:
            self.led.dropped.add(self.queue.pop(0)[0])  # the oldest unsent goes
        self.queue.append([seq, ("%s|%d|%d|%d" % (self.sid, self.qos, seq, wall_ms())).encode()])

    def kill(self):
        # a device that loses its power: nothing more sent, nothing answered
        self.dead = self.led.killed = True
        self.wake.set()

    async def run(self, seconds, drain_s):
        loop = asyncio.get_running_loop()
        self.t = (await loop.create_datagram_endpoint(lambda: _Udp(self._datagram),
                                                      remote_addr=("127.0.0.1", self.port)))[0]
        start = loop.time()
        end = start + seconds
        next_pub = start
        interval = self.o.interval_ms / 1000.0
        try:
            while not self.dead:
                now = loop.time()
                stopping = now >= end
                if not stopping and now >= next_pub:
                    self.generate()
                    next_pub = max(next_pub + interval, now)
                if stopping and ((not self.queue and (self.out is None or self.out[3] is None))
                                 or now >= end + drain_s):
                    break
                self._pump()
                self.wake.clear()
                wake = next_pub if not stopping else end + drain_s
                try:
                    await asyncio.wait_for(self.wake.wait(), max(0.005, min(wake, now + 0.5) - loop.time()))
                except asyncio.TimeoutError:
                    pass
        finally:
            if self.out is not None and self.out[6] is not None:
                self.out[6].cancel()
            if self.dead:
                self.led.exit_note = "killed mid-publish"
            else:
                self.led.unconfirmed.update(e[0] for e in self.queue)
                if self.out is not None and self.out[3] is not None:
                    self.led.unconfirmed.add(self.out[3])
                # RST-free goodbye: a GET with Observe 1 ends the observation
                # (RFC 7641 §3.6), sent once, unanswered
                self.t.sendto(bytes(codec.encode(_NON, _GET, self._next_mid(), b"ob",
                                                 self._opts(self.cmd_path, (_OBSERVE, 1)), b"")))
            self.t.close()
