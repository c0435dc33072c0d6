# MQTT 5.0 on the broker side (5.0 §3, §4). Imported by the broker on the
# first 5.0 CONNECT only (docs/design.md H11): a board that only ever sees 3.1.1
# clients never loads it and pays none of its heap.
#
# Two objects: one Hub per broker (the 5.0 deadlines: session expiry, will
# delay; the shared subscription groups, see shared.py), and one Peer per
# 5.0 connection, set as `conn.v5` (a 3.1.1 connection keeps the class
# default False, so `if conn.v5:` is the version test everywhere). A Peer
# holds what the client told us in CONNECT (its Receive Maximum, Maximum
# Packet Size, Topic Alias Maximum) and the two topic alias maps.
from edge.compat import const, slots
from edge.errors import RemoteProtocolError
from edge.mqtt import codec, v5subs
from edge.mqtt.connect import assign_id, save
from edge.mqtt.connection import CONNECTED
from edge.mqtt.packets import Connack, Disconnect
from edge.mqtt.publish import publish
from edge.mqtt.session import Message
from edge.mqtt.topics import validate_topic

# Property ids (Table 2-4, §2.2.2.2) and reason codes (§2.4), from consts.py
_P_FORMAT = const(0x01)
_P_EXPIRY = const(0x02)
_P_RESPONSE_TOPIC = const(0x08)
_P_SUB_ID = const(0x0B)
_P_SESSION_EXPIRY = const(0x11)
_P_ASSIGNED_ID = const(0x12)
_P_SERVER_KEEPALIVE = const(0x13)
_P_AUTH_METHOD = const(0x15)
_P_AUTH_DATA = const(0x16)
_P_PROBLEM_INFO = const(0x17)
_P_WILL_DELAY = const(0x18)
_P_RESPONSE_INFO_REQ = const(0x19)
_P_RESPONSE_INFO = const(0x1A)
_P_REASON_STRING = const(0x1F)
_P_RECEIVE_MAX = const(0x21)
_P_ALIAS_MAX = const(0x22)
_P_ALIAS = const(0x23)
_P_RETAIN_AVAILABLE = const(0x25)
_P_MAX_PACKET = const(0x27)

_RC_DISCONNECT_WITH_WILL = const(0x04)
_RC_PROTOCOL_ERROR = const(0x82)
_RC_BAD_AUTH_METHOD = const(0x8C)
_RC_RECEIVE_MAX_EXCEEDED = const(0x93)
_RC_TOPIC_ALIAS_INVALID = const(0x94)
_RC_PAYLOAD_FORMAT_INVALID = const(0x99)
_RC_RETAIN_NOT_SUPPORTED = const(0x9A)

_NEVER = const(0xFFFFFFFF)  # Session Expiry Interval: the session never expires
_REASON_MAX = const(128)    # characters of a reason string we send


@slots("sender", "expires", "clock", "group")
class Message5(Message):
    """A message from a 5.0 publisher (or a 5.0 will). props: what is
    forwarded (§3.3.2.3: all but Topic Alias and Subscription Identifier),
    None when nothing; sender: the publisher's client id (No Local); expires:
    the broker time (ms) its Message Expiry Interval ends, None if it has
    none; clock: what has `now` (the broker); group: the shared
    subscription group a per-subscriber copy was delivered through."""

    def __init__(self, topic, payload, qos, retain, props, sender, expires, clock):
        Message.__init__(self, topic, payload, qos, retain, props)
        self.sender = sender
        self.expires = expires
        self.clock = clock
        self.group = None

    def expired(self):
        # [MQTT-3.3.2-5] not delivered once the interval has passed
        return self.expires is not None and self.clock.now > self.expires


# (Few functions, some of them long: on a board each function object and
# its code header costs heap, ~100 B, even with the bytecode in flash.)
def message(topic, payload, qos, retain, props, sender, clock):
    """Message5 from a PUBLISH's (or a will's) properties."""
    expires = None
    if props:
        props.pop(_P_ALIAS, None)
        secs = props.get(_P_EXPIRY)
        if secs is not None:
            expires = clock.now + secs * 1000
        if props.get(_P_FORMAT) == 1:
            # [MQTT-3.3.2-4] Payload Format Indicator 1: the payload is
            # UTF-8 (0x99, §3.3.2.3.2; the receiver may check it, we do)
            try:
                codec._check_utf8(payload, 0, len(payload))
            except RemoteProtocolError:
                raise RemoteProtocolError(_RC_PAYLOAD_FORMAT_INVALID,
                                          "payload is not UTF-8 as its format indicator says")
    return Message5(topic, payload, qos, retain, props or None, sender, expires, clock)


class Peer:
    """The 5.0 side of one connection (conn.v5). Only what a client sets
    becomes an instance attribute (each one costs heap per client on a
    board), so no @slots: the rest defaults on the class."""

    # what the client accepts from us (§3.1.2.11.3-5); absent: no limit of
    # its own (65,535 in flight, any size), no topic aliases
    receive_max = 65535
    max_packet = 0
    alias_max = 0
    alias_in = None   # alias -> topic, from the client
    alias_out = None  # topic -> alias, ours to the client
    will_delay = 0    # seconds, from the will properties
    problem = True    # Request Problem Information (§3.1.2.11.7): absent is 1

    def __init__(self, hub, conn, props):
        self.hub = hub
        self.conn = conn
        if props:
            v = props.get(_P_RECEIVE_MAX)
            if v is not None:
                self.receive_max = v
            v = props.get(_P_MAX_PACKET)
            if v is not None:
                self.max_packet = v
            v = props.get(_P_ALIAS_MAX)
            if v is not None:
                self.alias_max = v
            if props.get(_P_PROBLEM_INFO) == 0:
                self.problem = False

    def explain(self, pkt, why):
        """Send pkt (an ack or DISCONNECT, props None) with why as its Reason
        String, unless that would make it larger than the client's Maximum
        Packet Size ([MQTT-3.1.2-25], [MQTT-3.9.2-1] and the like)."""
        pkt.props = {_P_REASON_STRING: why[:_REASON_MAX]}
        data = codec.encode(pkt, True)
        if self.max_packet and len(data) > self.max_packet:
            pkt.props = None
            data = codec.encode(pkt, True)
        self.conn.write(data)

    # ---- PUBLISH from the client ------------------------------------------------
    def incoming(self, pkt):
        """The Message5 of a PUBLISH from this client: topic alias resolved
        (§3.3.2.3.4), properties checked. Raises RemoteProtocolError."""
        props = pkt.props
        topic = pkt.topic
        hub = self.hub
        lim = hub.broker.limits
        if props:
            if _P_SUB_ID in props:
                # [MQTT-3.3.4-6] a client never sends a Subscription Identifier
                raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "Subscription Identifier in PUBLISH from a client")
            alias = props.get(_P_ALIAS)
            if alias is not None:  # §3.3.2.3.4
                if not 0 < alias <= lim.max_topic_alias:
                    # [MQTT-3.3.2-8] 0, [MQTT-3.3.2-9] above our Topic Alias Maximum
                    raise RemoteProtocolError(_RC_TOPIC_ALIAS_INVALID, "topic alias %d" % alias)
                m = self.alias_in
                if topic:
                    if m is None:
                        m = self.alias_in = {}
                    m[alias] = topic  # [MQTT-3.3.2-12] set (or replace) the mapping
                else:
                    topic = m.get(alias) if m else None
                    if topic is None:  # an empty topic with an alias nobody set
                        raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "topic alias %d not set" % alias)
            rt = props.get(_P_RESPONSE_TOPIC)
            if rt is not None:
                validate_topic(rt, lim.max_topic_levels)  # [MQTT-3.3.2-14]
        if pkt.retain and not (lim.max_retained_messages and lim.max_retained_bytes):
            # §3.3.1.3, §4.13: we said Retain Available 0, DISCONNECT 0x9A
            raise RemoteProtocolError(_RC_RETAIN_NOT_SUPPORTED, "retained messages are off (max_retained_*)")
        if pkt.qos == 2:
            sess = self.conn.session
            waiting = sess.rx_qos2
            if waiting and len(waiting) >= lim.max_inflight and pkt.pid not in waiting:
                # [MQTT-3.3.4-9] more unacknowledged QoS 2 than our Receive Maximum
                raise RemoteProtocolError(_RC_RECEIVE_MAX_EXCEEDED, "over Receive Maximum %d" % len(waiting))
        return message(topic, pkt.payload, pkt.qos, pkt.retain, props, self.conn.session.client_id,
                       hub.broker)

    # ---- PUBLISH to the client ------------------------------------------------
    def send_publish(self, conn, msg, qos, retain, dup, pid):
        """Connection.send_publish for a 5.0 client: the message's properties
        forwarded, Message Expiry counted down, a topic alias when the client
        allows them, and never a packet over its Maximum Packet Size."""
        props = msg.props
        if props or self.alias_max or msg.__class__ is Message5 and msg.expires is not None:
            props = dict(props) if props else {}
            if msg.__class__ is Message5 and msg.expires is not None:
                # [MQTT-3.3.2-6] the interval minus the time it waited
                left = (msg.expires - msg.clock.now + 999) // 1000
                props[_P_EXPIRY] = left if left > 0 else 0
        topic = msg.topic
        new_alias = False
        if self.alias_max:
            out = self.alias_out
            if out is None:
                out = self.alias_out = {}
            a = out.get(topic)
            if a is not None:
                topic = ""  # §3.3.2.3.4: the alias alone
            elif len(out) < self.alias_max:
                a = out[topic] = len(out) + 1
                new_alias = True
            if a is not None:
                props[_P_ALIAS] = a
        data = codec.encode_publish(topic, msg.payload, qos, retain, dup, pid, props, True)
        if self.max_packet and len(data) > self.max_packet:
            # [MQTT-3.1.2-25] too large for the client: discard it and behave
            # as if it had been delivered (counted as dropped)
            if new_alias:
                del self.alias_out[msg.topic]
            b = self.hub.broker
            b.stats.msgs_dropped += 1
            b.log(30, "client %s: PUBLISH of %d bytes over its Maximum Packet Size %d, dropped"
                  % (conn.session.client_id, len(data), self.max_packet))
            sess = conn.session
            if pid and sess.inflight.pop(pid, None) is not None and sess.store is not None:
                sess.store.acked(sess, pid, msg)  # a resend: its record goes too
            return None
        conn.write(data, qos == 2)  # (as Connection.send_publish)
        return data


class Hub:
    """The broker's 5.0 state, created on the first 5.0 CONNECT."""

    def __init__(self, broker):
        self.broker = broker
        self.expiring = {}  # Session -> broker time (ms) it ends, while offline
        self.wills = {}     # client id -> (due ms, Message5), Will Delay pending
        self.groups = {}    # "$share/{name}/{filter}" -> v5subs.Group

    # ---- subscriptions: edge/mqtt/v5subs.py's functions (hub first) as
    # methods, no wrappers (each function object costs heap on a board)
    subscribe = v5subs.subscribe  # (conn, pkt)
    deliver = v5subs.deliver      # (client, msg, v, retained=False, group=None)
    merge = v5subs.merge          # (b, q)
    unshare = v5subs.unshare      # (sess, f)
    departed = v5subs.departed    # (sess)

    def copy(self, msg, props, group):
        """msg for one subscriber: other properties, the group it came
        through; topic and payload shared."""
        if msg.__class__ is Message5:
            m = Message5(msg.topic, msg.payload, msg.qos, msg.retain, props, msg.sender,
                         msg.expires, msg.clock)
        else:
            m = Message5(msg.topic, msg.payload, msg.qos, msg.retain, props, None, None, self.broker)
        m.group = group
        return m

    # ---- CONNECT / CONNACK ----------------------------------------------------------
    def connect(self, conn, pkt, now):
        """Check a 5.0 CONNECT: set conn.v5, fill in an assigned client id
        and the keepalive to use. Returns the CONNACK properties, or None
        once it has refused the connection."""
        b = self.broker
        lim = b.limits
        props = pkt.props or {}
        conn.v5 = Peer(self, conn, props)
        if _P_AUTH_METHOD in props:
            # §4.12: no enhanced authentication method is supported yet
            b.refuse(conn, _RC_BAD_AUTH_METHOD, "authentication method %r not supported"
                      % props[_P_AUTH_METHOD], now)
            return None
        if _P_AUTH_DATA in props:
            # §3.1.2.11.10 Authentication Data without a method
            raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "Authentication Data without a method")
        ack = {}
        if lim.max_inflight < 65535:
            ack[_P_RECEIVE_MAX] = lim.max_inflight  # §3.2.2.3.3
        ack[_P_MAX_PACKET] = lim.max_packet_size    # §3.2.2.3.6
        if lim.max_topic_alias:
            ack[_P_ALIAS_MAX] = lim.max_topic_alias  # §3.2.2.3.8
        # Wildcard, Subscription Identifier and Shared Subscription Available
        # are left out: absent means available, and all three are (§3.2.2.3.11-13)
        if not (lim.max_retained_messages and lim.max_retained_bytes):
            # a retained store that holds nothing: Retain Available 0 (§3.2.2.3.5)
            if pkt.will_topic is not None and pkt.will_retain:
                # §3.2.2.3.5: a retained will we could not keep is refused, 0x9A
                b.refuse(conn, _RC_RETAIN_NOT_SUPPORTED, "will retain with retained messages off", now)
                return None
            ack[_P_RETAIN_AVAILABLE] = 0  # absent would say 1 (§3.2.2.3.5)
        if not pkt.client_id and lim.allow_zero_length_clientid:
            # [MQTT-3.1.3-6] any client may leave the id to us (5.0 allows it
            # with Clean Start 0 too), [MQTT-3.2.2-16] and is told which
            pkt.client_id = ack[_P_ASSIGNED_ID] = assign_id(b)
        ka = pkt.keepalive
        mk = lim.max_keepalive
        if ka > mk or (not ka and mk < 65535):
            # [MQTT-3.2.2-21] Server Keep Alive: the client uses ours
            pkt.keepalive = ack[_P_SERVER_KEEPALIVE] = mk
        if props.get(_P_RESPONSE_INFO_REQ) and lim.response_information and pkt.client_id:
            # §3.1.2.11.6, §4.10.4: a topic root of the client's own for its
            # responses (the Server MAY send none; "" in the config: never)
            ack[_P_RESPONSE_INFO] = lim.response_information + pkt.client_id
        if b.store_off is not None or (b.store is not None and b.store.log.failing):
            # QoS 1/2 are not kept now: a client that can hear it is told
            from edge.mqtt.storestate import notice  # (only then: a board's heap)

            notice(b, ack)
        return ack

    def attach(self, conn, pkt, sess, now):
        """A 5.0 client now owns sess: its Session Expiry Interval and its
        Receive Maximum (our window toward it)."""
        props = pkt.props or {}
        sess.expiry = props.get(_P_SESSION_EXPIRY, 0)  # §3.1.2.11.2: absent is 0
        sess.clean = not sess.expiry  # ends when the connection does
        peer = conn.v5
        lim = self.broker.limits
        if peer.receive_max < lim.max_inflight:
            # [MQTT-3.3.4-7] never more unacknowledged QoS 1/2 than it allows
            # (the limits Session reads, in the broker's own class)
            sess.limits = lim.__class__({"max_inflight": peer.receive_max,
                                         "max_queued_messages": lim.max_queued_messages,
                                         "max_queued_bytes": lim.max_queued_bytes,
                                         "budget": lim.budget})
        elif sess.limits is not lim:
            sess.limits = lim
        wp = pkt.will_props
        if pkt.will_topic is not None:
            if wp:
                peer.will_delay = wp.pop(_P_WILL_DELAY, 0)  # §3.1.3.2.2, not forwarded
            conn.will = message(pkt.will_topic, pkt.will_payload, pkt.will_qos, pkt.will_retain,
                                wp, sess.client_id, self.broker)

    def reconnected(self, cid, now):
        """Any client (3.1.1 too) connected as cid: its session no longer
        expires, a will waiting for its delay is not sent [MQTT-3.1.3-9]
        (unless the session ended before tick() saw it: then it ends now)."""
        sess = self.broker.sessions.get(cid)
        due = self.expiring.pop(sess, None) if sess is not None else None
        if due is not None and due <= now:
            self._end(sess)
        self.wills.pop(cid, None)

    # ---- DISCONNECT and closing -------------------------------------------------------
    def on_disconnect(self, conn, pkt):
        sess = conn.session
        props = pkt.props
        if props and _P_SESSION_EXPIRY in props:
            n = props[_P_SESSION_EXPIRY]
            if not sess.expiry and n:
                # [MQTT-3.14.2-2] 0 in CONNECT cannot become non-zero
                raise RemoteProtocolError(_RC_PROTOCOL_ERROR, "Session Expiry Interval set on DISCONNECT after 0")
            sess.expiry = n
            sess.clean = not n
            if n and self.broker.store is not None:
                save(self.broker, sess)  # the new interval, durable (0: discarded at close)
        if pkt.reason != _RC_DISCONNECT_WITH_WILL:
            conn.will = None  # [MQTT-3.14.4-3]

    def error(self, conn, reason, why):
        """Why a 5.0 connection is closed (the dispatcher's protocol errors
        and the broker's own reasons, §4.13): CONNACK or DISCONNECT with
        the reason code, and a reason string if it fits the client's
        Maximum Packet Size [MQTT-3.1.2-25]."""
        if conn.state == CONNECTED:
            conn.v5.explain(Disconnect(reason), why)
        elif conn.state < CONNECTED:
            conn.send(Connack(False, reason))  # [MQTT-3.2.2-6]

    def closed(self, conn, sess, will, now):
        """A 5.0 client's connection closed (sess was its session): a kept
        session's expiry starts; the will goes at once, or after its Will
        Delay Interval, or when the session ends, whichever comes first
        [MQTT-3.1.3-9]."""
        exp = sess.expiry
        if not sess.clean and exp != _NEVER:
            self.expiring[sess] = now + exp * 1000
        if will is None:
            return
        delay = conn.v5.will_delay
        if delay and not sess.clean:
            if exp != _NEVER and exp < delay:
                delay = exp
        else:
            delay = 0
        if delay:
            self.wills[sess.client_id] = (now + delay * 1000, will)
        else:
            publish(self.broker, will)

    # ---- deadlines --------------------------------------------------------------------
    def tick(self, now):
        b = self.broker
        for cid in [c for c in self.wills if self.wills[c][0] <= now]:
            publish(b, self.wills.pop(cid)[1])
        for sess in [s for s in self.expiring if self.expiring[s] <= now]:
            del self.expiring[sess]
            self._end(sess)

    def _end(self, sess):
        # §3.1.2.11.2: the Session Expiry Interval has passed
        b = self.broker
        if sess.conn is None and b.sessions.get(sess.client_id) is sess:
            w = self.wills.pop(sess.client_id, None)
            if w is not None:
                publish(b, w[1])  # the session ends: its will goes now
            b.log(20, "session %s expired" % sess.client_id)
            b.discard(sess)

