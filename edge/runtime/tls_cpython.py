# TLS on the gateway's listeners (docs/security.md "TLS"): the MQTT listener
# on [tls] port beside the plain one, and the web listeners (wss://,
# https://, gateway/web.py) when [tls] is set. The same broker, sessions,
# auth and ACLs: a connection is one more peer of the TCP shell
# (tcp_cpython.py) once its handshake is done.
#
# The event loop (asyncio's or uvloop's) does the TLS: create_server(ssl=,
# ssl_handshake_timeout=) hands the shell's protocol a connection only after
# a complete handshake, and a handshake that fails is closed without a word
# to it (asyncio logs it only in debug mode). To count them, the context's
# SSLObject class is ours: its do_handshake() sees every handshake start,
# succeed or fail (with OpenSSL's reason); one that neither succeeds nor
# fails within the handshake timeout (a peer that sent nothing, or left
# half way) is counted when the pending ones are swept. Named *cpython*
# so it never goes onto a board.
import asyncio
import ssl
import time

from edge.errors import ConfigError

_LOG_EVERY = 10.0  # seconds: failed handshakes are logged once per this, not per attempt
_KEYS = ("certfile", "keyfile", "cafile")


def wanted(cfg):
    """[tls] is set: its certfile names the server's certificate."""
    t = cfg.get("tls")
    return bool(t and t["certfile"])


def check(cfg):
    """What the schema cannot check in [tls]; ConfigError naming the key."""
    t = cfg.get("tls")
    if not t:
        return
    if not t["certfile"]:
        for k in ("keyfile", "cafile"):
            if t[k]:
                raise ConfigError("tls.certfile", "required by tls.%s (TLS needs the server's certificate)" % k)
        for k in ("require_certificate", "use_identity_as_username"):
            if t[k]:
                raise ConfigError("tls.certfile", "required by tls.%s (TLS needs the server's certificate)" % k)
        return
    if t["require_certificate"] and not t["cafile"]:
        raise ConfigError("tls.cafile", "required by tls.require_certificate: the CA that signs the clients' certificates")
    if t["use_identity_as_username"] and not t["require_certificate"]:
        raise ConfigError("tls.use_identity_as_username",
                          "needs tls.require_certificate = true (the user name is the client certificate's CN)")


def start(cfg, log):
    """A Tls for [tls], None when it is not set; ConfigError naming the key."""
    check(cfg)
    return Tls(cfg, log) if wanted(cfg) else None


def _readable(key, path):
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise ConfigError("tls." + key, "cannot read %s: %s" % (path, e.strerror or e)) from None


def context(cfg):
    """The server's ssl.SSLContext from [tls]: TLS 1.2 and later only, the
    client's certificate required (and checked against cafile) with
    require_certificate. ConfigError naming the key for a file that is
    missing, unreadable or not what it should be."""
    check(cfg)
    t = cfg["tls"]
    for k in _KEYS:
        if t[k]:
            _readable(k, t[k])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # RFC 8996 deprecates TLS 1.0 and 1.1; mosquitto's default is 1.2 too
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(t["certfile"], t["keyfile"])
    except (ssl.SSLError, ValueError) as e:
        # which file: the certificate alone must parse as one
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=t["certfile"])
        except (ssl.SSLError, ValueError):
            raise ConfigError("tls.certfile", "%s is not a PEM certificate: %s" % (t["certfile"], e)) from None
        if t["keyfile"]:
            raise ConfigError("tls.keyfile", "%s is not a PEM private key without a passphrase, or not the key of "
                              "tls.certfile's certificate: %s" % (t["keyfile"], e)) from None
        raise ConfigError("tls.keyfile", "not set, and %s holds no private key for its certificate: %s"
                          % (t["certfile"], e)) from None
    if t["cafile"]:
        try:
            ctx.load_verify_locations(cafile=t["cafile"])
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError("tls.cafile", "%s is not a PEM certificate: %s" % (t["cafile"], e)) from None
    # mosquitto: without require_certificate no client certificate is asked for
    ctx.verify_mode = ssl.CERT_REQUIRED if t["require_certificate"] else ssl.CERT_NONE
    return ctx


class _Counted(ssl.SSLObject):
    """The SSLObject the event loop's TLS protocol drives: its handshakes
    counted in `tls` (a class attribute, set per Tls)."""

    tls = None

    def do_handshake(self):
        tls = self.tls
        pending = tls.pending
        if self not in pending:  # the first call starts it
            now = time.monotonic()
            if pending and next(iter(pending.values())) < now - tls.timeout - 1:
                tls.sweep()  # the oldest is past its timeout: bounded without a $SYS reader
            pending[self] = now
        try:
            r = ssl.SSLObject.do_handshake(self)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise  # more bytes to come
        except Exception as e:
            if tls.pending.pop(self, None) is not None:
                tls.failed(e)
            raise
        if tls.pending.pop(self, None) is not None:
            tls.ok += 1
        return r


class Tls:
    """The server context and its handshake counts, shared by the MQTT TLS
    listener and the web listeners; broker.tls for $SYS."""

    def __init__(self, cfg, log):
        self.ctx = context(cfg)
        self.timeout = cfg["broker"]["connect_timeout"]  # seconds for the handshake
        self.identity = cfg["tls"]["use_identity_as_username"]
        self.log = log
        self.ok = 0          # handshakes done
        self.fails = 0       # failed, timed out or left half way (these two counted also in:)
        self.timeouts = 0    # not done within the timeout (or the peer left half way)
        self.pending = {}    # SSLObject -> when its handshake started
        self.unlogged = 0    # failures since the last log line
        self.logged = -_LOG_EVERY
        self.why = ""
        self.server = None   # the MQTT TLS listener (asyncio Server)
        self.port = 0
        self.ctx.sslobject_class = type("Counted", (_Counted,), {"tls": self})

    def failed(self, e, timeout=False):
        self.fails += 1
        self.timeouts += timeout
        self.unlogged += 1
        self.why = getattr(e, "reason", None) or str(e) or type(e).__name__
        now = time.monotonic()
        if now - self.logged >= _LOG_EVERY:  # once per interval, never per attempt
            self.log(30, "tls: %d handshake%s failed%s (last: %s); %d in all, $SYS/broker/tls/handshakes/failed" % (
                self.unlogged, "" if self.unlogged == 1 else "s",
                "" if self.logged < 0 else " in the last %d s" % (now - self.logged), self.why, self.fails))
            self.logged = now
            self.unlogged = 0

    def sweep(self):
        # Handshakes pending past the timeout: the loop has closed them
        # (ssl_handshake_timeout) or the peer left half way
        if not self.pending:
            return
        old = time.monotonic() - self.timeout - 1
        for o in [o for o, t in self.pending.items() if t < old]:
            del self.pending[o]
            self.failed(TimeoutError("no complete handshake within %d s" % self.timeout), True)

    def server_kw(self):
        """create_server()'s keyword arguments for a TLS listener (the web
        listeners' too, gateway/web.py)."""
        return {"ssl": self.ctx, "ssl_handshake_timeout": self.timeout}

    async def listen(self, srv, host, port):
        """The MQTT TLS listener on host:port, serving srv's broker (the
        shell's peers: its opened() path, sessions, auth and ACLs)."""
        from edge.runtime.tcp_cpython import _BACKLOG, _Peer

        class Peer(_Peer):
            __slots__ = ()

            def connection_made(self, tr):  # after the handshake
                _Peer.connection_made(self, tr)
                tls.identify(srv, self)

            def eof_received(self):
                # (the TLS transport closes itself after it: a True returned
                # is ignored, with a warning per connection)
                srv.received(self, b"")

        tls = self
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Peer(srv), host, port, backlog=_BACKLOG,
                                               reuse_address=True, **self.server_kw())
        self.port = self.server.sockets[0].getsockname()[1]  # port 0: the one taken
        return self.port

    def close(self):
        if self.server is not None:
            self.server.close()
            self.server = None

    def identify(self, srv, p):
        """use_identity_as_username: after the shell opened p (a TLS
        connection), the certificate's CN is its user name: no password,
        the ACL of that user (edge/auth/guard.py login())."""
        auth = srv.broker.auth
        if not self.identity or auth is None or not p.cid:
            return
        cert = p.tr.get_extra_info("peercert") or {}
        cn = None
        for rdn in cert.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    cn = v
        addr = p.tr.get_extra_info("peername")
        auth.open(p.cid, ((addr[0] if addr else None), cn))

    def sys_values(self):
        """(name under $SYS/broker/, value) pairs (edge/mqtt/systree.py)."""
        self.sweep()
        yield "tls/handshakes/ok", self.ok
        yield "tls/handshakes/failed", self.fails
        yield "tls/handshakes/timed out", self.timeouts
