# What the broker asks of authentication and ACLs (docs/security.md): one
# Guard, set as Broker.auth by the runtime (edge/runtime/auth.py). The
# broker's hooks:
#   connect.py    login() at CONNECT: password, anonymous, back-off, will
#   publish.py    may(WRITE) on PUBLISH, may(READ) on every delivery
#   subscribe.py  may(SUBSCRIBE) on SUBSCRIBE, may(READ) on retained ones
#   coap/         coap() per request (EMQX's u, p, c query names), may()
# Time is an argument (now_ms): the back-off is data, no timers.
# (Few names: each new one is a qstr a board keeps for good, and past the
# qstr pool's room a new pool costs it ~8 KB; docs/security.md "On a board".)
import hashlib

from edge.auth.acl import Rules
from edge.compat import const

_READ = const(1)   # acl.READ
_WRITE = const(2)  # acl.WRITE
_FREE_FAILS = const(2)        # failed logins per address before any back-off
_BACKOFF_MS = const(1000)     # the first back-off; doubles with each failure after
_BACKOFF_MAX_MS = const(60000)
_FORGET_MS = const(600000)    # an address quiet this long after its back-off starts afresh
# 3.1.1 CONNACK return code, 5.0 reason codes (§3.2.2.2)
_NOT_AUTHORIZED_311 = const(5)
_RC_BAD_LOGIN = const(0x86)
_RC_NOT_AUTHORIZED = const(0x87)
_UNAUTHORIZED = const(0x81)  # CoAP 4.01 (RFC 7252 §5.9.2.2)
_BAD = const(1)   # check(): a bad user name or password, or a back-off
_ANON = const(2)  # check(): anonymous, not allowed
# counts: the index in Guard.counts of each $SYS value (sys_values)
_FAILED = const(0)      # bad user name or password
_THROTTLED = const(1)   # refused at once during an address's back-off
_ANONYMOUS = const(2)   # no user name, allow_anonymous false
_SUBSCRIBE = const(3)   # filters refused on SUBSCRIBE
_PUBLISH = const(4)     # PUBLISHes dropped
_READ_DENIED = const(5)  # deliveries (retained ones too) not made
_WILL = const(6)        # CONNECTs refused for their will topic (or wills dropped on reload)
_COUNTER = (0, _READ_DENIED, _PUBLISH, 0, 0, _SUBSCRIBE)  # may()'s access -> its refusals' counter
_NAMES = ("auth/failed", "auth/throttled", "auth/anonymous_refused", "acl/denied/subscribe",
          "acl/denied/publish", "acl/denied/read", "acl/denied/will")


class Guard:
    why = ""  # why check() refused the last one (a log line)

    def __init__(self, users, acl, anonymous, conns, size=1024):
        self.users = users          # {user: entry} (passwords.parse), None: no password file
        self.acl = acl              # acl.Acl, None: no ACL file
        self.anonymous = anonymous  # clients without a user name let in
        self.conns = conns          # the Broker's: connection id -> Connection
        self.size = size            # bound of peers and fails
        self.peers = {}             # connection id -> client address, until its CONNECT
        self.fails = {}             # client address -> [failures, refused until (ms)]
        self.counts = [0] * len(_NAMES)
        self.seen = {}              # user -> SHA-256(salt + password) of its last good login

    def open(self, cid, peer):
        """The runtime accepted connection cid from address peer (hashable,
        without the port): kept until its CONNECT. (MicroPython's runtime
        calls open(socket, address) on accept, then open(cid, socket) once
        it has the id: the address moves to the id.)"""
        peers = self.peers
        if len(peers) >= self.size:
            # sockets gone before their CONNECT: dropped (bounded)
            conns = self.conns
            for k in [k for k in peers if k not in conns]:
                del peers[k]
        peers[cid] = peers.pop(peer, peer)

    def check(self, user, password, client_id, peer, now):
        """The Rules of a client that says it is user (None: anonymous) with
        password (bytes or None), from address peer; or _BAD or _ANON, why
        in self.why. Rules without an ACL file have no entries: they still
        name the user."""
        c = self.counts
        fails = self.fails
        rec = fails.get(peer)
        if rec is not None and now - rec[1] > _FORGET_MS:
            del fails[peer]
            rec = None
        if rec is not None and now < rec[1]:
            # guessing from this address is slowed: refused unchecked (a
            # right password is refused too, the same way), at no hash cost
            c[_THROTTLED] += 1
            self.why = "login refused for %d ms more: %d failed logins from this address" % (rec[1] - now, rec[0])
            return _BAD
        if user is None:
            if not self.anonymous:
                c[_ANONYMOUS] += 1
                self.why = "anonymous clients not allowed (auth.allow_anonymous)"
                return _ANON
        elif self.users is not None:
            entry = self.users.get(user)
            if entry is None or password is None or not self.verify(user, entry, bytes(password)):
                c[_FAILED] += 1
                if peer is not None:
                    if rec is None:
                        if len(fails) >= self.size:
                            self.prune(now)
                        rec = fails[peer] = [0, 0]
                    rec[0] += 1
                    n = rec[0] - _FREE_FAILS  # 1 s, 2 s, 4 s... up to a minute
                    rec[1] = now + (min(_BACKOFF_MS << min(n - 1, 16), _BACKOFF_MAX_MS) if n > 0 else 0)
                # never the password, nor whether the user exists
                self.why = "bad user name or password for user %s" % user
                return _BAD
        if rec is not None:
            del fails[peer]  # a good login ends the address's back-off
        if self.acl is None:
            return Rules((), user)  # (no ACL file: no check reads them)
        return self.acl.rules(user, client_id)

    def verify(self, user, entry, password):
        # PBKDF2 once per user and password: a client that logs in again
        # (a reconnect, a CoAP request each time) with the password that
        # last passed costs one SHA-256, not the entry's iterations.
        # Imported here: a guard without a password file (a non-loopback
        # bind, anonymous clients refused) never loads it, and a board's
        # boot keeps the names of pbkdf2.py out of its qstr pool, whose
        # next pool is a 7 KB block a 64 KiB heap has not got (docs/heap.md
        # "Fragmented at boot"); with a password file, passwords.py has
        # loaded it at start
        from edge.auth.pbkdf2 import equal, verify

        fast = hashlib.sha256(entry[1] + password).digest()
        last = self.seen.get(user)
        if last is not None and equal(fast, last):
            return True
        if not verify(entry, password):
            return False
        self.seen[user] = fast  # (bounded: one per user of the file)
        return True

    def login(self, conn, pkt, now):
        """(0, rules) for a CONNECT let in, with its Rules; else (the
        CONNACK code, 5.0's if conn.v5, why: a log line)."""
        peer = self.peers.pop(conn.id, None)
        if type(peer) is tuple:
            # (address, CN): a TLS client's certificate, checked against
            # tls.cafile, names its user (tls.use_identity_as_username, as
            # mosquitto): the CONNECT's user name and password are not used
            user = peer[1]
            if user is None:
                self.counts[_FAILED] += 1
                return (_RC_BAD_LOGIN if conn.v5 else _NOT_AUTHORIZED_311), "client certificate without a CN"
            rules = self.acl.rules(user, pkt.client_id) if self.acl is not None else Rules((), user)
        else:
            rules = self.check(pkt.username, pkt.password, pkt.client_id, peer, now)
        if rules is _BAD:
            return (_RC_BAD_LOGIN if conn.v5 else _NOT_AUTHORIZED_311), self.why
        if rules is _ANON:
            return (_RC_NOT_AUTHORIZED if conn.v5 else _NOT_AUTHORIZED_311), self.why
        if self.acl is not None and pkt.will_topic is not None and not rules.can(pkt.will_topic, _WRITE):
            # as mosquitto 2.0: refused at CONNECT, not dropped when it is due
            self.counts[_WILL] += 1
            return ((_RC_NOT_AUTHORIZED if conn.v5 else _NOT_AUTHORIZED_311),
                    "will topic %s not writable by this client (acl_file)" % pkt.will_topic)
        return 0, rules

    def prune(self, now):
        # The table of failing addresses is bounded: expired back-offs go
        # first, then (still full: many addresses guessing) the oldest entry
        fails = self.fails
        for k in [k for k in fails if fails[k][1] <= now]:
            del fails[k]
        if len(fails) >= self.size:
            del fails[next(iter(fails))]

    # ---- ACL checks --------------------------------------------------------------
    def may(self, who, topic, access):
        """May who read (access 1: a delivery), write (2: a PUBLISH) or
        subscribe to (5: topic is a filter) topic? Always without an ACL
        file; a refusal is counted. who: a Session (its rules from its
        CONNECT; None for one the store restored, not back since: nothing
        is delivered to it), a LocalClient or a shared subscription (rules
        True: let through), or a CoAP request's Rules themselves."""
        if self.acl is None:
            return True
        r = getattr(who, "rules", who)
        if r is True or (r is not None and r.can(topic, access & 3, access > 3)):
            return True
        self.counts[_COUNTER[access]] += 1
        return False

    # ---- CoAP (edge/coap/resources.py) -----------------------------------------
    def coap(self, query, peer, now):
        """A CoAP request's Rules, from EMQX's query names u (user), p
        (password) and c (client id, "coap" when missing) among query (the
        Uri-Query strings); or 4.01 Unauthorized. peer: the runtime's
        address, a (host, port) tuple on CPython, a sockaddr on MicroPython:
        its IP is the back-off's key."""
        who = [None, None, "coap"]
        for v in query:
            if len(v) > 1 and v[1] == "=" and v[0] in "upc":
                who["upc".find(v[0])] = v[2:]
        if type(peer) is tuple:
            addr = peer[0]
        else:  # an opaque sockaddr: IPv4's address at bytes 4-8, IPv6's at 8-24
            addr = bytes(peer[4:8]) if len(peer) <= 16 else bytes(peer[8:24])
        r = self.check(who[0], None if who[1] is None else who[1].encode(), who[2], addr, now)
        return _UNAUTHORIZED if type(r) is int else r

    # ---- SIGHUP (CPython: edge/runtime/auth.py) ---------------------------------
    def reload(self, users, acl, anonymous, sessions):
        """New files: later logins and checks use them; each session's rules
        anew from the user name of its last CONNECT (one restored by the
        store and not back since stays unknown), and a will its client may
        no longer write dropped."""
        self.users = users
        self.acl = acl
        self.anonymous = anonymous
        self.seen = {}
        for sess in sessions:
            r = sess.rules
            if r is None:
                continue
            user = r.user
            sess.rules = r = acl.rules(user, sess.client_id) if acl is not None else Rules((), user)
            conn = sess.conn
            if acl is not None and conn is not None and conn.will is not None and not r.can(conn.will.topic, _WRITE):
                conn.will = None
                self.counts[_WILL] += 1

    def sys_values(self):
        """(name under $SYS/broker/, value) pairs (edge/mqtt/systree.py)."""
        for i in range(len(_NAMES)):
            yield _NAMES[i], self.counts[i]
