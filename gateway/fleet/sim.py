# A light simulated sensor in CPython asyncio (hundreds per process): the same
# behaviour as firmware/sensor/sensor.py (offline buffer, inflight window,
# persistent session for QoS 1/2, resend with DUP, last will, decorrelated-
# jitter back-off), built on edge/mqtt's codec. Its ledger is filled directly.
import asyncio

from edge.errors import ProtocolError
from edge.mqtt import codec
from edge.mqtt.packets import Connect, Publish
from gateway.fleet.ledger import wall_ms

_PUBACK, _PUBREC, _PUBCOMP, _PINGRESP, _DISCONNECT = 4, 5, 7, 13, 14
_P_SESSION_EXPIRY = 0x11


class _Conn(asyncio.Protocol):
    def __init__(self, sensor):
        self.s = sensor
        self.t = None
        self.buf = bytearray()
        self.connack = asyncio.get_running_loop().create_future()
        # nobody awaits it after a timeout: its exception is not news
        self.connack.add_done_callback(lambda f: f.cancelled() or f.exception())

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.buf += data
        s = self.s
        while True:
            try:
                pkt, n = codec.decode(self.buf, 0, len(self.buf), s.v5)
            except ProtocolError as e:
                self.t.abort()
                s.down(self, "bad packet from broker: %s" % e)
                return
            if pkt is None:
                return
            del self.buf[:n]
            if not self.connack.done():
                self.connack.set_result(pkt)
            else:
                s.packet(self, pkt)

    def connection_lost(self, exc):
        if not self.connack.done():
            self.connack.set_exception(ConnectionError("closed before CONNACK"))
        self.s.down(self, "closed")


class SimSensor:
    def __init__(self, ledger, port, opts, rng):
        self.led = ledger
        self.sid = ledger.sid
        self.qos = ledger.qos
        self.v5 = ledger.v5
        self.port = port
        self.o = opts  # run.SensorOpts
        self.rng = rng
        self.topic = "%s/d/%s" % (opts.prefix, self.sid)
        self.will_topic = "%s/w/%s" % (opts.prefix, self.sid)
        self.buf = []  # [seq, payload, pid, stage] as the firmware keeps them
        self.seq = 0
        self.pid = 0
        self.attempt = 0
        self.conn = None
        self.sleep = opts.backoff_ms
        self.waiting = 0
        self.last_rx = 0
        self.killing = False
        self.dead = False
        self.wake = asyncio.Event()

    # ---- link ------------------------------------------------------------
    async def connect(self):
        o = self.o
        self.attempt += 1
        loop = asyncio.get_running_loop()
        c = None
        try:
            _, c = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port), o.ack_timeout)
            persistent = self.qos > 0  # see firmware/sensor/sensor.py
            props = {_P_SESSION_EXPIRY: 3600} if self.v5 and persistent else None
            pkt = Connect(self.sid, not persistent, o.keepalive, will_topic=self.will_topic,
                          will_payload=("%s|%d" % (self.sid, self.attempt)).encode(), will_qos=1,
                          level=5 if self.v5 else 4, props=props)
            c.t.write(codec.encode(pkt, self.v5))
            ack = await asyncio.wait_for(c.connack, o.ack_timeout)
            if getattr(ack, "kind", 0) != 2 or ack.reason:
                raise ConnectionError("CONNACK %r" % getattr(ack, "reason", ack))
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            if c is not None and c.t is not None:
                c.t.abort()
            self.backoff()
            return "%s" % (e or type(e).__name__)
        self.conn = c
        self.sleep = o.backoff_ms
        self.waiting = 0
        self.last_rx = loop.time()
        self.led.connects += 1
        present = ack.session_present
        keep = []
        for e in self.buf:
            if e[3] == 2 and not present:
                self.led.unconfirmed.add(e[0])
                continue
            if e[3] == 1 and not present:
                e[3] = 0
            keep.append(e)
        self.buf = keep
        for e in self.buf:
            if e[3]:
                self.send(e)  # [MQTT-4.4.0-1] resend with DUP
        return None

    def backoff(self):
        base = self.o.backoff_ms
        self.sleep = min(self.o.backoff_cap_ms, self.rng.uniform(base, self.sleep * 3))
        self.next_try = asyncio.get_running_loop().time() + self.sleep / 1000.0

    def down(self, conn, why):
        if conn is self.conn:
            self.conn = None
            self.backoff()
            self.wake.set()

    def lose(self, why):
        c = self.conn
        self.conn = None
        if c is not None and c.t is not None:
            c.t.abort()
        self.backoff()

    # ---- publishing --------------------------------------------------------
    def generate(self):
        self.seq += 1
        led = self.led
        led.generated.add(self.seq)
        payload = ("%s|%d|%d|%d" % (self.sid, self.qos, self.seq, wall_ms())).encode()
        if len(self.buf) >= self.o.buffer:
            for e in self.buf:
                if e[3] == 0:
                    self.buf.remove(e)
                    led.dropped.add(e[0])
                    break
            else:
                led.dropped.add(self.seq)
                return
        self.buf.append([self.seq, payload, 0, 0])

    def next_pid(self):
        used = {e[2] for e in self.buf}
        while True:
            self.pid = self.pid % 65535 + 1
            if self.pid not in used:
                return self.pid

    def send(self, e):
        t = self.conn.t
        if e[3] == 2:
            t.write(codec.encode_ack(6, e[2]))  # PUBREL
        else:
            if self.qos and not e[2]:
                e[2] = self.next_pid()
            data = codec.encode(Publish(self.topic, e[1], self.qos, False, e[3] == 1, e[2]), self.v5)
            if self.killing:  # killed mid-publish: half a packet, then nothing
                t.write(data[:len(data) // 2])
                t.abort()
                self.dead = True
                self.led.killed = True
                raise ConnectionError("killed")
            t.write(data)
            e[3] = 1
        if self.qos and not self.waiting:
            self.waiting = asyncio.get_running_loop().time()

    def pump(self):
        sent = sum(1 for e in self.buf if e[3])
        for e in list(self.buf):
            if self.conn is None:
                return
            if e[3]:
                continue
            if self.qos and sent >= self.o.inflight:
                return
            self.send(e)
            sent += 1
            if not self.qos:
                self.buf.remove(e)
                self.led.acked.add(e[0])

    def packet(self, conn, pkt):
        if conn is not self.conn:
            return
        loop = asyncio.get_running_loop()
        self.last_rx = loop.time()
        kind = pkt.kind
        if kind in (_PUBACK, _PUBREC, _PUBCOMP):
            for e in self.buf:
                if e[2] == pkt.pid and e[3]:
                    break
            else:
                return
            if kind == _PUBREC and pkt.reason < 0x80:
                e[3] = 2
                conn.t.write(codec.encode_ack(6, pkt.pid))  # [MQTT-4.3.3-4]
                return
            self.buf.remove(e)
            (self.led.acked if pkt.reason < 0x80 else self.led.unconfirmed).add(e[0])
            self.waiting = loop.time() if any(x[3] for x in self.buf) else 0
            self.wake.set()
        elif kind == _PINGRESP:
            self.waiting = loop.time() if any(x[3] for x in self.buf) else 0
        elif kind == _DISCONNECT:
            self.lose("DISCONNECT from broker")

    def kill(self):
        self.killing = True
        self.wake.set()

    # ---- the loop ------------------------------------------------------------
    async def run(self, seconds, drain_s):
        loop = asyncio.get_running_loop()
        o = self.o
        start = loop.time()
        end = start + seconds
        next_pub = start
        self.next_try = start
        interval = o.interval_ms / 1000.0
        try:
            while not self.dead:
                now = loop.time()
                stopping = now >= end
                if not stopping and now >= next_pub:
                    self.generate()
                    next_pub = max(next_pub + interval, now)
                if stopping and (not self.buf or now >= end + drain_s):
                    break
                if self.conn is None:
                    if self.killing:  # killed while offline
                        self.dead = self.led.killed = True
                        break
                    if now >= self.next_try and not (stopping and not self.buf):
                        await self.connect()
                        continue
                else:
                    self.pump()
                    if not self.waiting and now - self.last_rx > o.keepalive / 2:
                        self.conn.t.write(b"\xc0\x00")  # PINGREQ: is the link alive?
                        self.waiting = now
                    if self.waiting and now - self.waiting > o.ack_timeout:
                        self.lose("no answer")
                        continue
                wake = min(next_pub if not stopping else end + drain_s,
                           self.next_try if self.conn is None else now + 0.5)
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), max(0.005, wake - loop.time()))
                except asyncio.TimeoutError:
                    pass
        except ConnectionError:
            pass  # killed
        if self.dead:
            self.led.exit_note = "killed mid-publish"
            return
        self.led.unconfirmed.update(e[0] for e in self.buf)
        if self.conn is not None:
            self.conn.t.write(b"\xe0\x00")  # DISCONNECT: no will [MQTT-3.14.4-3]
            self.led.ended_clean = True
            self.conn.t.close()
            self.conn = None
