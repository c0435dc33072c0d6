# MicroPython: [tls] on the board runtime (docs/security.md "TLS", "On a
# board"). MicroPython's ssl (mbedTLS) takes the certificate, key and CA as
# DER bytes; the TCP shell (tcp.py) wraps each socket the TLS listener
# accepts, and the handshake runs in its first reads on the poller. Imported
# only when [tls] sets something: a board without it pays nothing.
# (CPython's is tls_cpython.py.)
import ssl

from edge.errors import ConfigError


class Tls:
    port = 0

    def __init__(self, ctx):
        self.ctx = ctx

    async def listen(self, srv, host, port):
        self.auth = srv.broker.auth
        self.port = await srv.start(host, port, self.wrap)

    def wrap(self, sock):
        # A socket the TLS listener accepted (tcp.py): the handshake runs in
        # its first reads (readinto() gives None until it is done); a failed
        # one raises there and closes the connection, one never done meets
        # broker.connect_timeout as a silent client does
        w = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        if self.auth is not None:
            self.auth.open(w, sock)  # the address auth keeps moves to w
        return w

    def close(self):
        pass  # srv.close() closes the listener

    def sys_values(self):
        return ()  # a failed handshake closes its connection (debug log), not counted here


def _read(t, k):
    try:
        with open(t[k], "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError("tls." + k, "cannot read %s: %s" % (t[k], e))


def start(cfg, log):
    """A Tls for [tls], None when certfile is unset; ConfigError naming the key."""
    t = cfg["tls"]
    if not t["certfile"]:
        for k in ("keyfile", "cafile", "require_certificate", "use_identity_as_username"):
            if t[k]:
                raise ConfigError("tls.certfile", "required by tls." + k)
        return None
    if t["use_identity_as_username"]:
        raise ConfigError("tls.use_identity_as_username", "not on a board: its ssl shows no client certificate")
    if not t["keyfile"]:
        raise ConfigError("tls.keyfile", "required on a board (DER: openssl pkey -outform DER)")
    if t["require_certificate"] and not t["cafile"]:
        raise ConfigError("tls.cafile", "required by tls.require_certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # mbedTLS 3: TLS 1.2 (no 1.0, 1.1)
    try:
        ctx.load_cert_chain(_read(t, "certfile"), _read(t, "keyfile"))
    except ValueError as e:  # "invalid cert", "invalid key"
        raise ConfigError("tls.keyfile" if "key" in str(e) else "tls.certfile",
                          "%s: DER needed (openssl x509/pkey -outform DER)" % e)
    if t["cafile"]:
        try:
            ctx.load_verify_locations(cadata=_read(t, "cafile"))
        except ValueError as e:
            raise ConfigError("tls.cafile", "%s: DER needed (openssl x509 -outform DER)" % e)
    ctx.verify_mode = ssl.CERT_REQUIRED if t["require_certificate"] else ssl.CERT_NONE
    return Tls(ctx)
