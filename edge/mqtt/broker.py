# The broker: packets in, packets out, no I/O (docs/design.md H1). The
# runtime calls open() / data_received() / connection_lost() / tick() and
# writes out what each Connection in `dirty` has queued. This module holds
# that interface, the one dispatcher (data_received: a RemoteProtocolError
# closes that connection, as mosquitto's read_handle.c) and closing; the
# handlers are functions of the Broker in their own modules, found through a
# table keyed by packet type (docs/design.md H8), as mosquitto keeps
# handle_connect.c, handle_publish.c and sys_tree.c apart:
#   connect.py    CONNECT, client ids, session takeover
#   publish.py    PUBLISH in, its acks, routing, retained messages
#   subscribe.py  SUBSCRIBE/UNSUBSCRIBE, the local-client API
#   systree.py    $SYS/broker/...
#   v5.py         the 5.0 Hub, loaded on the first 5.0 CONNECT
from edge.compat import const
from edge.errors import RemoteProtocolError
from edge.mqtt import codec, connect
from edge.mqtt import publish as publishing, subscribe as subscribing
from edge.mqtt.connection import Connection, CONNECTED, CLOSED, ERROR
from edge.mqtt.packets import Connack
from edge.mqtt.retain import RetainStore
from edge.mqtt.session import Budget
from edge.mqtt.topics import Trie

# Wire numbers from consts.py, private so they fold into the bytecode and
# cost no heap on a board (tests/core/test_consts.py keeps them equal).
_PUBLISH = const(3)
_RC_PROTOCOL_ERROR = const(0x82)
_RC_KEEPALIVE_TIMEOUT = const(0x8D)
_RC_PACKET_TOO_LARGE = const(0x95)
# Stats.refusals's indexes: refusals for a limit of [broker] (docs/security.md
# "Limits"), named in systree.py's keys ($SYS/broker/limits/<key>), whose
# order tests/core/test_limits.py checks. Private: folded into the bytecode
_L_ADDRESS = const(0)   # max_connections_per_address: closed at accept
_L_RATE = const(1)      # max_packet_rate: a connection held back (not read)
_L_LENGTH = const(2)    # max_topic_length: a topic or filter refused
_L_LEVELS = const(3)    # max_topic_levels: the same, for its depth
_L_WILL = const(4)      # max_will_bytes: a CONNECT refused
_L_SUBS = const(5)      # max_subscriptions: a filter refused
_L_CONNS = const(6)     # max_connections: a socket or a CONNECT refused
_L_TIMEOUT = const(7)   # connect_timeout: closed without a CONNECT
_L_PACKET = const(8)    # max_packet_size: closed
_LIMITS = const(9)


def _on_pingreq(b, conn, pkt, now):
    # One constant (bytecode, in ROM on a board), the same in 3.1.1 and 5.0:
    # a read of 512 PINGREQs queues 512 references to it, not 512 new
    # objects (the board's 64 KiB heap ran out at 300: test_28_limits.py)
    conn.write(b"\xd0\x00")


def _on_disconnect(b, conn, pkt, now):
    if conn.v5:  # Session Expiry change, 0x04 keeps the will
        b.v5.on_disconnect(conn, pkt)
    else:
        conn.will = None  # [MQTT-3.14.4-3] the will is discarded
    b.close(conn, now, "DISCONNECT")


# Handlers indexed by packet type, each (broker, conn, packet, now); None:
# not valid from a client (a server-to-client packet, or reserved)
_HANDLERS = (
    None, connect.on_connect, None, publishing.on_publish, publishing.on_ack,
    publishing.on_ack, publishing.on_ack, publishing.on_ack, subscribing.on_subscribe, None,
    subscribing.on_unsubscribe, None, _on_pingreq, None, _on_disconnect, None,
)

# 3.1.1 CONNACK return codes 1-5 -> 5.0 reason codes (§3.2.2.2): bad
# protocol 0x84, client id not valid 0x85, server unavailable 0x88, bad user
# name or password 0x86, not authorized 0x87
_V5_REFUSALS = b"\x00\x84\x85\x88\x86\x87"


class Limits:
    """The [broker] config section as attributes, read once. (Attribute names
    are qstrs a board holds anyway; dict keys longer than 10 characters would
    each cost a str object there.) Plus `budget`, the broker's Budget
    (session.py), set by Broker: the sessions reach it through their limits."""

    def __init__(self, b):
        for k in b:
            setattr(self, k, b[k])


class Stats:
    # refusals per limit (_L_*), then what the last log line had said: made
    # at the first refusal (Broker.limit), none on a board that has none
    # (every name and string here is a qstr a board keeps from boot on)
    refusals = None

    def __init__(self):
        self.msgs_received = 0
        self.msgs_sent = 0
        self.msgs_dropped = 0
        self.msgs_refused = 0    # QoS 1/2 deliveries dropped for a limit (Session._refuse)
        self.bytes_received = 0
        self.bytes_sent = 0
        self.clients_connected = 0
        self.clients_maximum = 0
        self.conns_refused = 0
        self.conns_oom = 0       # closed by the runtime on MemoryError
        self.deliveries_oom = 0  # deliveries dropped on MemoryError (publish.route)
        self.subs_refused = 0
        self.protocol_errors = 0


class Broker:
    # Set later, if ever (an instance attribute costs heap on a board)
    heap = None     # (current, maximum) bytes, set by the runtime (MicroPython)
    auto_id = 0     # last number given to a zero-length client id (connect.py)
    refusal = None  # why subscribe.add() last refused a filter (a Reason String)
    v5 = None       # edge/mqtt/v5.py's Hub, from the first 5.0 CONNECT on
    # Set by a runtime that writes (or copies) all output after each feed,
    # before it reads again: QoS 0 is then forwarded as a view of the bytes
    # fed in, with no copy (Connection.last_packet).
    lend = False
    store = None    # StateStore (edge/store/state.py), set by restore()
    coap = None     # the CoAP Endpoint (edge/coap/), set by the runtime, for $SYS
    uplink = None   # the Uplink (edge/bridge/uplink.py), set by the runtime, for $SYS
    tls = None      # CPython's TLS listeners (edge/runtime/tls_cpython.py), for $SYS
    acking = False  # routing a client's PUBLISH, its ack queued (publish.py)
    # store.persistence "best-effort" and the store did not open: why (the
    # runtime sets it; $SYS/broker/store/state, the 5.0 CONNACK say so)
    store_off = None
    store_refused = 0  # QoS 1/2 publishes refused while the store was failing
    # edge/auth/guard.py's Guard, set by the runtime when [auth] asks for
    # anything (edge/runtime/auth.py). None: no check at all, and none of
    # edge/auth/ imported. (Its hooks are few names, each a qstr a board
    # keeps even with auth off: login() and may().)
    auth = None

    def __init__(self, cfg, now, log=None):
        self.limits = lim = Limits(cfg["broker"])
        self.log = log or _nolog
        self.stats = Stats()
        self.started = now
        self.now = now
        self.conns = {}      # runtime's connection id -> Connection
        self.sessions = {}   # client id -> Session
        # broker-wide (session.py), shared by every session through its limits
        lim.budget = Budget(lim.memory_budget_bytes, self)
        self.subs = Trie()
        self.retained = RetainStore(lim.max_retained_messages, lim.max_retained_bytes)
        self.dirty = []      # Connections with output (or a close) pending
        self.next_sys = now + lim.sys_interval * 1000
        # max_connections_per_address: client address -> open sockets, made
        # at the first count
        self.peers = None

    # ---- runtime interface ------------------------------------------------
    def open(self, cid, now, peer=None):
        """A socket was accepted from address peer (hashable, no port; None:
        unknown). False: over max_connections or the address's quota, close
        it: before its CONNECT there is nothing to answer, and a refused
        socket held until then would hold the slot the limit keeps for
        others. (With auth on, the runtime then tells auth.open(cid, address).)"""
        lim = self.limits
        if len(self.conns) >= lim.max_connections:
            self.stats.conns_refused += 1
            self.limit(_L_CONNS)
            return False
        quota = lim.max_connections_per_address
        if quota and peer is not None:
            peers = self.peers
            if peers is None:
                peers = self.peers = {}
            n = peers.get(peer, 0)
            if n >= quota:
                self.limit(_L_ADDRESS)
                return False
            peers[peer] = n + 1
        conn = self.conns[cid] = Connection(cid, now, self.dirty)
        if quota and peer is not None:
            conn.peer = peer
        return True

    def limit(self, i):
        """Count a refusal for limit i (_L_*): logged with the others once
        an interval (tick), never a line per packet."""
        st = self.stats
        if st.refusals is None:
            st.refusals = [0] * (2 * _LIMITS)
        st.refusals[i] += 1

    def data_received(self, cid, data, now):
        conn = self.conns.get(cid)
        if conn is None or conn.state >= CLOSED:
            return
        if not data:
            why = "truncated packet, then EOF" if conn.eof_pending() else "closed by peer"
            self.close(conn, now, why)
            return
        self.now = now
        self.stats.bytes_received += len(data)
        last = conn.last_rx  # the feed before (max_packet_rate's refill)
        conn.receive_data(data, now)
        max_size = self.limits.max_packet_size
        kept = len(conn.out)  # output of earlier feeds (held for the store's sync)
        n = 0  # packets in this feed (max_packet_rate)
        try:
            while conn.state < CLOSED:
                start = conn.pos
                pkt = conn.next_event(max_size)
                if pkt is None:
                    break
                n += 1
                if type(pkt) is int:  # a short-form ack: kind << 16 | pid
                    ack(conn, pkt >> 16, pkt & 0xFFFF)
                    continue
                kind = pkt.kind
                if kind == _PUBLISH:  # the hot one: no table lookup
                    on_publish(self, conn, pkt, now, start)
                    continue
                handler = _HANDLERS[kind]
                if handler is None:
                    # a server-to-client packet (CONNACK, SUBACK...) from a client
                    raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "unexpected packet type %d" % kind)
                handler(self, conn, pkt, now)
            sess = conn.session
            if sess is not None and sess.queue and sess.conn is conn:
                sess.pump()  # once per feed: the room its acks made
            rate = self.limits.max_packet_rate
            if rate:
                # max_packet_rate: conn's token bucket, refilled at rate a
                # second for the ms since the feed before (last_rx: one
                # attribute less per connection on a board) and holding a
                # second's packets, less this feed's n (handled: they were
                # read). In thousandths of a packet: a packet a second
                # refills 1 a ms, small ints (no float, which a board
                # allocates). Inline, not a function: every function is a
                # name and an object a board keeps from boot on
                full = rate * 1000
                t = conn.room
                t = full if t is None else min(full, t + rate * (now - last))
                t -= n * 1000
                conn.room = t
                if t >= 0:
                    return 0
                # the ms until it is back at 0, which the runtime does not
                # read it for: back-pressure, as for a slow reader (TCP
                # holds the client back), nothing dropped and no session
                # lost, where 5.0's DISCONNECT 0x96 would drop both
                self.limit(_L_RATE)
                return (rate - 1 - t) // rate
        except RemoteProtocolError as e:
            self.stats.protocol_errors += 1
            if e.reason == _RC_PACKET_TOO_LARGE:
                self.limit(_L_PACKET)
            # 3.1.1 has no server DISCONNECT: the answer to a protocol
            # violation is closing the connection (§4.8); 5.0 first says
            # why, in a CONNACK or DISCONNECT with e.reason (§4.13). The
            # will is published ([MQTT-3.1.2-8]: not closed by DISCONNECT).
            if conn.v5:
                self.v5.error(conn, e.reason, e.msg)
            elif conn.state < CONNECTED and b"\x04MQTT\x05" in bytes(conn.buf[conn.pos:conn.pos + 12]):
                # a bad 5.0 CONNECT (its protocol name and level within the
                # first 12 bytes, §3.1.2.1): CONNACK e.reason (§3.2.2.2)
                conn.write(codec.encode(Connack(False, e.reason), True))
            self.close(conn, now, "protocol error 0x%02x: %s" % (e.reason, e.msg), ERROR)
        except MemoryError:
            # This feed's output may promise what the heap could not keep
            # (an ack queued before its message's routing failed): it never
            # goes out. The runtime closes the connection; the client sends
            # what it has no ack for again.
            conn.drop_output(kept)
            raise

    def connection_lost(self, cid, now):
        """The socket is gone (EOF, error, or after we closed it)."""
        conn = self.conns.pop(cid, None)
        if conn is None:
            return
        peer = conn.peer
        if peer is not None:  # its address's quota (open)
            n = self.peers.pop(peer) - 1
            if n:
                self.peers[peer] = n
        if conn.state < CLOSED:
            self.now = now
            self.close(conn, now, "connection lost")

    def restore(self, store):
        """Persist into store (a StateStore over an opened Log) from now on,
        after rebuilding what it holds: call once, before the first open().
        Returns replay's (counts, problems); the caller flushes the log."""
        self.store = store
        counts, problems = store.replay(self)
        for sess in self.sessions.values():
            sess.store = store
            sess.detach()  # held for a client that is away: the budget counts it
        return counts, problems

    def take(self, conn):
        data = conn.take()
        self.stats.bytes_sent += len(data)
        return data

    def tick(self, now):
        """Poll every deadline (docs/design.md H5); call about once a second."""
        lim = self.limits
        self.now = now
        for conn in list(self.conns.values()):
            if conn.state == CONNECTED:
                # [MQTT-3.1.2-24] 1.5 times the keepalive without a packet
                if conn.keepalive and now - conn.last_rx > conn.keepalive * 1500:
                    self.close(conn, now, "keepalive timeout", CLOSED, _RC_KEEPALIVE_TIMEOUT)
            elif conn.state < CONNECTED and now - conn.last_rx > lim.connect_timeout * 1000:
                self.limit(_L_TIMEOUT)
                self.close(conn, now, "no CONNECT within connect_timeout")
        if self.v5 is not None:
            self.v5.tick(now)  # will delays, session expiry
        if self.stats.refusals is not None and (now >= self.next_sys or not lim.sys_interval):
            # what the limits refused since the last line: one line a
            # sys_interval (a tick when 0) however many there were, a
            # flood must not fill the log (systree.py, lazily: only then)
            from edge.mqtt.systree import log

            log(self)
        if lim.sys_interval and now >= self.next_sys:
            self.next_sys = now + lim.sys_interval * 1000
            if self.subs.has_first("$SYS"):  # nobody listening: systree.py never loads
                self.publish_sys(now)
        if self.store is not None:
            news = self.store.refusals()  # counted at once, logged once a tick
            if news:
                self.log(30, news)

    # ---- closing --------------------------------------------------------------
    def close(self, conn, now, why, state=CLOSED, rc=0):
        # rc: the reason code a 5.0 client is sent a DISCONNECT with (§3.14)
        if conn.state >= CLOSED:
            return
        if rc and conn.v5:
            self.v5.error(conn, rc, why)
        conn.state = state
        conn.closing = True
        if not conn.out:
            self.dirty.append(conn)  # so the runtime sees the close
        sess = conn.session
        try:
            self.log(20 if state == CLOSED else 30, "client %s closed: %s" % (sess.client_id if sess else conn.id, why))
        except MemoryError:
            pass  # a full heap costs the log line, not the cleanup below
        if sess is None or sess.conn is not conn:
            return
        self.stats.clients_connected -= 1
        will = conn.will
        conn.will = None
        sess.detach()
        v5 = self.v5
        if v5 is not None:
            v5.departed(sess)  # shared subscriptions' messages to others
        if sess.clean:
            self.discard(sess)
        # [MQTT-3.1.2-8] any close other than DISCONNECT publishes the will
        if conn.v5:
            v5.closed(conn, sess, will, now)  # 5.0 Session Expiry, Will Delay
        elif will is not None:
            publishing.publish(self, will)

    def discard(self, sess):
        if sess.store is not None:
            sess.store.session_deleted(sess)  # first: it reads the entries
            sess.store = None
        sess.release()  # its queue, back to the budget
        for f in sess.subs:
            subscribing.remove(self, sess, f, sess.subs[f])
        sess.subs = {}
        if self.sessions.get(sess.client_id) is sess:
            del self.sessions[sess.client_id]

    def refuse(self, conn, code, why, now):
        # code: a 3.1.1 return code, or a 5.0 reason code (>= 0x80)
        if conn.v5 and code < 0x80:
            code = _V5_REFUSALS[code]
        # it promises nothing the store holds: never held for a sync (a
        # failing store's refusals go out, docs/persistence.md)
        conn.write(codec.encode(Connack(False, code), conn.v5), False)
        self.close(conn, now, why, ERROR)

    def v5hub(self):
        """The 5.0 Hub (edge/mqtt/v5.py), loaded on first use."""
        v5 = self.v5
        if v5 is None:
            import edge.mqtt.v5  # lazily: a 3.1.1-only board never loads it

            v5 = self.v5 = edge.mqtt.v5.Hub(self)
        return v5

    def publish_sys(self, now):
        """Send the $SYS values to their live subscribers (systree.py)."""
        from edge.mqtt.systree import publish_all  # lazily: costs a board's heap

        publish_all(self, now)

    # ---- the local-client API (CoAP endpoint, uplink bridge): subscribe.py's
    # and publish.py's functions as methods, no wrappers (each function object
    # costs heap on a board)
    local_client = subscribing.local_client  # (name, callback) -> LocalClient
    subscribe = subscribing.subscribe_local  # (client, f, qos=0) -> granted QoS or 0x80
    unsubscribe = subscribing.unsubscribe    # (client, f) -> False if none
    publish = publishing.publish_local        # (topic, payload, qos=0, retain=False, props=None)


def _nolog(level, msg):
    pass


# the hot path's handlers as globals of this module (no attribute lookup)
on_publish = publishing.on_publish
ack = publishing.ack
