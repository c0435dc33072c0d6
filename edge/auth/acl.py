# The ACL file in mosquitto's syntax (mosquitto.conf(5), acl_file):
#   # comment
#   topic [read|write|readwrite|deny] FILTER   (no access word: readwrite)
#   user NAME                                  (the topic lines below are NAME's)
#   pattern [read|write|readwrite|deny] FILTER (every client; %u user, %c client id)
# Topic lines before any `user` line are the anonymous clients'. parse()
# takes the lines (the runtime reads the file); Acl.rules(user, client id)
# gives a client's Rules, which answer "may it read / write / subscribe?".
# Sans-IO and portable: the same check can serve MQTT, CoAP and the uplink.
# (Few names: each new one is a qstr a board keeps for good; docs/security.md.)
from edge.compat import const

READ = const(1)
WRITE = const(2)
_ACCESS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": 0}


def _entry(rest, n):
    # (access, filter) of a topic or pattern line's text after the keyword;
    # ValueError naming line n for a bad filter ([MQTT-4.7.1-2/3] wildcards)
    word, _, f = rest.partition(" ")
    access = _ACCESS.get(word)
    if access is None:
        access, f = READ | WRITE, rest  # mosquitto: no access word, readwrite
    f = f.strip()
    levels = f.replace("%u", "u").replace("%c", "c").split("/")
    for i in range(len(levels)):
        lv = levels[i]
        if ("#" in lv and (lv != "#" or i != len(levels) - 1)) or ("+" in lv and lv != "+"):
            raise ValueError("line %d: bad topic filter %r (+ is a whole level, # the last)" % (n, f))
    if not f or "\0" in f:
        raise ValueError("line %d: empty topic filter" % n)
    return (access, f)


class Acl:
    def __init__(self):
        self.anonymous = []  # [(access, filter)] before any user line
        self.users = {}      # name -> [(access, filter)]
        self.patterns = []   # [(access, filter with %u %c)]

    def rules(self, user, client_id):
        """The Rules of a client: its user's topic lines (the anonymous ones
        without a user name), then every pattern with %u and %c put in. A
        pattern whose user name or client id would bring a wildcard or a
        level separator in is left out (a client id "#" must not turn
        "%c/#" into everything; mosquitto refuses it too)."""
        out = []  # the patterns' lines, this client's own
        for access, f in self.patterns:
            if "%u" in f:
                if user is None or _unsafe(user):
                    continue
                f = f.replace("%u", user)
            if "%c" in f:
                if _unsafe(client_id):
                    continue
                f = f.replace("%c", client_id)
            out.append((access, f))
        # the user's (or anonymous) lines are shared by its clients, not copied
        own = self.users.get(user, ()) if user is not None else self.anonymous
        return Rules((own, out), user)


def _unsafe(s):
    return not s or "+" in s or "#" in s or "/" in s


def parse(lines):
    """An Acl from the file's lines (str, an iterable); ValueError
    ("line N: ...") on the first bad one."""
    acl = Acl()
    cur = acl.anonymous
    n = 0
    for line in lines:
        n += 1
        line = line.strip()
        if not line or line[0] == "#":
            continue
        key, _, rest = line.partition(" ")
        rest = rest.strip()
        if key == "user":
            if not rest:
                raise ValueError("line %d: user without a name" % n)
            cur = acl.users.setdefault(rest, [])
        elif key == "topic":
            cur.append(_entry(rest, n))
        elif key == "pattern":
            acl.patterns.append(_entry(rest, n))
        else:
            raise ValueError("line %d: unknown keyword %r (topic, user, pattern)" % (n, key))
    return acl


def matches(f, t, sub=False):
    """Filter f (a str) matches topic levels t ([MQTT-4.7.2-1]: a first-level
    wildcard matches no $ topic). sub: t is a filter's levels, and the
    answer is whether every topic t matches, f matches too (what a
    subscription needs of a read grant): then a wildcard in t is matched
    only by one as wide in f. f's levels are walked in place, not split:
    a check allocates nothing on a board but the topic's split."""
    n = len(t)
    end = len(f)
    i = 0  # where f's level k starts
    k = 0
    while True:
        j = f.find("/", i)
        if j < 0:
            j = end
        wild = j - i == 1 and (f[i] == "+" or f[i] == "#")
        if wild and f[i] == "#":
            return not (k == 0 and t[0].startswith("$"))
        if k >= n or (sub and t[k] == "#"):
            return False
        if wild:  # +
            if k == 0 and t[0].startswith("$"):
                return False
        elif len(t[k]) != j - i or not f.startswith(t[k], i):
            return False  # (a literal in f covers the same literal only)
        k += 1
        if j == end:
            return k == n
        i = j + 1


class Rules:
    """One client's grants. A deny line wins over every grant (as
    mosquitto's); no matching grant is no access."""

    def __init__(self, entries, user=None):
        self.entries = entries  # ([(access, filter)], ...): lists checked together
        self.user = user        # whose they are (None: anonymous)

    def can(self, topic, access, sub=False):
        """May the client read (READ) or write (WRITE) topic? sub: topic is
        a filter to subscribe to (access READ): it must lie within a read
        grant and within no deny line (what it matches beyond that is
        checked message by message)."""
        t = topic.split("/")
        ok = False
        for entries in self.entries:
            for a, f in entries:
                if matches(f, t, sub):
                    if not a:
                        return False
                    if a & access:
                        ok = True
        return ok
