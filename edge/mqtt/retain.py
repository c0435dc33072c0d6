# Retained messages ([MQTT-3.3.1-5..11], 5.0 §3.3.1.3), one node per topic
# level like the subscription trie, so a wildcard subscribe walks only the
# branches its filter can reach instead of testing every retained topic.
# Messages are opaque to us except for `.payload` (bytes).
from edge.compat import const
from edge.mqtt.topics import LevelTree, deep_match

# Node: [kids or None, msg or None], a 2-item list as in topics.Trie
_KIDS = const(0)
_MSG = const(1)
# names of more levels are kept whole, not in the tree: topics.py _DEEP
# (tests/core/test_consts.py keeps the two equal)
_DEEP = const(32)


class RetainStore(LevelTree):
    """Bounded by max_messages and max_bytes (len(topic) + len(payload) per
    message, docs/design.md H7). A message that does not fit is dropped and counted in
    `dropped`. `len(store)`, `store.bytes`, `store.nodes` are kept exact."""

    def __init__(self, max_messages, max_bytes):
        super().__init__()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped = 0

    def get(self, topic):
        """The retained message for exactly this topic name, or None."""
        if topic.count("/") >= _DEEP:  # kept whole, not in the tree (topics.py)
            return self._deep.get(topic) if self._deep else None
        node = self._find(topic)
        return None if node is None else node[_MSG]

    def set(self, topic, msg):
        """Retain msg under topic (replacing any previous one, [MQTT-3.3.1-5]);
        an empty payload deletes it ([MQTT-3.3.1-10/11]). False if it did not
        fit the limits: then a message already held for the topic is deleted
        too, because a stale value must not pass as the latest one."""
        if not msg.payload:
            self._delete(topic)
            return True
        old = self.get(topic)
        size = len(topic) + len(msg.payload)
        if old is None:
            fits = self._count < self.max_messages
            held = 0
        else:
            fits = True
            held = len(topic) + len(old.payload)
        if not fits or self.bytes - held + size > self.max_bytes:
            if old is not None:
                self._delete(topic)
            self.dropped += 1
            return False
        if old is not None:
            self.bytes -= held
        else:
            self._count += 1
        self.bytes += size
        if topic.count("/") >= _DEEP:
            if self._deep is None:
                self._deep = {}
            self._deep[topic] = msg
        else:
            self._make(topic)[_MSG] = msg
        return True

    def _delete(self, topic):
        if topic.count("/") >= _DEEP:
            d = self._deep
            msg = d.pop(topic, None) if d else None
            if msg is None:
                return False
            if not d:
                self._deep = None
            self._count -= 1
            self.bytes -= len(topic) + len(msg.payload)
            return True
        node, path = self._path(topic)
        if node is None:
            return False
        msg = node[_MSG]
        if msg is None:
            return False
        node[_MSG] = None
        self._count -= 1
        self.bytes -= len(topic) + len(msg.payload)
        self._prune(node, path)
        return True

    def match(self, f):
        """[(topic, msg)] retained under topics matching a validated filter."""
        out = []
        if self._deep is not None:
            for topic, msg in self._deep.items():
                if deep_match(f, topic):
                    out.append((topic, msg))
        # no tree node below level _DEEP (a deeper filter's remainder is one
        # item that matches no key: no string per level of a deep filter)
        levels = f.split("/", _DEEP)
        n = len(levels)
        # stack of (node, index of next filter level, topic so far)
        stack = [(self._root, 0, None)]
        while stack:
            node, i, prefix = stack.pop()
            if i == n:
                if node[_MSG] is not None:
                    out.append((prefix, node[_MSG]))
                continue
            lv = levels[i]
            if lv == "#":
                # [MQTT-4.7.1-2] the parent level and everything below it
                if node[_MSG] is not None and prefix is not None:
                    out.append((prefix, node[_MSG]))
                self._collect(node, prefix, out)
                continue
            kids = node[_KIDS]
            if kids is None:
                continue
            if lv == "+":
                for name, kid in kids.items():
                    # [MQTT-4.7.2-1] no '$' topic for a first-level wildcard
                    if i == 0 and name[:1] == "$":
                        continue
                    stack.append((kid, i + 1, name if prefix is None else prefix + "/" + name))
            else:
                kid = kids.get(lv)
                if kid is not None:
                    stack.append((kid, i + 1, lv if prefix is None else prefix + "/" + lv))
        return out

    def _collect(self, node, prefix, out):
        # Every message strictly below node (prefix None: node is the root)
        stack = [(node, prefix)]
        while stack:
            node, prefix = stack.pop()
            kids = node[_KIDS]
            if kids is None:
                continue
            for name, kid in kids.items():
                if prefix is None and name[:1] == "$":
                    continue  # [MQTT-4.7.2-1]
                t = name if prefix is None else prefix + "/" + name
                if kid[_MSG] is not None:
                    out.append((t, kid[_MSG]))
                stack.append((kid, t))

    def items(self):
        """Yield every (topic, msg); don't set() while iterating."""
        if self._deep is not None:
            yield from self._deep.items()
        stack = [(self._root, None)]
        while stack:
            node, prefix = stack.pop()
            kids = node[_KIDS]
            if kids is None:
                continue
            for name, kid in kids.items():
                t = name if prefix is None else prefix + "/" + name
                if kid[_MSG] is not None:
                    yield t, kid[_MSG]
                stack.append((kid, t))
