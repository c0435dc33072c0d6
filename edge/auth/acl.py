# The ACL file in mosquitto's syntax (mosquitto.conf(5), acl_file):
#   # comment
#   topic [read|write|readwrite|deny] FILTER   (no access word: readwrite)
#   user NAME                                  (the topic lines below are NAME's)
#   pattern [read|write|readwrite|deny] FILTER (every client; %u user, %c client id)
# Topic lines before any `user` line are the anonymous clients'. Parsing
# takes the lines (the runtime reads the file); rules(user, client_id) gives
# a client's Rules, which answer "may it read / write / subscribe?".
# Sans-IO and portable: the same check serves MQTT, CoAP and the uplink.
READ = 1
WRITE = 2
_ACCESS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": 0}


def _filter(f, n):
    # f's levels, or ValueError naming line n ([MQTT-4.7.1-2/3] wildcards)
    if not f or "\0" in f:
        raise ValueError("line %d: empty topic filter" % n)
    levels = f.split("/")
    for i in range(len(levels)):
        lv = levels[i]
        if ("#" in lv and (lv != "#" or i != len(levels) - 1)) or ("+" in lv and lv != "+"):
            raise ValueError("line %d: bad topic filter %r (+ is a whole level, # the last)" % (n, f))
    return levels


def _entry(rest, n):
    # (access, filter) of a topic or pattern line's text after the keyword
    word, _, f = rest.partition(" ")
    access = _ACCESS.get(word)
    if access is None:
        access, f = READ | WRITE, rest  # mosquitto: no access word, readwrite
    f = f.strip()
    _filter(f.replace("%u", "u").replace("%c", "c"), n)
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
        "%c/#" into everything, as mosquitto refuses it)."""
        own = self.users.get(user, ()) if user is not None else self.anonymous
        out = []
        for access, f in own:
            out.append((access, f.split("/")))
        for access, f in self.patterns:
            if "%u" in f:
                if user is None or _unsafe(user):
                    continue
                f = f.replace("%u", user)
            if "%c" in f:
                if _unsafe(client_id):
                    continue
                f = f.replace("%c", client_id)
            out.append((access, f.split("/")))
        return Rules(out, user)


def _unsafe(s):
    return "+" in s or "#" in s or "/" in s or not s


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


def matches(levels, topic):
    """Filter levels match topic levels ([MQTT-4.7.2-1]: a first-level
    wildcard matches no $ topic)."""
    n = len(topic)
    for i in range(len(levels)):
        f = levels[i]
        if f == "#":
            return not (i == 0 and topic[0][:1] == "$")
        if i >= n:
            return False
        if f == "+":
            if i == 0 and topic[0][:1] == "$":
                return False
        elif f != topic[i]:
            return False
    return n == len(levels)


def within(sub, acl):
    """Every topic the filter `sub` matches is matched by `acl` (levels
    both): what a subscription needs of a read grant."""
    n = len(sub)
    for i in range(len(acl)):
        a = acl[i]
        if a == "#":
            return not (i == 0 and sub[0][:1] == "$")
        if i >= n or sub[i] == "#":
            return False
        if a == "+":
            if i == 0 and sub[0][:1] == "$":
                return False
        elif a != sub[i]:
            return False  # a literal grant covers the same literal only
    return n == len(acl)


class Rules:
    """One client's grants. A deny line wins over every grant (as
    mosquitto's); no matching grant is no access."""

    def __init__(self, entries, user=None):
        self.entries = entries  # [(access, filter levels)]
        self.user = user        # whose they are (None: anonymous)

    def can(self, topic, access):
        """May the client read (READ) or write (WRITE) topic?"""
        t = topic.split("/")
        ok = False
        for a, levels in self.entries:
            if matches(levels, t):
                if not a:
                    return False
                if a & access:
                    ok = True
        return ok

    def can_subscribe(self, f):
        """May the client subscribe to filter f: it is within a read grant
        and within no deny line (what it matches beyond is still checked
        message by message)."""
        s = f.split("/")
        ok = False
        for a, levels in self.entries:
            if within(s, levels):
                if not a:
                    return False
                if a & READ:
                    ok = True
        return ok
