# PUBLISH in, its acknowledgements, routing to the matching sessions and the
# retained store (mosquitto's handle_publish.c and the delivery half of
# subs.c). Functions of the Broker (first argument `b`): on_publish and
# on_ack/ack are found through broker.py's handler table; publish() is how a
# will, a local endpoint or the 5.0 hub puts a message into the topic space.
from edge.compat import const
from edge.errors import RemoteProtocolError
from edge.mqtt.session import Message, cost
from edge.mqtt.topics import validate_topic

_ERROR = const(3)  # connection.py's state: closed for a protocol error
_PUBACK = const(4)
_PUBREC = const(5)
_PUBREL = const(6)
_PUBCOMP = const(7)
_RC_NO_MATCHING_SUBSCRIBERS = const(0x10)
_RC_UNSPECIFIED_ERROR = const(0x80)
_RC_NOT_AUTHORIZED = const(0x87)
_RC_PID_NOT_FOUND = const(0x92)
_RC_QUOTA_EXCEEDED = const(0x97)
_MAY_READ = const(1)   # edge/auth/guard.py may()'s access
_MAY_WRITE = const(2)
_NODE_COST = const(192)  # session.py's: a tree node, counted by the memory budget
_RC_TOPIC_NAME_INVALID = const(0x90)
_L_LENGTH = const(2)  # broker.py's L_LENGTH, L_LEVELS (Broker.limit)
_L_LEVELS = const(3)


def over(b, t):
    """The [broker] key whose bound topic name or filter t is over,
    max_topic_length or max_topic_levels (the refusal counted), else None:
    our bounds, not the spec's (docs/security.md "Limits"). A topic name
    over them is a protocol error (0x90, which closes the connection; a 5.0
    client is told why), a filter a SUBACK refusal. (The key is the reason:
    a name a board holds anyway, each new string is a qstr kept from boot
    on, docs/security.md "On a board".)"""
    lim = b.limits
    if len(t) > lim.max_topic_length:
        b.limit(_L_LENGTH)
        return "max_topic_length"
    if t.count("/") >= lim.max_topic_levels:
        b.limit(_L_LEVELS)
        return "max_topic_levels"
    return None


def on_publish(b, conn, pkt, now, start=-1):
    # start: where the packet began in conn's buffer (-1: unknown)
    msg = None
    rc = 0
    if conn.v5:  # topic alias, properties, Receive Maximum
        msg = conn.v5.incoming(pkt)
        topic = msg.topic
    else:
        topic = pkt.topic
    why = over(b, topic)
    if why:
        raise RemoteProtocolError(_RC_TOPIC_NAME_INVALID, why)
    validate_topic(topic, 0)  # [MQTT-3.3.2-2]
    b.stats.msgs_received += 1
    qos = pkt.qos
    if qos and b.store is not None and b.store.log.failing:
        # The store failed a write or sync and its retry (a full or
        # failing flash, edge/store/log.py Log.failing): an ack now would promise
        # what may not be kept (docs/design.md "Delivery guarantees"), so
        # the PUBLISH is refused and counted until a sync succeeds again
        # (docs/persistence.md "When the store cannot keep it"). A resent
        # QoS 2 whose pid the store has is answered below as ever.
        rx = conn.session.rx_qos2
        if not (qos == 2 and rx and pkt.pid in rx):
            b.store_refused += 1  # $SYS/broker/store/refused while failing
            if conn.v5:
                # 5.0 §3.4.2.1 / §3.5.2.1: 0x80 Unspecified error; a failed
                # PUBREC ends the exchange, its pid never recorded (§4.3.3)
                conn.send_ack(_PUBACK if qos == 1 else _PUBREC, pkt.pid, _RC_UNSPECIFIED_ERROR, -1, False)
            else:
                # 3.1.1 has no refusing ack: the connection is closed, with
                # no PUBACK/PUBREC (§4.8); the client sends it again later
                b.close(conn, now, "store failing: QoS %d PUBLISH %d not acknowledged" % (qos, pkt.pid), _ERROR)
            return
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
            sess.rx_qos2.pop(pkt.pid, None)
            b.close(conn, now, "store full: QoS 2 packet id %d not recorded" % pkt.pid,
                    _ERROR, _RC_QUOTA_EXCEEDED)
            return
    v5 = msg is not None
    if not v5:
        # 3.1.1: the acknowledgement is queued before the message goes
        # anywhere: a MemoryError in a clean session's delivery costs
        # that delivery, not the ack (route); one in a persistent
        # session's fails the feed and drops its output, this ack too
        # (Broker.data_received). The runtime writes it after the feed,
        # and after the store's sync, either way.
        if qos == 1:
            conn.send_ack(_PUBACK, pkt.pid)
        elif qos == 2:
            conn.send_ack(_PUBREC, pkt.pid)
    else:
        mark = len(conn.out)  # where the ack goes: ahead of deliveries to conn itself
    b.acking = True  # a persistent delivery the heap cannot keep fails the ack (route)
    try:
        if topic.startswith("$") and (topic.startswith("$SYS") or topic.startswith("$share/")):
            # Clients may not write the broker's own tree, and a $share/...
            # name is a filter's form (5.0 §4.8.2): dropped, counted; a 5.0
            # publisher is told 0x87 Not authorized
            b.stats.msgs_dropped += 1
            rc = _RC_NOT_AUTHORIZED
        elif b.auth is not None and not b.auth.may(conn.session, topic, _MAY_WRITE):
            # the ACL file does not let this client write topic: dropped,
            # counted (as mosquitto: 3.1.1's ack still goes out, it has no
            # refusing one; 5.0's says 0x87)
            b.stats.msgs_dropped += 1
            rc = _RC_NOT_AUTHORIZED
        elif v5:
            refused = b.stats.msgs_refused
            if not publish(b, msg):
                rc = _RC_NO_MATCHING_SUBSCRIBERS  # 5.0 §3.4.2.1, in PUBACK/PUBREC
            elif qos and b.stats.msgs_refused != refused:
                # A subscriber's copy was not kept for a limit (its
                # queue, the memory budget, the store's budgets): the
                # publisher is told, not acknowledged as if all went
                # well (5.0 §3.4.2.1 0x97 Quota exceeded)
                rc = _RC_QUOTA_EXCEEDED
        elif pkt.retain:
            publish(b, Message(topic, pkt.payload, qos, True))
        else:
            # QoS 0: the payload may be a view of the receive buffer (codec
            # decode(view=True)), as enc0 is: both live only during this feed
            msg = Message(topic, pkt.payload, qos)
            if not qos and start >= 0:
                msg.enc0 = conn.last_packet(start, b.lend)  # forward QoS 0 as it came
            route(b, msg)  # not retained: nothing to store
    finally:
        b.acking = False
    if v5:
        # 5.0: the ack says whether anyone matched (0x10), so it is made
        # after the routing (route() keeps a MemoryError to one delivery)
        # and put before what the routing queued for this same client
        if qos == 1:
            conn.send_ack(_PUBACK, pkt.pid, rc, mark)
        elif qos == 2:
            if rc >= 0x80:
                # A failed PUBREC ends the exchange: no PUBREL follows
                # and the pid is the client's to use again (5.0 §4.3.3)
                conn.session.qos2_released(pkt.pid)
            conn.send_ack(_PUBREC, pkt.pid, rc, mark)


def on_ack(b, conn, pkt, now):
    # PUBACK/PUBREC/PUBREL/PUBCOMP as a packet object (a 5.0 reason code
    # or properties); the short form comes to ack() straight
    if pkt.kind == _PUBREC and pkt.reason >= 0x80:
        conn.session.on_pubrec(pkt.pid, pkt.reason)  # the flow ends (5.0 §4.3.3)
        return
    ack(conn, pkt.kind, pkt.pid)


def ack(conn, kind, pid):
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


def publish(b, msg):
    """Retain msg if it says so, then route it; True if a subscription
    matched (5.0 PUBACK 0x10 when none did)."""
    if msg.retain:
        set_retained(b, msg)
        matched = route(b, msg)
        msg.enc0 = None  # a retained message keeps no encoded copy (docs/heap.md)
        return matched
    return route(b, msg)


def set_retained(b, msg):
    # [MQTT-3.3.1-5/10] store (empty payload: delete), within the
    # retained limits, the memory budget (which reads the store's own
    # counts: session.py Budget.add) and the flash store's budget
    topic = msg.topic
    store = b.retained
    budget = b.limits.budget
    if msg.payload:
        old = store.get(topic)
        # a new topic may need tree nodes (session.py _NODE_COST)
        need = cost(msg) - cost(old) if old is not None else cost(msg) + store.missing(topic) * _NODE_COST
        if not budget.room(need):
            # not stored; nor is the old value kept (a stale value must not
            # pass as the latest one, as RetainStore.set does)
            _unretain(b, topic)
            b.stats.msgs_dropped += 1
            budget.note(False, topic)
            return
    if not store.set(topic, msg):
        b.stats.msgs_dropped += 1
        b.log(30, "retained %s not stored: retained limits reached" % topic)
        if b.store is not None:
            b.store.retained(topic, None)  # cleared here too
    elif b.store is not None and b.store.retained(topic, msg):
        # over the store's budget: cleared in RAM too (a restart must
        # not bring back an older value)
        store.set(topic, Message(topic, b""))
        b.stats.msgs_dropped += 1


def _unretain(b, topic):
    # clear topic's retained message in RAM and on flash
    b.retained.set(topic, Message(topic, b""))
    if b.store is not None:
        b.store.retained(topic, None)


def route(b, msg):
    """Deliver msg to every matching subscription, each client once at the
    highest QoS granted; True if any matched."""
    found = b.subs.match_subs(msg.topic)
    if not found:
        return False
    mq = msg.qos
    auth = b.auth  # None: no check
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
                had = subs.get(client, -1)
                if q > 3 or type(had) is list:  # 5.0: every matching one counts
                    subs[client] = b.v5.merge(had, q)
                elif had < q:
                    subs[client] = q
        clients = subs
    for client in clients:
        q = subs.get(client)
        if q is None:
            continue  # unsubscribed meanwhile
        if auth is not None and not auth.may(client, msg.topic, _MAY_READ):
            continue  # not readable by this client: counted there
        try:
            if type(q) is not list and q <= 3:
                client.deliver(msg, q if q < mq else mq)
            else:  # 5.0 subscription options or identifiers (v5subs.py)
                b.v5.deliver(client, msg, q)
        except MemoryError:
            # A full heap costs this one delivery, counted, not the
            # publisher's connection: closing that before its ack goes
            # out would make it resend (a duplicate for the others).
            b.stats.deliveries_oom += 1
            if client.store is not None and b.acking:
                # ...unless the delivery was one a persistent session
                # must keep of a client's PUBLISH (docs/design.md
                # "Delivery guarantees"): then the ack must not go out.
                # The feed fails, Broker.data_received() drops its output,
                # the publisher sends it again: a duplicate for those
                # served, as QoS 1 allows, never a loss. (A will or a local
                # publish has no ack to hold back: counted and dropped.)
                raise
            b.stats.msgs_dropped += 1
    return True


def publish_local(b, topic, payload, qos=0, retain=False, props=None):
    """Publish into the topic space from a non-MQTT endpoint. Raises
    RemoteProtocolError(RC_TOPIC_NAME_INVALID) for a bad topic."""
    why = over(b, topic)
    if why:
        raise RemoteProtocolError(_RC_TOPIC_NAME_INVALID, why)
    validate_topic(topic, 0)
    b.stats.msgs_received += 1
    publish(b, Message(topic, payload, qos, retain, props))
