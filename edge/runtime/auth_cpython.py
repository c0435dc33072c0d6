# CPython (the gateway): [auth]'s files read again on SIGHUP, between two
# callbacks of the event loop, as mosquitto reloads its password and ACL
# files (a file with an error keeps the rules in force, logged); and each
# client's read checks remembered. Not on a board: its heap (and its qstr
# pool, docs/security.md "On a board") has no room for either.
import asyncio
import signal

from edge.auth.acl import READ, Acl, Rules
from edge.errors import ConfigError
from edge.runtime.auth import load

# Topics each client's read checks remember. Every delivery checks a read
# and a subscriber's topics repeat; a check costs ~1 us per ACL line here
# (6 us for 6 lines), a remembered one 0.2 us.
MEMO = 256


class MemoRules(Rules):
    def __init__(self, entries, user=None):
        Rules.__init__(self, entries, user)
        self.memo = {}  # topic -> may read it

    def can(self, topic, access, sub=False):
        if access != READ or sub:
            return Rules.can(self, topic, access, sub)
        memo = self.memo
        v = memo.get(topic)
        if v is None:
            v = Rules.can(self, topic, access, sub)
            if len(memo) >= MEMO:
                memo.clear()  # bounded: start again
            memo[topic] = v
        return v


class MemoAcl(Acl):
    def rules(self, user, client_id):
        r = Acl.rules(self, user, client_id)
        return MemoRules(r.entries, r.user)


def remember(acl):
    """acl (an Acl or None) gives its clients MemoRules from now on."""
    if acl is not None:
        acl.__class__ = MemoAcl


def watch(settings, broker, log):
    """settings: what edge/runtime/auth.py's start() returned."""
    paths, anon = settings[:2], settings[2]
    remember(broker.auth.acl)

    def reload():
        try:
            users, acl = load(paths)
        except ConfigError as e:
            log(40, "auth: reload failed, previous files kept: %s" % e)
            return
        remember(acl)
        g = broker.auth
        g.reload(users, acl, anon, broker.sessions.values())
        log(20, "auth: reloaded (%s users, ACL file %s)" % (
            "no" if users is None else len(users), paths[1] or "none"))

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError) as e:
        log(30, "auth: no reload on SIGHUP here (%s)" % e)
