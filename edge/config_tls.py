# The [tls] section of edge/config.py's table (docs/security.md "TLS"), in
# mosquitto's names; on while certfile is set. Its own module so that a
# board's boot loads it only when its config.json names [tls] (config.py
# load()): the names of its keys would cost every board heap for good.
# The gateway has it always (edge/config_gateway.py). Data only: no I/O.
_U = None  # unbounded, as in edge/config.py
# TLS beside the plain listener (docs/security.md "TLS"), mosquitto's
# names; on while certfile is set. A board takes DER files (mbedTLS)
TLS = {
    "port": ("int", 8883, 8883, (0, 65535)),  # 0 = any free port
    "bind": ("str", None, None, (1, _U)),  # unset: broker.bind
    "certfile": ("str", None, None, (1, _U)),  # the server's certificate
    "keyfile": ("str", None, None, (1, _U)),  # its key; unset: in certfile (gateway)
    "cafile": ("str", None, None, (1, _U)),  # the CA of the clients' certificates
    "require_certificate": ("bool", False, False, None),  # mutual TLS
    # the client certificate's CN is its user name (no password)
    "use_identity_as_username": ("bool", False, False, None),
}
