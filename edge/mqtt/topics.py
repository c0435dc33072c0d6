# Topic names, topic filters and the subscription trie (MQTT 3.1.1 §4.7,
# 5.0 §4.7, §4.8.2). Matching returns (key, value) pairs and never sends:
# the broker decides what to deliver (docs/design.md "Style": no
# matching/delivery coupling, unlike Mosquitto's subs.c).
from edge.compat import const
from edge.errors import RemoteProtocolError

# Reason codes from consts.py, private so they fold into the bytecode
# (tests/core/test_consts.py keeps them equal)
_RC_TOPIC_FILTER_INVALID = const(0x8F)
_RC_TOPIC_NAME_INVALID = const(0x90)
# [MQTT-1.5.3-1] strings carry a 2-byte length prefix
_MAX_BYTES = const(65535)
# A code point is at most 4 UTF-8 bytes, so shorter strings need no encode()
_SAFE_CHARS = const(16383)

# Trie node: a 2-item list, cheaper than an instance on MicroPython (no
# per-object attribute map). Both slots are created lazily and dropped again
# when they empty, so a leaf costs one small list plus its parent's dict slot.
_KIDS = const(0)  # None or {level: node}
_SUBS = const(1)  # None or {key: value}

_SHARE = "$share/"  # MQTT 5.0 §4.8.2

# Names and filters of more levels than this get no trie nodes: each level
# would be a node (a list and a dict slot, ~100 B on CPython), so one
# 65,535-level filter would cost 16 MiB. They are kept whole in a dict on
# the side (LevelTree._deep, None while empty) and matched one by one, which
# costs only topics of at least _DEEP levels anything (docs/design.md H7).
_DEEP = const(32)


def deep_match(f, topic):
    """True if filter f matches topic name (both validated); for the few
    deep filters and names kept whole (_DEEP)."""
    if "+" not in f and "#" not in f:
        return f == topic
    fl = f.split("/")
    tl = topic.split("/", len(fl))  # enough to compare: no list per level of a deep topic
    if topic[:1] == "$" and fl[0] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    n = len(tl)
    for i in range(len(fl)):
        lv = fl[i]
        if lv == "#":
            return True  # [MQTT-4.7.1-2] this level, all below, and the parent
        if i >= n or (lv != "+" and lv != tl[i]):
            return False
    return len(fl) == n


def _too_long(s):
    n = len(s)
    return n > _SAFE_CHARS and (n > _MAX_BYTES or len(s.encode()) > _MAX_BYTES)


def validate_topic(name, max_levels):
    """Check a topic NAME (PUBLISH, will topic). max_levels 0: no limit."""
    rc = _RC_TOPIC_NAME_INVALID
    if not name:
        raise RemoteProtocolError(rc, "empty topic name")  # [MQTT-4.7.3-1]
    if "+" in name or "#" in name:
        raise RemoteProtocolError(rc, "wildcard in topic name")  # [MQTT-3.3.2-2]
    if "\x00" in name:
        raise RemoteProtocolError(rc, "U+0000 in topic name")  # [MQTT-4.7.3-2]
    if max_levels and name.count("/") >= max_levels:
        # Our explicit bound on trie depth (docs/design.md H7), not a spec rule
        raise RemoteProtocolError(rc, "topic name has too many levels")
    if len(name) > _SAFE_CHARS and _too_long(name):  # no call for short names
        raise RemoteProtocolError(rc, "topic name too long")  # [MQTT-4.7.3-3]


def validate_filter(f, max_levels):
    """Check a topic FILTER (SUBSCRIBE, UNSUBSCRIBE). max_levels 0: no limit.
    A `$share/...` filter passes as a plain filter; see split_shared()."""
    rc = _RC_TOPIC_FILTER_INVALID
    if not f:
        raise RemoteProtocolError(rc, "empty topic filter")  # [MQTT-4.7.3-1]
    if "\x00" in f:
        raise RemoteProtocolError(rc, "U+0000 in topic filter")  # [MQTT-4.7.3-2]
    if max_levels and f.count("/") >= max_levels:
        raise RemoteProtocolError(rc, "topic filter has too many levels")
    if _too_long(f):
        raise RemoteProtocolError(rc, "topic filter too long")  # [MQTT-4.7.3-3]
    if "+" not in f and "#" not in f:
        return  # the common case: no per-level scan needed
    i = f.find("#")
    # [MQTT-4.7.1-2] '#' is alone in its level and that level is the last
    if i >= 0 and (i != len(f) - 1 or (i and f[i - 1] != "/")):
        raise RemoteProtocolError(rc, "'#' not alone in the last level")
    i = f.find("+")
    while i >= 0:
        # [MQTT-4.7.1-3] '+' occupies an entire level
        if (i and f[i - 1] != "/") or (i + 1 < len(f) and f[i + 1] != "/"):
            raise RemoteProtocolError(rc, "'+' not alone in its level")
        i = f.find("+", i + 1)


def split_shared(f):
    """'$share/{group}/{filter}' -> (group, filter); anything else -> (None, f).
    The caller still runs validate_filter() on the returned filter."""
    if not f.startswith(_SHARE):
        return None, f
    rest = f[len(_SHARE):]
    i = rest.find("/")
    rc = _RC_TOPIC_FILTER_INVALID
    # [MQTT-4.8.2-1] ShareName at least one character, [MQTT-4.8.2-2] no
    # '/', '+' or '#' in it, followed by '/' and a Topic Filter
    if i <= 0:
        raise RemoteProtocolError(rc, "shared subscription without share name or filter")
    group = rest[:i]
    if "+" in group or "#" in group:
        raise RemoteProtocolError(rc, "wildcard in share name")
    if i + 1 == len(rest):
        raise RemoteProtocolError(rc, "shared subscription without topic filter")
    return group, rest[i + 1:]


class LevelTree:
    """One node per topic level, [kids, value], shared by the subscription
    trie (value: {key: options}) and the retained store (value: a message).
    `len()` counts entries, `nodes` counts nodes (root excluded)."""

    def __init__(self):
        self._root = [None, None]
        self._count = 0
        self.nodes = 0
        self._deep = None  # {name: value} of names over _DEEP levels, or None

    def __len__(self):
        return self._count

    def has_first(self, level):
        """True if some entry's name starts with this level (e.g. "$SYS")."""
        kids = self._root[_KIDS]
        if kids is not None and level in kids:
            return True
        d = self._deep
        if d:
            for name in d:
                if name.split("/", 1)[0] == level:
                    return True
        return False

    def _find(self, name):
        """The node for exactly this name, or None."""
        node = self._root
        for lv in name.split("/"):
            kids = node[_KIDS]
            if kids is None:
                return None
            node = kids.get(lv)
            if node is None:
                return None
        return node

    def _make(self, name):
        """The node for this name, created (with its parents) if missing."""
        node = self._root
        for lv in name.split("/"):
            kids = node[_KIDS]
            if kids is None:
                kids = node[_KIDS] = {}
            nxt = kids.get(lv)
            if nxt is None:
                nxt = kids[lv] = [None, None]
                self.nodes += 1
            node = nxt
        return node

    def missing(self, name):
        """How many nodes name would need that the tree lacks (what a new
        entry adds to the memory budget: session.py Budget)."""
        if name.count("/") >= _DEEP:
            return 0  # kept whole in _deep, no node
        node = self._root
        levels = name.split("/")
        for i in range(len(levels)):
            kids = node[_KIDS]
            node = kids.get(levels[i]) if kids is not None else None
            if node is None:
                return len(levels) - i
        return 0

    def _path(self, name):
        """(node, [(parent, level)...]) for this name, or (None, None)."""
        path = []
        node = self._root
        for lv in name.split("/"):
            kids = node[_KIDS]
            if kids is None:
                return None, None
            path.append((node, lv))
            node = kids.get(lv)
            if node is None:
                return None, None
        return node, path

    def _prune(self, node, path):
        # Walk back up, dropping nodes left with neither a value nor kids
        while path and node[_SUBS] is None and node[_KIDS] is None:
            parent, lv = path.pop()
            kids = parent[_KIDS]
            del kids[lv]
            self.nodes -= 1
            if not kids:
                parent[_KIDS] = None
            node = parent


class Trie(LevelTree):
    """Subscriptions, one node per filter level. `len(trie)` counts
    (filter, key) subscriptions; `trie.nodes` counts nodes (root excluded),
    so the broker can bound and report both. Filters must be validated."""

    def add(self, f, key, value):
        """Subscribe key to filter f; True if new, else value is replaced."""
        if f.count("/") < _DEEP:
            node = self._make(f)
            subs = node[_SUBS]
            if subs is None:
                subs = node[_SUBS] = {}
        else:
            d = self._deep
            if d is None:
                d = self._deep = {}
            subs = d.get(f)
            if subs is None:
                subs = d[f] = {}
        new = key not in subs
        subs[key] = value
        if new:
            self._count += 1
        return new

    def get(self, f, key):
        if f.count("/") >= _DEEP:
            subs = self._deep.get(f) if self._deep else None
            return None if subs is None else subs.get(key)
        node = self._find(f)
        if node is None or node[_SUBS] is None:
            return None
        return node[_SUBS].get(key)

    def remove(self, f, key):
        """Unsubscribe; True if key was subscribed to f. Prunes empty nodes."""
        if f.count("/") >= _DEEP:
            d = self._deep
            subs = d.get(f) if d else None
            if subs is None or key not in subs:
                return False
            del subs[key]
            self._count -= 1
            if not subs:
                del d[f]
                if not d:
                    self._deep = None
            return True
        node, path = self._path(f)
        if node is None:
            return False
        subs = node[_SUBS]
        if subs is None or key not in subs:
            return False
        del subs[key]
        self._count -= 1
        if subs:
            return True
        node[_SUBS] = None
        self._prune(node, path)
        return True

    def remove_key(self, key, filters):
        """Remove key from each filter in filters; returns how many it held."""
        n = 0
        for f in filters:
            if self.remove(f, key):
                n += 1
        return n

    def match(self, topic):
        """[(key, value)] for every subscription whose filter matches the
        (validated) topic name. A key appears once per matching filter."""
        out = []
        for subs in self.match_subs(topic):
            out.extend(subs.items())
        return out

    def match_subs(self, topic):
        """The {key: value} dicts of the filters matching the (validated)
        topic name, one per filter: no (key, value) pair is built, which on
        a board would be one allocation per subscriber per message. The
        dicts are the trie's own: read them, don't keep or change them."""
        out = []
        d = self._deep
        if d is not None and topic.count("/") >= _DEEP - 1:
            # a 'deep/.../#' filter matches from its parent level down
            for f, subs in d.items():
                if deep_match(f, topic):
                    out.append(subs)
        nodes = [self._root]
        # [MQTT-4.7.2-1] '$' topics are not matched by a first-level '+'/'#'
        wild = topic[:1] != "$"
        # The trie has no node below level _DEEP: a deeper topic's remainder
        # is one item that matches no key, and costs no string per level
        for lv in topic.split("/", _DEEP):
            nxt = []
            for node in nodes:
                kids = node[_KIDS]
                if kids is None:
                    continue
                if wild:
                    # [MQTT-4.7.1-2] '#' matches this level and all below
                    h = kids.get("#")
                    if h is not None and h[_SUBS] is not None:
                        out.append(h[_SUBS])
                    p = kids.get("+")  # [MQTT-4.7.1-3] exactly one level
                    if p is not None:
                        nxt.append(p)
                c = kids.get(lv)
                if c is not None:
                    nxt.append(c)
            if not nxt:
                return out
            nodes = nxt
            wild = True
        for node in nodes:
            if node[_SUBS] is not None:
                out.append(node[_SUBS])
            kids = node[_KIDS]
            if kids is not None:
                # 'sport/#' also matches 'sport' (the parent level)
                h = kids.get("#")
                if h is not None and h[_SUBS] is not None:
                    out.append(h[_SUBS])
        return out
