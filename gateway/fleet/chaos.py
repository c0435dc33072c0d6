# The fleet's chaos proxy: one asyncio TCP proxy per sensor between it and the
# broker, with seeded faults (docs/fleet.md "Chaos profiles"):
#   latency + jitter  every chunk is delayed, order kept
#   reset             both sockets closed at once (TCP has no packet loss a
#                     client sees: a lost link shows up as a reset)
#   hole              a silent black hole: the link's connections stop passing
#                     bytes for good and new ones get no answer, for a while;
#                     nothing is closed, both ends must notice by timeouts
#   flap              the link goes down (connections reset, new ones refused)
#                     and up again, periodically
#   kill              the sensor is killed mid-publish (sim.py, mpy.py)
# Each connection is watched for the will accounting (ledger.ConnRecord): the
# CONNECT's will payload names the sensor's connection, the CONNACK says
# whether the broker took it, a DISCONNECT means no will is due.
import asyncio
import random

from edge.errors import ProtocolError
from edge.mqtt import codec
from gateway.fleet.ledger import ConnRecord
from gateway.fleet.profiles import PROFILES

class _Side(asyncio.Protocol):
    def __init__(self, pair, from_sensor):
        self.pair = pair
        self.from_sensor = from_sensor
        self.t = None

    def connection_made(self, transport):
        self.t = transport
        if self.from_sensor:
            self.pair.link.accepted(self.pair, transport)

    def data_received(self, data):
        self.pair.data(self.from_sensor, data)

    def connection_lost(self, exc):
        self.pair.closed(self.from_sensor)


class _Pair:
    """One sensor connection: its socket, the one to the broker, the record."""

    def __init__(self, link):
        self.link = link
        self.rec = ConnRecord()
        self.sensor = None  # transport
        self.broker = None  # transport, once connected
        self.pending = []  # bytes for the broker before it is connected
        self.silent = False
        self.closing = False
        self.sensor_gone = False
        self.broker_gone = False
        self.up = bytearray()  # sensor->broker bytes not yet a whole packet
        self.got_connack = False
        self.due = [0.0, 0.0]  # last delivery time per direction (order kept)

    def data(self, from_sensor, data):
        if self.silent or self.closing:
            return
        if from_sensor:
            self._watch_up(data)
        else:
            self._watch_down(data)
        self.link.forward(self, from_sensor, data)

    def _watch_up(self, data):
        # packet boundaries sensor->broker: the CONNECT, then a DISCONNECT
        buf = self.up
        buf += data
        while len(buf) >= 2:
            n = codec.packet_length(buf, 0, len(buf))
            if n < 0 or n > len(buf):
                return
            kind = buf[0] >> 4
            if kind == 1:
                try:
                    pkt, _ = codec.decode(bytes(buf[:n]), 0, n)
                    if pkt is not None and pkt.will_payload:
                        self.rec.will_no = int(bytes(pkt.will_payload).split(b"|")[1])
                except (ProtocolError, ValueError, IndexError):
                    pass
            elif kind == 14:
                self.rec.clean_end = True
            del buf[:n]

    def _watch_down(self, data):
        if not self.got_connack and len(data) >= 4:
            self.got_connack = True
            # first packet from a broker is the CONNACK; byte 3 the return code
            self.rec.accepted = data[0] == 0x20 and data[3] == 0

    def closed(self, from_sensor):
        link = self.link
        if from_sensor:
            self.sensor_gone = True
            if not self.silent:  # a black hole: the broker does not hear of it
                link.after(self, True, self._close_broker)
        else:
            self.broker_gone = True
            if self.rec.t_closed is None:
                self.rec.t_closed = link.clock()
            if not self.silent:
                link.after(self, False, self._close_sensor)
        if self.sensor_gone and (self.broker_gone or self.broker is None):
            link.pairs.discard(self)

    def _close_broker(self):
        if self.broker is not None and not self.broker.is_closing():
            self.broker.close()
            if self.rec.t_closed is None:
                self.rec.t_closed = self.link.clock()

    def _close_sensor(self):
        if self.sensor is not None and not self.sensor.is_closing():
            self.sensor.close()

    def reset(self):
        self.closing = True
        now = self.link.clock()
        for t in (self.sensor, self.broker):
            if t is not None and not t.is_closing():
                t.abort()
        if self.broker is not None and self.rec.t_closed is None:
            self.rec.t_closed = now


class Link:
    """The proxy in front of one sensor."""

    def __init__(self, chaos, ledger):
        self.chaos = chaos
        self.ledger = ledger
        self.clock = chaos.clock
        self.pairs = set()
        self.server = None
        self.port = None
        self.hole_until = -1.0
        self.down = False

    async def start(self):
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Side(_Pair(self), True), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def accepted(self, pair, transport):
        pair.sensor = transport
        self.pairs.add(pair)
        if self.down:
            pair.reset()  # a flapping link that is down: refused
            return
        if self.clock() < self.hole_until:
            pair.silent = True  # no answer at all
            return
        self.ledger.conns.append(pair.rec)
        asyncio.ensure_future(self._dial(pair))

    async def _dial(self, pair):
        loop = asyncio.get_running_loop()
        host, port = self.chaos.broker
        try:
            t, _ = await loop.create_connection(lambda: _Side(pair, False), host, port)
        except OSError:
            pair.reset()
            return
        if pair.closing or pair.sensor_gone:
            t.abort()
            return
        pair.broker = t
        for data in pair.pending:
            self._write_broker(pair, data)
        pair.pending = []

    def _write_broker(self, pair, data):
        if pair.rec.t_connect is None:
            pair.rec.t_connect = self.clock()
        pair.broker.write(data)

    def forward(self, pair, from_sensor, data):
        def go():
            if pair.closing or pair.silent:
                return
            if not from_sensor:
                if not pair.sensor.is_closing():
                    pair.sensor.write(data)
            elif pair.broker is None:
                pair.pending.append(data)
            elif not pair.broker.is_closing():
                self._write_broker(pair, data)
        self.after(pair, from_sensor, go)

    def after(self, pair, from_sensor, fn):
        """Run fn after the link's latency, in order per direction."""
        c = self.chaos
        delay = c.delay()
        if not delay:
            fn()
            return
        loop = asyncio.get_running_loop()
        i = 0 if from_sensor else 1
        due = max(loop.time() + delay, pair.due[i] + 1e-6)
        pair.due[i] = due
        loop.call_at(due, fn)

    # ---- faults ---------------------------------------------------------
    def reset(self):
        for p in list(self.pairs):
            p.reset()
        self.pairs.clear()

    def hole(self, seconds):
        self.hole_until = self.clock() + seconds
        for p in self.pairs:
            p.silent = True

    def close(self):
        if self.server is not None:
            self.server.close()
        self.reset()


class Chaos:
    """The links of one run and the seeded plan of their faults."""

    def __init__(self, profile, seed, broker):
        self.profile = PROFILES[profile]
        self.name = profile
        self.rng = random.Random(seed)
        self.broker = broker
        self.links = {}
        self.events = []  # (run time s, sensor id, kind) as applied
        self.t0 = asyncio.get_running_loop().time()
        self.task = None

    def clock(self):
        return asyncio.get_running_loop().time() - self.t0

    def delay(self):
        p = self.profile
        if not p["latency_ms"] and not p["jitter_ms"]:
            return 0
        return (p["latency_ms"] + self.rng.uniform(0, p["jitter_ms"])) / 1000.0

    async def link(self, ledger):
        lk = Link(self, ledger)
        await lk.start()
        self.links[ledger.sid] = lk
        return lk

    async def coap_link(self, ledger, coap_addr):
        from gateway.fleet.coap import CoapLink

        lk = CoapLink(self, ledger, coap_addr)
        await lk.start()
        self.links[ledger.sid] = lk
        return lk

    def plan(self, seconds):
        """[(t, sid, kind, arg)], sorted: the same for the same seed and fleet."""
        p, rng = self.profile, self.rng
        out = []
        end = seconds - 1.0
        sids = sorted(self.links)
        for sid in sids:
            for kind, every in (("reset", p["reset_every_s"]), ("hole", p["hole_every_s"])):
                if kind == "reset" and getattr(self.links[sid], "udp", False):
                    continue  # no connection to reset: UDP loses datagrams instead (udp_loss)
                t = 1.0
                while every:
                    t += rng.expovariate(1.0 / every)
                    if t >= end:
                        break
                    out.append((t, sid, kind, rng.uniform(*p["hole_s"]) if kind == "hole" else 0))
        for sid in rng.sample(sids, int(round(len(sids) * p["flap_share"]))):
            t = rng.uniform(1.0, 1.0 + p["flap_up_s"])
            while t < end:
                out.append((t, sid, "flap", p["flap_down_s"]))
                t += p["flap_down_s"] + p["flap_up_s"]
        kills = int(round(len(sids) * p["kill_share"]))
        if p["kill_share"] and not kills:
            kills = 1
        for sid in rng.sample(sids, min(kills, len(sids))):
            out.append((rng.uniform(0.3, 0.7) * seconds, sid, "kill", 0))
        out.sort()
        return out

    def start(self, plan, sensors):
        self.task = asyncio.ensure_future(self._run(plan, sensors))

    async def _run(self, plan, sensors):
        loop = asyncio.get_running_loop()
        for t, sid, kind, arg in plan:
            wait = t - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            lk = self.links[sid]
            if kind == "reset":
                lk.reset()
            elif kind == "hole":
                lk.hole(arg)
            elif kind == "flap":
                lk.down = True
                lk.reset()
                loop.call_later(arg, setattr, lk, "down", False)
            elif kind == "kill":
                sensors[sid].kill()
            self.events.append((round(self.clock(), 3), sid, kind))

    def heal(self):
        """End of the run: no more faults; connections stuck in a black hole
        are closed (their sensors have moved on or stopped)."""
        if self.task is not None:
            self.task.cancel()
        for lk in self.links.values():
            lk.down = False
            lk.hole_until = -1.0
            for p in list(lk.pairs):
                if p.silent:
                    p.reset()

    def close(self):
        for lk in self.links.values():
            lk.close()
