# The CPython runtime (edge/runtime/main.py serve()) with the gateway's web
# listeners beside it (docs/gateway.md): MQTT over WebSockets ([websocket])
# and HTTP ([http]: status page, /metrics, POST /publish). Used by
# gateway/cli.py only when one of the two is enabled; otherwise the runtime
# runs alone and nothing here (nor wsproto) is imported.
import asyncio

from edge.errors import ConfigError


class Stats:
    """The web listeners' counters (/metrics, the status page)."""

    def __init__(self):
        self.ws_accepted = 0      # MQTT over WebSocket connections
        self.requests = 0         # HTTP requests routed
        self.not_found = 0
        self.publishes = 0        # POST /publish published
        self.publish_refused = 0  # ... refused: 400, 403
        self.too_large = 0        # 413
        self.refused = 0          # 503: over http.max_connections
        self.idle_closed = 0      # closed after http.idle_timeout
        self.bad_requests = 0     # not HTTP/1.1: 400, 431
        self.unauthorized = 0     # 401: no, bad or throttled credentials (gateway/httpauth.py)


def wanted(cfg):
    return cfg["websocket"]["enabled"] or cfg["http"]["enabled"]


def tls_on(cfg, section):
    """[websocket] or [http] serves TLS: its tls key, unset while [tls] is set."""
    v = cfg[section].get("tls")
    return bool(cfg.get("tls") and cfg["tls"]["certfile"]) if v is None else v


def check(cfg):
    """What the schema cannot check: ConfigError naming the key."""
    w = cfg["websocket"]
    if w["enabled"] and (not w["path"].startswith("/") or "?" in w["path"] or " " in w["path"]):
        raise ConfigError("websocket.path", 'must be a URL path starting with "/", got "%s"' % w["path"])
    if cfg["http"]["enabled"] and cfg["http"]["auth"] and not cfg["auth"]["password_file"]:
        raise ConfigError("http.auth", "needs auth.password_file: the users it lets in")
    for sec in ("websocket", "http"):
        if cfg[sec]["enabled"] and cfg[sec].get("tls") and not cfg["tls"]["certfile"]:
            raise ConfigError(sec + ".tls", "needs [tls] certfile (and keyfile): the certificate it serves")
    h = cfg["http"]
    if (w["enabled"] and h["enabled"] and w["bind"] == h["bind"] and w["port"] == h["port"]
            and tls_on(cfg, "websocket") != tls_on(cfg, "http")):
        raise ConfigError("http.tls", "must be websocket.tls's: one listener serves both on port %d" % h["port"])
    if wanted(cfg):
        try:
            import wsproto  # noqa: F401  (and h11, which it requires)
        except ImportError:
            raise ConfigError("websocket.enabled" if w["enabled"] else "http.enabled",
                              "the web listeners need the wsproto package, not installed here: "
                              "pip install 'edgebroker[gateway]' (or pip install wsproto)") from None


class Web:
    """The listeners, bound at construction (a port in use is a ConfigError
    before the broker starts), serving once start() has the broker."""

    def __init__(self, cfg, log):
        check(cfg)
        from gateway import web

        w, h = cfg["websocket"], cfg["http"]
        self.log = log
        self.stats = Stats()
        self.max_body = cfg["broker"]["max_packet_size"]  # 413 past it
        self.live_path = "/live"
        self.max_http = h["max_connections"]
        self.idle_timeout = h["idle_timeout"]
        self.http_open = 0  # HTTP connections (and status pages) open
        self.status = None
        self.broker = self.srv = self.routes = self.publisher = None
        from gateway import httpauth

        self.auth = httpauth.Auth(self, httpauth.required(cfg))
        if h["enabled"] and not self.auth.required and not httpauth.loopback(h["bind"]):
            log(30, "http: %s is not loopback and http.auth is off: the status page and /metrics are open to "
                "anyone who reaches port %d%s (docs/gateway.md)" % (
                    h["bind"], h["port"], "" if cfg["auth"]["password_file"] else ", and POST /publish too"))
        self.listeners = []
        shared = w["enabled"] and h["enabled"] and w["bind"] == h["bind"] and w["port"] == h["port"]
        try:
            if w["enabled"]:
                sock = web.bind(w["bind"], w["port"], "websocket.port")
                self.listeners.append(web.Listener(self, sock, w["path"], shared, tls_on(cfg, "websocket")))
            if h["enabled"] and not shared:
                sock = web.bind(h["bind"], h["port"], "http.port")
                self.listeners.append(web.Listener(self, sock, None, True, tls_on(cfg, "http")))
        except BaseException:
            self.close()
            raise

    async def start(self, broker, srv):
        from gateway.publish import Publisher
        from gateway.routes import Routes

        self.broker = broker
        self.srv = srv
        self.publisher = Publisher(broker, srv, self.stats)
        if any(lst.http for lst in self.listeners):
            from gateway.status import Status

            self.status = Status(self)
            self.status.start(broker, srv)
        self.routes = Routes(self)
        loop = asyncio.get_running_loop()
        for lst in self.listeners:
            await lst.start(loop, broker.tls if lst.tls else None)
            host = lst.sock.getsockname()[0]
            s = "s" if lst.tls else ""
            if lst.mqtt_path is not None:
                self.log(20, "edgebroker serving MQTT over WebSocket at ws%s://%s:%d%s" % (s, host, lst.port, lst.mqtt_path))
            if lst.http:
                self.log(20, "edgebroker serving HTTP at http%s://%s:%d/ (status, /metrics, /publish)" % (s, host, lst.port))

    def close(self):
        for lst in self.listeners:
            lst.close()
        self.listeners = []
        if self.status is not None:
            self.status.close()


def _pause(srv):
    for p in list(srv.peers.values()):
        try:
            p.tr.pause_reading()
        except (AttributeError, RuntimeError):
            pass  # closing already


async def _serve(cfg, log, web):
    from edge.runtime import main

    loop = asyncio.get_running_loop()
    tasks = []
    main_task = asyncio.current_task()

    def started(broker, srv):
        t = loop.create_task(_start(broker, srv))
        t.add_done_callback(_failed)
        tasks.append(t)

    async def _start(broker, srv):
        # Runs once serve() waits in its tick loop, after its own SIGTERM
        # handler (cancel_on_sigterm) is set: this one replaces it
        import signal

        loop.add_signal_handler(signal.SIGTERM, _sigterm, srv)
        # The loop's handler runs only between loop passes, and under a
        # flood one pass is long: libuv reads a readable socket up to 32
        # times in a row (uv__read), each read handled before the next, so
        # a SIGTERM waited 2-11 s behind a WebSocket publisher's stream
        # (py-spy: inside ws.feed all along; tests/integration/
        # test_24_operations.py). Python runs its own signal handlers
        # between bytecodes, inside that pass: this one stops reading from
        # every socket at once, so the pass ends with the read in hand.
        loop_handler = signal.getsignal(signal.SIGTERM)

        def on_signal(signum, frame):
            _pause(srv)
            if callable(loop_handler):
                loop_handler(signum, frame)

        signal.signal(signal.SIGTERM, on_signal)
        await web.start(broker, srv)

    def _sigterm(srv):
        # As cancel_on_sigterm (edge/runtime/speedups_cpython.py), reading
        # stopped first (on_signal did already; again for a peer since)
        log(20, "SIGTERM: stopping")
        _pause(srv)
        web.close()
        main_task.cancel()

    def _failed(t):
        if not t.cancelled() and t.exception() is not None:
            log(40, "web listeners did not start: %r" % t.exception())

    try:
        await main.serve(cfg, log, started)
    finally:
        web.close()


def run(cfg, log):
    """As edge.runtime.main.run, with the web listeners; ConfigError (exit
    2) when one cannot start."""
    from edge.runtime.speedups_cpython import runner

    web = Web(cfg, log)
    try:
        go, name = runner(log)
        log(20, "event loop: %s" % name)
        go(_serve(cfg, log, web))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # Ctrl-C, or SIGTERM: stopped after its cleanup
    finally:
        web.close()
