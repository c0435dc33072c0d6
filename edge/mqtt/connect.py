# CONNECT: protocol check, client id, keepalive, session takeover and the
# session it attaches to (mosquitto's handle_connect.c). Functions of the
# Broker (first argument `b`), found through broker.py's handler table.
from edge.compat import const
from edge.errors import RemoteProtocolError
from edge.mqtt import codec
from edge.mqtt.packets import Connack
from edge.mqtt.publish import over
from edge.mqtt.session import Message, Session
from edge.mqtt.topics import validate_topic

_CONNECTED = const(1)  # connection.py's state
_CONNACK_BAD_PROTOCOL = const(1)
_CONNACK_ID_REJECTED = const(2)
_CONNACK_SERVER_UNAVAILABLE = const(3)
_RC_SESSION_TAKEN_OVER = const(0x8E)
_RC_TOPIC_NAME_INVALID = const(0x90)
_RC_PACKET_TOO_LARGE = const(0x95)
_ERROR = const(3)  # connection.py's state: closed for a protocol error
_L_WILL = const(4)  # broker.py's L_WILL, L_CONNS (Broker.limit)
_L_CONNS = const(6)

# (protocol name, level) pairs spoken as 3.1.1 (3.1's MQIsdp differs only in name)
_V3_PROTOCOLS = (("MQTT", 4), ("MQIsdp", 3))


def on_connect(b, conn, pkt, now):
    lim = b.limits
    ack = None  # CONNACK properties (5.0)
    if (pkt.proto, pkt.level) not in _V3_PROTOCOLS:
        if pkt.level != 5 or pkt.proto != "MQTT":
            # [MQTT-3.1.2-2] unacceptable protocol level: CONNACK 0x01, close
            return b.refuse(conn, _CONNACK_BAD_PROTOCOL,
                            "unsupported protocol %r level %d" % (pkt.proto, pkt.level), now)
        # 5.0: sets conn.v5; assigns a client id, caps the keepalive
        ack = b.v5hub().connect(conn, pkt, now)
        if ack is None:
            return  # refused (CONNACK sent)
    cid = pkt.client_id
    if not cid:
        # [MQTT-3.1.3-7/8] zero-length id only with clean session
        if not pkt.clean or not lim.allow_zero_length_clientid:
            return b.refuse(conn, _CONNACK_ID_REJECTED, "empty client id", now)
        cid = assign_id(b)
    if pkt.keepalive > lim.max_keepalive:
        # 3.1.1 cannot tell a client to use a shorter keepalive (5.0's
        # Server Keep Alive can): refuse it as mosquitto does.
        return b.refuse(conn, _CONNACK_ID_REJECTED,
                        "keepalive %d over max_keepalive %d" % (pkt.keepalive, lim.max_keepalive), now)
    if pkt.will_topic is not None:
        why = over(b, pkt.will_topic)  # our bounds
        if why:
            raise RemoteProtocolError(_RC_TOPIC_NAME_INVALID, why)
        validate_topic(pkt.will_topic, 0)  # [MQTT-3.1.3-10]
        if len(pkt.will_topic) + len(pkt.will_payload) > lim.max_will_bytes:
            # held in memory for the connection's whole life: our bound,
            # counted. 5.0: CONNACK 0x95 Packet too large (§3.2.2.2);
            # 3.1.1 has no code for it: closed, as for a protocol error
            b.limit(_L_WILL)
            why = "max_will_bytes"  # (the key: a name a board has, publish.over)
            if conn.v5:
                return b.refuse(conn, _RC_PACKET_TOO_LARGE, why, now)
            return b.close(conn, now, why, _ERROR)
    auth = b.auth
    if auth is not None:  # password, anonymous, back-off, will topic's ACL
        code, rules = auth.login(conn, pkt, now)
        if code:
            return b.refuse(conn, code, rules, now)  # (rules: why, then)
    sess = b.sessions.get(cid)
    taking = sess is not None and sess.conn is not None  # a takeover
    # The checks that may refuse this CONNECT come first: a refused one
    # must not have disconnected the client it would have taken over
    # ([MQTT-3.1.4-2] disconnects it once the new connection is accepted)
    if b.stats.clients_connected - taking >= lim.max_connections:
        b.stats.conns_refused += 1  # $SYS/broker/clients/refused
        b.limit(_L_CONNS)
        return b.refuse(conn, _CONNACK_SERVER_UNAVAILABLE, "max_connections reached", now)
    if not pkt.clean and (sess is None or sess.clean) and not lim.budget.room():
        # a new persistent session (none kept, or a clean one that ends):
        # session.py Budget has no headroom to hold another offline session
        lim.budget.note(True, "session")
        return b.refuse(conn, _CONNACK_SERVER_UNAVAILABLE, "memory budget", now)
    if taking:
        # [MQTT-3.1.4-2] takeover: the existing client is disconnected. If
        # the session continues (neither connection clean), the client is
        # back in time: its will is not sent ([MQTT-3.1.3-9]; established
        # brokers do the same for 3.1.1)
        if not pkt.clean and not sess.clean:
            sess.conn.will = None
        b.close(sess.conn, now, "taken over by a new connection", rc=_RC_SESSION_TAKEN_OVER)
        sess = b.sessions.get(cid)
    if b.v5 is not None:
        b.v5.reconnected(cid, now)  # no session expiry, no delayed will now
        sess = b.sessions.get(cid)
    present = False
    promise = False  # the CONNACK promises what the store holds (Connection.promise)
    if sess is not None and pkt.clean:
        promise = sess.store is not None  # a persistent session's deletion
        b.discard(sess)  # [MQTT-3.1.2-6]
        sess = None
    if sess is None:
        sess = Session(cid, pkt.clean, lim, b.stats)
        sess.detach()  # counted until attached (session.py), as every session without a client
        b.sessions[cid] = sess
    else:
        present = True  # [MQTT-3.2.2-2]
    conn.keepalive = pkt.keepalive
    if conn.v5:
        b.v5.attach(conn, pkt, sess, now)  # expiry, window, will
    else:
        if sess.expiry is not None or sess.limits is not lim:
            sess.expiry = None  # a 5.0 session taken over by 3.1.1
            sess.limits = lim
        if pkt.will_topic is not None:
            conn.will = Message(pkt.will_topic, pkt.will_payload, pkt.will_qos, pkt.will_retain)
    # saved once its expiry is known (v5.attach)
    keep = sess.expiry if sess.expiry is not None else not sess.clean  # (what save() persists)
    if b.store is not None and (keep or sess.store is not None):
        if b.store.log.failing:
            # its CONNACK would promise a session record the store cannot
            # write now (docs/persistence.md "When the store cannot keep it")
            if not present:
                b.discard(sess)
            return b.refuse(conn, _CONNACK_SERVER_UNAVAILABLE, "store %s: session not saved" % "failing", now)
        promise = True
    if b.store is not None and not save(b, sess):
        return b.refuse(conn, _CONNACK_SERVER_UNAVAILABLE, "store %s: session not saved" % "full", now)
    conn.session = sess
    conn.state = _CONNECTED
    if auth is not None:
        sess.rules = rules
    st = b.stats
    st.clients_connected += 1
    if st.clients_connected > st.clients_maximum:
        st.clients_maximum = st.clients_connected
    conn.write(codec.encode(Connack(present, 0, ack), conn.v5), promise)
    sess.attach(conn)  # resends inflight with DUP, then the queue
    b.log(20, "client %s connected (clean=%d, keepalive=%d)" % (cid, pkt.clean, pkt.keepalive))


def save(b, sess):
    """Persist sess if it outlives its connection (clean 0, a 5.0 expiry);
    False if the store refused it (the session is dropped: CONNACK must not
    promise what a restart would lose)."""
    st = b.store
    if st.session_saved(sess, sess.expiry):
        b.discard(sess)
        return False
    if st.session_expiry(sess):
        sess.store = st
    return True


def assign_id(b):
    """A client id no session holds, for a client that sent none."""
    while True:
        b.auto_id += 1
        cid = "auto-%d" % b.auto_id
        if cid not in b.sessions:
            return cid
