# The CoAP endpoint: datagrams in, datagrams out, no I/O (docs/design.md
# H1). The runtime calls datagram() for each datagram received and tick()
# every 100-500 ms, and sends what `out` holds; time comes in as `now` (ms),
# randomness through the rng it gives (docs/design.md H5).
#
# This module is the message layer (RFC 7252 §4): the type of each message,
# piggybacked replies, Message-ID deduplication with a reply cache, and the
# dispatch of requests to resources.py. Observers and the CONs we send
# (notifications: we send no requests) are observe.py's, block-wise
# transfers block.py's; both load on first use.
#
# Durability (docs/design.md "Delivery guarantees"): a QoS 1/2 publish is
# answered 2.04 only once it is durable. The reply is queued in `out` like
# an MQTT ack in a connection's output, and the runtime must send `out` only
# after it has synced the store, as it does for MQTT acks: feed the
# datagrams, sync, then send and clear `out`. A CON request whose reply never
# left is retransmitted by the client and finds no cached reply (the cache
# lives in RAM): it is processed again, a duplicate for the subscribers, as
# QoS 1 allows, never a loss.
from edge.compat import const
from edge.coap import resources
from edge.coap.codec import check_options, decode, empty, encode, option, reset

_CON = const(0)
_NON = const(1)
_ACK = const(2)
_RST = const(3)
_GET = const(1)
_OBSERVE = const(6)
_MAX_AGE = const(14)
_BLOCK2 = const(23)
_SIZE2 = const(28)
_SERVICE_UNAVAILABLE = const(0xA3)  # 5.03
_CONTINUE = const(0x5F)  # 2.31 (block.py)
# Defaults of the limits the contract leaves optional (read with
# getattr, so a limits object with only the four required attributes works)
_MAX_EXCHANGES = const(64)  # reply cache entries
_MAX_QUEUED = const(8)      # CON notifications waiting per peer (observe.py)
_MAX_TRANSFERS = const(2)   # Block1 transfers at a time (block.py)
# Entries kept per peer: its newest ones. A client sends one CON at a time
# (NSTART 1, RFC 7252 §4.7) and retransmits only that one, so a duplicate is
# of its latest request; 8 leaves a margin for NONs and a larger NSTART.
# Without it one busy peer filled the cache for EXCHANGE_LIFETIME and every
# publish after was refused (40 publishes/s at 10,000 entries).
_PER_PEER = const(8)


class Endpoint:
    # Set later, if ever (an instance attribute costs heap on a board)
    client = None  # the LocalClient every observer shares (observe.py)
    seq = 0        # the last Observe sequence number sent (24 bits)
    max_queued = _MAX_QUEUED        # limits.max_queued, when given
    # Made by their module when first needed (None: none yet)
    pend = None    # peer -> our outstanding CON (observe.py)
    xfers = None   # peer -> Block1 reassembly (block.py)
    max_transfers = _MAX_TRANSFERS  # limits.max_transfers, when given
    # The counters of $SYS/broker/coap/... (sys_values), read as ep.stats.X:
    # `stats` is the endpoint itself, each counter a class-level 0 until it
    # is first counted (no class and instance of their own: docs/coap.md
    # "On a board")
    requests = 0         # requests received, duplicates not included
    duplicates = 0       # duplicates answered from the reply cache or ignored
    errors = 0           # malformed, rejected or refused as bad (RST, 4.02, dropped)
    refusals = 0         # refused for a limit of ours (5.03, 4.13)
    publishes = 0        # messages published into the broker
    notifications = 0    # notifications sent (first transmissions)
    retransmissions = 0  # CON notifications sent again
    timeouts = 0         # observers dropped: a CON notification never ACKed
    dropped = 0          # notifications not sent: CON queue full, or peer silent

    def __init__(self, broker, limits, rng):
        self.broker = broker
        self.rng = rng
        self.now = 0
        self.out = []          # (bytes, peer) to send, in order
        self.stats = self
        self.cache = {}        # (peer, mid) -> (deadline, reply) for a CON, deadline for a NON
        self.recent = {}       # peer -> its keys in cache, oldest first (_PER_PEER at most)
        self.sweep = 0         # earliest deadline in cache
        self.obs = {}          # (peer, token) -> observer (observe.py)
        self.lifetime = limits.exchange_lifetime * 1000
        # The limits' values are copied: the limits object is not kept (the
        # runtime's is garbage once we are built: docs/coap.md "On a board")
        self.max_payload = limits.max_payload
        self.max_observers = limits.max_observers
        self.max_exchanges = getattr(limits, "max_exchanges", _MAX_EXCHANGES)
        # the optional ones no config sets: class-level defaults (above)
        # unless given
        if hasattr(limits, "max_queued"):
            self.max_queued = limits.max_queued
        if hasattr(limits, "max_transfers"):
            self.max_transfers = limits.max_transfers
        self.mid = int(rng() * 65536) & 0xFFFF  # RFC 7252 §4.4: not predictable
        szx = 0
        while szx < 6 and 16 << szx < limits.block_size:
            szx += 1
        self.szx = szx  # our block size, 2 ** (szx + 4) bytes (RFC 7959 §2.2)

    # ---- the runtime's interface ---------------------------------------------
    def datagram(self, data, peer, now):
        """Process one datagram from peer (opaque, hashable)."""
        self.now = now
        st = self.stats
        out = self.out
        m = decode(data)
        if m is None:
            # RFC 7252 §4.2, §4.3: a malformed CON is rejected with an RST,
            # a malformed NON (or another version) dropped silently
            st.errors += 1
            rst = reset(data)
            if rst is not None:
                out.append((rst, peer))
            return
        mtype, code, mid, token, opts, payload = m
        if mtype >= _ACK:
            # An Empty ACK or RST answers one of our notifications (RFC 7252
            # §4.2, RFC 7641 §3.6); one carrying a code answers a request we
            # never sent: ignored
            if code == 0 and (self.pend or self.obs):
                from edge.coap import observe

                observe.answered(self, peer, mid, mtype == _RST, now)
            return
        con = mtype == _CON
        if code == 0 or code >> 5:
            # An Empty CON is a ping; a response or a reserved class in a
            # CON or NON is rejected (RFC 7252 §4.2, §4.3, §12.1)
            if code:
                st.errors += 1
            if con:
                out.append((empty(_RST, mid), peer))
            return
        # A request whose effects must not repeat (a publish, an Observe
        # registration) is answered once: its duplicates (same peer, same
        # Message-ID) get the cached reply, or nothing for a NON (RFC 7252
        # §4.5). A plain GET is idempotent and simply processed again.
        key = None
        if code != _GET or option(opts, _OBSERVE) is not None:
            key = (peer, mid)
            hit = self.cache.get(key)
            if hit is not None:
                st.duplicates += 1
                if type(hit) is tuple:  # a CON's: its reply again
                    out.append((hit[1], peer))
                return
        st.requests += 1
        mark = len(out)  # the reply goes before what processing queues
        bad = check_options(opts)
        if bad:
            # RFC 7252 §5.4.1: 4.02 for a CON; a NON is rejected silently
            st.errors += 1
            if not con:
                return
            resp = (bad, [], b"")
            key = None  # no effects: nothing to remember
        elif (key is not None and len(self.cache) >= self.max_exchanges and self._expire(now)
              and not self.recent.get(peer)):
            # The reply cache is full of other peers' entries: refused rather
            # than processed without the promise that a duplicate is not
            # processed twice (docs/design.md H7). (A peer with entries of its
            # own gives its oldest up, below.) Max-Age: when the oldest entry
            # leaves (RFC 7252 §5.9.3.4)
            st.refusals += 1
            resp = (_SERVICE_UNAVAILABLE, [_MAX_AGE, (self.sweep - now) // 1000 + 1], b"")
            key = None
        else:
            resp = resources.handle(self, peer, code, token, opts, payload, now)
        code, ropts, body = resp
        if body and (len(body) > 16 << self.szx or option(opts, _BLOCK2) is not None
                     or option(opts, _SIZE2) is not None):
            from edge.coap import block

            code, ropts, body = block.response(self, opts, code, ropts, body)
        # RFC 7252 §5.2.1 piggybacked in the ACK; §5.2.3 a NON request's
        # response is a NON with a Message-ID of ours
        if not con:
            self.mid = mid = (self.mid + 1) & 0xFFFF  # our next (also observe.py's)
        reply = encode(_ACK if con else _NON, code, mid, token, ropts, body)
        if mark < len(out):
            out.insert(mark, (reply, peer))
        else:
            out.append((reply, peer))
        if key is not None and code != _CONTINUE:  # (block.py: a 2.31 is idempotent)
            if not self.cache:
                self.sweep = now + self.lifetime
            # a NON's entry is its deadline alone: duplicates get nothing
            self.cache[key] = (now + self.lifetime, reply) if con else now + self.lifetime
            keys = self.recent.get(peer)
            if keys is None:
                keys = self.recent[peer] = []
            keys.append(key)
            if len(keys) > _PER_PEER or len(self.cache) > self.max_exchanges:
                self.cache.pop(keys.pop(0), None)  # the peer's oldest

    def tick(self, now):
        """Retransmissions, the reply cache's and Block1 transfers' expiry."""
        self.now = now
        if self.cache and now >= self.sweep:
            self._expire(now)
        if self.pend:
            from edge.coap import observe

            observe.tick(self, now)
        if self.xfers:
            from edge.coap import block

            block.expire(self, now)

    def next_deadline(self):
        """The time (ms) tick() is next needed at, or None."""
        t = self.sweep if self.cache else None
        for p in self.pend.values() if self.pend else ():
            if t is None or p[2] < t:
                t = p[2]
        for x in self.xfers.values() if self.xfers else ():
            if t is None or x[2] < t:
                t = x[2]
        return t

    def close(self):
        """Shutdown: every observer is dropped and unsubscribed."""
        if self.client is not None:
            from edge.coap import observe

            observe.close(self)
        self.pend = None
        self.xfers = None
        self.cache = {}
        self.recent = {}

    def sys_values(self):
        """(name under $SYS/broker/, value) pairs, one at a time, as
        edge/mqtt/systree.py values()."""
        # One string of the names, not a constant per name: each constant
        # string is an object on a board's heap (docs/coap.md "On a board")
        for name in ("requests duplicates errors refusals publishes observers notifications"
                     " retransmissions timeouts dropped exchanges").split():
            if name == "observers":
                v = len(self.obs)
            elif name == "exchanges":
                v = len(self.cache)
            else:
                v = getattr(self, name)
            yield "coap/" + name, v

    # ---- internal ------------------------------------------------------------
    def _expire(self, now):
        """Drop the reply cache's entries past EXCHANGE_LIFETIME (RFC 7252
        §4.8.2); True if it is still full."""
        cache = self.cache
        gone = None
        soon = 0
        for key in cache:
            t = cache[key]
            if type(t) is tuple:
                t = t[0]
            if t <= now:
                if gone is None:
                    gone = []
                gone.append(key)
            elif not soon or t < soon:
                soon = t
        if gone is not None:
            recent = self.recent
            for key in gone:
                del cache[key]
                keys = recent.get(key[0])
                if keys is not None:
                    if key in keys:
                        keys.remove(key)
                    if not keys:
                        del recent[key[0]]
        self.sweep = soon
        return len(cache) >= self.max_exchanges
