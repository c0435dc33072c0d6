# Publish/subscribe flows of the load generator (fan-in, fan-out, latency).
#
# Publishers pipeline PUBLISH packets built from a template (sequence number
# and packet id patched in place, one write per batch) and answer PUBREC with
# PUBREL; subscribers parse inline, answer PUBACK/PUBREC/PUBCOMP in one write
# per read, and check every message's (publisher, sequence) pair: late
# (reordered), duplicated and missing messages are counted, and only
# messages that arrive once and in order count as throughput.
#
# Closed loop: a publisher keeps at most `e2e_window` messages between its
# socket and the subscribers, plus at most `window` unacknowledged QoS 1/2
# PUBLISHes (paho's and mosquitto's default of 20). Throughput is then what
# the broker sustains, not how fast it can drop.
import asyncio
import struct
import time

from tools.bench import wire

_I = struct.Struct(">I")
_H = struct.Struct(">H")
_Q = struct.Struct(">Q")
_BATCH = 128          # messages per write at most


def _varint_at(data, i, n):
    rl, shift = 0, 0
    while i < n:
        b = data[i]
        i += 1
        rl |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return rl, i
        if shift >= 28:
            raise ValueError("malformed remaining length")
    return -1, i


class Publisher:
    def __init__(self, flow, index, topic, qos, payload_size, window):
        self.flow = flow
        self.index = index
        self.qos = qos
        self.window = window if qos else 1 << 30
        self.links = []
        tpl, self.pid_off, pay_off = wire.publish_template(topic, qos, payload_size, index)
        self.size = len(tpl)
        self.seq_off = pay_off + 4
        self.ts_off = pay_off + 8
        self.batch_tpl = tpl * _BATCH
        self.seq = 0                # messages written
        self.inflight = {}          # pid -> acks still expected (one per link)
        self.acked = 0
        self.bad_acks = 0
        self.sending = False
        self.rate = 0               # > 0: paced at `rate` msg/s, each stamped
        # Low-water mark: write when at least this many may go (a quarter of
        # the closed loop, half the ack window), so a broker that answers one
        # message at a time does not make us write one message at a time.
        self.low = max(1, min(_BATCH, flow.e2e // 4)) if not qos else 1
        self.t0 = 0.0
        self.rest = b""

    # -- sending -------------------------------------------------------------
    def budget(self):
        n = self.flow.e2e_budget(self)
        if self.qos:
            n = min(n, self.window - len(self.inflight))
        return n

    def pump(self, limit=1 << 30):
        if not self.sending:
            return
        for ln in self.links:
            if ln.paused or ln.lost:
                return
        stamp_all = self.rate > 0
        if stamp_all:  # paced: only what is due by now
            limit = min(limit, int((time.monotonic() - self.t0) * self.rate) - self.seq)
        n = min(self.budget(), limit, self.flow.cap - self.seq)
        if n < self.low and not stamp_all:
            return  # refill in batches: one write per message would cost us more than the broker
        while n > 0:
            k = n if n < _BATCH else _BATCH
            self._write(k, stamp_all)
            n -= k

    def _write(self, k, stamp_all):
        L = self.size
        buf = bytearray(self.batch_tpl[:k * L])
        seq = self.seq
        qos = self.qos
        ipack = _I.pack_into
        seq_off = self.seq_off
        if qos:
            hpack = _H.pack_into
            pid_off = self.pid_off
            nlinks = len(self.links)
            inflight = self.inflight
        for m in range(k):
            s = seq + m
            base = m * L
            ipack(buf, base + seq_off, s)
            if qos:
                pid = s % 65535 + 1
                hpack(buf, base + pid_off, pid)
                inflight[pid] = nlinks
        now = time.monotonic_ns()
        if stamp_all:
            for m in range(k):
                _Q.pack_into(buf, m * L + self.ts_off, now)
        else:  # one latency sample per batch, free of charge
            _Q.pack_into(buf, self.ts_off, now)
        self.seq = seq + k
        for ln in self.links:
            ln.transport.write(buf)

    # -- acknowledgements from the broker (Link owner interface) ---------------
    def on_data(self, link, data):
        if self.rest:
            data = self.rest + data
        n = len(data)
        i = 0
        inflight = self.inflight
        out = None
        while i + 4 <= n:
            h = data[i]
            if data[i + 1] != 2:
                self.bad_acks += 1  # not an ack: a publisher subscribes to nothing
                i = n
                break
            pid = (data[i + 2] << 8) | data[i + 3]
            if h == 0x50 and self.qos == 2:  # PUBREC -> PUBREL
                if pid in inflight:
                    if out is None:
                        out = bytearray()
                    out += b"\x62\x02"
                    out += data[i + 2:i + 4]
                else:
                    self.bad_acks += 1
            elif (h == 0x40 and self.qos == 1) or (h == 0x70 and self.qos == 2):
                r = inflight.get(pid)
                if r is None:
                    self.bad_acks += 1
                elif r == 1:
                    del inflight[pid]
                    self.acked += 1
                else:
                    inflight[pid] = r - 1
            else:
                self.bad_acks += 1
            i += 4
        self.rest = data[i:] if i < n else b""
        if out:
            link.transport.write(out)
        self.pump()

    def on_resume(self, link):
        self.pump()

    def on_lost(self, link):
        self.flow.lost_links += 1


class Subscriber:
    def __init__(self, flow, npubs, payload_size):
        self.flow = flow
        self.psize = payload_size
        # per publisher: [next expected seq, set of missing seqs or None,
        #                 duplicates, late (reordered) arrivals]
        self.states = [[0, None, 0, 0] for _ in range(npubs)]
        self.got = flow.got        # per publisher: sum of next-expected over subscribers
        self.corrupt = 0
        self.unexpected = 0
        self.last_rx = 0.0
        self.lat = flow.latencies
        self.rest = b""

    def on_data(self, link, data):
        if self.rest:
            data = self.rest + data
        n = len(data)
        i = 0
        out = bytearray()
        states = self.states
        got = self.got
        npubs = len(states)
        cap = self.flow.cap
        unpack = wire.PAYLOAD.unpack_from
        psize = self.psize
        now_ns = 0
        while i + 2 <= n:
            h = data[i]
            rl = data[i + 1]
            j = i + 2
            if rl & 0x80:
                rl, j = _varint_at(data, i + 1, n)
                if rl < 0:
                    break
            end = j + rl
            if end > n:
                break
            if h & 0xF0 == 0x30:
                p = j + 2 + ((data[j] << 8) | data[j + 1])
                q = h & 6
                if q:
                    out += b"\x40\x02" if q == 2 else b"\x50\x02"
                    out += data[p:p + 2]
                    p += 2
                if end - p != psize:
                    self.corrupt += 1
                    i = end
                    continue
                m, pub, seq, ts = unpack(data, p)
                if m != 0x4542 or pub >= npubs or seq >= cap:
                    self.corrupt += 1
                    i = end
                    continue
                st = states[pub]
                if seq == st[0]:
                    st[0] = seq + 1
                    got[pub] += 1
                else:
                    got[pub] += _odd(st, seq)
                if ts:
                    if not now_ns:
                        now_ns = time.monotonic_ns()
                    self.lat.append(now_ns - ts)
            elif h == 0x62:  # PUBREL -> PUBCOMP
                out += b"\x70\x02"
                out += data[j:j + 2]
            else:
                self.unexpected += 1
            i = end
        self.rest = data[i:] if i < n else b""
        if out:
            link.transport.write(out)
        self.last_rx = time.monotonic()
        self.flow.kick()

    def on_resume(self, link):
        pass

    def on_lost(self, link):
        self.flow.lost_links += 1

    def tally(self, sent):
        """Per-publisher counts against what each publisher sent."""
        t = {"unique": 0, "good": 0, "lost": 0, "duplicated": 0, "reordered": 0}
        for st, n in zip(self.states, sent):
            missing = len(st[1]) if st[1] else 0
            unique = st[0] - missing
            t["unique"] += unique
            t["good"] += unique - st[3]
            t["lost"] += n - unique
            t["duplicated"] += st[2]
            t["reordered"] += st[3]
        return t


def _odd(st, seq):
    """An out-of-order arrival: a gap opens, a late one fills it, or a dup.
    Returns how far the next expected sequence number moved."""
    nxt = st[0]
    if seq > nxt:
        if st[1] is None:
            st[1] = set()
        st[1].update(range(nxt, seq))
        st[0] = seq + 1
        return seq + 1 - nxt
    if st[1] and seq in st[1]:
        st[1].discard(seq)
        st[3] += 1
    else:
        st[2] += 1
    return 0


class Flow:
    """npubs publishers -> nsubs subscribers, closed loop; see the header."""

    def __init__(self, npubs, nsubs, qos, payload_size=64, window=20,
                 e2e_window=1000, cap=10_000_000, rate=0):
        self.npubs = npubs
        self.nsubs = nsubs
        self.qos = qos
        self.payload_size = payload_size
        self.window = window
        self.e2e = e2e_window
        self.cap = cap
        self.rate = rate
        self.got = [0] * npubs
        self.latencies = []
        self.lost_links = 0
        self.pubs = []
        self.subs = []

    def add_publisher(self, topic):
        p = Publisher(self, len(self.pubs), topic, self.qos, self.payload_size, self.window)
        p.rate = self.rate
        self.pubs.append(p)
        return p

    def add_subscriber(self):
        s = Subscriber(self, self.npubs, self.payload_size)
        self.subs.append(s)
        return s

    def e2e_budget(self, pub):
        # got[] sums each subscriber's next expected number: a message a
        # broker dropped does not hold the loop back, it is counted as lost.
        nsubs = self.nsubs
        return self.e2e - (pub.seq * nsubs - self.got[pub.index] + nsubs - 1) // nsubs

    def kick(self):
        for p in self.pubs:
            p.pump()

    def tally(self):
        sent = [p.seq for p in self.pubs]
        t = {"sent": sum(sent), "unique": 0, "good": 0, "lost": 0, "duplicated": 0,
             "reordered": 0}
        for s in self.subs:
            for k, v in s.tally(sent).items():
                t[k] += v
        t["corrupt"] = sum(s.corrupt for s in self.subs)
        t["unexpected"] = sum(s.unexpected for s in self.subs)
        t["bad_acks"] = sum(p.bad_acks for p in self.pubs)
        t["unacked"] = sum(len(p.inflight) for p in self.pubs)
        return t

    def _complete(self):
        if any(p.inflight for p in self.pubs):
            return False
        t = self.tally()
        return t["unique"] >= t["sent"] * self.nsubs

    async def run(self, duration, drain_timeout=10.0, stall_timeout=3.0):
        """Send for `duration` s, then wait for the last deliveries and acks
        (bounded by drain_timeout, and by stall_timeout without progress)."""
        t0 = time.monotonic()
        for p in self.pubs:
            p.t0 = t0
            p.sending = True
        self.kick()
        tick = 0.001 if self.rate else 0.02
        while time.monotonic() - t0 < duration and not self.lost_links:
            await asyncio.sleep(tick)
            if self.rate:
                self.kick()
            if all(p.seq >= self.cap for p in self.pubs):
                break
        for p in self.pubs:
            p.sending = False
        t_stop = time.monotonic()
        last, last_change = -1, t_stop
        while not self._complete() and not self.lost_links:
            now = time.monotonic()
            progress = sum(self.got) + sum(p.acked for p in self.pubs)
            if progress != last:
                last, last_change = progress, now
            if now - t_stop > drain_timeout or now - last_change > stall_timeout:
                break
            await asyncio.sleep(0.01)
        t_last = max([s.last_rx for s in self.subs] + [t0])
        return t0, t_stop, t_last
