# The fleet's checker: one MQTT 3.1.1 subscriber straight to the broker (no
# chaos on its link) that records every reading and will of the run, and the
# broker's memory over time: $SYS/broker/heap/current (MicroPython) and, given
# its pid, the process's RSS from /proc (docs/fleet.md "The report").
import asyncio

from edge.errors import ProtocolError
from edge.mqtt import codec
from edge.mqtt.packets import Connect, Publish, Subscribe
from gateway.fleet.ledger import wall_ms

_CONNACK, _PUBLISH, _PUBREL, _SUBACK = 2, 3, 6, 9
_PUBACK, _PUBREC, _PUBCOMP = 4, 5, 7
HEAP_TOPIC = "$SYS/broker/heap/current"


class CheckerError(Exception):
    pass


class Checker(asyncio.Protocol):
    def __init__(self, host, port, prefix, clock):
        self.host, self.port, self.prefix = host, port, prefix
        self.clock = clock  # run time in s
        self.t = None
        self.buf = bytearray()
        self.readings = []  # (run time s, sid, qos, seq, latency ms)
        self.wills = []  # (run time s, sid, connection number)
        self.heap = []  # (run time s, bytes)
        self.rss = []  # (run time s, bytes)
        self.strays = 0  # messages under the prefix that parse as nothing
        self.qos2_open = set()  # QoS 2 pids received, PUBREL not yet [MQTT-4.3.3-9]
        self.waiters = {}
        self.lost_link = None  # why the checker's results cannot be trusted
        self.last_rx = 0.0
        self.client_id = None
        self.reconnects = 0  # its link closed by the broker (e.g. a board out of heap)
        self.stopping = False
        self.pinger = None
        self.sys = None  # {name: value} of $SYS/broker/# at the end (snapshot())
        self.pid = 100  # for commands; 1 and 2 are the SUBSCRIBEs'

    # ---- protocol ---------------------------------------------------------
    def connection_made(self, transport):
        self.t = transport

    def connection_lost(self, exc):
        why = "checker link closed: %s" % (exc or "by the broker")
        for f in self.waiters.values():
            if not f.done():
                f.set_exception(CheckerError(why))
        if not self.stopping and self.client_id is not None:
            # Its session is persistent: the broker keeps its QoS 1/2
            # messages meanwhile (3.1.1 §3.1.2.4), qos2_open stays as the
            # receiver's half of exactly once across the reconnect
            self.reconnects += 1
            asyncio.ensure_future(self._reconnect())

    def data_received(self, data):
        self.buf += data
        while True:
            try:
                pkt, n = codec.decode(self.buf, 0, len(self.buf))
            except ProtocolError as e:
                self.lost_link = "bad packet from broker: %s" % e
                self.t.abort()
                return
            if pkt is None:
                return
            del self.buf[:n]
            self._packet(pkt)

    def _packet(self, pkt):
        kind = pkt.kind
        if kind == _PUBLISH:
            if pkt.qos == 2:
                if pkt.pid in self.qos2_open:
                    self.t.write(codec.encode_ack(_PUBREC, pkt.pid))
                    return  # the same message again before PUBREL: once only
                self.qos2_open.add(pkt.pid)
                self.t.write(codec.encode_ack(_PUBREC, pkt.pid))
            elif pkt.qos == 1:
                self.t.write(codec.encode_ack(_PUBACK, pkt.pid))
            self._record(pkt.topic, bytes(pkt.payload))
        elif kind == _PUBREL:
            self.qos2_open.discard(pkt.pid)
            self.t.write(codec.encode_ack(_PUBCOMP, pkt.pid))
        elif kind in (_CONNACK, _SUBACK):
            f = self.waiters.pop(kind, None)
            if f is not None and not f.done():
                f.set_result(pkt)

    def _record(self, topic, payload):
        now = self.clock()
        self.last_rx = now
        if self.sys is not None and topic.startswith("$SYS/broker/"):
            self.sys[topic[12:]] = payload.decode("utf-8", "replace")
            if topic != HEAP_TOPIC:
                return
        if topic == HEAP_TOPIC:
            try:
                self.heap.append((now, int(payload)))
            except ValueError:
                pass
            return
        try:
            if topic.startswith(self.prefix + "/d/"):
                sid, qos, seq, t_ms = payload.decode().split("|")
                self.readings.append((now, sid, int(qos), int(seq), wall_ms() - int(t_ms)))
            elif topic.startswith(self.prefix + "/w/"):
                sid, n = payload.decode().split("|")
                self.wills.append((now, sid, int(n)))
            else:
                self.strays += 1
        except ValueError:
            self.strays += 1

    # ---- use ----------------------------------------------------------------
    async def _expect(self, kind, timeout):
        f = asyncio.get_running_loop().create_future()
        self.waiters[kind] = f
        return await asyncio.wait_for(f, timeout)

    async def _connect(self, clean, timeout):
        loop = asyncio.get_running_loop()
        self.buf = bytearray()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: self, self.host, self.port), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise CheckerError("cannot reach the broker at %s:%d: %s" % (self.host, self.port, e or "timeout"))
        self.t.write(codec.encode(Connect(self.client_id, clean, 60)))
        try:
            ack = await self._expect(_CONNACK, timeout)
        except asyncio.TimeoutError:
            raise CheckerError("no CONNACK from the broker within %.0f s" % timeout)
        if ack.reason:
            raise CheckerError("broker refused the checker: CONNACK %d" % ack.reason)
        return ack.session_present

    async def start(self, client_id, timeout=10.0):
        self.client_id = client_id
        await self._connect(False, timeout)
        self.t.write(codec.encode(Subscribe(1, [(self.prefix + "/#", 2), (HEAP_TOPIC, 0)])))
        try:
            sub = await self._expect(_SUBACK, timeout)
        except asyncio.TimeoutError:
            raise CheckerError("no SUBACK from the broker within %.0f s" % timeout)
        if sub.codes[0] != 2:
            raise CheckerError("broker granted the checker QoS %r, not 2" % sub.codes[0])
        self.pinger = asyncio.ensure_future(self._ping())

    async def _reconnect(self):
        for _ in range(20):
            await asyncio.sleep(0.5)
            if self.stopping:
                return
            try:
                present = await self._connect(False, 5.0)
            except CheckerError:
                continue
            if not present:
                self.lost_link = "the broker lost the checker's session: results incomplete"
            return
        self.lost_link = "checker could not reconnect in 10 s: results incomplete"

    async def _ping(self):
        while True:
            await asyncio.sleep(20)
            if self.t.is_closing():
                return
            self.t.write(b"\xc0\x00")  # keepalive 60 [MQTT-3.1.2-23]

    def command(self, topic, payload):
        """Publish a command at QoS 1 (to a CoAP device's cmd/<id>/#): True
        when written, False while the link is down (not sent, not counted)."""
        if self.t is None or self.t.is_closing():
            return False
        self.pid = self.pid + 1 if self.pid < 65000 else 100
        self.t.write(codec.encode(Publish(topic, payload, 1, False, False, self.pid)))
        return True

    async def sample_rss(self, pid, every=1.0):
        path = "/proc/%d/status" % pid
        while True:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.rss.append((self.clock(), int(line.split()[1]) * 1024))
                            break
            except OSError:
                return  # gone, or not Linux
            await asyncio.sleep(every)

    async def snapshot(self, wait=1.5):
        """The broker's $SYS/broker/# counters now (sent at once to a new
        subscriber, docs/sys.md): what it counted as dropped or refused."""
        if self.t is None or self.t.is_closing():
            return
        self.sys = {}
        self.t.write(codec.encode(Subscribe(2, [("$SYS/broker/#", 0)])))
        await asyncio.sleep(wait)

    async def stop(self):
        """DISCONNECT, then end its session (a clean CONNECT), so a board
        does not keep it."""
        self.stopping = True
        if self.pinger is not None:
            self.pinger.cancel()
        if self.t is not None and not self.t.is_closing():
            self.t.write(b"\xe0\x00")
            self.t.close()
        try:
            await self._connect(True, 5.0)  # [MQTT-3.1.2-6] discards the session
            self.t.write(b"\xe0\x00")
            self.t.close()
        except CheckerError:
            pass
