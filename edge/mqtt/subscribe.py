# SUBSCRIBE and UNSUBSCRIBE (mosquitto's handle_subscribe.c and
# handle_unsubscribe.c), the retained messages a new subscription gets, and
# the same for a non-MQTT endpoint (CoAP, the uplink bridge) through a
# LocalClient. Functions of the Broker (first argument `b`); 5.0 options and
# shared subscriptions are edge/mqtt/v5subs.py's, which calls add(),
# send_retained() and remove() here.
from edge.compat import const
from edge.mqtt.packets import Suback, Unsuback
from edge.mqtt.publish import over, set_retained
from edge.mqtt.session import Message
from edge.mqtt.topics import Trie, validate_filter

_SUBACK_FAILURE = const(0x80)
_RC_NOT_AUTHORIZED = const(0x87)
_MAY_READ = const(1)       # edge/auth/guard.py may()'s access
_MAY_SUBSCRIBE = const(5)  # read, a filter
_RC_NO_SUBSCRIPTION = const(0x11)
_NODE_COST = const(192)  # session.py's: what the memory budget counts
_SUB_COST = const(128)
_L_SUBS = const(5)  # broker.py's L_SUBS (Broker.limit)


def on_subscribe(b, conn, pkt, now):
    if conn.v5:  # options, identifiers, shared subscriptions
        return b.v5.subscribe(conn, pkt)
    sess = conn.session
    codes = []
    for f, opts in pkt.topics:
        code = add(b, sess, f, opts & 3)
        codes.append(code if code < _SUBACK_FAILURE else _SUBACK_FAILURE)  # 3.1.1 has 0x80 only
    conn.send(Suback(pkt.pid, codes))  # [MQTT-3.8.4-1]
    for i in range(len(codes)):
        if codes[i] != _SUBACK_FAILURE:
            send_retained(b, sess, pkt.topics[i][0], codes[i])


def add(b, client, f, qos):
    """Subscribe client to filter f. qos: the subscription's value, the QoS
    in bits 0-1 (5.0 options above them: edge/mqtt/v5subs.py). Returns the
    granted QoS, or 0x80 (0x87: the ACL file's refusal) with the reason in
    b.refusal."""
    lim = b.limits
    why = over(b, f)
    if why:
        return refused(b, why)  # over our bounds: refused, not closed
    validate_filter(f, 0)  # malformed: a protocol violation, close
    if b.auth is not None and not b.auth.may(client, f, _MAY_SUBSCRIBE):
        return refused(b, "not authorized (acl_file)", _RC_NOT_AUTHORIZED)
    if f not in client.subs:
        if len(client.subs) >= lim.max_subscriptions:
            b.limit(_L_SUBS)  # logged once an interval (Broker.tick)
            return refused(b, "max_subscriptions %d reached" % lim.max_subscriptions)
        # session.py Budget: a persistent session's filter needs the
        # headroom (it accumulates offline state); a clean one the room its
        # entry and new tree nodes take, out of the budget and half as much
        # again kept for connected clients (so a budget full of offline
        # state still lets them subscribe), so that what clients subscribe
        # to cannot take a board's heap either (docs/heap.md)
        budget = lim.budget
        if not budget.room(None if client.clean is False else
                           _SUB_COST + b.subs.missing(f) * _NODE_COST - (budget.limit >> 1)):
            budget.note(True, f)
            return refused(b, "memory budget full")
    st = client.store
    if st is not None and st.sub_added(client, f, qos):
        return refused(b, "store budget full")  # counted there too
    client.subs[f] = qos  # [MQTT-3.8.4-3] replaces an existing one
    b.subs.add(f, client, qos)
    return qos & 3


def refused(b, why, code=_SUBACK_FAILURE):
    """A filter refused for a limit of ours: counted, why kept for the 5.0
    SUBACK's Reason String (v5subs.subscribe)."""
    b.stats.subs_refused += 1
    b.refusal = why
    return code


def send_retained(b, client, f, qos):
    """[MQTT-3.3.1-6] the retained messages matching f go to a new
    subscription, RETAIN set. qos: the subscription's value (> 3: 5.0
    options, v5subs.py)."""
    v5 = b.v5 if qos > 3 else None
    auth = b.auth  # the ACL file filters retained messages as any delivery
    for topic, msg in b.retained.match(f):
        if auth is not None and not auth.may(client, topic, _MAY_READ):
            continue
        if msg.props is not None and msg.__class__ is not Message and msg.expired():
            set_retained(b, Message(topic, b""))  # 5.0 §3.3.2.3.3: expired, gone
            continue
        if v5 is not None:
            v5.deliver(client, msg, qos, True)
        else:
            client.deliver(msg, msg.qos if msg.qos < qos else qos, True)
    if f.startswith("$SYS"):  # [MQTT-4.7.2-1] no other filter matches $SYS
        one = Trie()
        one.add(f, 0, 0)
        from edge.mqtt.systree import messages  # lazily: costs a board's heap

        for msg in messages(b, one.match_subs):
            if auth is not None and not auth.may(client, msg.topic, _MAY_READ):
                continue
            if v5 is not None:
                v5.deliver(client, msg, qos & ~3, True)
            else:
                client.deliver(msg, 0, True)


def on_unsubscribe(b, conn, pkt, now):
    sess = conn.session
    codes = []
    for f in pkt.topics:
        codes.append(0 if unsubscribe(b, sess, f) else _RC_NO_SUBSCRIPTION)  # 5.0 §3.11.3
    conn.send(Unsuback(pkt.pid, codes))  # [MQTT-3.10.4-4] (3.1.1: the pid only)


def unsubscribe(b, client, f):
    """Remove client's subscription to f; False if it had none."""
    v = client.subs.pop(f, None)
    if v is None:
        return False
    remove(b, client, f, v)
    return True


def remove(b, client, f, value):
    """Take f (in client.subs with this value; the caller updates subs)
    out of the trie and the store."""
    if value > 0x3F:  # a 5.0 shared subscription (v5subs.py)
        b.v5.unshare(client, f)
    else:
        b.subs.remove(f, client)
    if client.store is not None:
        client.store.sub_removed(client, f)


# ---- the local-client API (CoAP endpoint, uplink bridge) ------------------------
def local_client(b, name, callback):
    """A LocalClient (edge/mqtt/local.py) for subscribe()/unsubscribe()."""
    from edge.mqtt.local import LocalClient  # lazy: a board may have none

    return LocalClient(name, callback)


def subscribe_local(b, client, f, qos=0):
    """Subscribe a LocalClient; returns the granted QoS or 0x80. Retained
    messages matching `f` are delivered at once, as for MQTT clients."""
    code = add(b, client, f, qos)
    if code < _SUBACK_FAILURE:
        send_retained(b, client, f, code)
    return code
