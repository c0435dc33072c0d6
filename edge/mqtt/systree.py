# $SYS/broker/... statistics as mosquitto publishes them (its sys_tree.c).
# The values are computed when asked for, never stored: a new $SYS
# subscriber gets them at once as if retained (subscribe.send_retained),
# live subscribers every sys_interval (publish_all, from Broker.tick), and
# nobody listening costs no heap on a board. They are produced one at a time
# and only those somebody subscribes to become messages, so a publish round
# is no burst of garbage on a small heap.
from edge import VERSION
from edge.mqtt.publish import route
from edge.mqtt.session import Message

# Stats.refusals's entries (broker.py's _L_*): the [broker] key whose limit
# refused, the name of its $SYS/broker/limits/ counter and of its log line.
# (Named keys, like the names below made of "limits" and "/", with names a
# board has: each new name is a qstr kept from boot on, and the board's
# pool of them is full to a few once 5.0 and $SYS are loaded: docs/heap.md)
keys = ("max_connections_per_address", "max_packet_rate", "max_topic_length",
        "max_topic_levels", "max_will_bytes", "max_subscriptions", "max_connections",
        "connect_timeout", "max_packet_size")


def log(b):
    """Log what the limits refused since the last line, as counts
    (Broker.tick, once a sys_interval): one line however many."""
    n = b.stats.refusals
    k = len(keys)
    said = ["%s %s" % (keys[i], n[i] - n[i + k]) for i in range(k) if n[i] != n[i + k]]
    if said:
        b.log(30, "limits refused since the last report: " + ", ".join(said))
        n[k:] = n[:k]


def values(b):
    """(name under $SYS/broker/, value) pairs, one at a time."""
    st = b.stats
    yield "version", "edgebroker " + VERSION
    yield "uptime", "%d seconds" % ((b.now - b.started) // 1000)
    yield "clients/connected", st.clients_connected
    yield "clients/maximum", st.clients_maximum
    yield "clients/total", len(b.sessions)
    yield "clients/refused", st.conns_refused  # at max_connections (Broker.open)
    yield "clients/out of memory", st.conns_oom  # closed on MemoryError (runtime)
    yield "messages/received", st.msgs_received
    yield "messages/sent", st.msgs_sent
    yield "publish/messages/dropped", st.msgs_dropped
    yield "publish/messages/out of memory", st.deliveries_oom  # publish.route
    yield "bytes/received", st.bytes_received
    yield "bytes/sent", st.bytes_sent
    yield "retained messages/count", len(b.retained)
    yield "subscriptions/count", len(b.subs)
    n = st.refusals
    if n is not None:
        # once a limit has refused (docs/security.md "Limits"): before, 9
        # zeros are 9 more messages at once for a new $SYS/# subscriber,
        # on a board's heap (tests/integration/test_02_pubsub.py's $SYS/#
        # subscriber on the 64 KiB board got no SUBACK in 4 runs of 12 with
        # them, in none of 10 without)
        for i in range(len(keys)):
            yield "limits" + "/" + keys[i], n[i]
    budget = b.limits.budget
    yield "budget/bytes", budget.add(0)  # everything counted now
    yield "budget/dropped", budget.dropped
    yield "budget/refused", budget.refused
    if b.heap is not None:
        yield "heap/current", b.heap[0]
        yield "heap/maximum", b.heap[1]
    if b.store is not None or b.store_off is not None:  # (false: no store/ topics)
        from edge.mqtt.storestate import state  # (only with persistence on: a board's heap)

        yield "store/state", state(b)
    if b.store is not None:  # flash persistence (edge/store/)
        yield from b.store.sys_values()
        yield "store/refused while failing", b.store_refused
    if b.coap is not None:  # the CoAP endpoint (docs/coap.md)
        yield from b.coap.sys_values()
    if b.uplink is not None:  # the uplink to RabbitMQ (docs/uplink.md)
        yield from b.uplink.sys_values()
    if b.tls is not None:  # TLS handshakes (docs/security.md)
        yield from b.tls.sys_values()
    if b.auth is not None:  # logins and ACL refusals (docs/security.md)
        yield from b.auth.sys_values()


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
