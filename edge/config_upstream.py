# The [upstream] section (the uplink to RabbitMQ: edge/bridge/uplink.py,
# docs/uplink.md) in edge/config.py's table form. The gateway has it in its
# table from the start (edge/config_gateway.py); a board imports this module
# only when its config.json or its command line names the section
# (edge/config.py _extra), so a board without an uplink pays no heap for it
# (docs/heap.md "The uplink on a board"). Data only: no I/O.
_U = None  # unbounded, as in edge/config.py
SECTION = {
    # amqp://user:pass@host:5672/vhost or stomp://user:pass@host:61613/vhost,
    # amqps:// (5671) and stomp+ssl:// (61614) over TLS; a list of them for
    # a cluster; "": no uplink (nothing of it is imported)
    "url": ("url", "", "", (0, 1024)),
    # in names upstream: message ids "<edge_id>:<seq>", the queue
    # edge.<edge_id>.cmd, the topics cmd/<edge_id>/... and edge/<edge_id>/state
    "edge_id": ("id", "edge", "edge", (1, 64)),
    "exchange": ("str", "amq.topic", "amq.topic", (1, 255)),
    # MQTT filters sent up, comma-separated; "#" matches no $SYS topic
    "publish": ("str", "#", "#", (0, 4096)),
    "commands": ("bool", True, True, None),  # cmd.<edge_id>.# -> cmd/<edge_id>/...
    "heartbeat": ("int", 15, 15, (0, 3600)),  # seconds (AMQP heartbeat, STOMP heart-beat)
    # messages waiting for the upstream's confirm; full: the newest refused
    "outbox_budget_bytes": ("int", 16777216, 16384, (1024, _U)),
    "window": ("int", 256, 8, (1, 65535)),  # unconfirmed in flight
    # TLS (amqps://, stomp+ssl://; docs/uplink.md "TLS"): the CA file (PEM)
    # the server's certificate must chain to; "": the system's CAs. The
    # server is always verified and its name checked against the URL's host
    "cafile": ("str", "", "", (0, 1024)),
    # a client certificate and its key (PEM) for mutual TLS; "": none
    "certfile": ("str", "", "", (0, 1024)),
    "keyfile": ("str", "", "", (0, 1024)),
}
