# HTTP Basic authentication (RFC 7617) on the gateway's HTTP listener
# (docs/gateway.md "Authentication"): the user name and password are checked
# as an MQTT CONNECT's are, by the broker's Guard (edge/auth/guard.py,
# docs/security.md): the same password file, the same back-off per client
# address (shared with MQTT and CoAP: guessing over HTTP slows MQTT logins
# from that address too), the same $SYS counters. POST /publish needs the
# ACL's write permission (gateway/publish.py); with http.auth on, every
# route (the status page and its live WebSocket, /status.json, /metrics)
# needs a valid user.
#
# Neither the password nor the Authorization header is ever logged: a
# refusal's log line names the address and the user only (Guard.why).
import binascii

from edge.runtime.auth import loopback
from edge.runtime.clock import now_ms

# RFC 7617 §2.1: the realm; charset (§2.1) tells the client we decode UTF-8
CHALLENGE = ("www-authenticate", 'Basic realm="edgebroker", charset="UTF-8"')
CLIENT_ID = "http"  # what %c stands for in an ACL pattern (CoAP's default is "coap")


def credentials(headers):
    """(user, password bytes) of an `Authorization: Basic` header (h11's
    lower-cased names); None without one; ValueError for one that is not
    Basic base64(user:password) in UTF-8."""
    v = headers.get(b"authorization")
    if v is None:
        return None
    scheme, _, token = v.strip().partition(b" ")
    if scheme.lower() != b"basic":
        raise ValueError("not the Basic scheme")
    raw = binascii.a2b_base64(token.strip())  # binascii.Error is a ValueError
    user, sep, password = raw.partition(b":")  # RFC 7617 §2: the user has no ':'
    if not sep:
        raise ValueError("no ':' between user and password")
    user = user.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if [c for c in user if c < " " or c == "\x7f"]:
        # no password file holds one (edge/auth/passwords.py check_user);
        # refused before it could reach a log line
        raise ValueError("a control character in the user name")
    return user, password


def required(cfg):
    """http.auth resolved: unset, on when a password file is set and the
    HTTP listener is not on loopback."""
    v = cfg["http"]["auth"]
    if v is None:
        v = bool(cfg["auth"]["password_file"]) and not loopback(cfg["http"]["bind"])
    return v


class Auth:
    def __init__(self, web, required):
        self.web = web
        self.required = required  # http.auth: a valid user for every route
        self.why = ""             # why login() refused the last one (a log line)

    def login(self, peer, headers, publish):
        """The requester's ACL Rules, or True when nothing is checked; None
        when refused (why in self.why: answer 401 with CHALLENGE). publish:
        a POST /publish, checked as an MQTT CONNECT whether http.auth is on
        or not (anonymous as auth.allow_anonymous says)."""
        if not (publish or self.required):
            return True
        guard = self.web.broker.auth
        try:
            who = credentials(headers)
        except ValueError as e:
            self.why = "bad Authorization header (%s)" % e
            return None
        if who is None:
            if self.required:
                self.why = "no credentials (http.auth)"  # a browser's first request: not a failed login
                return None
            if guard is None:
                return True
            user = password = None
        else:
            if guard is None:  # no [auth]: user names are not checked, as over MQTT
                return True
            user, password = who
        r = guard.check(user, password, CLIENT_ID, address(peer), now_ms())
        if type(r) is int:  # _BAD, _ANON: counted by the Guard
            self.why = guard.why
            return None
        return r

    def refused(self, peer, what):
        """Count and log a refusal (never the credentials)."""
        self.web.stats.unauthorized += 1
        self.web.log(20, "HTTP %s from %s refused (401): %s" % (what, address(peer), self.why))


def address(peer):
    """The client's IP: the back-off's key, as the TCP shell gives the Guard
    (edge/runtime/tcp_cpython.py opened())."""
    a = peer.tr.get_extra_info("peername")
    return a[0] if isinstance(a, tuple) else a
