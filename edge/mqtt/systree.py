# $SYS/broker/... statistics as mosquitto publishes them (its sys_tree.c).
# The values are computed when asked for, never stored: a new $SYS
# subscriber gets them at once as if retained (subscribe.send_retained),
# live subscribers every sys_interval (publish_all, from Broker.tick), and
# nobody listening costs no heap on a board. They are produced one at a time
# and only those somebody subscribes to become messages, so a publish round
# is no burst of garbage on a small heap.
from edge import VERSION
from edge.compat import const
from edge.mqtt.publish import route
from edge.mqtt.session import Message

_P_REASON_STRING = const(0x1F)
_P_USER = const(0x26)


def values(b):
    """(name under $SYS/broker/, value) pairs, one at a time."""
    st = b.stats
    yield "version", "edgebroker " + VERSION
    yield "uptime", "%d seconds" % ((b.now - b.started) // 1000)
    yield "clients/connected", st.clients_connected
    yield "clients/maximum", st.clients_maximum
    yield "clients/total", len(b.sessions)
    yield "clients/refused", st.conns_refused  # at max_connections (Broker.open)
    yield "messages/received", st.msgs_received
    yield "messages/sent", st.msgs_sent
    yield "publish/messages/dropped", st.msgs_dropped
    yield "bytes/received", st.bytes_received
    yield "bytes/sent", st.bytes_sent
    yield "retained messages/count", len(b.retained)
    yield "subscriptions/count", len(b.subs)
    budget = b.limits.budget
    yield "budget/bytes", budget.used
    yield "budget/dropped", budget.dropped
    yield "budget/refused", budget.refused
    if b.heap is not None:
        yield "heap/current", b.heap[0]
        yield "heap/maximum", b.heap[1]
    if b.store is not None or b.store_off is not None:  # (false: no store/ topics)
        yield "store/state", store_state(b)
    if b.store is not None:  # flash persistence (edge/store/)
        yield from b.store.sys_values()
        yield "store/refused while failing", b.store_refused
    if b.coap is not None:  # the CoAP endpoint (docs/coap.md)
        yield from b.coap.sys_values()
    if b.uplink is not None:  # the uplink to RabbitMQ (docs/uplink.md)
        yield from b.uplink.sys_values()


def store_state(b):
    """$SYS/broker/store/state (docs/persistence.md "When the store cannot
    keep it"): "ok"; "failing" (its last write or sync failed: new QoS 1/2
    publishes are refused); "off" (store.persistence false); "best-effort"
    (it did not open and the config allows running without it)."""
    if b.store_off is not None:
        return "best-effort"
    if b.store is None:
        return "off"
    return "failing" if b.store.log.failing else "ok"


def store_notice(b, ack):
    """A 5.0 CONNACK's properties (ack) when the store keeps nothing now: a
    User Property ("store", state) and a Reason String saying why (5.0
    §3.2.2.3.9-10: both are the Server's to send)."""
    state = store_state(b)
    ack[_P_USER] = [("store", state)]
    if state == "failing":
        ack[_P_REASON_STRING] = "the broker's store is failing: QoS 1/2 publishes are refused"
    else:
        ack[_P_REASON_STRING] = ("the broker runs without its store (%s): QoS 1/2 messages "
                                 "do not survive a restart" % b.store_off)[:255]


def messages(b, match):
    """The $SYS messages whose topic match(topic) accepts."""
    for name, v in values(b):
        topic = "$SYS/broker/" + name
        if match(topic):
            yield Message(topic, str(v).encode(), 0, True)


def publish_all(b, now):
    """Send the current values to the live $SYS subscribers."""
    b.now = now
    for msg in messages(b, b.subs.match_subs):
        route(b, msg)
