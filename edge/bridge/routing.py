# MQTT topics <-> RabbitMQ names (docs/design.md "Upstream"), mapped the way
# RabbitMQ's MQTT plugin maps them, so that data that came through the edge
# looks the same upstream as data that came through the plugin:
#
#   routing_key(topic)        "a/b/c"  -> "a.b.c"   (/ -> .)
#   binding_key(filter)       "a/+/#"  -> "a.*.#"   (/ -> ., + -> *, # stays)
#   topic(routing_key)        "a.b.c"  -> "a/b/c"   (. -> /, * -> +)
#   destination(topic)        "a/b"    -> "/topic/a.b"   (STOMP, amq.topic)
#   message_id(edge_id, seq)  "<edge-id>:<seq>"     (the idempotency key)
#   cmd_queue(edge_id)        "edge.<edge-id>.cmd"  (durable, commands down)
#   cmd_binding(edge_id)      "cmd.<edge-id>.#"
#   cmd_topic(edge_id, rk)    "cmd.<edge-id>.x.y" -> "cmd/<edge-id>/x/y" (and
#                             "cmd.<edge-id>", which cmd.<edge-id>.# matches,
#                             -> "cmd/<edge-id>"), or None for a key that is
#                             not this edge's command
#   state_topic(edge_id)      "edge/<edge-id>/state"  (online/offline)
#   valid_edge_id(edge_id)    True if it can stand in these names
#
# A "." inside an MQTT topic level is NOT escaped, as in the plugin (its
# "Topic level separator and wildcards" documentation, and its to_amqp, which
# replaces "/" and "+" only): "a.b/c" becomes the routing key "a.b.c", three
# AMQP words, and comes back as "a/b/c". The plugin's documentation tells
# users to avoid dots in MQTT topics (and slashes in routing keys); so do we.

# Levels our names put the edge id into: it must be one level and one word.
_ID_FORBIDDEN = "./+#*\x00"


def routing_key(topic):
    return topic.replace("/", ".")


def binding_key(topic_filter):
    return topic_filter.replace("/", ".").replace("+", "*")


def topic(key):
    return key.replace("*", "+").replace(".", "/")


def destination(t):
    # RabbitMQ STOMP "/topic/<routing key>": published to amq.topic
    return "/topic/" + routing_key(t)


def message_id(edge_id, seq):
    return "%s:%d" % (edge_id, seq)


def cmd_queue(edge_id):
    return "edge." + edge_id + ".cmd"


def cmd_binding(edge_id):
    return "cmd." + edge_id + ".#"


def cmd_topic(edge_id, key):
    # a STOMP MESSAGE's destination "/topic/<key>" is accepted too
    if key.startswith("/topic/"):
        key = key[7:]
    prefix = "cmd." + edge_id
    if not key.startswith(prefix) or (len(key) > len(prefix) and key[len(prefix)] != "."):
        return None
    if len(key) == len(prefix) + 1:
        return None  # "cmd.<id>." : an empty last level, no sane command
    t = topic(key)
    if "+" in t or "#" in t:
        return None  # a routing key with wildcards is no topic name
    return t


def state_topic(edge_id):
    return "edge/" + edge_id + "/state"


def valid_edge_id(edge_id):
    if not edge_id or len(edge_id) > 64:
        return False
    for c in _ID_FORBIDDEN:
        if c in edge_id:
            return False
    return True
