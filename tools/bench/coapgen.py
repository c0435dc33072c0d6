# The CoAP benchmark's load generator: raw UDP through asyncio datagram
# endpoints, one socket (one CoAP endpoint) per client, no CoAP library
# (coapwire.py, written from RFC 7252). Hot paths work on the datagram bytes
# in place: a request is a template with its Message-ID, token and sequence
# number patched in; a response is matched on its type and Message-ID (or
# its token, for a separate response) without decoding its options.
#
# RequestLoad: N clients, each with one outstanding CON request (NSTART 1,
# RFC 7252 §4.7): the next one leaves when the response to the previous one
# arrived. A request that gets no ACK is retransmitted as §4.2 says
# (ACK_TIMEOUT 2 s, random factor 1.5, doubling, MAX_RETRANSMIT 4); an empty
# ACK followed by a separate response (§5.2.2) is handled.
#
# Observers: one socket each, registered with GET + Observe 0 (RFC 7641
# §3.1); CON notifications are ACKed, notifications for a token we do not
# know get a RST (§3.6). Notification payloads carry (publisher, sequence
# number) in the layout of wire.PAYLOAD: duplicates and losses are counted.
import asyncio
import os
import random
import time

from tools.bench import coapwire as cw
from tools.bench import wire

ACK_TIMEOUT = 2.0
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
SEPARATE_TIMEOUT = 30.0  # an empty ACK and then no response: given up after this
TICK = 0.02              # retransmission timer resolution

_CON_T, _NON_T, _ACK_T, _RST_T = cw.CON, cw.NON, cw.ACK, cw.RST


class Bitmap:
    """Seen sequence numbers of one sender: unique / duplicate counts."""
    __slots__ = ("bits", "unique", "dup", "top")

    def __init__(self):
        self.bits = bytearray(1024)
        self.unique = 0
        self.dup = 0
        self.top = -1  # highest sequence number seen

    def mark(self, seq):
        bits = self.bits
        if seq >= len(bits):
            bits.extend(bytes(max(seq + 1 - len(bits), len(bits))))
        if bits[seq]:
            self.dup += 1
            return False
        bits[seq] = 1
        self.unique += 1
        if seq > self.top:
            self.top = seq
        return True

    def has(self, seq):
        return seq < len(self.bits) and self.bits[seq] == 1


def payload(pub, seq, size=wire.PAYLOAD_MIN):
    """The benchmark payload (wire.PAYLOAD layout), padded to size."""
    return wire.PAYLOAD.pack(wire.MAGIC, pub, seq, 0) + bytes(size - wire.PAYLOAD_MIN)


def parse_payload(p):
    """(publisher, seq) of a benchmark payload, or None."""
    if len(p) < wire.PAYLOAD_MIN:
        return None
    magic, pub, seq, _ = wire.PAYLOAD.unpack_from(p)
    if magic != wire.MAGIC:
        return None
    return pub, seq


class Template:
    """A CON request with Message-ID, token (4 bytes) and the payload's
    sequence number and send time patched per request."""

    def __init__(self, code, path, query=(), body=b""):
        self.buf = bytearray(cw.encode(cw.CON, code, 0, b"\0\0\0\0", cw.uri_options(path, query), body))
        # the sequence number's offset (wire.PAYLOAD: magic H, pub H, seq I)
        self.seq_off = len(self.buf) - len(body) + 4 if len(body) >= wire.PAYLOAD_MIN else -1

    def make(self, mid, token, seq):
        b = self.buf
        b[2] = mid >> 8
        b[3] = mid & 0xFF
        b[4:8] = token.to_bytes(4, "big")
        if self.seq_off >= 0:  # and the send time, for the latency to a subscriber
            o = self.seq_off
            b[o:o + 12] = seq.to_bytes(4, "big") + time.monotonic_ns().to_bytes(8, "big")
        return bytes(b)


class Client(asyncio.DatagramProtocol):
    """One CoAP endpoint with at most one outstanding CON request."""

    def __init__(self, load, idx, template):
        self.load = load
        self.idx = idx
        self.tpl = template
        self.tr = None
        self.mid = random.getrandbits(16)
        self.seq = -1
        self.token = b""
        self.req = b""
        self.busy = False      # a request is outstanding
        self.separate = False  # its empty ACK came: waiting for the response
        self.t_sent = 0.0
        self.deadline = 0.0
        self.timeout = 0.0
        self.tries = 0

    def connection_made(self, transport):
        self.tr = transport

    def error_received(self, exc):
        self.load.socket_errors += 1

    def fire(self):
        self.mid = (self.mid + 1) & 0xFFFF
        self.seq += 1
        tok = (self.idx << 24 | self.seq) & 0xFFFFFFFF
        self.token = tok.to_bytes(4, "big")
        self.req = self.tpl.make(self.mid, tok, self.seq)
        self.busy = True
        self.separate = False
        self.tries = 0
        now = time.monotonic()
        self.t_sent = now
        self.timeout = ACK_TIMEOUT * (1 + random.random() * (ACK_RANDOM_FACTOR - 1))
        self.deadline = now + self.timeout
        self.tr.sendto(self.req)

    def datagram_received(self, data, addr):
        if len(data) < 4:
            return
        t = (data[0] >> 4) & 3
        code = data[1]
        if t == _ACK_T:
            if not self.busy or ((data[2] << 8) | data[3]) != self.mid:
                return  # a late ACK of a retransmitted request: nothing to do
            if code == 0:
                self.separate = True
                self.deadline = time.monotonic() + SEPARATE_TIMEOUT
                return
            self.busy = False
            self.load.on_response(self, code, data)
            return
        if t == _RST_T:
            if self.busy and ((data[2] << 8) | data[3]) == self.mid:
                self.busy = False
                self.load.on_response(self, -1, data)
            return
        if code == 0:  # a CON ping (§4.3): RST
            if t == _CON_T:
                self.tr.sendto(cw.empty(_RST_T, (data[2] << 8) | data[3]))
            return
        # a separate response, CON or NON (§5.2.2), matched by token
        tkl = data[0] & 0x0F
        mine = self.busy and data[4:4 + tkl] == self.token
        if t == _CON_T:
            self.tr.sendto(cw.empty(_ACK_T if mine else _RST_T, (data[2] << 8) | data[3]))
        if mine:
            self.busy = False
            self.load.on_response(self, code, data)

    def check(self, now):
        """Retransmission timer (§4.2)."""
        if not self.busy or now < self.deadline:
            return
        if self.separate or self.tries >= MAX_RETRANSMIT:
            self.busy = False
            self.load.on_timeout(self)
            return
        self.tries += 1
        self.timeout *= 2
        self.deadline = now + self.timeout
        self.load.retransmissions += 1
        self.tr.sendto(self.req)


async def open_endpoint(factory, host, port):
    loop = asyncio.get_running_loop()
    tr, proto = await loop.create_datagram_endpoint(factory, remote_addr=(host, port))
    return proto


class RequestLoad:
    """n clients, each sending the same kind of request back to back.

    expect: the success code (2.04 or 2.05); body: when set, a success must
    end with it (0xFF marker + payload), else it counts as corrupt.
    gate: when set, a callable; a client whose response came while gate()
    is false waits in `parked` until resume() (the end-to-end window of the
    CoAP -> MQTT scenario).
    """

    def __init__(self, host, port, n, code, path_of, query=(), body_of=None, expect=cw.CHANGED,
                 body=None, gate=None):
        self.host, self.port, self.n = host, port, n
        self.code, self.path_of, self.query, self.body_of = code, path_of, query, body_of
        self.expect = expect
        self.tail = None if body is None else b"\xff" + body
        self.gate = gate
        self.clients = []
        self.parked = []
        self.running = False
        self.ok = 0
        self.bad = {}        # code string -> count
        self.corrupt = 0
        self.timeouts = 0
        self.timed_out = set()  # (client, seq) of requests given up
        self.retransmissions = 0
        self.socket_errors = 0
        self.t_first = self.t_last = 0.0

    async def open(self):
        for i in range(self.n):
            tpl = Template(self.code, self.path_of(i), self.query,
                           self.body_of(i) if self.body_of else b"")
            self.clients.append(await open_endpoint(lambda i=i, tpl=tpl: Client(self, i, tpl),
                                                    self.host, self.port))

    def close(self):
        for c in self.clients:
            if c.tr is not None:
                c.tr.close()

    def on_response(self, c, code, data):
        if code == self.expect:
            if self.tail is not None and not data.endswith(self.tail):
                self.corrupt += 1
            else:
                self.ok += 1
        else:
            k = "RST" if code < 0 else cw.code_str(code)
            self.bad[k] = self.bad.get(k, 0) + 1
        self.t_last = time.monotonic()
        self._next(c)

    def on_timeout(self, c):
        self.timeouts += 1
        self.timed_out.add((c.idx, c.seq))
        self._next(c)

    def _next(self, c):
        if not self.running:
            return
        if self.gate is not None and not self.gate():
            self.parked.append(c)
            return
        c.fire()

    def resume(self):
        parked, self.parked = self.parked, []
        for c in parked:
            if self.running:
                c.fire()

    async def _ticker(self):
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for c in self.clients:
                c.check(now)

    async def run(self, duration, drain=5.0):
        """Load for `duration` seconds, then wait (at most `drain` s) for the
        outstanding requests. Returns the seconds from the first send to the
        last response, or to the end of the load if that came later (a
        server that stopped answering gets no shorter run)."""
        ticker = asyncio.ensure_future(self._ticker())
        try:
            self.running = True
            self.t_first = self.t_last = time.monotonic()
            for c in self.clients:
                c.fire()
            await asyncio.sleep(duration)
            self.running = False
            t_stop = time.monotonic()
            end = time.monotonic() + drain
            while any(c.busy for c in self.clients) and time.monotonic() < end:
                await asyncio.sleep(0.01)
        finally:
            self.running = False
            ticker.cancel()
        return max(max(self.t_last, t_stop) - self.t_first, 1e-6)

    def unanswered(self):
        return sum(1 for c in self.clients if c.busy)


class Observer(asyncio.DatagramProtocol):
    """One CoAP endpoint observing one resource."""

    def __init__(self, fan, idx):
        self.fan = fan
        self.idx = idx
        self.tr = None
        self.token = os.urandom(4)
        self.mid = random.getrandbits(16)
        self.registered = None  # Future: (code, observe value or None)
        self.seen = Bitmap()
        self.other = 0          # notifications without a benchmark payload
        self.con = 0            # CON notifications (ACKed)

    def connection_made(self, transport):
        self.tr = transport

    def error_received(self, exc):
        self.fan.socket_errors += 1

    async def register(self, path, query, timeout=10.0):
        """GET with Observe 0; retransmitted as a CON request is (§4.2).
        Returns (code, observe) of the first response."""
        self.registered = asyncio.get_running_loop().create_future()
        req = cw.encode(cw.CON, cw.GET, self.mid, self.token,
                        [(cw.OBSERVE, b"")] + cw.uri_options(path, query))
        wait = ACK_TIMEOUT
        end = time.monotonic() + timeout
        while True:
            self.tr.sendto(req)
            try:
                return await asyncio.wait_for(asyncio.shield(self.registered),
                                              min(wait, max(end - time.monotonic(), 0.01)))
            except asyncio.TimeoutError:
                if time.monotonic() >= end:
                    raise
                wait *= 2

    def datagram_received(self, data, addr):
        if len(data) < 4:
            return
        t = (data[0] >> 4) & 3
        code = data[1]
        if code == 0:
            if t == _CON_T:  # ping
                self.tr.sendto(cw.empty(_RST_T, (data[2] << 8) | data[3]))
            # an empty ACK of the registration: the response comes separately
            return
        tkl = data[0] & 0x0F
        if data[4:4 + tkl] != self.token:
            if t == _CON_T or t == _NON_T:
                self.tr.sendto(cw.empty(_RST_T, (data[2] << 8) | data[3]))  # RFC 7641 §3.6
            return
        if t == _CON_T:
            self.con += 1
            self.tr.sendto(cw.empty(_ACK_T, (data[2] << 8) | data[3]))
        reg = self.registered
        if reg is not None and not reg.done():
            try:
                opts = cw.decode(data)[4]
            except ValueError:
                opts = []
            obs = cw.option(opts, cw.OBSERVE)
            reg.set_result((code, None if obs is None else cw.to_int(obs)))
        p = cw.payload_of(data)
        if len(p) >= 16 and p[0] == 0x45 and p[1] == 0x42:  # wire.MAGIC
            seq = int.from_bytes(p[4:8], "big")
            if self.seen.mark(seq):
                fan = self.fan
                if self.idx == 0:  # publish -> notification latency, one observer's
                    fan.latencies.append(time.monotonic_ns() - int.from_bytes(p[8:16], "big"))
                fan.received += 1
                fan.t_last = time.monotonic()
                if fan.waiting and seq >= fan.need:
                    fan.poke()
        else:
            self.other += 1


class Fanout:
    """n observers of one resource; the MQTT publisher (scenario code) asks
    floor() before publishing more: the highest sequence number every
    observer has seen."""

    def __init__(self, host, port, n):
        self.host, self.port, self.n = host, port, n
        self.observers = []
        self.received = 0
        self.latencies = []  # ns, observer 0's notifications
        self.socket_errors = 0
        self.t_last = 0.0
        self.waiting = False
        self.need = 0
        self.event = asyncio.Event()

    async def open(self):
        for i in range(self.n):
            self.observers.append(await open_endpoint(lambda i=i: Observer(self, i), self.host, self.port))

    def close(self):
        for o in self.observers:
            if o.tr is not None:
                o.tr.close()

    def floor(self):
        return min(o.seen.top for o in self.observers)

    def poke(self):
        if self.floor() >= self.need:
            self.waiting = False
            self.event.set()

    async def wait_floor(self, need, timeout):
        """Until every observer saw seq >= need; False after timeout."""
        if self.floor() >= need:
            return True
        self.need = need
        self.event.clear()
        self.waiting = True
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self.waiting = False


def rx_drops(ports):
    """Datagrams the kernel dropped at the receive queues of the UDP sockets
    bound to these local ports (the `drops` column of /proc/net/udp): a
    loss there is the reader's, not the sender's. None if unreadable."""
    ports = set(ports)
    total = 0
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) in ports:
                    total += int(fields[-1])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return total


def local_ports(protocols):
    return [p.tr.get_extra_info("sockname")[1] for p in protocols if p.tr is not None]


async def request(host, port, code, path, query=(), body=b"", timeout=5.0):
    """One CON request with retransmission; (code, payload). For set-up and
    polling, not for load."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    mid = random.getrandbits(16)
    token = os.urandom(4)

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            try:
                t, c, m, tok, opts, pl = cw.decode(data)
            except ValueError:
                return
            if c == 0:
                return
            if t == cw.CON:
                tr.sendto(cw.empty(cw.ACK, m))
            if tok == token and not fut.done():
                fut.set_result((c, pl))

    tr, _ = await loop.create_datagram_endpoint(P, remote_addr=(host, port))
    try:
        req = cw.encode(cw.CON, code, mid, token, cw.uri_options(path, query), body)
        wait = min(ACK_TIMEOUT, timeout)
        end = time.monotonic() + timeout
        while True:
            tr.sendto(req)
            left = end - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError("no response to %s %s" % (cw.code_str(code), path))
            try:
                return await asyncio.wait_for(asyncio.shield(fut), min(wait, left))
            except asyncio.TimeoutError:
                wait *= 2
    finally:
        tr.close()


async def ping(host, port, timeout=0.3):
    """CoAP ping (§4.3): an Empty CON answered by a RST. True if answered."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    mid = random.getrandbits(16)

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            if len(data) >= 4 and (data[2] << 8 | data[3]) == mid and not fut.done():
                fut.set_result(True)

        def error_received(self, exc):
            if not fut.done():
                fut.set_result(False)

    tr, _ = await loop.create_datagram_endpoint(P, remote_addr=(host, port))
    try:
        tr.sendto(cw.empty(cw.CON, mid))
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        return False
    finally:
        tr.close()
