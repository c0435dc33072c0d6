# MQTT 5.0 subscriptions on the broker side: subscription options (No
# Local, Retain As Published, Retain Handling, §3.8.3.1), Subscription
# Identifiers (§3.8.2.1.2) and shared subscriptions (§4.8.2). Loaded with
# edge/mqtt/v5.py, on the first 5.0 CONNECT.
#
# A subscription's value (in Session.subs and the trie) is an int: 3.1.1's
# is the granted QoS (0-2) and stays so; a 5.0 one adds bit 2 No Local,
# bit 3 Retain As Published, bit 6 "shared" (Session.subs only) and the
# Subscription Identifier from bit 8 up. So a value above 3 is what sends
# a delivery here (publish.route) and 3.1.1's path tests one comparison.
# (Retain Handling only matters while subscribing: not stored.)
from edge.compat import const
from edge.errors import RemoteProtocolError
from edge.mqtt.packets import Suback
from edge.mqtt.publish import over
from edge.mqtt.session import unpack
from edge.mqtt.subscribe import add, refused, send_retained
from edge.mqtt.topics import split_shared, validate_filter

_QOS = const(3)
_NO_LOCAL = const(4)
_RAP = const(8)
_SHARED = const(0x40)
_SUB_ID_SHIFT = const(8)
_P_SUB_ID = const(0x0B)
_RC_PROTOCOL_ERROR = const(0x82)
_RC_TOPIC_FILTER_INVALID = const(0x8F)
_RC_QUOTA_EXCEEDED = const(0x97)
_RC_NOT_AUTHORIZED = const(0x87)
_MAY_READ = const(1)       # edge/auth/guard.py may()'s access
_MAY_SUBSCRIBE = const(5)  # read, a filter
_SUBACK_FAILURE = const(0x80)
_L_SUBS = const(5)  # broker.py's L_SUBS (Broker.limit)
_RELEASED = const(0)  # session.py's inflight entry for a PUBREC'd QoS 2


class Group:
    """One shared subscription `$share/{name}/{filter}`: the trie's key for
    `filter`, so a message matches it once; deliver() hands it to one member
    (round-robin among the connected ones, §4.8.2), one the ACL file lets
    read it (edge/auth/guard.py): publish.route's check passes a Group."""

    rules = True

    def __init__(self, hub, name):
        self.hub = hub
        self.client_id = name  # for the broker's logs
        self.members = []      # [[Session, value]] in subscription order
        self.next = 0

    def deliver(self, msg, qos, retain=False, skip=None):
        members = self.members
        n = len(members)
        if not n:
            return
        start = self.next
        pick = None
        auth = self.hub.broker.auth
        for k in range(n):
            m = members[(start + k) % n]
            if m[0].conn is not None and m[0] is not skip and (auth is None or auth.may(m[0], msg.topic, _MAY_READ)):
                pick = (start + k) % n
                break
        if pick is None:  # nobody connected: the next one's session queues it
            pick = start % n
            if members[pick][0] is skip or (auth is not None and not auth.may(members[pick][0], msg.topic, _MAY_READ)):
                return
        self.next = (pick + 1) % n
        sess, value = members[pick]
        self.hub.deliver(sess, msg, value, retain, self)


def subscribe(hub, conn, pkt):
    """SUBSCRIBE from a 5.0 client: SUBACK with a reason code per filter,
    then the retained messages each Retain Handling asks for."""
    b = hub.broker
    sess = conn.session
    props = pkt.props
    sid = props.get(_P_SUB_ID, 0) if props else 0
    codes = []
    todo = []
    why = None  # the Reason String of the SUBACK, if one filter is refused
    for f, opts in pkt.topics:
        value = opts & (_QOS | _NO_LOCAL | _RAP) | sid << _SUB_ID_SHIFT
        existed = f in sess.subs
        name = None
        try:
            name, real = split_shared(f)
            if name is None:
                code = add(b, sess, f, value)
            else:
                if opts & _NO_LOCAL:
                    # [MQTT-3.8.3-4] No Local on a shared subscription
                    raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "No Local on a shared subscription")
                code = share(hub, sess, f, real, value | _SHARED)
            if code >= _SUBACK_FAILURE:
                # every other refusal of subscribe.add() is a limit of ours
                # (its count, its depth, a budget): 5.0 says so with 0x97
                # Quota exceeded (§3.9.3), not 3.1.1's unspecified 0x80;
                # the ACL file's is 0x87 Not authorized
                if code != _RC_NOT_AUTHORIZED:
                    code = _RC_QUOTA_EXCEEDED
                why = "%s: %s" % (f, b.refusal)
        except RemoteProtocolError as e:
            if e.reason != _RC_TOPIC_FILTER_INVALID:
                raise
            code = e.reason  # 5.0 says it per filter (§3.9.3)
            why = "%s: %s" % (f, e.msg)
        codes.append(code)
        rh = opts >> 4 & 3
        # Retain Handling 0: send retained; 1: only if new; 2: never. Never
        # for a shared subscription (§4.8.2).
        if code < _SUBACK_FAILURE and (rh == 0 or (rh == 1 and not existed)) and name is None:
            todo.append((f, value))
    ack = Suback(pkt.pid, codes)  # [MQTT-3.8.4-1]
    if why is not None and conn.v5.problem:
        # [MQTT-3.1.2-29] a client that set Request Problem Information 0
        # gets no Reason String except on PUBLISH, CONNACK and DISCONNECT
        conn.v5.explain(ack, why)
    else:
        conn.send(ack)
    for f, value in todo:
        send_retained(b, sess, f, value)


def share(hub, sess, f, real, value):
    b = hub.broker
    lim = b.limits
    why = over(b, real)
    if why:
        return refused(b, why, _RC_QUOTA_EXCEEDED)
    validate_filter(real, 0)
    if b.auth is not None and not b.auth.may(sess, real, _MAY_SUBSCRIBE):
        return refused(b, "not authorized (acl_file)", _RC_NOT_AUTHORIZED)
    if f not in sess.subs and len(sess.subs) >= lim.max_subscriptions:
        b.limit(_L_SUBS)
        return refused(b, "max_subscriptions %d reached" % lim.max_subscriptions, _RC_QUOTA_EXCEEDED)
    st = sess.store
    if st is not None and st.sub_added(sess, f, value):
        return refused(b, "store budget full", _RC_QUOTA_EXCEEDED)  # counted there too
    g = hub.groups.get(f)
    if g is None:
        g = hub.groups[f] = Group(hub, f)
        b.subs.add(real, g, 2)  # one trie entry per group; the member's QoS applies
    for m in g.members:
        if m[0] is sess:
            m[1] = value  # [MQTT-3.8.4-3] replaces the existing one
            break
    else:
        g.members.append([sess, value])
    sess.subs[f] = value
    return value & _QOS


def unshare(hub, sess, f):
    g = hub.groups.get(f)
    if g is None:
        return
    g.members = [m for m in g.members if m[0] is not sess]
    if not g.members:
        del hub.groups[f]
        hub.broker.subs.remove(split_shared(f)[1], g)


def departed(hub, sess):
    """sess lost its connection: its QoS 1/2 messages from shared
    subscriptions, not yet acknowledged, go to another member now (as the
    issue asks, and EMQX does; 5.0 §4.8.2 would have them wait for its
    return). Without another connected member they stay."""
    if not hub.groups:
        return
    # Take its unacknowledged messages (in flight, not yet PUBREC'd, and
    # queued) that came through a group with another connected member, in
    # send order (the entries: session.py), then hand each on.
    out = []
    inflight = sess.inflight
    nxt = sess.next_pid
    for pid in sorted(inflight, key=lambda p: (p - nxt) % 65535):
        e = inflight[pid]
        if e != _RELEASED and _elsewhere(sess, getattr(unpack(e)[0], "group", None)):
            del inflight[pid]
            out.append(unpack(e))
            if sess.store is not None:
                sess.store.acked(sess, pid, out[-1][0])  # its record goes with it
    q = sess.queue
    if q:
        keep = []
        for e in q:
            u = unpack(e)
            if _elsewhere(sess, getattr(u[0], "group", None)):
                sess.queued_bytes -= len(u[0].topic) + len(u[0].payload)
                out.append(u)
                if sess.store is not None:
                    sess.store.unqueued(sess, len(keep), u[0])
            else:
                keep.append(e)
        sess.queue = keep or None
    for msg, qos, retain in out:
        msg.group.deliver(msg, qos, retain, sess)


def _elsewhere(sess, g):
    # g (a Group or None) has a connected member other than sess
    if g is None:
        return False
    for m in g.members:
        if m[0] is not sess and m[0].conn is not None:
            return True
    return False


def deliver(hub, client, msg, v, retained=False, group=None):
    """Deliver msg to a 5.0 subscriber under subscription value(s) v (one
    int, or a list of them when several of its filters match)."""
    qos = -1
    rap = False
    ids = None
    for x in (v if type(v) is list else (v,)):
        if x & _NO_LOCAL and getattr(msg, "sender", None) == client.client_id:
            continue  # [MQTT-3.8.3-3] not to the publisher's client id
        if x & _QOS > qos:
            qos = x & _QOS
        if x & _RAP:
            rap = True
        sid = x >> _SUB_ID_SHIFT
        if sid:
            if ids is None:
                ids = []
            ids.append(sid)  # [MQTT-3.3.4-3] each matching one's identifier
    if qos < 0:
        return
    if qos > msg.qos:
        qos = msg.qos
    if ids is not None or group is not None:
        props = dict(msg.props) if msg.props else {}
        props.pop(_P_SUB_ID, None)  # (a copy redelivered to another member)
        if ids is not None:
            props[_P_SUB_ID] = ids
        msg = hub.copy(msg, props, group)
    # [MQTT-3.3.1-12/13] RETAIN as published only when asked for
    client.deliver(msg, qos, retained or (rap and msg.retain))


def merge(hub, b, q):
    """publish.route: the values of one client's matching subscriptions, as
    a list once a 5.0 one is among them (b: what it has so far, -1: none)."""
    if type(b) is list:
        b.append(q)
        return b
    return [q] if b < 0 else [b, q]
