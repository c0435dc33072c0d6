# GET /metrics: the broker's $SYS figures (edge/mqtt/systree.py, docs/sys.md)
# in Prometheus' text exposition format (version 0.0.4), under names that
# follow its conventions: a `edgebroker_` prefix, base units, `_total` on
# counters. A $SYS name this table does not know yet still comes out, as an
# untyped sample under its name cleaned up, so a new counter is never lost.
import re

from edge.mqtt import systree

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# $SYS/broker/ name -> (metric name, type, help)
_C, _G = "counter", "gauge"
METRICS = {
    "uptime": ("edgebroker_uptime_seconds", _G, "Seconds since the broker started"),
    "clients/connected": ("edgebroker_clients_connected", _G, "MQTT clients connected now"),
    "clients/maximum": ("edgebroker_clients_maximum", _G, "Most MQTT clients connected at once"),
    "clients/total": ("edgebroker_sessions", _G, "Sessions, connected or not"),
    "clients/refused": ("edgebroker_clients_refused_total", _C, "Connections refused at broker.max_connections"),
    "messages/received": ("edgebroker_messages_received_total", _C, "PUBLISH packets received"),
    "messages/sent": ("edgebroker_messages_sent_total", _C, "PUBLISH packets sent"),
    "publish/messages/dropped": ("edgebroker_messages_dropped_total", _C, "Messages dropped (full queue, too big, ...)"),
    "bytes/received": ("edgebroker_received_bytes_total", _C, "Bytes received from MQTT clients"),
    "bytes/sent": ("edgebroker_sent_bytes_total", _C, "Bytes sent to MQTT clients"),
    "retained messages/count": ("edgebroker_retained_messages", _G, "Retained messages held"),
    "subscriptions/count": ("edgebroker_subscriptions", _G, "Subscriptions"),
    "budget/bytes": ("edgebroker_memory_budget_used_bytes", _G, "Bytes held against broker.memory_budget_bytes"),
    "budget/dropped": ("edgebroker_memory_budget_dropped_total", _C, "Messages refused for the memory budget"),
    "budget/refused": ("edgebroker_memory_budget_refused_total", _C, "Sessions and subscriptions refused for the memory budget"),
    "heap/current": ("edgebroker_heap_bytes", _G, "Live MicroPython heap"),
    "heap/maximum": ("edgebroker_heap_maximum_bytes", _G, "Most live MicroPython heap"),
    "store/bytes": ("edgebroker_store_live_bytes", _G, "Live bytes in the store"),
    "store/disk bytes": ("edgebroker_store_disk_bytes", _G, "Bytes of the store's segment files"),
    "store/syncs": ("edgebroker_store_syncs_total", _C, "Store syncs"),
    "store/bytes written": ("edgebroker_store_written_bytes_total", _C, "Bytes written to the store"),
    "store/refused": ("edgebroker_store_refused_total", _C, "Records refused for a store budget"),
    "store/quarantined": ("edgebroker_store_quarantined_files", _G, "Store files set aside at start"),
    "coap/requests": ("edgebroker_coap_requests_total", _C, "CoAP requests"),
    "coap/duplicates": ("edgebroker_coap_duplicates_total", _C, "CoAP duplicates answered from the reply cache"),
    "coap/errors": ("edgebroker_coap_errors_total", _C, "CoAP messages malformed or rejected"),
    "coap/refusals": ("edgebroker_coap_refusals_total", _C, "CoAP requests refused for a limit"),
    "coap/publishes": ("edgebroker_coap_publishes_total", _C, "Messages published over CoAP"),
    "coap/observers": ("edgebroker_coap_observers", _G, "CoAP observations now"),
    "coap/notifications": ("edgebroker_coap_notifications_total", _C, "CoAP notifications sent"),
    "coap/retransmissions": ("edgebroker_coap_retransmissions_total", _C, "CoAP CON notifications sent again"),
    "coap/timeouts": ("edgebroker_coap_timeouts_total", _C, "CoAP observers dropped for an unacknowledged CON"),
    "coap/dropped": ("edgebroker_coap_dropped_total", _C, "CoAP notifications not sent"),
    "coap/exchanges": ("edgebroker_coap_exchanges", _G, "CoAP reply-cache entries"),
    "uplink/backlog": ("edgebroker_uplink_backlog_messages", _G, "Messages waiting for the upstream's confirm"),
    "uplink/backlog/bytes": ("edgebroker_uplink_backlog_bytes", _G, "Bytes waiting for the upstream's confirm"),
    "uplink/inflight": ("edgebroker_uplink_inflight_messages", _G, "Messages sent upstream, not confirmed"),
    "uplink/confirmed": ("edgebroker_uplink_confirmed_total", _C, "Messages confirmed upstream"),
    "uplink/refused": ("edgebroker_uplink_refused_total", _C, "Messages refused by a full outbox"),
    "uplink/returned": ("edgebroker_uplink_returned_total", _C, "Messages returned unroutable upstream"),
    "uplink/commands": ("edgebroker_uplink_commands_total", _C, "Commands from upstream published locally"),
    "uplink/reconnects": ("edgebroker_uplink_reconnects_total", _C, "Uplink connections lost or refused"),
    # [auth] (docs/security.md), only while it is on: MQTT, CoAP and HTTP alike
    "auth/failed": ("edgebroker_auth_failed_total", _C, "Logins refused for an unknown user or a wrong password"),
    "auth/throttled": ("edgebroker_auth_throttled_total", _C, "Logins refused during an address's back-off"),
    "auth/anonymous_refused": ("edgebroker_auth_anonymous_refused_total", _C,
                               "Clients without a user name refused"),
    "acl/denied/subscribe": ("edgebroker_acl_denied_subscribe_total", _C, "Subscriptions refused by the ACL"),
    "acl/denied/publish": ("edgebroker_acl_denied_publish_total", _C, "Publishes refused by the ACL"),
    "acl/denied/read": ("edgebroker_acl_denied_read_total", _C, "Deliveries not made for the ACL"),
    "acl/denied/will": ("edgebroker_acl_denied_will_total", _C, "Wills refused or dropped for the ACL"),
    "tls/handshakes/ok": ("edgebroker_tls_handshakes_total", _C, "TLS handshakes done"),
    "tls/handshakes/failed": ("edgebroker_tls_handshakes_failed_total", _C, "TLS handshakes failed or timed out"),
    "tls/handshakes/timed out": ("edgebroker_tls_handshakes_timed_out_total", _C,
                                 "TLS handshakes not done within broker.connect_timeout"),
}
UPLINK_STATES = ("connecting", "handshake", "up", "down")
_NUMBER = re.compile(r"-?\d+")
_BAD = re.compile(r"[^a-zA-Z0-9_]+")


def _escape(v):
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(lines, name, kind, text, value, labels=""):
    lines.append("# HELP %s %s" % (name, text))
    lines.append("# TYPE %s %s" % (name, kind))
    lines.append("%s%s %s" % (name, labels, value))


def render(broker, extra=()):
    """The exposition text: every $SYS value, then `extra` (name, type,
    help, value) rows of the gateway's own."""
    lines = []
    seen = set()
    for key, v in systree.values(broker):
        if key == "version":
            _sample(lines, "edgebroker_build_info", _G, "The broker's version, as a label",
                    1, '{version="%s"}' % _escape(str(v).split(" ")[-1]))
            continue
        if key == "uplink/state":
            lines.append("# HELP edgebroker_uplink_state The uplink's state (1 for the current one)")
            lines.append("# TYPE edgebroker_uplink_state gauge")
            for s in UPLINK_STATES:
                lines.append('edgebroker_uplink_state{state="%s"} %d' % (s, s == v))
            continue
        if not isinstance(v, int):  # "123 seconds"
            m = _NUMBER.match(str(v))
            if m is None:
                continue
            v = int(m.group())
        spec = METRICS.get(key)
        if spec is None:  # a figure added to $SYS after this table
            spec = ("edgebroker_" + _BAD.sub("_", key).strip("_"), "untyped", "$SYS/broker/" + key)
        if spec[0] in seen:
            continue
        seen.add(spec[0])
        _sample(lines, spec[0], spec[1], spec[2], int(v))
    for name, kind, text, value in extra:
        _sample(lines, name, kind, text, value)
    return "\n".join(lines) + "\n"
