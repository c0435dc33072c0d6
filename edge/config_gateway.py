# The config sections the Pi gateway (CPython) has in its table from the
# start, in edge/config.py's table form: edge/config.py adds them to SCHEMA
# on CPython. On MicroPython this module is never imported, so a board's
# boot pays no heap for them (the marginal 64 KiB tests failed with
# [upstream] in the table) and a board config that names [websocket] or
# [http] fails as an unknown section instead of being ignored.
# Data only: no I/O. [upstream] is in edge/config_upstream.py: a board has
# it too, imported only when its config names it (edge/config.py _extra).
from edge.config_tls import TLS
from edge.config_upstream import SECTION as _UPSTREAM

_U = None  # unbounded, as in edge/config.py
SECTIONS = {}

SECTIONS["upstream"] = _UPSTREAM  # (both runtimes: edge/config_upstream.py)
# The gateway's web listeners (gateway/web.py, docs/gateway.md): MQTT over
# WebSockets, and HTTP (status page, /metrics, POST /publish). Both need
# the wsproto package (pip install 'edgebroker[gateway]'); off by
# default. The same bind and port for both: one listener serves both.
SECTIONS["websocket"] = {
    "enabled": ("bool", False, False, None),
    "bind": ("str", "127.0.0.1", "127.0.0.1", (1, _U)),
    "port": ("int", 8080, 8080, (0, 65535)),  # 0 = any free port
    "path": ("str", "/mqtt", "/mqtt", (1, 256)),
}
SECTIONS["http"] = {
    "enabled": ("bool", False, False, None),
    "bind": ("str", "127.0.0.1", "127.0.0.1", (1, _U)),  # loopback: the status page shows client ids
    "port": ("int", 8080, 8080, (0, 65535)),
    # HTTP connections (and status pages) open at once on the web
    # listeners; past it a 503, counted. An MQTT connection upgraded
    # to a WebSocket counts in broker.max_connections instead
    "max_connections": ("int", 64, 64, (1, _U)),
    # seconds an HTTP connection may sit without a request
    "idle_timeout": ("int", 30, 30, (1, 3600)),
    # a valid user ([auth] password_file, HTTP Basic) for every route;
    # unset: on when a password file is set and http.bind is not loopback
    "auth": ("bool", None, None, None),
}
# [tls]: TLS beside the plain listener, and on the web listeners
SECTIONS["tls"] = TLS  # type: ignore[assignment]
# [websocket] tls, [http] tls: wss://, https://. Unset: while [tls] is set
SECTIONS["websocket"]["tls"] = ("bool", None, None, None)
SECTIONS["http"]["tls"] = ("bool", None, None, None)
