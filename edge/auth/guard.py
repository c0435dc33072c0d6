# What the broker asks of authentication and ACLs (docs/security.md): one
# Guard, set as Broker.auth (and Broker.acl when an ACL file is loaded) by
# the runtime (edge/runtime/auth.py). The broker's hooks:
#   connect.py    login() at CONNECT: password, anonymous, back-off, will
#   publish.py    may_write() on PUBLISH, may_read() on every delivery
#   subscribe.py  may_subscribe() on SUBSCRIBE, may_read() on retained ones
# Time is an argument (now_ms): the back-off is data, no timers.
from edge.auth.acl import READ, WRITE, Rules
from edge.auth.passwords import verify

_FREE_FAILS = 2        # failed logins per address before any back-off
_BACKOFF_MS = 1000     # the first back-off; doubles with each failure after
_BACKOFF_MAX_MS = 60000
_FORGET_MS = 600000    # an address quiet this long after its back-off starts afresh
# 3.1.1 CONNACK return code, 5.0 reason codes (§3.2.2.2)
_NOT_AUTHORIZED_311 = 5
_RC_BAD_LOGIN = 0x86
_RC_NOT_AUTHORIZED = 0x87


class Guard:
    def __init__(self, users, acl, anonymous, conns, max_addresses=1024):
        self.users = users          # {user: entry} (passwords.parse), None: no password file
        self.acl = acl              # acl.Acl, None: no ACL file
        self.anonymous = anonymous  # clients without a user name let in
        self.conns = conns          # the Broker's: connection id -> Connection
        self.max_addresses = max_addresses
        self.peers = {}             # connection id -> client address, until its CONNECT
        self.fails = {}             # client address -> [failures, refused until (ms)]
        # counters for $SYS/broker/auth/... and .../acl/... (sys_values)
        self.failed = 0             # bad user name or password
        self.throttled = 0          # refused at once during an address's back-off
        self.anon_refused = 0       # no user name, allow_anonymous false
        self.denied_sub = 0         # filters refused on SUBSCRIBE
        self.denied_pub = 0         # PUBLISHes dropped
        self.denied_read = 0        # deliveries (retained ones too) not made
        self.denied_will = 0        # CONNECTs refused for their will topic

    def reload(self, users, acl, anonymous):
        """New files (SIGHUP): later logins and checks use them; the
        connected clients' rules are the caller's to renew (renew())."""
        self.users = users
        self.acl = acl
        self.anonymous = anonymous

    # ---- CONNECT ---------------------------------------------------------------
    def open(self, cid, peer):
        """The runtime accepted connection cid from address peer (hashable,
        without the port): kept until its CONNECT."""
        peers = self.peers
        if len(peers) >= self.max_addresses:
            # sockets gone before their CONNECT: dropped (bounded)
            conns = self.conns
            for k in [k for k in peers if k not in conns]:
                del peers[k]
        peers[cid] = peer

    def login(self, conn, pkt, now):
        """(code, rules) for a CONNECT: code 0 lets it in, else the CONNACK
        code (5.0's if conn.v5) and why in self.why; rules: its ACL Rules
        (with no entries without an ACL file: they still name the user)."""
        v5 = conn.v5
        peer = self.peers.pop(conn.id, None)
        user = pkt.username
        rec = self.fails.get(peer) if peer is not None else None
        if rec is not None and now - rec[1] > _FORGET_MS:
            del self.fails[peer]
            rec = None
        if rec is not None and now < rec[1]:
            # guessing from this address is slowed: refused unchecked (a
            # right password is refused too, the same way), at no hash cost
            self.throttled += 1
            self.why = "login refused for %d ms more: %d failed logins from this address" % (rec[1] - now, rec[0])
            return (_RC_BAD_LOGIN if v5 else _NOT_AUTHORIZED_311), None
        if user is None:
            if not self.anonymous:
                self.anon_refused += 1
                self.why = "anonymous clients not allowed (auth.allow_anonymous)"
                return (_RC_NOT_AUTHORIZED if v5 else _NOT_AUTHORIZED_311), None
        elif self.users is not None:
            entry = self.users.get(user)
            pw = pkt.password
            if entry is None or pw is None or not verify(entry, bytes(pw)):
                self.failed += 1
                self._failed(peer, now)
                # never the password, nor whether the user exists
                self.why = "bad user name or password for user %s" % user
                return (_RC_BAD_LOGIN if v5 else _NOT_AUTHORIZED_311), None
        if rec is not None:
            del self.fails[peer]  # a good login ends the address's back-off
        if self.acl is None:
            return 0, Rules((), user)
        rules = self.acl.rules(user, pkt.client_id)
        will = pkt.will_topic
        if will is not None and not rules.can(will, WRITE):
            # as mosquitto 2.0: refused at CONNECT, not dropped when it is due
            self.denied_will += 1
            self.why = "will topic %s not writable by this client (acl_file)" % will
            return (_RC_NOT_AUTHORIZED if v5 else _NOT_AUTHORIZED_311), None
        return 0, rules

    def _failed(self, peer, now):
        if peer is None:
            return
        fails = self.fails
        rec = fails.get(peer)
        if rec is None:
            if len(fails) >= self.max_addresses:
                self._prune(now)
            rec = fails[peer] = [0, 0]
        rec[0] += 1
        extra = rec[0] - _FREE_FAILS
        if extra > 0:
            ms = _BACKOFF_MS << min(extra - 1, 16)
            rec[1] = now + (ms if ms < _BACKOFF_MAX_MS else _BACKOFF_MAX_MS)
        else:
            rec[1] = now

    def _prune(self, now):
        # The table is bounded: expired back-offs go first, then (still
        # full: many addresses guessing) the oldest entry
        fails = self.fails
        for k in [k for k in fails if fails[k][1] <= now]:
            del fails[k]
        if len(fails) >= self.max_addresses:
            del fails[next(iter(fails))]

    # ---- ACL checks --------------------------------------------------------------
    def may_write(self, client, topic):
        """PUBLISH: False drops it (counted)."""
        r = client.rules
        if r is True or (r is not None and r.can(topic, WRITE)):
            return True
        self.denied_pub += 1
        return False

    def may_read(self, client, topic):
        """A delivery to client (a Session; a LocalClient's rules are True:
        trusted in-process). A session restored from the store without a
        CONNECT since has no rules yet: nothing is delivered to it."""
        r = client.rules
        if r is True or (r is not None and r.can(topic, READ)):
            return True
        self.denied_read += 1
        return False

    def may_subscribe(self, client, f):
        r = client.rules
        if r is True or (r is not None and r.can_subscribe(f)):
            return True
        self.denied_sub += 1
        return False

    def renew(self, sessions):
        """After a reload: each session's rules anew from the user name of
        its last CONNECT (one restored by the store and not back since stays
        unknown), and a will its client may no longer write dropped."""
        acl = self.acl
        for sess in sessions:
            r = sess.rules
            if r is None:
                continue
            user = r.user
            sess.rules = r = acl.rules(user, sess.client_id) if acl is not None else Rules((), user)
            conn = sess.conn
            if acl is not None and conn is not None and conn.will is not None and not r.can(conn.will.topic, WRITE):
                conn.will = None
                self.denied_will += 1

    def sys_values(self):
        """(name under $SYS/broker/, value) pairs (edge/mqtt/systree.py)."""
        yield "auth/failed", self.failed
        yield "auth/throttled", self.throttled
        yield "auth/anonymous_refused", self.anon_refused
        yield "acl/denied/subscribe", self.denied_sub
        yield "acl/denied/publish", self.denied_pub
        yield "acl/denied/read", self.denied_read
        yield "acl/denied/will", self.denied_will
