# The broker: packets in, packets out, no I/O (docs/design.md H1). The runtime calls
# open() / data_received() / connection_lost() / tick() and writes out what
# each Connection in `dirty` has queued. Handlers are found through a table
# keyed by packet type (docs/design.md H8); the one dispatcher in data_received() turns
# a RemoteProtocolError into closing that connection (Mosquitto's read_handle).
from edge import VERSION
from edge.compat import const
from edge.errors import RemoteProtocolError
from edge.mqtt import codec
from edge.mqtt.connection import Connection, CONNECTED, CLOSED, ERROR
from edge.mqtt.packets import Connack, Suback, Unsuback, Pingresp
from edge.mqtt.retain import RetainStore
from edge.mqtt.session import Budget, Message, Session, cost
from edge.mqtt.topics import Trie, validate_filter, validate_topic

# Wire numbers from consts.py, private so they fold into the bytecode and
# cost no heap on a board (tests/core/test_consts.py keeps them equal).
_CONNECT = const(1)
_PUBLISH = const(3)
_PUBACK = const(4)
_PUBREC = const(5)
_PUBREL = const(6)
_PUBCOMP = const(7)
_SUBSCRIBE = const(8)
_UNSUBSCRIBE = const(10)
_PINGREQ = const(12)
_DISCONNECT = const(14)
_SUBACK_FAILURE = const(0x80)
_CONNACK_BAD_PROTOCOL = const(1)
_CONNACK_ID_REJECTED = const(2)
_CONNACK_SERVER_UNAVAILABLE = const(3)
_RC_PROTOCOL_ERROR = const(0x82)
_RC_KEEPALIVE_TIMEOUT = const(0x8D)
_RC_SESSION_TAKEN_OVER = const(0x8E)
_RC_NO_SUBSCRIPTION = const(0x11)
_RC_NO_MATCHING_SUBSCRIBERS = const(0x10)
_RC_PID_NOT_FOUND = const(0x92)
_RC_QUOTA_EXCEEDED = const(0x97)

# Handler method names indexed by packet type (None: not valid from a client)
_HANDLERS = (
    None, "_on_connect", None, "_on_publish", "_on_ack", "_on_ack",
    "_on_ack", "_on_ack", "_on_subscribe", None, "_on_unsubscribe", None,
    "_on_pingreq", None, "_on_disconnect", None,
)

# (protocol name, level) pairs spoken as 3.1.1 (3.1's MQIsdp differs only in name)
_V3_PROTOCOLS = (("MQTT", 4), ("MQIsdp", 3))
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
        self.deliveries_oom = 0  # deliveries dropped on MemoryError (_route)
        self.subs_refused = 0
        self.protocol_errors = 0


class Broker:
    # Set later, if ever (an instance attribute costs heap on a board)
    heap = None     # (current, maximum) bytes, set by the runtime (MicroPython)
    _auto_id = 0    # last number given to a zero-length client id
    v5 = None       # edge/mqtt/v5.py's Hub, from the first 5.0 CONNECT on
    # Set by a runtime that writes (or copies) all output after each feed,
    # before it reads again: QoS 0 is then forwarded as a view of the bytes
    # fed in, with no copy (Connection.last_packet).
    lend = False
    store = None    # StateStore (edge/store/state.py), set by restore()
    acking = False  # routing a client's PUBLISH, its ack queued (_on_publish)

    def __init__(self, cfg, now, log=None):
        self.limits = lim = Limits(cfg["broker"])
        self.log = log or _nolog
        self.stats = Stats()
        self.started = now
        self.now = now
        self.conns = {}      # runtime's connection id -> Connection
        self.sessions = {}   # client id -> Session
        # broker-wide (session.py), shared by every session through its limits
        lim.budget = Budget(lim.memory_budget_bytes, self.log)
        self.subs = Trie()
        self.retained = RetainStore(lim.max_retained_messages, lim.max_retained_bytes)
        self.dirty = []      # Connections with output (or a close) pending
        self.next_sys = now + lim.sys_interval * 1000

    # ---- runtime interface ------------------------------------------------
    def open(self, cid, now):
        """A socket was accepted. False: over max_connections, close it."""
        if len(self.conns) >= self.limits.max_connections:
            self.stats.conns_refused += 1
            self.log(30, "connection refused: max_connections %d reached" % self.limits.max_connections)
            return False
        self.conns[cid] = Connection(cid, now, self.dirty)
        return True

    def data_received(self, cid, data, now):
        conn = self.conns.get(cid)
        if conn is None or conn.state >= CLOSED:
            return
        if not data:
            why = "truncated packet, then EOF" if conn.eof_pending() else "closed by peer"
            self._close(conn, now, why)
            return
        self.now = now
        self.stats.bytes_received += len(data)
        conn.receive_data(data, now)
        max_size = self.limits.max_packet_size
        kept = len(conn.out)  # output of earlier feeds (held for the store's sync)
        try:
            while conn.state < CLOSED:
                start = conn.pos
                pkt = conn.next_event(max_size)
                if pkt is None:
                    break
                if type(pkt) is int:  # a short-form ack: kind << 16 | pid
                    self._ack(conn, pkt >> 16, pkt & 0xFFFF)
                    continue
                kind = pkt.kind
                if kind == _PUBLISH:  # the hot one: no table lookup
                    self._on_publish(conn, pkt, now, start)
                    continue
                name = _HANDLERS[kind]
                if name is None:
                    # a server-to-client packet (CONNACK, SUBACK...) from a client
                    raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "unexpected packet type %d" % kind)
                getattr(self, name)(conn, pkt, now)
            sess = conn.session
            if sess is not None and sess.queue and sess.conn is conn:
                sess.pump()  # once per feed: the room its acks made
        except RemoteProtocolError as e:
            self.stats.protocol_errors += 1
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
            self._close(conn, now, "protocol error 0x%02x: %s" % (e.reason, e.msg), ERROR)
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
        if conn is not None and conn.state < CLOSED:
            self.now = now
            self._close(conn, now, "connection lost")

    def restore(self, store):
        """Persist into store (a StateStore over an opened Log) from now on,
        after rebuilding what it holds: call once, before the first open().
        Returns replay's (counts, problems); the caller flushes the log."""
        self.store = store
        counts, problems = store.replay(self)
        for sess in self.sessions.values():
            sess.store = store
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
                    self._close(conn, now, "keepalive timeout", CLOSED, _RC_KEEPALIVE_TIMEOUT)
            elif conn.state < CONNECTED and now - conn.last_rx > lim.connect_timeout * 1000:
                self._close(conn, now, "no CONNECT within connect_timeout")
        if self.v5 is not None:
            self.v5.tick(now)  # will delays, session expiry
        if lim.sys_interval and now >= self.next_sys:
            self.next_sys = now + lim.sys_interval * 1000
            self.publish_sys(now)
        if self.store is not None:
            news = self.store.refusals()  # counted at once, logged once a tick
            if news:
                self.log(30, news)

    # ---- closing --------------------------------------------------------------
    def _close(self, conn, now, why, state=CLOSED, rc=0):
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
            self._discard(sess)
        # [MQTT-3.1.2-8] any close other than DISCONNECT publishes the will
        if conn.v5:
            v5.closed(conn, sess, will, now)  # 5.0 Session Expiry, Will Delay
        elif will is not None:
            self._publish(will)

    def _discard(self, sess):
        if sess.store is not None:
            sess.store.session_deleted(sess)  # first: it reads the entries
            sess.store = None
        sess.release()  # its queue, back to the budget
        for f in sess.subs:
            self._unsub(sess, f, sess.subs[f])
        sess.subs = {}
        if self.sessions.get(sess.client_id) is sess:
            del self.sessions[sess.client_id]

    def _refuse(self, conn, code, why, now):
        # code: a 3.1.1 return code, or a 5.0 reason code (>= 0x80)
        if conn.v5 and code < 0x80:
            code = _V5_REFUSALS[code]
        conn.send(Connack(False, code))
        self._close(conn, now, why, ERROR)

    # ---- packet handlers ------------------------------------------------------
    def _on_connect(self, conn, pkt, now):
        lim = self.limits
        ack = None  # CONNACK properties (5.0)
        if (pkt.proto, pkt.level) not in _V3_PROTOCOLS:
            if pkt.level != 5 or pkt.proto != "MQTT":
                # [MQTT-3.1.2-2] unacceptable protocol level: CONNACK 0x01, close
                return self._refuse(conn, _CONNACK_BAD_PROTOCOL,
                                    "unsupported protocol %r level %d" % (pkt.proto, pkt.level), now)
            # 5.0: sets conn.v5; assigns a client id, caps the keepalive
            ack = self.v5hub().connect(conn, pkt, now)
            if ack is None:
                return  # refused (CONNACK sent)
        cid = pkt.client_id
        if not cid:
            # [MQTT-3.1.3-7/8] zero-length id only with clean session
            if not pkt.clean or not lim.allow_zero_length_clientid:
                return self._refuse(conn, _CONNACK_ID_REJECTED, "empty client id", now)
            cid = self._assign_id()
        if pkt.keepalive > lim.max_keepalive:
            # 3.1.1 cannot tell a client to use a shorter keepalive (5.0's
            # Server Keep Alive can): refuse it as mosquitto does.
            return self._refuse(conn, _CONNACK_ID_REJECTED,
                                "keepalive %d over max_keepalive %d" % (pkt.keepalive, lim.max_keepalive), now)
        if pkt.will_topic is not None:
            validate_topic(pkt.will_topic, lim.max_topic_levels)  # [MQTT-3.1.3-10]
        sess = self.sessions.get(cid)
        if sess is not None and sess.conn is not None:
            # [MQTT-3.1.4-2] takeover: the existing client is disconnected
            self._close(sess.conn, now, "taken over by a new connection", CLOSED, _RC_SESSION_TAKEN_OVER)
            sess = self.sessions.get(cid)
        if self.v5 is not None:
            self.v5.reconnected(cid, now)  # no session expiry, no delayed will now
            sess = self.sessions.get(cid)
        if self.stats.clients_connected >= lim.max_connections:
            return self._refuse(conn, _CONNACK_SERVER_UNAVAILABLE, "max_connections reached", now)
        present = False
        if sess is not None and pkt.clean:
            self._discard(sess)  # [MQTT-3.1.2-6]
            sess = None
        if sess is None:
            if not pkt.clean and not lim.budget.room():
                # session.py Budget: no headroom to hold another offline session
                lim.budget.note(True, "session")
                return self._refuse(conn, _CONNACK_SERVER_UNAVAILABLE, "memory budget", now)
            sess = Session(cid, pkt.clean, lim, self.stats)
            self.sessions[cid] = sess
        else:
            present = True  # [MQTT-3.2.2-2]
        conn.keepalive = pkt.keepalive
        if conn.v5:
            self.v5.attach(conn, pkt, sess, now)  # expiry, window, will
        else:
            if sess.expiry is not None or sess.limits is not lim:
                sess.expiry = None  # a 5.0 session taken over by 3.1.1
                sess.limits = lim
            if pkt.will_topic is not None:
                conn.will = Message(pkt.will_topic, pkt.will_payload, pkt.will_qos, pkt.will_retain)
        # saved once its expiry is known (v5.attach)
        if self.store is not None and not self._save(sess):
            return self._refuse(conn, _CONNACK_SERVER_UNAVAILABLE, "store full: session not saved", now)
        conn.session = sess
        conn.state = CONNECTED
        st = self.stats
        st.clients_connected += 1
        if st.clients_connected > st.clients_maximum:
            st.clients_maximum = st.clients_connected
        conn.send(Connack(present, 0, ack))
        sess.attach(conn)  # resends inflight with DUP, then the queue
        self.log(20, "client %s connected (clean=%d, keepalive=%d)" % (cid, pkt.clean, pkt.keepalive))

    def v5hub(self):
        """The 5.0 Hub (edge/mqtt/v5.py), loaded on first use."""
        v5 = self.v5
        if v5 is None:
            import edge.mqtt.v5  # lazily: a 3.1.1-only board never loads it

            v5 = self.v5 = edge.mqtt.v5.Hub(self)
        return v5

    def _save(self, sess):
        # Persist sess if it outlives its connection (clean 0, a 5.0
        # expiry); False if the store refused it (the session is dropped:
        # CONNACK must not promise what a restart would lose)
        st = self.store
        if st.session_saved(sess, sess.expiry):
            self._discard(sess)
            return False
        if st.session_expiry(sess):
            sess.store = st
        return True

    def _assign_id(self):
        while True:
            self._auto_id += 1
            cid = "auto-%d" % self._auto_id
            if cid not in self.sessions:
                return cid

    def _on_publish(self, conn, pkt, now, start=-1):
        # start: where the packet began in conn's buffer (-1: unknown)
        msg = None
        rc = 0
        if conn.v5:  # topic alias, properties, Receive Maximum
            msg = conn.v5.incoming(pkt)
            topic = msg.topic
        else:
            topic = pkt.topic
        validate_topic(topic, self.limits.max_topic_levels)  # [MQTT-3.3.2-2]
        self.stats.msgs_received += 1
        qos = pkt.qos
        if qos == 2:
            sess = conn.session
            if sess.qos2_seen(pkt.pid):
                # [MQTT-4.3.3-2] a resent PUBLISH is not delivered twice
                conn.send_ack(_PUBREC, pkt.pid)
                return
            if sess.store is not None and sess.store.qos2_seen(sess, pkt.pid):
                # The pid is not durable: no PUBREC may promise it. 3.1.1
                # has no refusing PUBREC: close, not delivered; the client
                # resends it on its next connection (5.0: DISCONNECT 0x97).
                sess.rx_qos2.discard(pkt.pid)
                self._close(conn, now, "store full: QoS 2 packet id %d not recorded" % pkt.pid,
                            ERROR, _RC_QUOTA_EXCEEDED)
                return
        v5 = msg is not None
        if not v5:
            # 3.1.1: the acknowledgement is queued before the message goes
            # anywhere: a MemoryError in a clean session's delivery costs
            # that delivery, not the ack (_route); one in a persistent
            # session's fails the feed and drops its output, this ack too
            # (data_received). The runtime writes it after the feed, and
            # after the store's sync, either way.
            if qos == 1:
                conn.send_ack(_PUBACK, pkt.pid)
            elif qos == 2:
                conn.send_ack(_PUBREC, pkt.pid)
        self.acking = True  # a persistent delivery the heap cannot keep fails the ack (_route)
        try:
            if topic.startswith("$SYS"):
                self.stats.msgs_dropped += 1  # clients may not write the broker's own tree
            elif v5:
                refused = self.stats.msgs_refused
                if not self._publish(msg):
                    rc = _RC_NO_MATCHING_SUBSCRIBERS  # 5.0 §3.4.2.1, in PUBACK/PUBREC
                elif qos and self.stats.msgs_refused != refused:
                    # A subscriber's copy was not kept for a limit (its
                    # queue, the memory budget, the store's budgets): the
                    # publisher is told, not acknowledged as if all went
                    # well (issue #4; 5.0 §3.4.2.1 0x97 Quota exceeded)
                    rc = _RC_QUOTA_EXCEEDED
            elif pkt.retain:
                self._publish(Message(topic, pkt.payload, qos, True))
            else:
                # QoS 0: the payload may be a view of the receive buffer (codec
                # decode(view=True)), as enc0 is: both live only during this feed
                msg = Message(topic, pkt.payload, qos)
                if not qos and start >= 0:
                    msg.enc0 = conn.last_packet(start, self.lend)  # forward QoS 0 as it came
                self._route(msg)  # not retained: nothing to store
        finally:
            self.acking = False
        if v5:
            # 5.0: the ack says whether anyone matched (0x10), so it follows
            # the routing; _route() keeps a MemoryError to one delivery
            if qos == 1:
                conn.send_ack(_PUBACK, pkt.pid, rc)
            elif qos == 2:
                if rc >= 0x80:
                    # A failed PUBREC ends the exchange: no PUBREL follows
                    # and the pid is the client's to use again (5.0 §4.3.3)
                    conn.session.qos2_released(pkt.pid)
                conn.send_ack(_PUBREC, pkt.pid, rc)

    def _on_ack(self, conn, pkt, now):
        # PUBACK/PUBREC/PUBREL/PUBCOMP as a packet object (a 5.0 reason code
        # or properties); the short form comes to _ack() straight
        self._ack(conn, pkt.kind, pkt.pid)

    def _ack(self, conn, kind, pid):
        sess = conn.session
        if kind == _PUBACK:
            sess.on_puback(pid)
        elif kind == _PUBREC:
            sess.on_pubrec(pid)
        elif kind == _PUBREL:
            # [MQTT-4.3.3-2]; 5.0: 0x92 for a pid not waiting for PUBREL
            conn.send_ack(_PUBCOMP, pid, 0 if sess.qos2_released(pid) else _RC_PID_NOT_FOUND)
        else:
            sess.on_pubcomp(pid)

    def _on_subscribe(self, conn, pkt, now):
        if conn.v5:  # options, identifiers, shared subscriptions
            return self.v5.subscribe(conn, pkt)
        sess = conn.session
        codes = []
        for f, opts in pkt.topics:
            codes.append(self._subscribe(sess, f, opts & 3))
        conn.send(Suback(pkt.pid, codes))  # [MQTT-3.8.4-1]
        for i in range(len(codes)):
            if codes[i] != _SUBACK_FAILURE:
                self._send_retained(sess, pkt.topics[i][0], codes[i])

    def _subscribe(self, client, f, qos):
        # qos: the subscription's value, the QoS in bits 0-1 (5.0 options
        # above them: edge/mqtt/v5subs.py). Returns the granted QoS or 0x80.
        lim = self.limits
        try:
            validate_filter(f, lim.max_topic_levels)
        except RemoteProtocolError:
            if f.count("/") < lim.max_topic_levels:
                raise  # malformed filter: a protocol violation, close
            self.stats.subs_refused += 1  # only over our depth limit: refuse it
            return _SUBACK_FAILURE
        if f not in client.subs and len(client.subs) >= lim.max_subscriptions:
            self.stats.subs_refused += 1
            self.log(30, "client %s: max_subscriptions %d reached" % (client.client_id, lim.max_subscriptions))
            return _SUBACK_FAILURE
        if f not in client.subs and client.clean is False and not lim.budget.room():
            self.stats.subs_refused += 1  # session.py Budget: no headroom
            lim.budget.note(True, f)
            return _SUBACK_FAILURE
        st = client.store
        if st is not None and st.sub_added(client, f, qos):
            self.stats.subs_refused += 1  # over a store budget: counted there too
            return _SUBACK_FAILURE
        client.subs[f] = qos  # [MQTT-3.8.4-3] replaces an existing one
        self.subs.add(f, client, qos)
        return qos & 3

    def _send_retained(self, client, f, qos):
        # [MQTT-3.3.1-6] retained messages go to a new subscription, RETAIN
        # set. qos: the subscription's value (> 3: 5.0 options, v5subs.py)
        v5 = self.v5 if qos > 3 else None
        for topic, msg in self.retained.match(f):
            if msg.props is not None and msg.__class__ is not Message and msg.expired():
                self._retain(Message(topic, b""))  # 5.0 §3.3.2.3.3: expired, gone
                continue
            if v5 is not None:
                v5.deliver(client, msg, qos, True)
            else:
                client.deliver(msg, msg.qos if msg.qos < qos else qos, True)
        if f.startswith("$SYS"):  # [MQTT-4.7.2-1] no other filter matches $SYS
            one = Trie()
            one.add(f, 0, 0)
            for msg in self._sys_messages(one.match_subs):
                if v5 is not None:
                    v5.deliver(client, msg, qos & ~3, True)
                else:
                    client.deliver(msg, 0, True)

    def _on_unsubscribe(self, conn, pkt, now):
        sess = conn.session
        codes = []
        for f in pkt.topics:
            v = sess.subs.pop(f, None)
            if v is not None:
                self._unsub(sess, f, v)
                codes.append(0)
            else:
                codes.append(_RC_NO_SUBSCRIPTION)  # 5.0 §3.11.3
        conn.send(Unsuback(pkt.pid, codes))  # [MQTT-3.10.4-4] (3.1.1: the pid only)

    def _unsub(self, client, f, value):
        # f was in client.subs with this value (the caller updates subs)
        if value > 0x3F:  # a 5.0 shared subscription (v5subs.py)
            self.v5.unshare(client, f)
        else:
            self.subs.remove(f, client)
        if client.store is not None:
            client.store.sub_removed(client, f)

    def _on_pingreq(self, conn, pkt, now):
        conn.send(Pingresp())

    def _on_disconnect(self, conn, pkt, now):
        if conn.v5:  # Session Expiry change, 0x04 keeps the will
            self.v5.on_disconnect(conn, pkt)
        else:
            conn.will = None  # [MQTT-3.14.4-3] the will is discarded
        self._close(conn, now, "DISCONNECT")

    # ---- routing ----------------------------------------------------------------
    def _publish(self, msg):
        if msg.retain:
            self._retain(msg)
        return self._route(msg)

    def _retain(self, msg):
        # [MQTT-3.3.1-5/10] store (empty payload: delete), within the
        # retained limits, the memory budget (a replaced message's share
        # comes back) and the flash store's budget
        topic = msg.topic
        store = self.retained
        budget = self.limits.budget
        old = store.get(topic)
        held = cost(old) if old is not None else 0
        if msg.payload and not budget.room(cost(msg) - held):
            # not stored; nor is the old value kept (a stale value must not
            # pass as the latest one, as RetainStore.set does)
            self._unretain(topic)
            budget.add(-held)
            self.stats.msgs_dropped += 1
            budget.note(False, topic)
            return
        stored = store.set(topic, msg)
        budget.add(-held)  # replaced, deleted or dropped with it
        if not stored:
            self.stats.msgs_dropped += 1
            self.log(30, "retained %s not stored: retained limits reached" % topic)
            if self.store is not None:
                self.store.retained(topic, None)  # cleared here too
        elif self.store is not None and self.store.retained(topic, msg):
            # over the store's budget: cleared in RAM too (a restart must
            # not bring back an older value)
            store.set(topic, Message(topic, b""))
            self.stats.msgs_dropped += 1
        elif msg.payload:
            budget.add(cost(msg))

    def _unretain(self, topic):
        # clear topic's retained message in RAM and on flash
        self.retained.set(topic, Message(topic, b""))
        if self.store is not None:
            self.store.retained(topic, None)

    def _route(self, msg):
        # True if a subscription matched (5.0 PUBACK 0x10 when none did)
        found = self.subs.match_subs(msg.topic)
        if not found:
            return False
        mq = msg.qos
        if len(found) == 1:
            # One matching filter (the usual case): each client once. The
            # keys are copied first: a local client's callback may subscribe.
            subs = found[0]
            clients = list(subs)
        else:
            subs = {}
            for found_subs in found:  # overlapping subscriptions: once, at max QoS
                for client in found_subs:
                    q = found_subs[client]
                    b = subs.get(client, -1)
                    if q > 3 or type(b) is list:  # 5.0: every matching one counts
                        subs[client] = self.v5.merge(b, q)
                    elif b < q:
                        subs[client] = q
            clients = subs
        for client in clients:
            q = subs.get(client)
            if q is None:
                continue  # unsubscribed meanwhile
            try:
                if type(q) is not list and q <= 3:
                    client.deliver(msg, q if q < mq else mq)
                else:  # 5.0 subscription options or identifiers (v5subs.py)
                    self.v5.deliver(client, msg, q)
            except MemoryError:
                # A full heap costs this one delivery, counted, not the
                # publisher's connection: closing that before its ack goes
                # out would make it resend (a duplicate for the others).
                self.stats.deliveries_oom += 1
                if client.store is not None and self.acking:
                    # ...unless the delivery was one a persistent session
                    # must keep of a client's PUBLISH (docs/design.md "Delivery
                    # guarantees"): then the ack must not go out. The feed
                    # fails, data_received() drops its output, the publisher
                    # sends it again: a duplicate for those served, as QoS 1
                    # allows, never a loss. (A will or a local publish has
                    # no ack to hold back: counted and dropped, as before.)
                    raise
                self.stats.msgs_dropped += 1
        return True

    # ---- internal publish/subscribe API (CoAP endpoint, uplink bridge) -------
    def local_client(self, name, callback):
        """A LocalClient (edge/mqtt/local.py) for subscribe()/unsubscribe()."""
        from edge.mqtt.local import LocalClient  # lazy: a board may have none

        return LocalClient(name, callback)

    def subscribe(self, client, f, qos=0):
        """Subscribe a LocalClient; returns the granted QoS or 0x80. Retained
        messages matching `f` are delivered at once, as for MQTT clients."""
        code = self._subscribe(client, f, qos)
        if code != _SUBACK_FAILURE:
            self._send_retained(client, f, code)
        return code

    def unsubscribe(self, client, f):
        v = client.subs.pop(f, None)
        if v is not None:
            self._unsub(client, f, v)
            return True
        return False

    def publish(self, topic, payload, qos=0, retain=False, props=None):
        """Publish into the topic space from a non-MQTT endpoint. Raises
        RemoteProtocolError(RC_TOPIC_NAME_INVALID) for a bad topic."""
        validate_topic(topic, self.limits.max_topic_levels)
        self.stats.msgs_received += 1
        self._publish(Message(topic, payload, qos, retain, props))

    # ---- $SYS (as mosquitto publishes it) -----------------------------------
    # The values are computed when asked for, never stored: a new $SYS
    # subscriber gets them at once as if retained, live subscribers every
    # sys_interval, and nobody listening costs no heap on a board. They are
    # produced one at a time and only those somebody subscribes to become
    # messages, so a publish round is no burst of garbage on a small heap.
    def _sys_values(self):
        st = self.stats
        yield "version", "edgebroker " + VERSION
        yield "uptime", "%d seconds" % ((self.now - self.started) // 1000)
        yield "clients/connected", st.clients_connected
        yield "clients/maximum", st.clients_maximum
        yield "clients/total", len(self.sessions)
        yield "messages/received", st.msgs_received
        yield "messages/sent", st.msgs_sent
        yield "publish/messages/dropped", st.msgs_dropped
        yield "bytes/received", st.bytes_received
        yield "bytes/sent", st.bytes_sent
        yield "retained messages/count", len(self.retained)
        yield "subscriptions/count", len(self.subs)
        budget = self.limits.budget
        yield "budget/bytes", budget.used
        yield "budget/dropped", budget.dropped
        yield "budget/refused", budget.refused
        if self.heap is not None:
            yield "heap/current", self.heap[0]
            yield "heap/maximum", self.heap[1]
        if self.store is not None:  # flash persistence (edge/store/)
            yield from self.store.sys_values()

    def _sys_messages(self, match):
        """The $SYS messages whose topic match(topic) accepts."""
        for name, v in self._sys_values():
            topic = "$SYS/broker/" + name
            if match(topic):
                yield Message(topic, str(v).encode(), 0, True)

    def publish_sys(self, now):
        self.now = now
        for msg in self._sys_messages(self.subs.match_subs):
            self._route(msg)

def _nolog(level, msg):
    pass
